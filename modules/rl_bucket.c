#include "rl_bucket.h"

int rl_rate_init(struct rl_rate *r, uint64_t rate, uint64_t per_us, uint64_t burst)
{
	if (rate == 0 || per_us == 0 || burst == 0 || burst > RL_MAX_CAP / per_us)
		return -1;
	r->rate = rate;
	r->cost = per_us;
	r->cap = burst * per_us;
	return 0;
}

void rl_rate_split(struct rl_rate *out, const struct rl_rate *in, unsigned parts)
{
	if (parts == 0)
		parts = 1;
	/* rate/parts tokens per period = rate ticks per us at parts x the cost;
	 * the cap in ticks stays, which is burst/parts tokens at the new cost */
	out->rate = in->rate;
	out->cost = in->cost * parts;
	out->cap = in->cap > out->cost ? in->cap : out->cost;
}

static uint64_t ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

void rl_bucket_init(struct rl_bucket *b, const struct rl_rate *r, uint64_t now_us)
{
	b->level = r->cap;
	b->last_us = now_us;
}

void rl_bucket_advance(struct rl_bucket *b, const struct rl_rate *r, uint64_t now_us)
{
	if (b->level > r->cap)
		b->level = r->cap; /* the rate changed under us (split or unsplit) */
	if (now_us < b->last_us) {
		if (b->last_us - now_us > RL_BACKWARD_TOLERANCE_US)
			b->last_us = now_us;
		return;
	}
	uint64_t elapsed = now_us - b->last_us;
	b->last_us = now_us;
	uint64_t missing = r->cap - b->level;
	/* compare before multiplying: elapsed x rate may not fit in 64 bits */
	if (elapsed >= ceil_div(missing, r->rate))
		b->level = r->cap;
	else
		b->level += elapsed * r->rate;
}

uint64_t rl_bucket_take(struct rl_bucket *b, const struct rl_rate *r, uint64_t now_us, uint64_t n)
{
	rl_bucket_advance(b, r, now_us);
	uint64_t have = b->level / r->cost;
	uint64_t got = n < have ? n : have;
	b->level -= got * r->cost;
	return got;
}

uint64_t rl_bucket_tokens(const struct rl_bucket *b, const struct rl_rate *r)
{
	return b->level / r->cost;
}

uint64_t rl_bucket_wait_us(const struct rl_bucket *b, const struct rl_rate *r)
{
	if (b->level >= r->cost)
		return 0;
	return ceil_div(r->cost - b->level, r->rate);
}

uint64_t rl_bucket_full_us(const struct rl_bucket *b, const struct rl_rate *r)
{
	if (b->level >= r->cap)
		return 0;
	return ceil_div(r->cap - b->level, r->rate);
}

bool rl_lease_exact(uint64_t burst, unsigned instances)
{
	uint64_t n = instances ? instances : 1;
	return burst <= RL_LEASE_SHARE * n;
}

uint64_t rl_lease_want(uint64_t tokens_left, uint64_t burst, unsigned instances, uint64_t batch)
{
	if (rl_lease_exact(burst, instances))
		return 1;
	uint64_t n = instances ? instances : 1;
	uint64_t want = tokens_left / (RL_LEASE_SHARE * n);
	if (want > batch)
		want = batch;
	return want ? want : 1;
}

/* a bound far above any real rate (10^9 tokens/s) keeps the products below 2^64 */
#define RATE_MAX ((uint64_t)1000000000u * RL_RATE_SCALE)

uint64_t rl_use_rate(uint64_t old_rate, uint64_t used, uint64_t dt_us)
{
	if (dt_us == 0)
		dt_us = 1;
	if (used > RATE_MAX / 1000000u)
		used = RATE_MAX / 1000000u;
	uint64_t sample = used * 1000000u * RL_RATE_SCALE / dt_us;
	if (sample > RATE_MAX)
		sample = RATE_MAX;
	if (sample == 0)
		sample = 1; /* a use was seen: 0 stays "no estimate" */
	if (old_rate == 0)
		return sample;
	uint64_t next = (3 * old_rate + sample) / 4;
	return next ? next : 1;
}

/* tokens used in us microseconds at rate, rounded up; with rate <= 10^12 and
 * us <= 10^7 the product stays below 2^64 */
static uint64_t tokens_in(uint64_t rate, uint64_t us)
{
	if (rate > RATE_MAX)
		rate = RATE_MAX;
	if (us > 10000000u)
		us = 10000000u;
	return ceil_div(rate * us, 1000000u * (uint64_t)RL_RATE_SCALE);
}

uint64_t rl_lease_size(uint64_t cap, uint64_t rate, uint64_t rtt_us)
{
	if (cap == 0)
		cap = 1;
	if (rate == 0)
		return cap;
	uint64_t span = 2 * rtt_us > RL_LEASE_HORIZON_US ? 2 * rtt_us : RL_LEASE_HORIZON_US;
	uint64_t want = tokens_in(rate, span);
	if (want > cap)
		want = cap;
	return want ? want : 1;
}

uint64_t rl_lease_refill_at(uint64_t want, uint64_t rate, uint64_t rtt_us)
{
	uint64_t at = want / 2;
	uint64_t trip = tokens_in(rate, rtt_us + rtt_us / 2);
	if (trip > at)
		at = trip;
	if (want > 0 && at > want - 1)
		at = want - 1;
	return want ? at : 0;
}
