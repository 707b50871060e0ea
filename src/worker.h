/* worker.h - a worker thread: one libevent event_base, its own SO_REUSEPORT
 * listening socket per listener, and everything the requests it serves need
 * (route scratch, upstream pools, module state, free lists).
 *
 * A connection lives and dies on one worker. Nothing in a struct worker is
 * touched by another thread except through the two events the server fires
 * (shutdown, force stop), which libevent makes thread-safe. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "io_types.h"

struct server;
struct snapshot;
struct route_scratch;
struct pool_set;
struct client_conn;
struct exchange;

#define WORKER_CMD_SHUTDOWN 1u /* stop accepting, drain */
#define WORKER_CMD_STOP 2u     /* drain time is over: close everything */

struct worker {
	unsigned id;
	struct server *server;
	pthread_t thread;
	bool thread_started;
	struct event_base *base;
	struct snapshot *snap; /* the snapshot new requests start on (one reference) */

	int *listen_fds; /* one per listener, owned until handed to an evconnlistener */
	struct evconnlistener **listeners;
	void *listener_ctx; /* per listener: which worker and listener an accept belongs to */
	size_t num_listeners;

	/* The server's commands arrive through an eventfd (the worker's base has no
	 * locks, so other threads must not touch its events): the main thread sets
	 * bits in `commands` and writes the eventfd. */
	int command_fd;
	atomic_uint commands; /* WORKER_CMD_* bits */
	struct event *command_ev;

	struct route_scratch *route_scratch;
	struct pool_set *pools;
	void **module_state; /* per module */

	struct client_conn *conns; /* every open client connection (doubly linked) */
	unsigned num_conns;
	unsigned max_conns;
	bool accepting_paused;
	bool draining;

	struct tls_worker *tls; /* tls_accept.h: handshakes in progress, h2c sniffing, failure counts */
	struct h2_worker *h2;   /* h2.h: HTTP/2 sessions, defence counts */
	uint64_t trailer_fields_dropped; /* trailer fields not forwarded (h1_trailer_field_allowed), logged at exit */

	struct io_flush_queue flush_queue; /* direct writes waiting for the end of the current callbacks (io.h) */

	struct exchange *free_reqs; /* recycled per-request objects (pipeline.h) */
	unsigned num_free_reqs;

	uint64_t rng_state;

	/* libevent "common timeouts": a duration used by many events is queued in
	 * O(1) instead of the timer heap; one per distinct configured duration */
	struct {
		uint64_t ms;
		const struct timeval *tv;
	} common_timeouts[16];
	size_t num_common_timeouts;
};

/* Set up w (event base, listeners on the given fds, per-worker state) for snapshot s.
 * Returns 0, or -1 after logging why. */
int worker_init(struct worker *w, struct server *srv, unsigned id, struct snapshot *s, int *listen_fds,
                size_t num_listeners, unsigned max_conns);
int worker_start(struct worker *w);
void worker_join(struct worker *w);
void worker_destroy(struct worker *w);

/* Thread-safe (any thread): ask the worker to stop accepting and finish in-flight requests. */
void worker_request_shutdown(struct worker *w);
/* Thread-safe: drain time is over, close everything now. */
void worker_request_stop(struct worker *w);

/* Wall-clock time in microseconds, read through the vDSO (no system call). */
uint64_t worker_wall_us(struct worker *w);
/* Monotonic time in microseconds (vDSO), for deadlines. */
uint64_t worker_mono_us(struct worker *w);

/* The timeval to use for a timeout of ms on this worker's events (a common
 * timeout when the worker has room for one more, else a plain timeval). */
struct timeval worker_timeval(struct worker *w, uint64_t ms);

/* A fast per-worker pseudo-random number (not for secrets). */
uint64_t worker_random(struct worker *w);

/* A client connection closed: lets the worker resume accepting or finish draining. */
void worker_conn_closed(struct worker *w);

#endif
