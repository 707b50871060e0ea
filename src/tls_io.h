/* tls_io.h - the transport of accepted TLS connections: a generic filter
 * bufferevent over a socket bufferevent, with the encryption done by
 * tls_io.c after the current callbacks (fewer system calls than libevent's
 * TLS bufferevents; tls_io.c says how), and the TLS facts of a connection.
 *
 * Ownership and threads: a transport belongs to the worker that accepted it
 * and lives as long as its filter bufferevent, except that a filter freed
 * while records still wait for the socket leaves its socket behind until
 * they are written (kept on the worker's struct tls_io_worker). Half-close a
 * transport with tls_bev_shutdown(), not on its descriptor. Process-wide,
 * set once by tls_io_init() and only read after: the BIO method and the
 * ex-data index of the client-subject cache. */
#ifndef SLUICE_TLS_IO_H
#define SLUICE_TLS_IO_H

#include <stdbool.h>

#include <event2/bufferevent.h>
#include <openssl/types.h>

struct worker;
struct tls_conn;

/* Per worker: the transports whose filter is gone but whose records still
 * wait for the socket. Zeroed to start; tls_io_worker_end() closes them, and
 * runs after every transport of the worker was freed. */
struct tls_io_worker {
	struct tls_conn *lingering;
};
void tls_io_worker_end(struct tls_io_worker *iow);

/* The process-wide parts (idempotent, thread-safe); false if OpenSSL failed. */
bool tls_io_init(void);

/* A server-side transport over the accepted socket fd for ssl (in accept
 * state once it is the transport's): the filter bufferevent, reading off,
 * no callbacks yet. It owns ssl and fd from then on; its handshake runs when
 * reading is enabled, and ends with BEV_EVENT_CONNECTED or an error event.
 * NULL on failure: ssl is freed, fd is still the caller's. */
struct bufferevent *tls_io_accept(struct worker *w, struct tls_io_worker *iow, SSL *ssl, int fd);

/* The SSL of a transport made by tls_io_accept() or of a libevent TLS
 * bufferevent, or NULL. */
SSL *tls_bev_ssl(struct bufferevent *bev);
/* The OpenSSL error that ended a tls_io_accept() transport (0: none, or not one). */
unsigned long tls_bev_error(struct bufferevent *bev);

/* Hold (true) or release what the filter's output holds below a record's
 * worth (16 KiB): a response head that arrived from the upstream without any
 * of its body then leaves in one record (and one write) with the body's
 * first bytes, as nginx's postpone_output does, instead of a record and a
 * write of its own. Released, the output is encrypted and written after the
 * current callbacks. No-op on anything but a tls_io_accept() transport;
 * tls_bev_shutdown() releases it. While held, the filter's write timeout does
 * not run. */
void tls_bev_hold(struct bufferevent *bev, bool hold);

/* End the sending side of a client connection whose output is empty: for TLS
 * a close_notify first; then, once every record is written, shutdown(SHUT_WR)
 * on the socket if half_close (a caller about to close the socket skips it).
 * 1: done; 0: TLS records still wait to be written, bev's write callback runs
 * again once they are (call again then); -1: no socket to half-close, or
 * shutdown() failed. */
int tls_bev_shutdown(struct bufferevent *bev, bool half_close);

/* TLS facts of a connection; false for plaintext. The strings live as long
 * as the connection. */
struct tls_info {
	const char *version;        /* "TLSv1.3" */
	const char *cipher;
	const char *sni;            /* "" without SNI */
	const char *alpn;           /* "h2", "http/1.1" or "" */
	const char *client_subject; /* RFC 2253 subject of a verified client certificate, or "" */
	bool resumed;
};
/* For a transport (or NULL). A request's: pipeline_tls_info() (module.h),
 * which asks the exchange's protocol. */
bool tls_bev_info(struct bufferevent *bev, struct tls_info *out);

#endif
