/* io.h - direct writes for socket bufferevents.
 *
 * A libevent socket bufferevent writes only from its write event: every
 * response costs an epoll_ctl to arm EPOLLOUT, an extra loop wakeup, and an
 * epoll_ctl to disarm it. An io_flusher instead notices bytes added to the
 * output (an evbuffer callback), and once the current callbacks are done (an
 * active event, no system call to schedule it) writes them straight to the
 * socket. The write event is armed only when the socket would block, and
 * disarmed again by io_flusher_drained() once the output is empty.
 *
 * Only for plain sockets: a TLS bufferevent's fd must never be written to.
 * The flusher belongs to the connection (one worker) that owns the bufferevent. */
#ifndef SLUICE_IO_H
#define SLUICE_IO_H

#include <stdbool.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

struct io_flusher {
	struct bufferevent *bev;
	struct event *ev;
	struct evbuffer_cb_entry *cb;
	/* called after a direct write left the output at or below the write low-water
	 * mark: the same thing the bufferevent's write callback would have seen */
	void (*drained)(struct bufferevent *bev, void *arg);
	void *arg;
	bool scheduled;
};

/* Returns 0, or -1 (nothing installed: the bufferevent keeps its usual writes). */
int io_flusher_init(struct io_flusher *f, struct event_base *base, struct bufferevent *bev,
                    void (*drained)(struct bufferevent *, void *), void *arg);
/* Removes the callback and the event; the bufferevent is left to the caller. */
void io_flusher_free(struct io_flusher *f);
/* Call from the bufferevent's write callback: when the output is empty the
 * write event goes back to sleep so that the next response is written directly. */
void io_flusher_drained(struct io_flusher *f);

#endif
