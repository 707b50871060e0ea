/* io_types.h - the types of io.h alone: a worker embeds its flush queue and
 * a connection its flusher, and the per-worker context (worker.h) sits below
 * the transport in the layers (scripts/check-layers), so it includes these
 * types, not the functions of io.h. Fields are io.c's to use. */
#ifndef SLUICE_IO_TYPES_H
#define SLUICE_IO_TYPES_H

#include <stdbool.h>

struct event;
struct bufferevent;
struct evbuffer_cb_entry;

/* One per worker: the flushers with bytes to write, and the one event that
 * writes them all once the current callbacks are done (a per-connection event
 * would cost ~150 bytes of every idle connection). */
struct io_flush_queue {
	struct event *ev;
	struct io_flusher *head;
};

struct io_flusher;
typedef void (*io_flush_cb)(struct io_flusher *f, void *arg);

struct io_flusher {
	struct bufferevent *bev;        /* NULL: io_flusher_init_cb */
	struct io_flush_queue *queue;
	struct evbuffer_cb_entry *cb;   /* watches the output; NULL: the owner schedules (io_flusher_init_explicit) */
	struct io_flusher *prev, *next; /* in queue while scheduled */
	io_flush_cb flush_cb;           /* NULL: write, then the bufferevent's write callback */
	void *flush_arg;
	bool scheduled;
	bool on;                        /* installed (io_flusher_init or _init_explicit) */
};

#endif
