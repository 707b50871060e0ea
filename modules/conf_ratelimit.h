/* conf_ratelimit.h - the config sections of rate limiting: top-level
 * `rate_limits` (named token buckets), `redis` (the shared store) and the
 * route key `rate_limit` (which limits a route applies, in order).
 *
 * The rate-limit module owns this section: conf_rl_section is its `conf`
 * (module.h), so the core's config code knows nothing of these keys; the
 * loader walks it before the routes, so that a route can name a limit.
 * Contract: conf_schema.h rules. Everything allocated is owned by the struct
 * conf and released by conf_rl_free (the section's free, called from
 * conf_free before the routes are freed). */
#ifndef SLUICE_CONF_RATELIMIT_H
#define SLUICE_CONF_RATELIMIT_H

#include "conf.h"
#include "conf_schema.h"

extern const struct conf_section conf_rl_section;

/* `redis` then `rate_limits` (a shared limit requires `redis`). */
void conf_rl_walk_redis(struct conf_walker *w, int root);
void conf_rl_walk_limits(struct conf_walker *w, int root);
/* The route table t's `rate_limit` key: a limit name or a list of names. */
void conf_rl_walk_route(struct conf_walker *w, int t, struct conf_route *r);
/* Index of the limit named name, or -1. */
int conf_rl_find(const struct conf *c, const char *name);
/* Frees the rate-limit fields of c and of its routes. */
void conf_rl_free(struct conf *c);

#endif
