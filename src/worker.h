/* worker.h - a worker thread: one libevent event_base, its own SO_REUSEPORT
 * listening socket per listener, and everything the requests it serves need
 * (route scratch, upstream pools, module state, free lists).
 *
 * A connection lives and dies on one worker. Nothing in a struct worker is
 * touched by another thread except through its command channel: the server
 * sets bits in `commands` (shutdown, force stop, adopt) and writes the
 * worker's eventfd; a new snapshot waits in the atomic `pending` pointer.
 *
 * Snapshots: the worker's current snapshot (w->snap) is the one new requests
 * start on. For each snapshot it still serves, the worker keeps its
 * per-(snapshot, worker) state (struct worker_gen: the pool set, pool.h),
 * built when it adopts the snapshot and bound by name. A request enters the
 * current generation when its head arrives (worker_snap_enter) and leaves it
 * when it is logged (worker_snap_leave); the proxy finds the pool set of the
 * request's snapshot with worker_pools(). When a worker adopts a new
 * snapshot, idle upstream connections move over by name and the old
 * generation is freed when its last request leaves; its snapshot reference
 * is dropped on the worker, and the snapshot's reaper (snapshot.h) frees it
 * on the main thread. Module worker state stays per worker and is told of
 * each adopted snapshot (module.h worker_adopt). */
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
struct addrcount_shared;
struct snapshot;
struct route_scratch;
struct pool_set;
struct client_conn;
struct client_worker;
struct exchange;
struct ctr_worker;

#define WORKER_CMD_SHUTDOWN 1u /* stop accepting, drain */
#define WORKER_CMD_STOP 2u     /* drain time is over: close everything */
#define WORKER_CMD_ADOPT 4u    /* a new snapshot waits in `pending` */
#define WORKER_CMD_HANDOVER 8u /* with SHUTDOWN: a new process took the sockets (keep idle keep-alive connections) */

/* Per-(snapshot, worker) state. */
struct worker_gen {
	struct snapshot *snap;   /* one reference */
	struct pool_set *pools;  /* bound by name to the runtime entries */
	unsigned users;          /* requests that started on snap, +1 while it is the current one */
	struct worker_gen *next; /* the next older generation still in use */
};

struct worker {
	unsigned id;
	struct server *server;
	pthread_t thread;
	bool thread_started;
	struct event_base *base;
	struct snapshot *snap; /* the snapshot new requests start on (= gen->snap) */
	struct worker_gen *gen; /* current generation first, then older ones still in use */
	_Atomic(struct snapshot *) pending; /* published, not adopted yet (one reference) */
	atomic_uint_fast64_t adopted; /* generation of the snapshot adopted last (read by the server) */

	/* listeners by the process's number (conf.h id): the ones this worker
	 * accepts on, and retired ones (worker.c); worker thread only */
	struct worker_listener *listeners;
	struct worker_listener *added; /* queued by reloads, not adopted yet (under added_lock) */
	pthread_mutex_t added_lock;

	/* The server's commands arrive through an eventfd (the worker's base has no
	 * locks, so other threads must not touch its events): the main thread sets
	 * bits in `commands` and writes the eventfd. */
	int command_fd;
	atomic_uint commands; /* WORKER_CMD_* bits */
	struct event *command_ev;

	struct route_scratch *route_scratch;
	void **module_state; /* per module */

	/* open client connections per client address, the process's (the
	 * server's, shared by every worker; addrcount.h): each connection holds
	 * one of its address's from admission to close (worker_conn_hold_*) */
	struct addrcount_shared *conns_by_addr;
	/* HTTP/2 uploads per client address, the process's too (server_uploads_by_addr) */
	struct addrcount_shared *uploads_by_addr;
	bool conn_hold_offered; /* a hold waits for the connection object being made to take it */
	uint64_t conn_refused_logged_us;  /* the last "connection refused" line (max_connections_per_client) */
	unsigned conn_refused_unlogged;   /* refusals since, not logged */
	struct client_conn *conns; /* every open client connection (doubly linked) */
	struct client_worker *client; /* client.c's deadline queues and buffer pool */
	unsigned num_conns;
	unsigned max_conns;
	atomic_uint max_conns_next; /* set by a reload (limits.max_connections), taken when the worker adopts */
	bool accepting_paused;
	bool draining;
	/* draining for a binary upgrade: no keep-alive connection is closed under
	 * a client that may be sending on it; its next answer says connection:
	 * close (or its keepalive_timeout or the drain timeout ends it) */
	bool handover;

	struct tls_worker *tls; /* tls_accept.h: handshakes in progress, h2c sniffing, failure counts */
	struct h2_worker *h2;   /* h2.h: HTTP/2 sessions, defence counts */

	struct io_flush_queue flush_queue; /* direct writes waiting for the end of the current callbacks (io.h) */

	struct exchange *free_reqs; /* recycled per-request objects (pipeline.h) */
	unsigned num_free_reqs;

	uint64_t rng_state;
	struct ctr_worker *counters; /* this worker's counter slots (counters.h), owned by the registry */

	/* libevent "common timeouts": a duration used by many events is queued in
	 * O(1) instead of the timer heap; one per distinct configured duration */
	struct {
		uint64_t ms;
		const struct timeval *tv;
	} common_timeouts[16];
	size_t num_common_timeouts;
};

/* Set up w (event base, per-worker state, an accept event per listener of s
 * on listen_fds[i], in s's order) for snapshot s. Each socket watched is the
 * worker's (its slot set to -1); the caller closes the rest. Returns 0, or
 * -1 after logging why. */
int worker_init(struct worker *w, struct server *srv, unsigned id, struct snapshot *s, int *listen_fds,
                unsigned max_conns);
int worker_start(struct worker *w);
void worker_join(struct worker *w);
void worker_destroy(struct worker *w);

/* Thread-safe (any thread): ask the worker to stop accepting and finish in-flight requests. */
void worker_request_shutdown(struct worker *w);
/* Thread-safe: as worker_request_shutdown, for a binary upgrade (upgrade.h). */
void worker_request_handover(struct worker *w);
/* Thread-safe: drain time is over, close everything now. */
void worker_request_stop(struct worker *w);
/* Thread-safe, before publishing the snapshot (of that generation) that has
 * it: a socket (owned from here on) for the listener numbered id (a reload
 * added or changed it). The worker listens on it once it adopts that
 * snapshot or a later one that still has the listener, else closes it.
 * Adopting a snapshot without a listener the worker accepts on stops
 * accepting there and drains its connections (worker.c). */
void worker_add_listener(struct worker *w, unsigned id, const char *name, int fd, uint64_t generation);
/* Worker thread: the name of the listener numbered id, also one a reload
 * removed since ("" if the worker never had it). */
const char *worker_listener_name(const struct worker *w, unsigned id);
/* Thread-safe, before publishing a snapshot: the worker's share of
 * limits.max_connections from that snapshot on. */
void worker_set_max_conns(struct worker *w, unsigned max_conns);
/* Thread-safe: hand the worker snapshot s (takes a reference for it); the
 * worker adopts it from its loop and then stores s->generation in `adopted`.
 * A snapshot published before and not adopted yet is replaced. */
void worker_publish(struct worker *w, struct snapshot *s);

/* Worker thread: a request starts on the current snapshot, which it returns;
 * the caller must pass it to worker_snap_leave() when the request ends. */
struct snapshot *worker_snap_enter(struct worker *w);
void worker_snap_leave(struct worker *w, const struct snapshot *s);
/* The pool set of snapshot s on this worker (s entered and not left yet). */
struct pool_set *worker_pools(struct worker *w, const struct snapshot *s);
/* The current generation's pool set. */
struct pool_set *worker_current_pools(struct worker *w);

/* The timeval to use for a timeout of ms on this worker's events (a common
 * timeout when the worker has room for one more, else a plain timeval). */
struct timeval worker_timeval(struct worker *w, uint64_t ms);

/* A fast per-worker pseudo-random number (not for secrets). */
uint64_t worker_random(struct worker *w);

/* A client connection closed: lets the worker resume accepting or finish draining. */
void worker_conn_closed(struct worker *w);

/* Per-address connection counts (limits.max_connections_per_client): a
 * connection's place in its address's count is taken when the worker admits
 * it at accept and held, by whichever object carries the connection (a TLS
 * handshake or h2c sniff, an HTTP/1 connection, an HTTP/2 session), until
 * the last one is freed. Passed on, never given back and taken again, so the
 * count neither dips (letting another worker admit one too many) nor doubles
 * (refusing one too early). Worker thread. ip: the client's address as
 * client_origin_from_sockaddr writes it. */
/* Before calling what makes the next object (an accept path, the TLS
 * dispatcher): the hold the caller has is offered to it. */
void worker_conn_hold_offer(struct worker *w);
/* After that call: an offer no object took is given back. */
void worker_conn_hold_settle(struct worker *w, const char *ip);
/* An object starts carrying a connection (where it counts in num_conns). */
void worker_conn_hold_take(struct worker *w, const char *ip);
/* It is freed without passing the connection on. */
void worker_conn_hold_release(struct worker *w, const char *ip);

#endif
