#include "breaker.h"

#include <string.h>

/* A disabled breaker still reports a recent error rate over this window. */
#define BREAKER_DEFAULT_WINDOW_US (10ull * 1000 * 1000)

static uint64_t window_us(const struct conf_breaker *c)
{
	return c->enabled && c->window ? c->window * 1000 : BREAKER_DEFAULT_WINDOW_US;
}

static uint64_t bucket_width(const struct conf_breaker *c)
{
	uint64_t w = window_us(c) / BREAKER_BUCKETS;
	return w ? w : 1;
}

void breaker_init(struct breaker *b)
{
	memset(b, 0, sizeof(*b));
	b->state = BREAKER_CLOSED;
	b->epoch = 1;
}

static void clear_window(struct breaker *b)
{
	memset(b->buckets, 0, sizeof(b->buckets));
	b->consecutive = 0;
}

static void transition(struct breaker *b, enum breaker_state to)
{
	b->state = to;
	b->epoch++;
	b->probes_issued = 0;
	b->probes_ok = 0;
}

static void open_breaker(struct breaker *b, const struct conf_breaker *c, uint64_t now_us, bool reopen,
                         enum breaker_trigger why)
{
	uint64_t base = c->open_for * 1000, cap = c->max_open_for * 1000;
	if (cap < base)
		cap = base;
	if (!reopen || b->open_for_us == 0)
		b->open_for_us = base;
	else
		b->open_for_us = b->open_for_us > cap / 2 ? cap : b->open_for_us * 2;
	b->open_until_us = now_us + b->open_for_us;
	b->trips++;
	b->last_trigger = why;
	clear_window(b);
	transition(b, BREAKER_OPEN);
}

enum breaker_admit breaker_admit(struct breaker *b, const struct conf_breaker *c, uint64_t now_us, uint64_t *epoch)
{
	*epoch = b->epoch;
	if (!c->enabled || b->state == BREAKER_CLOSED)
		return BREAKER_ADMIT;
	if (b->state == BREAKER_OPEN) {
		if (now_us < b->open_until_us)
			return BREAKER_DENY;
		transition(b, BREAKER_HALF_OPEN);
		*epoch = b->epoch;
	}
	if (b->probes_issued >= c->half_open_probes)
		return BREAKER_DENY;
	b->probes_issued++;
	return BREAKER_ADMIT_PROBE;
}

void breaker_window(const struct breaker *b, const struct conf_breaker *c, uint64_t now_us, struct breaker_stats *s)
{
	uint64_t width = bucket_width(c);
	uint64_t slot = now_us / width + 1;
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < BREAKER_BUCKETS; i++) {
		const struct breaker_bucket *k = &b->buckets[i];
		if (k->slot == 0 || k->slot > slot || slot - k->slot >= BREAKER_BUCKETS)
			continue;
		s->total += k->total;
		s->failures += k->failures;
		s->slow += k->slow;
	}
}

static void count(struct breaker *b, const struct conf_breaker *c, uint64_t now_us, bool failure, bool slow)
{
	uint64_t slot = now_us / bucket_width(c) + 1;
	struct breaker_bucket *k = &b->buckets[slot % BREAKER_BUCKETS];
	if (k->slot != slot) {
		k->slot = slot;
		k->total = k->failures = k->slow = 0;
	}
	k->total++;
	k->failures += failure;
	k->slow += slow;
}

bool breaker_record(struct breaker *b, const struct conf_breaker *c, uint64_t now_us, uint64_t epoch, bool probe,
                    enum breaker_outcome o, uint64_t duration_us)
{
	if (o == BREAKER_CANCELLED) {
		/* a probe that ended without an answer gives its slot back */
		if (probe && epoch == b->epoch && b->state == BREAKER_HALF_OPEN && b->probes_issued > 0)
			b->probes_issued--;
		return false;
	}
	bool failure = o == BREAKER_FAILURE;
	bool slow = c->enabled && c->slow_call && duration_us >= c->slow_call * 1000;
	if (epoch != b->epoch || (b->state == BREAKER_CLOSED && probe)) {
		if (b->state == BREAKER_CLOSED)
			count(b, c, now_us, failure, slow);
		return false;
	}
	switch (b->state) {
	case BREAKER_CLOSED: {
		count(b, c, now_us, failure, slow);
		b->consecutive = failure ? b->consecutive + 1 : 0;
		if (!c->enabled)
			return false;
		if (c->consecutive_failures && b->consecutive >= c->consecutive_failures) {
			open_breaker(b, c, now_us, false, BREAKER_TRIGGER_CONSECUTIVE);
			return true;
		}
		struct breaker_stats s;
		breaker_window(b, c, now_us, &s);
		if (s.total < c->min_requests)
			return false;
		if (c->error_rate > 0 && (double)s.failures >= c->error_rate * (double)s.total) {
			open_breaker(b, c, now_us, false, BREAKER_TRIGGER_ERROR_RATE);
			return true;
		}
		if (c->slow_call && c->slow_rate > 0 && (double)s.slow >= c->slow_rate * (double)s.total) {
			open_breaker(b, c, now_us, false, BREAKER_TRIGGER_SLOW_RATE);
			return true;
		}
		return false;
	}
	case BREAKER_HALF_OPEN:
		if (!probe)
			return false;
		if (failure || slow) {
			open_breaker(b, c, now_us, true, BREAKER_TRIGGER_PROBE_FAILED);
			return true;
		}
		b->probes_ok++;
		if (b->probes_ok >= c->half_open_probes) {
			clear_window(b);
			b->open_for_us = 0;
			transition(b, BREAKER_CLOSED);
			return true;
		}
		return false;
	case BREAKER_OPEN:
	default:
		return false;
	}
}

void breaker_reset(struct breaker *b)
{
	uint64_t trips = b->trips, epoch = b->epoch;
	breaker_init(b);
	b->trips = trips;
	b->epoch = epoch + 1;
}

const char *breaker_state_name(enum breaker_state s)
{
	switch (s) {
	case BREAKER_CLOSED:
		return "closed";
	case BREAKER_OPEN:
		return "open";
	case BREAKER_HALF_OPEN:
		return "half_open";
	default:
		return "unknown";
	}
}

const char *breaker_trigger_name(enum breaker_trigger t)
{
	switch (t) {
	case BREAKER_TRIGGER_CONSECUTIVE:
		return "consecutive_failures";
	case BREAKER_TRIGGER_ERROR_RATE:
		return "error_rate";
	case BREAKER_TRIGGER_SLOW_RATE:
		return "slow_rate";
	case BREAKER_TRIGGER_PROBE_FAILED:
		return "probe_failed";
	case BREAKER_TRIGGER_NONE:
	default:
		return "none";
	}
}
