/* tls_accept.h - the accept paths of TLS listeners and of plaintext
 * listeners that also take HTTP/2 with prior knowledge (h2c): the handshake
 * (or the sniffing of the h2 preface), then the hand-off by protocol.
 *
 * Ownership and threads: connections still in their handshake (or, for h2c,
 * still being sniffed) belong to one worker, are counted in its connection
 * count, and are handed to client_accept_bev() or h2_session_start() once
 * the protocol is known. Handshake failures are counted per worker, by
 * reason, and logged when the worker ends. */
#ifndef SLUICE_TLS_ACCEPT_H
#define SLUICE_TLS_ACCEPT_H

#include <stddef.h>
#include <sys/socket.h>

struct worker;
struct tls_worker;

/* Per worker: pending handshakes, lingering transports, failure counters. */
struct tls_worker *tls_worker_new(void);
/* Close every connection still in its handshake or being sniffed. */
void tls_worker_close_pending(struct worker *w);
/* Logs the handshake failure counts, frees. */
void tls_worker_free(struct worker *w);

/* Accept paths, called by the worker's accept callback with a new socket. */
void tls_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa);
void tls_accept_h2c(struct worker *w, size_t listener, int fd, const struct sockaddr *sa);

#endif
