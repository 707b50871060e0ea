/* pool.h - a worker's view of the upstream pools of one snapshot (a pool
 * set: per-(snapshot, worker) state, worker.h): balancing state and
 * keep-alive connections to each server.
 *
 * Across reloads a pool set is bound by name, never by another snapshot's
 * numbers: its runtime entries are found by pool name + server address, and
 * when a worker adopts a new snapshot, the idle connections of the old set
 * move to the server of the same pool name and address in the new set
 * (pool_set_take_idle); a busy connection of an old set that comes back
 * after that goes to the current set the same way (pool_release). Idle
 * connections therefore only ever wait in the worker's current set.
 *
 * Everything here belongs to one worker (no locks). Idle connections wait in
 * a per-server LIFO list (the most recently used connection is the warmest);
 * while idle, a connection watches for the upstream closing it or sending
 * anything (both mean it must not be reused) and for its idle timeout, and
 * frees itself when any of these happens.
 *
 * Deadlines: a connection has one at a time (idle, connect or response), on
 * a per-pool, per-kind queue (conn_timer.h: every deadline of a queue has the
 * pool's duration of that kind, so setting one is an unlink and an append,
 * not a libevent timer re-add per request). Busy deadlines run the owner's
 * on_deadline callback; the idle one frees the connection.
 *
 * Reads: once a plaintext connection is up (pool_conn_own_reads), it is read
 * by its own event with one fixed-size read(2) into the bufferevent's input,
 * not by libevent's evbuffer_read, which asks ioctl(FIONREAD) first on every
 * read; the bufferevent's read and event callbacks run as libevent would run
 * them, so owners see no difference. Start and stop reading through
 * pool_conn_read(). */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>

#include "conn_timer.h"
#include "io.h"

#include "conf.h"

struct worker;
struct pool_state;
struct balance_ring;
struct runtime;
struct runtime_pool;
struct runtime_server;
struct runtime_split;

enum pool_deadline {
	POOL_DL_IDLE,     /* pools[N].keepalive.idle_timeout, while idle-listed */
	POOL_DL_CONNECT,  /* pools[N].timeouts.connect (TCP connect and TLS handshake) */
	POOL_DL_RESPONSE, /* pools[N].timeouts.response, from the owner's last sign of progress */
	POOL_DL_KINDS
};

struct upstream_conn;
typedef void (*pool_deadline_cb)(struct upstream_conn *uc, enum pool_deadline kind);

struct upstream_conn {
	struct bufferevent *bev;
	struct pool_state *pool;
	size_t server;
	struct upstream_conn *prev, *next; /* idle list links */
	unsigned requests;                 /* requests sent on this connection */
	bool idle;
	void *owner; /* the proxy transaction using it, NULL when idle */
	struct io_flusher flusher; /* direct writes once connected (plain sockets only) */
	struct event *rev;         /* own reads (plaintext, once connected); NULL: the bufferevent reads */
	bool reading;              /* rev is added */
	struct conn_timer timer;   /* the one deadline (enum pool_deadline), on the pool's queue */
	pool_deadline_cb on_deadline; /* the owner's, for the busy kinds */
	uint64_t active_us;        /* owner's use: last progress (monotonic) */
	size_t out_seen;           /* owner's use: output length when progress was last checked */
};

struct pool_server_state {
	struct upstream_conn *idle;
	unsigned num_idle;
	unsigned open; /* connections open (idle or busy) */
};

struct pool_state {
	struct worker *worker;
	struct pool_set *set;
	const struct conf_pool *conf;
	struct pool_server_state *servers;
	int64_t *swrr_current;
	unsigned *weights;
	unsigned *active; /* scratch: in-flight requests per server (all workers), loaded for least_conn */
	bool *eligible;
	size_t lc_cursor;
	/* shared runtime state (runtime.h), bound by name when the set is built */
	struct runtime_pool *rt;
	struct runtime_server **rs; /* per server, conf order */
	struct conn_timer_queue dl[POOL_DL_KINDS]; /* its connections' deadlines, per kind */
};

struct pool_set {
	struct pool_state *pools;
	size_t num_pools;
	struct runtime_split ***splits; /* per service, per entry of its pools[] */
	size_t num_services;
	struct event *sweep_ev; /* closes idle connections to servers taken out of rotation */
	bool retired;           /* no longer the worker's current set: released connections move on */
};

/* What pool_pick_server chose, or why nothing. */
struct pool_pick {
	int server;            /* -1: none */
	bool probe;            /* admitted as a half-open breaker probe */
	uint64_t epoch;        /* the breaker epoch to report the outcome with */
	bool breaker_open;     /* none: every otherwise usable server has its breaker open */
	unsigned retry_after;  /* none: seconds until one may be back (at least 1) */
};

/* The pool set of c for worker w, bound by name to the entries of rt (which
 * runtime_sync() made for c). NULL on out-of-memory or a missing entry. */
struct pool_set *pool_set_new(struct worker *w, struct runtime *rt, const struct conf *c);
/* Closes every idle connection. Busy connections must have been released first. */
void pool_set_free(struct pool_set *ps);
/* Moves every idle connection of from to the server with the same pool name
 * and address in to (when both pools are plaintext and to has room), closes
 * the others, and marks from retired. Returns how many moved. */
unsigned pool_set_take_idle(struct pool_set *to, struct pool_set *from);
/* The pool of ps named name, or NULL. */
struct pool_state *pool_set_find(struct pool_set *ps, const char *name);

/* Choose a server: round robin / least connections, or the hash ring when
 * the pool hashes and a key was found (has_key), among the servers the
 * runtime state allows (weight, drain, disabled, health, breaker) and not in
 * avoid (bit i: server i, for retries). Takes a breaker probe slot when the
 * chosen server is half-open. out->server is -1 when none can be used. */
void pool_pick_server(struct pool_state *p, const struct balance_ring *ring, bool has_key, uint64_t key_hash,
                      uint64_t avoid, struct pool_pick *out);

/* An idle connection to the server, or NULL. The caller owns it until it
 * hands it back with pool_release() or frees it with upstream_conn_free(). */
struct upstream_conn *pool_take_idle(struct pool_state *p, size_t server);
/* A new, not yet connected, connection object for server (socket created). NULL on error. */
struct upstream_conn *pool_new_conn(struct pool_state *p, size_t server);
/* Give a healthy connection (response complete, nothing pending) back for reuse;
 * frees it instead when the idle list is full or the worker is draining. */
void pool_release(struct upstream_conn *uc);
void upstream_conn_free(struct upstream_conn *uc);
/* A plaintext connection just connected: its reads move off the bufferevent
 * onto an own event (reading on). Returns 0, or -1: the bufferevent keeps them. */
int pool_conn_own_reads(struct upstream_conn *uc);
/* Start or stop reading uc, whoever reads it. Returns 0 or -1. */
int pool_conn_read(struct upstream_conn *uc, bool on);
/* Give a busy connection the deadline `kind` (POOL_DL_CONNECT or
 * POOL_DL_RESPONSE) at from_us + the pool's duration of that kind, replacing
 * any it had; uc->on_deadline(uc, kind) runs when it passes. */
void pool_conn_deadline(struct upstream_conn *uc, enum pool_deadline kind, uint64_t from_us);
/* The pool's duration of kind, in microseconds. */
uint64_t pool_deadline_us(const struct pool_state *p, enum pool_deadline kind);

#endif
