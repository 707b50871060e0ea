/* conf_tls.h - the config keys for TLS and HTTP/2: a listener's `tls`, `h2c`
 * and `http2`, a pool's `tls` (TLS to the upstream servers) and the
 * top-level `user` (privileges dropped to after binding).
 *
 * Contract: the walkers are called by conf.c inside conf_load() for each
 * listener / pool / the root table, report every problem through
 * conf_werr* with the path and the file concerned, and fill plain data plus
 * the compiled TLS contexts (tls_ctx.h), which are built here so that certificate
 * and key files are read (and checked) while the process still has the
 * privileges to read them and `sluice check` reports the same errors as
 * `sluice run`. Everything allocated is released by conf_tls_free_listener()
 * and conf_tls_free_pool(). */
#ifndef SLUICE_CONF_TLS_H
#define SLUICE_CONF_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

struct conf_walker;
struct tls_server;
struct tls_client;

struct conf_tls_cert {
	char *cert; /* PEM: leaf first, then its chain */
	char *key;  /* PEM private key, mode 0600 or stricter, owned by the user starting sluice */
	char *ocsp; /* DER OCSP response to staple; NULL: none */
};

enum conf_tls_verify { CONF_TLS_VERIFY_OFF, CONF_TLS_VERIFY_OPTIONAL, CONF_TLS_VERIFY_REQUIRE };

struct conf_tls {
	struct conf_tls_cert *certs; /* certs[0] is the default (clients without SNI or with an unknown name) */
	size_t num_certs;
	int min_version, max_version; /* TLS1_2_VERSION / TLS1_3_VERSION */
	char *ciphers;      /* TLS 1.2 cipher list (OpenSSL syntax) */
	char *ciphersuites; /* TLS 1.3 suites */
	char *groups;       /* key-exchange groups */
	bool session_tickets;      /* default true */
	conf_msec ticket_rotate;   /* ticket key lifetime for issuing; default 1h */
	unsigned session_cache;    /* sessions kept in the shared server cache; 0: off; default 20000 */
	conf_msec session_timeout; /* default 1h */
	conf_msec handshake_timeout; /* default 10s */
	char *client_ca;           /* mTLS: CA bundle the client certificates must chain to */
	enum conf_tls_verify client_verify; /* default require when client_ca is set */
	struct tls_server *server; /* compiled SSL_CTXs, shared read-only by the workers */
};

struct conf_http2 {
	bool enabled;                    /* offer h2 by ALPN on TLS listeners; default true */
	unsigned max_concurrent_streams; /* default 100 */
	uint64_t max_header_list_size;   /* decoded header bytes per block (RFC 7541 sizes); default 32k */
	uint64_t initial_window_size;    /* per stream, request bodies; default 256k */
	conf_msec idle_timeout;          /* no open stream for this long: GOAWAY; default limits.keepalive_timeout */
	/* flood defences: over these, GOAWAY ENHANCE_YOUR_CALM and close, counted by reason */
	unsigned max_resets_per_s;        /* streams reset by the client (CVE-2023-44487); default 100 */
	unsigned max_pings_per_s;         /* default 20 */
	unsigned max_settings_per_s;      /* default 20 */
	unsigned max_empty_frames_per_s;  /* DATA without payload or END_STREAM, empty CONTINUATION; default 50 */
	unsigned max_continuation_frames; /* per header block (CVE-2024-27316 class); default 4 */
	unsigned max_glitches_per_s;      /* malformed or refused streams, bad frames; default 50 */
	unsigned max_uploading_streams;   /* streams still receiving a request body; default 10 */
	unsigned max_uploading_streams_per_client; /* the same per client (IPv4 address, IPv6 /64) over the process; default 50 */
};

struct conf_upstream_tls {
	char *ca;       /* CA bundle; NULL: the system default store */
	char *sni;      /* server name sent and verified; NULL: none (IP-addressed servers) */
	bool verify;    /* default true */
	char *cert, *key; /* optional client certificate for the upstream */
	struct tls_client *client;
};

/* Listener keys tls, h2c, http2 of table t (called from walk_listener). */
void conf_tls_walk_listener(struct conf_walker *w, int t, struct conf_listener *l);
/* Pool key tls of table t (called from walk_pool). */
void conf_tls_walk_pool(struct conf_walker *w, int t, struct conf_pool *p);
/* Top-level key user. */
void conf_tls_walk_user(struct conf_walker *w, int root);
void conf_tls_free_listener(struct conf_listener *l);
void conf_tls_free_pool(struct conf_pool *p);

#endif
