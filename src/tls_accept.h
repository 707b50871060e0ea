/* tls_accept.h - the accept paths of TLS listeners and of plaintext
 * listeners that also take HTTP/2 with prior knowledge (h2c): the handshake
 * (or the sniffing of the h2 preface), then the hand-off by protocol.
 *
 * Layering: TLS knows no protocol code. Once the protocol is known, the
 * connection goes to the dispatcher the worker registered with
 * tls_worker_new(), which starts the HTTP/1 connection or HTTP/2 session.
 *
 * Ownership and threads: connections still in their handshake (or, for h2c,
 * still being sniffed) belong to one worker and are counted in its
 * connection count until the hand-off moves the bufferevent to the
 * dispatcher. Handshake failures are counted per worker, by reason, and
 * logged when the worker ends. */
#ifndef SLUICE_TLS_ACCEPT_H
#define SLUICE_TLS_ACCEPT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct bufferevent;
struct snapshot;
struct worker;
struct tls_worker;

/* What the client speaks: ALPN "h2" or the h2c preface, or anything else. */
enum tls_proto { TLS_PROTO_HTTP1, TLS_PROTO_H2 };

/* A finished handshake (or sniff) handed to the worker's dispatcher. */
struct tls_handoff {
	size_t listener; /* the process's number for it (conf.h id) */
	/* the snapshot the connection was accepted on (it has the listener; a
	 * reload may have removed it from the worker's since): borrowed for the call */
	struct snapshot *snap;
	/* The transport: a tls_io.h filter (tls) or the plain socket bufferevent
	 * (an h2c listener), no callbacks set, reading enabled. The bytes read
	 * while sniffing are still in its input. */
	struct bufferevent *bev;
	enum tls_proto proto;
	bool tls;                    /* scheme https; else plaintext */
	const struct sockaddr *peer; /* the client's address, valid during the call */
};

/* Takes over h->bev (frees it if it cannot serve it). The pending
 * connection has left the worker's connection count before the call: the
 * connection the dispatcher starts counts itself. */
typedef void (*tls_dispatch_fn)(struct worker *w, const struct tls_handoff *h);

/* Per worker: pending handshakes, lingering transports, failure counters;
 * dispatch receives every connection whose protocol is known. */
struct tls_worker *tls_worker_new(tls_dispatch_fn dispatch);
/* Close every connection still in its handshake or being sniffed. */
void tls_worker_close_pending(struct worker *w);
/* The same for the listener numbered listener (conf.h id): a reload removed it. */
void tls_worker_close_listener(struct worker *w, size_t listener);
/* Logs the handshake failure counts, frees. */
void tls_worker_free(struct worker *w);

/* Accept paths, called by the worker's accept callback with a new socket
 * accepted on the listener numbered listener (conf.h id) from sa, whose
 * address the worker admitted as ip (its text, "" if none). */
void tls_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa, const char *ip);
void tls_accept_h2c(struct worker *w, size_t listener, int fd, const struct sockaddr *sa, const char *ip);

#endif
