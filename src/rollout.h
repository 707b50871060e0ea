/* rollout.h - automated canary rollouts: a controller on the main thread
 * that moves a service's split towards a canary pool step by step
 * (`sluice ctl rollout start SERVICE --to POOL --steps 5,25,50,100
 * --interval 30s --max-error-rate 1% --max-p99 500ms --min-requests 100`).
 *
 * At each step the canary gets the step's share of the service (the other
 * pools share the rest in the proportions they had at the start). After each
 * interval the controller judges the canary on the pools' outcomes over that
 * interval (runtime.h: attempts, errors = 5xx answers and upstream failures,
 * the upstream latency histogram): with fewer than min-requests attempts on
 * the canary it waits (the interval grows); over the error-rate or p99 limit
 * while the stable pools do better, it rolls back at once to the start
 * weights; over a limit with the stable pools as bad, it holds (the cause is
 * not the canary); else it promotes to the next step, and after the last
 * step it completes. Every transition is logged, kept in a short history and
 * written to the state file (as a line of words in the runtime's rollout
 * table, which statefile.c writes and reads), so a rollout continues after a
 * restart or a reload from its step, with a fresh interval. A rollout whose
 * service or pools leave the config is stopped (logged, shown).
 *
 * Ownership: main thread only. The runtime, the state file (NULL: none) and
 * the pointer to the current snapshot (replaced at reload by its owner, the
 * admin socket) must outlive the controller. */
#ifndef SLUICE_ROLLOUT_H
#define SLUICE_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/buffer.h>
#include <event2/event.h>

struct runtime;
struct snapshot;
struct statefile;
struct rollout_ctl;

/* Resumes the rollouts the runtime's table holds (from the state file).
 * NULL on out-of-memory. */
struct rollout_ctl *rollout_ctl_new(struct event_base *base, struct runtime *rt, struct snapshot *const *snap,
                                    struct statefile *sf);
void rollout_ctl_free(struct rollout_ctl *rc);
/* A binary upgrade hands this process's state to a new one (through the
 * state file): while held, no rollout is judged or moved here, so the new
 * process's copy stays the only one that changes. */
void rollout_ctl_hold(struct rollout_ctl *rc, bool held);
/* restore-state (statedump.h): is line (a state-file rollout line) valid for
 * the running config? Then: replace service's rollout with it, resumed with
 * a fresh interval (the caller saves the state file). False with why. */
bool rollout_ctl_check_line(struct rollout_ctl *rc, const char *service, const char *line, const char **why);
bool rollout_ctl_restore(struct rollout_ctl *rc, const char *service, const char *line, const char **why);

/* Fleet control (control.h): with ops set, a rollout is judged (and stopped)
 * only where may_drive says so, the pools' figures include the rest of the
 * fleet's (add_figures adds them to f), each saved transition is announced
 * (changed), and status names the driver (driver writes it into buf). */
struct runtime_figures;
struct rollout_fleet_ops {
	bool (*may_drive)(void *arg, const char *service);
	void (*add_figures)(void *arg, const char *pool, struct runtime_figures *f);
	void (*changed)(void *arg);
	void (*driver)(void *arg, const char *service, char *buf, size_t size);
};
void rollout_ctl_set_fleet(struct rollout_ctl *rc, const struct rollout_fleet_ops *ops, void *arg);
/* The runtime's rollout line of service was changed by another instance (or
 * this one took the lease): take it as it is, with a fresh interval; verdict
 * (NULL: keep) is the driver's last one. */
void rollout_ctl_adopt(struct rollout_ctl *rc, const char *service, const char *verdict);
/* The last verdict of service's rollout (NULL: none). */
const char *rollout_ctl_verdict(const struct rollout_ctl *rc, const char *service);

/* Run `rollout ...` (w[0] is "rollout"), as peer uid; the answer (text, or
 * one JSON object) is appended to out. Returns true when it changed
 * something (the caller counts changes). */
bool rollout_command(struct rollout_ctl *rc, char **w, size_t n, bool json, unsigned uid, struct evbuffer *out);

/* Parse a percentage or fraction ("1%", "0.5%", "0.01") into [0, 1]. */
bool rollout_parse_rate(const char *s, double *out);
/* Parse "5,25,50,100": 1 to ROLLOUT_MAX_STEPS increasing whole percentages 1..100. */
#define ROLLOUT_MAX_STEPS 16
bool rollout_parse_steps(const char *s, unsigned *steps, size_t *n);

#endif
