/* conn_sock.h - the plain-socket side of a client connection without a
 * bufferevent: reads straight into the connection's input buffer (no
 * ioctl(FIONREAD) before each read, as libevent's evbuffer_read makes), writes
 * its output with writev, and lends it its buffers only while it has bytes.
 *
 * A connection waiting for its next request holds no buffer: it takes one
 * from its worker's pool when the first byte arrives (input) or the first
 * response byte is queued (output), and gives it back once it is empty
 * again (conn_sock_buf_put). An empty evbuffer holds no data chains, so the
 * pool keeps only the small buffer objects, up to CONN_SOCK_POOL_MAX.
 *
 * The events (when to read, when the socket takes more) stay with the
 * connection's owner (client.c): these are the operations it calls.
 * Ownership and threads: a pool belongs to one worker; a buffer taken from it
 * is the connection's until it is put back (or freed with the connection). */
#ifndef SLUICE_CONN_SOCK_H
#define SLUICE_CONN_SOCK_H

#include <stddef.h>
#include <sys/types.h>

struct evbuffer;

#define CONN_SOCK_POOL_MAX 64

struct conn_sock_pool {
	struct evbuffer *free[CONN_SOCK_POOL_MAX];
	size_t n;
};

/* An empty buffer (from the pool, or new), or NULL when out of memory. */
struct evbuffer *conn_sock_buf_get(struct conn_sock_pool *p);
/* Give back *b if it is empty (and set *b to NULL); a buffer still holding
 * bytes stays where it is. Safe on NULL. */
void conn_sock_buf_put(struct conn_sock_pool *p, struct evbuffer **b);
/* Frees the pooled buffers. */
void conn_sock_pool_free(struct conn_sock_pool *p);

/* Read from fd into in until it holds `limit` bytes or the socket is empty:
 * the first read is `first` bytes at most (a request head usually fits),
 * then steps of about 16 KiB while reads fill what they were given.
 * Returns the bytes read (> 0); 0 at EOF with nothing read; -1 on an error
 * (errno) with nothing read; -2 when nothing was there (EAGAIN). Bytes read
 * before an EOF or error are returned first: the next call reports it. */
ssize_t conn_sock_read(int fd, struct evbuffer *in, size_t first, size_t limit);

/* Write out to fd until it is empty or the socket is full. Returns the bytes
 * left in out, or -1 on an error (errno; EPIPE, ECONNRESET: the peer is gone). */
ssize_t conn_sock_write(int fd, struct evbuffer *out);

#endif
