/* rl_bucket.h - token-bucket arithmetic in integers, exact and clock-jump safe.
 *
 * Units: a bucket level counts "ticks". One token costs `cost` ticks (the
 * period in microseconds); every elapsed microsecond adds `rate` ticks; the
 * level never exceeds `cap` ticks (burst x period). So `rate` tokens per
 * period accrue without rounding or drift, and the Redis-side script
 * (lua/redis/ratelimit.lua) does the very same sums on Redis's clock.
 *
 * Clock rules: time going forward refills (at most to cap, so a forward jump
 * admits no more than the burst); a small step backwards (up to
 * RL_BACKWARD_TOLERANCE_US, e.g. two threads' reads racing) is ignored and
 * keeps the newer timestamp; a larger step backwards re-bases the bucket on
 * the new clock without refilling.
 *
 * Pure functions on caller-owned structs; no locking (rl_table.h locks). */
#ifndef SLUICE_RL_BUCKET_H
#define SLUICE_RL_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

#define RL_BACKWARD_TOLERANCE_US 1000000u
/* cap must stay exact in Redis's Lua numbers (doubles) */
#define RL_MAX_CAP ((uint64_t)1 << 53)

struct rl_rate {
	uint64_t rate; /* ticks added per microsecond (= tokens per period) */
	uint64_t cost; /* ticks per token (= period in microseconds) */
	uint64_t cap;  /* most ticks held (= burst x period) */
};

struct rl_bucket {
	uint64_t level;   /* ticks */
	uint64_t last_us; /* when level was last brought up to date */
};

/* rate tokens per per_us, burst tokens at most. Returns 0, or -1 when a
 * value is zero or burst x per_us exceeds RL_MAX_CAP. */
int rl_rate_init(struct rl_rate *r, uint64_t rate, uint64_t per_us, uint64_t burst);
/* The same limit split over `parts` holders (1 when 0): rate/parts and
 * burst/parts in exact ticks, but never a bucket too small for one token. */
void rl_rate_split(struct rl_rate *out, const struct rl_rate *in, unsigned parts);

/* A full bucket at now_us. */
void rl_bucket_init(struct rl_bucket *b, const struct rl_rate *r, uint64_t now_us);
/* Brings the level up to now_us under the clock rules above. */
void rl_bucket_advance(struct rl_bucket *b, const struct rl_rate *r, uint64_t now_us);
/* Advances, then takes up to n whole tokens; returns how many it took. */
uint64_t rl_bucket_take(struct rl_bucket *b, const struct rl_rate *r, uint64_t now_us, uint64_t n);
/* Whole tokens in the bucket (as of its last advance). */
uint64_t rl_bucket_tokens(const struct rl_bucket *b, const struct rl_rate *r);
/* Microseconds until one whole token is there (0 if one is). */
uint64_t rl_bucket_wait_us(const struct rl_bucket *b, const struct rl_rate *r);
/* Microseconds until the bucket is full again (0 if it is). */
uint64_t rl_bucket_full_us(const struct rl_bucket *b, const struct rl_rate *r);

/* Shared limits' lease policy (docs/rate-limiting.md, "Accuracy bound").
 * A batch is the tokens left in Redis divided by RL_LEASE_SHARE x instances:
 * what every instance holds at once then stays a small share of the burst. */
#define RL_LEASE_SHARE 8u
/* Exact mode: a burst so small that even a full bucket gives batches of one
 * token (burst <= RL_LEASE_SHARE x instances). Nothing is leased ahead then:
 * every admitted request takes its own token from Redis, so such limits
 * (logins) never over-admit and never strand tokens in idle instances. */
bool rl_lease_exact(uint64_t burst, unsigned instances);
/* The next batch: tokens_left / (RL_LEASE_SHARE x instances), at least 1,
 * at most batch; 1 in exact mode. instances 0 counts as 1. */
uint64_t rl_lease_want(uint64_t tokens_left, uint64_t burst, unsigned instances, uint64_t batch);

/* Lease sizing from what the process measures (docs/rate-limiting.md,
 * "Shared limits: leases"). Consumption rates are in tokens per 1000 s
 * (RL_RATE_SCALE per token per second), so slow keys keep a resolution.
 *
 * rl_use_rate(): the next estimate after `used` tokens in dt_us (an
 * exponentially weighted mean, a quarter weight per sample; old_rate 0: no
 * estimate yet, the sample is taken whole).
 *
 * rl_lease_size(): the next batch for a process that uses rate and waits
 * rtt_us for Redis: what lasts RL_LEASE_HORIZON_US at that rate (so no
 * token is leased that the lease's TTL would drop), but never less than two
 * round trips' worth, and never more than cap (rl_lease_want(): the batch
 * and the burst share); cap while nothing is measured (rate 0).
 *
 * rl_lease_refill_at(): refill when the lease falls to this: half a batch, or
 * earlier when what is left lasts less than about 1.5 round trips at rate;
 * at most want - 1, so a process holds at most 2 x want - 1 tokens. */
#define RL_RATE_SCALE 1000u
#define RL_RATE_WINDOW_US 20000u
#define RL_LEASE_HORIZON_US 5000000u
uint64_t rl_use_rate(uint64_t old_rate, uint64_t used, uint64_t dt_us);
uint64_t rl_lease_size(uint64_t cap, uint64_t rate, uint64_t rtt_us);
uint64_t rl_lease_refill_at(uint64_t want, uint64_t rate, uint64_t rtt_us);

#endif
