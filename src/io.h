/* io.h - fewer system calls on socket bufferevents.
 *
 * Writes: a libevent socket bufferevent writes only from its write event, so
 * every message costs an epoll_ctl to arm EPOLLOUT, an extra loop wakeup, and
 * an epoll_ctl to disarm it. An io_flusher notices bytes added to the output
 * (an evbuffer callback) and, once the current callbacks are done (an active
 * event: scheduling it is not a system call), writes them straight to the
 * socket. The write event is armed only when the socket would block, and
 * disarmed by io_flusher_drained() once the output is empty. After a direct
 * write that leaves the output at or below the write low-water mark, the
 * bufferevent's current write callback is called, as libevent would have.
 *
 * Reads: libevent reads at most 4096 bytes per wakeup; io_read_more() reads
 * what else the socket already holds, up to a bound, in readv steps of about
 * 16 KiB (chains sized to the data, never one big reservation).
 *
 * Only for plain socket bufferevents (a TLS connection has one under its TLS
 * filter, tls_io.c): a libevent TLS bufferevent's fd must never be used directly.
 * A flusher belongs to the connection (one worker) that owns the bufferevent.
 *
 * A flusher with a callback (io_flusher_set_cb) runs that callback instead of
 * the default write, and is scheduled even while the write event is armed:
 * the TLS layer encrypts there, writes with io_flusher_write(), and
 * delivers its own events after the current callbacks. */
#ifndef SLUICE_IO_H
#define SLUICE_IO_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "io_types.h"

int io_flush_queue_init(struct io_flush_queue *q, struct event_base *base);
void io_flush_queue_free(struct io_flush_queue *q);

/* Returns 0, or -1 (nothing installed: the bufferevent keeps its usual writes).
 * Bytes already in the output are flushed soon. */
int io_flusher_init(struct io_flusher *f, struct io_flush_queue *q, struct bufferevent *bev);
/* The same without watching the output: an evbuffer callback runs on every
 * add and drain of the output and costs a callback entry per connection, so
 * an owner that knows where it adds bytes calls io_flusher_schedule() after
 * each add instead. */
int io_flusher_init_explicit(struct io_flusher *f, struct io_flush_queue *q, struct bufferevent *bev);
/* A flusher without a bufferevent: its turn runs cb (a connection that owns
 * its socket and buffers writes there itself, client.c). Cannot fail. */
void io_flusher_init_cb(struct io_flusher *f, struct io_flush_queue *q, io_flush_cb cb, void *arg);
/* Removes the callback and the event (safe on a zeroed or failed flusher). */
void io_flusher_free(struct io_flusher *f);
/* Call from the bufferevent's write callback: when the output is empty the
 * write event goes back to sleep so that the next message is written directly. */
void io_flusher_drained(struct io_flusher *f);
/* True if f is installed. */
bool io_flusher_active(const struct io_flusher *f);
/* Run cb (instead of the default write) when f's turn comes. */
void io_flusher_set_cb(struct io_flusher *f, io_flush_cb cb, void *arg);
/* Have f's turn come once the current callbacks are done (no-op if f is not installed). */
void io_flusher_schedule(struct io_flusher *f);
/* Write the output straight to the socket unless the write event is armed;
 * arms it if the socket would block. True when the output is empty. */
bool io_flusher_write(struct io_flusher *f);

/* Read into bev's input what the socket already holds, until the input holds
 * `limit` bytes. Only worth calling when the last read filled libevent's 4 KiB
 * step. EOF and errors are left for the bufferevent's own next read to report. */
void io_read_more(struct bufferevent *bev, size_t limit);

#endif
