/* conf_resilience.h - the resilience part of the config schema: per pool
 * `health_check`, `breaker`, `limits`, `retry`, `failure_statuses` (structs
 * in conf.h).
 *
 * Contract: the walkers run inside conf_load() (conf_schema.h) and report every
 * problem with its path; a key that is absent leaves its struct zeroed, which
 * means "off" (no checks, no breaker, no limits, no retries beyond the first
 * try). conf_resilience_free_* release only what these walkers allocated. */
#ifndef SLUICE_CONF_RESILIENCE_H
#define SLUICE_CONF_RESILIENCE_H

#include <stdbool.h>

#include "conf.h"

struct conf_walker;

/* The keys these walkers own, for the parent records' key lists. */
#define CONF_RESILIENCE_POOL_KEYS "health_check", "breaker", "limits", "retry", "failure_statuses"

/* t: the pool's table (stack slot). */
void conf_resilience_walk_pool(struct conf_walker *w, int t, struct conf_pool *p);
void conf_resilience_free_pool(struct conf_pool *p);

/* Does this upstream status count as a failure for the pool's breakers? */
bool conf_pool_failure_status(const struct conf_pool *p, int status);
/* Is a response with this status retried (retry.on)? */
bool conf_retry_on_status(const struct conf_retry *r, int status);

#endif
