/* runtime.h - runtime state of pools, servers and service splits, kept
 * outside config snapshots and keyed by stable names (pool name + server
 * address, service name + pool name), so that it survives reloads.
 *
 * Threads: which entries exist is decided on the main thread only
 * (runtime_sync, at start and at reload), and only the main thread walks the
 * tables (admin socket, health checks, state file). An entry, once created,
 * never moves and lives until runtime_free(), so workers keep plain pointers
 * to entries (bound per snapshot in pool.c) and read them with atomic loads.
 * Per server: health, deployer marks (weight override, drain, disabled) and
 * live load (active requests, connections) are atomics (totals are in the
 * counter registry, counters.h); the breaker sits behind a small per-server mutex,
 * with its state, epoch and open-until time mirrored in atomics so that the
 * happy case (breaker closed) admits a request without taking the lock. */
#ifndef SLUICE_RUNTIME_H
#define SLUICE_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "conf.h"

enum runtime_health { RUNTIME_HEALTH_UP = 0, RUNTIME_HEALTH_DOWN = 1 };

struct runtime_server {
	char *address;
	atomic_uint config_weight; /* from the current snapshot */
	atomic_uint weight;        /* effective: the override if set, else config_weight */
	atomic_bool weight_set;    /* a deployer override is in place */
	atomic_bool drained;
	atomic_bool disabled;
	atomic_int health;         /* enum runtime_health; UP while no checks run */
	atomic_uint active_requests;
	atomic_uint connections;

	/* breaker: the struct under lock, mirrors for lock-free reads */
	pthread_mutex_t lock;
	struct breaker breaker;
	atomic_int breaker_state;          /* enum breaker_state */
	atomic_uint_fast64_t breaker_epoch;
	atomic_uint_fast64_t open_until_us;
};

/* Upper bounds (ms) of the upstream latency buckets of a pool's outcomes;
 * the last bucket takes everything above. */
#define RUNTIME_LATENCY_BUCKETS 16
extern const unsigned runtime_latency_bound_ms[RUNTIME_LATENCY_BUCKETS];

/* What a pool's attempts came to, since start: every attempt that got a
 * response head or failed (connect, reset, timeout, bad response), errors
 * (a 5xx answer or such a failure), and the time to the response head. The
 * rollout controller judges a pool on differences of these. Shaped as the
 * counter registry's per-pool request counts by class and latency histogram
 * will be (DESIGN.md "Counters"), so it can take them over. */
struct runtime_outcomes {
	atomic_uint_fast64_t attempts, errors;
	atomic_uint_fast64_t latency[RUNTIME_LATENCY_BUCKETS];
};
/* A plain copy, and the figures of the difference of two copies. */
struct runtime_figures {
	uint64_t attempts, errors;
	uint64_t latency[RUNTIME_LATENCY_BUCKETS];
};

struct runtime_pool {
	char *name;
	struct runtime_outcomes outcomes;
	struct runtime_server **servers; /* main thread only */
	size_t num_servers;
	struct runtime_server **server_index; /* by address, as struct runtime's indexes */
	size_t server_index_cap;
	atomic_uint active_requests;
	atomic_uint retries_inflight;
	atomic_uint pending;       /* requests waiting for a new connection to open */
	atomic_uint connections;   /* upstream connections open, all workers */
	atomic_uint idle;          /* of those, idle keep-alive connections waiting for a request */
};

/* One pool's share of one service. */
struct runtime_split {
	char *service, *pool;
	atomic_uint config_weight;
	atomic_uint weight;
	atomic_bool weight_set;
	/* blue-green memory: the weight before `ctl switch`, restored by
	 * `switch --back`; main thread only (workers read weight) */
	bool saved_set;
	unsigned saved_weight;
};

/* A rollout's progress as one line of rollout.c's words, by service; main
 * thread only: the state file writes and reads it, the controller drives it. */
struct runtime_rollout {
	char *service;
	char *line;
};

struct runtime {
	struct runtime_rollout *rollouts;
	size_t num_rollouts;
	struct runtime_pool **pools;
	size_t num_pools;
	struct runtime_split **splits;
	size_t num_splits;
	/* Hash indexes by pool name and by (service, pool) (and each pool's by
	 * server address), open addressing with
	 * linear probing, at most half full: finding an entry by name stays O(1),
	 * so a config of 50,000 pools starts in linear time (a linear search per
	 * pool made start-up quadratic). Owned here, rebuilt as they grow. */
	struct runtime_pool **pool_index;
	size_t pool_index_cap;
	struct runtime_split **split_index;
	size_t split_index_cap;
};

struct runtime *runtime_new(void);
void runtime_free(struct runtime *rt);
/* Make sure every pool, server and service split of c has an entry, and
 * take c's weights as the config weights (overrides stay). Main thread.
 * Returns 0, or -1 on out-of-memory. */
int runtime_sync(struct runtime *rt, const struct conf *c);

/* After a reload to c (main thread, after runtime_sync): what deployers set
 * on pools, servers and splits that c no longer has (weight overrides,
 * drains, disables, an open breaker) is dropped and logged once, one line
 * per entry. The entries themselves stay (an old snapshot's requests may
 * still use them) and come back clean if a later config names them again.
 * Returns how many entries had state dropped. */
size_t runtime_prune(struct runtime *rt, const struct conf *c);

struct runtime_pool *runtime_find_pool(const struct runtime *rt, const char *name);
struct runtime_server *runtime_find_server(const struct runtime_pool *p, const char *address);
struct runtime_split *runtime_find_split(const struct runtime *rt, const char *service, const char *pool);

/* May new requests go to this server (weight, marks, health, breaker not
 * open or its open time over)? Lock-free. */
bool runtime_server_usable(const struct runtime_server *s, uint64_t now_us);
/* The breaker, under the server's lock only when it is not closed.
 * *half_opened: this call moved it from open to half-open. */
enum breaker_admit runtime_breaker_admit(struct runtime_server *s, const struct conf_breaker *c, uint64_t now_us,
                                         uint64_t *epoch, bool *half_opened);
/* Returns true when the breaker changed state; *state gets the new state. */
bool runtime_breaker_record(struct runtime_server *s, const struct conf_breaker *c, uint64_t now_us, uint64_t epoch,
                            bool probe, enum breaker_outcome o, uint64_t duration_us, enum breaker_state *state);
void runtime_breaker_reset(struct runtime_server *s);
/* A consistent copy of the breaker and its window statistics. */
void runtime_breaker_read(struct runtime_server *s, const struct conf_breaker *c, uint64_t now_us, struct breaker *b,
                          struct breaker_stats *st);

/* Deployer changes (main thread). */
void runtime_set_weight(struct runtime_server *s, unsigned weight);
void runtime_clear_weight(struct runtime_server *s);
void runtime_set_split_weight(struct runtime_split *sp, unsigned weight);

/* Set every pool of service sv to weights[i] (its i-th pool), raising before
 * lowering so that no pick on a worker finds every weight at 0. */
void runtime_set_service_weights(struct runtime *rt, const struct conf *c, const struct conf_service *sv,
                                 const unsigned *weights);

/* One attempt's outcome on pool p (any worker; relaxed atomics). */
void runtime_outcome_record(struct runtime_pool *p, bool error, uint64_t latency_us);
void runtime_outcome_read(const struct runtime_pool *p, struct runtime_figures *f);
/* now - before, bucket by bucket. */
void runtime_figures_sub(const struct runtime_figures *now, const struct runtime_figures *before,
                         struct runtime_figures *d);
/* The upper bound (ms) of the bucket holding the q-quantile (0..1) of d's
 * latencies; 0 without attempts; UINT32_MAX past the last bound. */
unsigned runtime_figures_quantile_ms(const struct runtime_figures *d, double q);

/* The rollout line of service (NULL: none); set or replace it (line NULL
 * removes it). Returns -1 on out-of-memory. Main thread. */
const char *runtime_rollout_line(const struct runtime *rt, const char *service);
int runtime_set_rollout_line(struct runtime *rt, const char *service, const char *line);

/* Blue-green (main thread). runtime_switch() sets every pool of service sv
 * to weight 0 but `pool`, which gets RUNTIME_SWITCH_WEIGHT, and remembers
 * the weights before (a second switch keeps the first one's memory), for
 * runtime_switch_back() to restore. The stores are ordered so that no request
 * sees every weight at 0, and when `pool` already had a weight above 0 none
 * sees a mix: every pick after the call goes to `pool`. Returns false (and
 * changes nothing) when `pool` is not one of sv's pools. */
#define RUNTIME_SWITCH_WEIGHT 100
bool runtime_switch(struct runtime *rt, const struct conf *c, const struct conf_service *sv, const char *pool);
/* Restores the remembered weights and forgets them; false when sv is not switched. */
bool runtime_switch_back(struct runtime *rt, const struct conf *c, const struct conf_service *sv);
/* Does sv have a remembered split (a switch not yet undone)? */
bool runtime_switched(const struct runtime *rt, const struct conf *c, const struct conf_service *sv);
/* sv's split entry for its i-th pool (NULL only if runtime_sync failed). */
struct runtime_split *runtime_service_split(const struct runtime *rt, const struct conf *c,
                                            const struct conf_service *sv, size_t i);

#endif
