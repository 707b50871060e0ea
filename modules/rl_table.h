/* rl_table.h - the process-wide table of rate-limit buckets for one limit,
 * shared by every worker of the process (so a local limit holds exactly
 * across workers, with no per-worker split of the rate).
 *
 * Bounded: a fixed number of slots allocated up front, organised as 8-way
 * sets. A key goes into its set's free slot, else into a slot idle for longer
 * than idle_us (its bucket would be full again, so forgetting it changes
 * nothing: counted as expired), else it evicts the set's least recently used
 * entry (counted as evicted, in the caller's counter set). A flood of distinct keys therefore costs a fixed
 * amount of memory and evicts only within the sets it lands on.
 *
 * Locking: each set belongs to one of up to 256 mutexes. acquire() returns
 * the entry locked; the caller does a few arithmetic steps on it and calls
 * release(). Never keep an entry pointer past release(): the slot may be
 * reused for another key. Keys longer than RL_KEY_MAX must be shortened by
 * the caller (ratelimit.c replaces them with a digest). */
#ifndef SLUICE_RL_TABLE_H
#define SLUICE_RL_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_bucket.h"

#define RL_KEY_MAX 96

/* What one process holds for one key of one limit. */
struct rl_entry {
	uint64_t hash;    /* 0: free slot */
	uint64_t used_us; /* last acquire (monotonic) */
	struct rl_bucket bucket; /* a local limit's bucket, or a shared limit's fallback bucket */
	/* shared limits: tokens leased from Redis and what Redis last said */
	uint64_t lease;           /* tokens this process may still admit without asking */
	uint64_t lease_until_us;  /* leased tokens unused by then are dropped */
	uint64_t deny_until_us;   /* Redis said it has no token before then: deny locally until then */
	uint64_t refill_since_us; /* a take that will feed the lease is in flight since then (0: none) */
	uint64_t want;            /* tokens to ask for next time (shrinks near the limit) */
	uint64_t remote_tokens;   /* tokens left in Redis after the last grant */
	uint64_t remote_full_us;  /* Redis bucket full again at this local time */
	uint64_t reply_us;        /* last answer from Redis (0: none yet, a cold key) */
	uint64_t use_rate;        /* tokens this process asks for, per 1000 s (rl_use_rate; 0: unmeasured) */
	uint64_t use_mark_us;     /* start of the window use_count counts in */
	uint32_t use_count;       /* tokens asked for since use_mark_us */
	uint32_t refill_at;       /* refill ahead when the lease falls to this (rl_lease_refill_at) */
	uint8_t key_len;
	char key[RL_KEY_MAX];
};

struct rl_table;
struct ctr_worker;

/* Returns NULL when out of memory. */
struct rl_table *rl_table_new(size_t max_keys, uint64_t idle_us);
void rl_table_free(struct rl_table *t);

/* Tables by limit name, so that buckets survive reloads (runtime state keyed
 * by name, outside snapshots). rl_table_get() returns the process's table
 * for name when one with the same shape (max_keys, idle_us and fingerprint:
 * whatever makes a bucket mean something else, e.g. rate, per, burst) exists,
 * with one more reference, else a new table with one reference (NULL when out
 * of memory); rl_table_put() drops a reference and frees the table with the
 * last. The registry is the module's one piece of global state: a list under
 * a mutex, touched only when snapshots are built and freed. */
struct rl_table *rl_table_get(const char *name, size_t max_keys, uint64_t idle_us, uint64_t fingerprint);
void rl_table_put(struct rl_table *t);

/* Locks and returns the entry for key[0..len) (len <= RL_KEY_MAX), creating
 * it (zeroed except hash, key and used_us; *fresh = true) when absent. A
 * key it forgets to make room is counted (expired or evicted) in counters,
 * the calling thread's counter set (counters.h; NULL: not counted). */
struct rl_entry *rl_table_acquire(struct rl_table *t, const char *key, size_t len, uint64_t now_us, bool *fresh,
                                  struct ctr_worker *counters);
/* Locks and returns the entry for key if present, else NULL (nothing locked). */
struct rl_entry *rl_table_find(struct rl_table *t, const char *key, size_t len);
void rl_table_release(struct rl_table *t, struct rl_entry *e);

size_t rl_table_slots(const struct rl_table *t);

#endif
