/* conf_control.h - the `control` section: fleet-wide runtime changes through
 * Redis (control.h has the protocol).
 *
 *   control = { redis = "main" }              -- the top-level `redis` block (its name is "main")
 *   control = { redis = { address = "10.0.0.5:6379", password_file = "redis.pw", db = 2,
 *                         connect_timeout = "500ms", timeout = "2s" },
 *               prefix = "edge-eu", instance = "gw-1", lease = "3s" }
 *   control = { redis = { sentinels = { "10.0.0.7:26379", "10.0.0.8:26379" }, master = "edge" } }
 *
 * Control's own block takes the keys of the top-level one (conf_redis.h: an
 * address, or sentinels and master) except on_failure; "main" may use
 * Sentinel too: control.c finds and follows the master like the workers do.
 *
 * prefix names the fleet: every key sluice writes starts with "PREFIX:", so
 * several fleets can share one Redis. instance names this process in leases
 * and counters (default: host name and pid). lease is how long a rollout
 * driver's lease lasts without renewal (a dead driver is replaced after it).
 *
 * Ownership: struct conf_control belongs to the conf (conf->control; NULL
 * when the section is absent), freed by conf_control_free. Its redis is a
 * deep copy (conf_redis_copy) even when it names the main block. */
#ifndef SLUICE_CONF_CONTROL_H
#define SLUICE_CONF_CONTROL_H

#include <stdbool.h>

#include "conf.h"

#define CONF_CONTROL_PREFIX_MAX 64
#define CONF_CONTROL_INSTANCE_MAX 64

struct conf_control {
	bool uses_main;         /* redis = "main": the top-level redis block */
	struct conf_redis redis; /* conf_redis.h: address or sentinels + master, passwords, db, timeouts */
	char *prefix;           /* default "sluice" */
	char *instance;         /* NULL: host name and pid */
	conf_msec lease;        /* default 3s */
};

struct conf_walker;
/* Checks `control` (after the modules' sections: it may name the redis block). */
void conf_walk_control(struct conf_walker *w, int root);
void conf_control_free(struct conf_control *cc);
/* Same settings (both NULL counts as same): a reload may not change them. */
bool conf_control_same(const struct conf_control *a, const struct conf_control *b);

#endif
