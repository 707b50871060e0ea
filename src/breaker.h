/* breaker.h - a circuit breaker as a pure state machine over explicit time.
 *
 * closed -> open when consecutive_failures failures come in a row, or when,
 * over the rolling window (10 buckets) with at least min_requests calls, the
 * failure rate reaches error_rate or the slow-call rate reaches slow_rate.
 * open lasts open_for, doubled on each re-open (up to max_open_for); then
 * half-open admits half_open_probes requests: all succeed -> closed (and the
 * open time goes back to open_for), any fails -> open again.
 *
 * Contract: no locking and no clock here; the caller serialises access (the
 * runtime table holds one mutex per server) and passes now_us and durations
 * from the monotonic clock (clock_mono_us, clock_elapsed_us in clock.h):
 * window buckets, open_until_us and slow calls are all monotonic, so a step
 * of the wall clock neither trips nor holds open a breaker. Every admitted request carries the epoch breaker_admit gave
 * it; an outcome from an older epoch (a request that started before the last
 * transition) is counted in the statistics but cannot move the state. A
 * disabled breaker (conf->enabled false) still keeps the window statistics. */
#ifndef SLUICE_BREAKER_H
#define SLUICE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"

#define BREAKER_BUCKETS 10

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };

enum breaker_admit { BREAKER_DENY, BREAKER_ADMIT, BREAKER_ADMIT_PROBE };

enum breaker_outcome { BREAKER_SUCCESS, BREAKER_FAILURE, BREAKER_CANCELLED };

enum breaker_trigger { BREAKER_TRIGGER_NONE, BREAKER_TRIGGER_CONSECUTIVE, BREAKER_TRIGGER_ERROR_RATE,
	               BREAKER_TRIGGER_SLOW_RATE, BREAKER_TRIGGER_PROBE_FAILED };

struct breaker_bucket {
	uint64_t slot; /* time / bucket width, + 1 (0: never used) */
	uint32_t total, failures, slow;
};

struct breaker {
	enum breaker_state state;
	uint64_t epoch;
	unsigned consecutive;
	struct breaker_bucket buckets[BREAKER_BUCKETS];
	uint64_t open_until_us;
	uint64_t open_for_us; /* the current open period; doubles on re-open */
	unsigned probes_issued, probes_ok;
	uint64_t trips;
	enum breaker_trigger last_trigger;
};

struct breaker_stats {
	uint32_t total, failures, slow; /* over the window */
};

void breaker_init(struct breaker *b);
/* May a request go to this server now? Moves open -> half-open once open_for
 * has passed. *epoch receives the epoch to pass back to breaker_record. */
enum breaker_admit breaker_admit(struct breaker *b, const struct conf_breaker *c, uint64_t now_us, uint64_t *epoch);
/* The outcome of an admitted request; probe: it was admitted as one.
 * duration_us is for the slow-call trigger. Returns true if the state changed. */
bool breaker_record(struct breaker *b, const struct conf_breaker *c, uint64_t now_us, uint64_t epoch, bool probe,
                    enum breaker_outcome o, uint64_t duration_us);
/* Back to closed with empty statistics (an operator's reset). */
void breaker_reset(struct breaker *b);
void breaker_window(const struct breaker *b, const struct conf_breaker *c, uint64_t now_us, struct breaker_stats *s);

const char *breaker_state_name(enum breaker_state s);
const char *breaker_trigger_name(enum breaker_trigger t);

#endif
