/* tls_ctx.h - TLS contexts with OpenSSL 3: the server contexts of a TLS
 * listener (several certificates chosen by SNI, ECDSA and RSA side by side,
 * ALPN, tickets whose keys rotate, a session cache, OCSP stapling, client
 * certificates) and the client contexts of TLS to upstream pools.
 *
 * Ownership and threads: a struct tls_server / tls_client is built on the
 * main thread while the config loads (conf_tls.c) and belongs to the conf;
 * workers only read it (an SSL_CTX is safe to share once configured). The one
 * mutable part, the ticket key ring, is documented in tls_ctx.c (seqlock
 * slots, rotation under a try-locked mutex): no worker ever waits for
 * another. Process-wide, set once by the first context built (pthread_once)
 * and only read after: the ex-data index and the fetched ticket cipher. */
#ifndef SLUICE_TLS_CTX_H
#define SLUICE_TLS_CTX_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>
#include <openssl/types.h>

struct conf_tls;
struct conf_upstream_tls;
struct tls_server;
struct tls_client;

/* Where a build error is: certificate index (0-based, -1: not about one) and field. */
struct tls_error {
	int cert_index;
	const char *field; /* "cert", "key", "ocsp", "client_ca", "ciphers", "ciphersuites", "groups", "ca", ... */
	char msg[512];
};

/* Build the contexts of a TLS listener. NULL with *e filled on any problem:
 * a missing or unreadable file, a key readable by group/others or owned by
 * another user, an expired or not yet valid certificate, a key that does not
 * match its certificate, an OCSP response that does not parse, a bad cipher
 * string. http2 decides whether h2 is offered by ALPN. */
struct tls_server *tls_server_new(const struct conf_tls *t, const char *listener_name, bool http2,
                                  struct tls_error *e);
void tls_server_free(struct tls_server *ts);
/* The DNS names the certificates answer for (for `sluice check` and tests). */
size_t tls_server_num_names(const struct tls_server *ts);
/* Certificate i (0: the default; false past the last): when it expires
 * (Unix seconds) and the names it answers for, joined (owned by ts). For
 * the expiry metric. */
bool tls_server_cert_expiry(const struct tls_server *ts, size_t i, int64_t *not_after, const char **names);
/* A new server-side SSL on the listener's default context (SNI may switch
 * it during the handshake); NULL when out of memory. The caller owns it. */
SSL *tls_server_ssl_new(struct tls_server *ts);

struct tls_client *tls_client_new(const struct conf_upstream_tls *t, struct tls_error *e);
void tls_client_free(struct tls_client *tc);
/* A not yet connected TLS bufferevent for an upstream connection (fd -1:
 * connect it with bufferevent_socket_connect()); NULL on failure. */
struct bufferevent *tls_client_bev(struct tls_client *tc, struct event_base *base);
/* The client context itself, for a user outside libevent (the OTLP
 * exporter's blocking client): take a reference (SSL_CTX_up_ref) to keep it
 * past the conf. */
SSL_CTX *tls_client_ctx(const struct tls_client *tc);

#endif
