/* conf_pools.h - the `pools` section: named pools of upstream servers
 * (servers, balance, hash_key, keepalive, timeouts; resilience keys are
 * conf_resilience.c's, `tls` is conf_tls.c's). Every pool gets its name
 * before any is checked, so references to a pool with a mistake inside are
 * not reported twice. Contract: conf_schema.h rules. */
#ifndef SLUICE_CONF_POOLS_H
#define SLUICE_CONF_POOLS_H

#include "conf_schema.h"

void conf_walk_pools(struct conf_walker *w, int root);
/* A request key as written in the config ("client_ip", "path", "host",
 * "tls_subject", "header:NAME", "cookie:NAME", "query:NAME"): a pool's
 * hash_key, a service's sticky key. Reported at the current path when wrong. */
void conf_walk_key(struct conf_walker *w, const char *s, struct conf_key *key);
/* "unknown pool "x" (did you mean ...)" at the current path. */
void conf_unknown_pool_error(struct conf_walker *w, const char *name);

#endif
