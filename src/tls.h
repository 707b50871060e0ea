/* tls.h - TLS with OpenSSL 3: server contexts for TLS listeners (several
 * certificates chosen by SNI, ECDSA and RSA side by side, ALPN, tickets whose
 * keys rotate, a session cache, OCSP stapling, client certificates), client
 * contexts for TLS to upstream pools, the accept path of TLS listeners and of
 * plaintext listeners that also take HTTP/2 with prior knowledge (h2c), and
 * the privilege drop.
 *
 * Ownership and threads:
 * - A struct tls_server / tls_client is built on the main thread while the
 *   config loads (conf_tls.c) and belongs to the conf; workers only read it
 *   (an SSL_CTX is safe to share once configured). The one mutable part, the
 *   ticket key ring, is documented in tls.c (seqlock slots, rotation under a
 *   try-locked mutex): no worker ever waits for another.
 * - Process-wide, set once by the first tls_init() (pthread_once) and only
 *   read after: the ex-data indexes, the BIO method of accepted connections
 *   and the fetched ticket cipher.
 * - Connections still in their handshake (or, for h2c, still being sniffed)
 *   belong to one worker, are counted in its connection count, and are
 *   handed to client_accept_bev() or h2_session_start() once the protocol is
 *   known. Handshake failures are counted per worker, by reason, and logged
 *   when the worker ends.
 * - What they get for an accepted TLS connection is a filter bufferevent over
 *   a socket bufferevent, with the encryption done by tls.c after the current
 *   callbacks (fewer system calls than libevent's TLS bufferevents; tls.c says
 *   how): half-close it with tls_bev_shutdown(), not on its descriptor. */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>

#include "conf.h"

struct worker;
struct request;
struct conf_tls;
struct conf_upstream_tls;
struct tls_server;
struct tls_client;
struct tls_worker;

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

struct tls_client *tls_client_new(const struct conf_upstream_tls *t, struct tls_error *e);
void tls_client_free(struct tls_client *tc);
/* A not yet connected TLS bufferevent for an upstream connection (fd -1:
 * connect it with bufferevent_socket_connect()); NULL on failure. */
struct bufferevent *tls_client_bev(struct tls_client *tc, struct event_base *base);

/* Per worker: pending handshakes and failure counters. */
struct tls_worker *tls_worker_new(void);
/* Close every connection still in its handshake or being sniffed. */
void tls_worker_close_pending(struct worker *w);
/* Logs the handshake failure counts, frees. */
void tls_worker_free(struct worker *w);

/* Accept paths, called by the worker's accept callback with a new socket. */
void tls_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa);
void tls_accept_h2c(struct worker *w, size_t listener, int fd, const struct sockaddr *sa);

/* TLS facts of the connection a request arrived on; false for plaintext. The
 * strings live as long as the connection. */
struct tls_info {
	const char *version;        /* "TLSv1.3" */
	const char *cipher;
	const char *sni;            /* "" without SNI */
	const char *alpn;           /* "h2", "http/1.1" or "" */
	const char *client_subject; /* RFC 2253 subject of a verified client certificate, or "" */
	bool resumed;
};
bool tls_request_info(const struct request *r, struct tls_info *out);
/* The same for an SSL bufferevent (or NULL). */
bool tls_bev_info(struct bufferevent *bev, struct tls_info *out);

/* End the sending side of a client connection whose output is empty: for TLS
 * a close_notify first; then, once every record is written, shutdown(SHUT_WR)
 * on the socket if half_close (a caller about to close the socket skips it).
 * 1: done; 0: TLS records still wait to be written, bev's write callback runs
 * again once they are (call again then); -1: no socket to half-close, or
 * shutdown() failed. */
int tls_bev_shutdown(struct bufferevent *bev, bool half_close);

/* Drop root privileges to c->user (after binding, keys loaded). 0, or -1 after logging why. */
int tls_drop_privileges(const struct conf *c);

#endif
