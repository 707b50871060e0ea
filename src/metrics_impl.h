/* metrics_impl.h - the view behind metrics.h, shared by metrics.c (the
 * exposition, readiness) and metrics_status.c (the status page). Main
 * thread only. */
#ifndef SLUICE_METRICS_IMPL_H
#define SLUICE_METRICS_IMPL_H

#include <stdbool.h>
#include <stdint.h>

struct runtime;
struct snapshot;

struct metrics {
	struct runtime *rt;
	struct snapshot *snap; /* a reference: the config in use */
	unsigned workers;
	bool ready, draining;
	bool last_reload_ok;           /* true until a reload is refused */
	uint64_t last_reload_wall_us;  /* 0: no reload tried */
	uint64_t last_success_wall_us; /* when the config in use was built */
	uint64_t start_wall_us;
	uint64_t now_us; /* the monotonic clock (breaker times), read once per answer */
};

/* A service's rollout (rollout.h) as the runtime keeps it: the canary
 * pool, the current step (1 = the first), the share it gives the canary,
 * the state ("running", "paused", "completed", ...). False: none. */
struct metrics_rollout {
	char pool[128];
	unsigned step, percent;
	char state[24];
};
bool metrics_rollout(const struct metrics *m, const char *service, struct metrics_rollout *out);

/* "closed", "open", "half_open" for an enum breaker_state. */
const char *metrics_breaker_name(int state);

#endif
