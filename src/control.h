/* control.h - fleet control: the runtime changes of every instance of a
 * fleet kept in one Redis (`control = { redis = ... }`, conf_control.h).
 *
 * Every deployer change (weights, drains, disables, service weights, switch
 * memory, a rollout's progress and verdict) is an entry (control_codec.h).
 * After a change the main thread diffs the runtime against what it knows
 * Redis holds and writes the differing entries in one script: INCR of
 * PREFIX:version, HSET into the hash PREFIX:state ("VERSION ORIGIN LINE"),
 * PUBLISH "VERSION ORIGIN" on PREFIX:changes. Every instance subscribes to
 * PREFIX:changes and also polls PREFIX:version each second (a lost message is
 * caught); when the version moved it reads PREFIX:state and applies each
 * entry newer than what it has and not written by itself (no echo), then
 * saves its own state file. At connect (start, or Redis back after an
 * outage) it reconciles: entries newer in Redis win; local entries that
 * differ and that nobody changed meanwhile are written (a conditional write,
 * so an outage never overwrites a newer change). The version this instance's
 * state includes is kept next to the state file (STATE_FILE.fleet), so a
 * restart knows which Redis entries are newer than its state file.
 *
 * Rollouts: one instance drives each running rollout, the holder of the lease
 * PREFIX:lease:SERVICE (SET NX PX, renewed every third of `lease`, deleted
 * when the rollout stops); another takes it when the holder stops renewing.
 * Each instance writes its pools' outcome counters (cumulative, runtime.h)
 * each second to the hash PREFIX:figures under its origin; the driver judges
 * on the sum over the fleet (rollout.h's fleet operations).
 *
 * The connections (a command one, one subscribed to PREFIX:changes) are a
 * redis_link (redis_link.h): Redis behind Sentinel (`sentinels` + `master`,
 * in control's own block or in "main") is followed there (ROLE checked,
 * `+switch-master`, READONLY / MASTERDOWN); after each (re)connect this
 * module re-syncs as after any outage.
 *
 * Redis unreachable: the instance keeps serving with the state it has, logs
 * the transition once, reports it (`ctl show control`, `show services`,
 * `rollout status`), stops judging rollouts when its lease runs out, and
 * reconnects each second.
 *
 * An entry naming a pool or service this instance's config does not have is
 * neither applied here nor undone in the fleet because it is missing here: a
 * fleet in the middle of a config rollout keeps the changes of the instances
 * that have the pool. Main thread only. */
#ifndef SLUICE_CONTROL_H
#define SLUICE_CONTROL_H

#include <stdbool.h>

#include <event2/buffer.h>
#include <event2/event.h>

struct conf_control;
struct control;
struct rollout_ctl;
struct runtime;
struct statefile;

/* Starts connecting. cfg is copied; rt, sf (NULL: no state file) and snap
 * (the current snapshot, replaced at reload by its owner) must outlive it.
 * NULL on out-of-memory (logged). */
struct snapshot;
struct control *control_new(struct event_base *base, const struct conf_control *cfg, struct runtime *rt,
                            struct statefile *sf, struct snapshot *const *snap);
/* Releases the leases it holds (a short blocking exchange with Redis), then frees. */
void control_free(struct control *ctl);
/* The rollout controller to drive and inform (NULL: none); it must outlive ctl or be detached first. */
void control_set_rollouts(struct control *ctl, struct rollout_ctl *rc);
/* A change was applied locally: write it to the fleet. */
void control_changed(struct control *ctl);
/* `show control`, and the one line (or JSON member value) other views add. */
void control_show(struct control *ctl, bool json, struct evbuffer *out);
void control_brief(struct control *ctl, bool json, struct evbuffer *out);

#endif
