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
