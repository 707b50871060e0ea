/* statedump.h - `sluice ctl dump-state` and `restore-state` on the gateway's
 * side: everything sluice keeps, in one self-describing file (format:
 * statedump_parse.h; docs/admin.md), and back.
 *
 * What it keeps: the runtime state (the state file's lines: weights,
 * drains, disables, service weights, switch memory, rollouts) and the Redis
 * keys of the shared rate limits (every key under sluice:rl: but the
 * heartbeat set, with its DUMP payload and PTTL, found with SCAN).
 *
 * statedump_write() builds the file: blocking Redis commands through
 * rs_connect() (redis_sentinel.h; each bounded by the config's
 * connect_timeout, at least 1 s), SCAN in pages of 1,000, at most
 * STATEDUMP_MAX_KEYS keys (more is an error, not a cut file).
 *
 * statedump_restore() checks the whole file first — its syntax (with
 * positions), every runtime line against the running config, the rollouts
 * against the controller, and that Redis is reachable when there are keys —
 * and changes nothing when anything is wrong. Then it restores the Redis
 * keys (RESTORE key ttl payload REPLACE, pipelined) and makes the runtime
 * state the file's: overrides, marks and switch memory not in the file are
 * cleared, those in it set, rollouts in it resumed (rollouts of services
 * the file does not name are left running), and the state file written.
 * Should a RESTORE fail (e.g. a payload from a newer Redis), the runtime
 * state is not applied and the answer says how many keys were restored.
 *
 * Main thread only (the admin socket); it blocks the main loop while Redis
 * answers, never the workers. */
#ifndef SLUICE_STATEDUMP_H
#define SLUICE_STATEDUMP_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/buffer.h>

struct conf;
struct runtime;
struct statefile;
struct rollout_ctl;

struct statedump_ctx {
	struct runtime *rt;
	const struct conf *conf;
	unsigned long long generation;
	struct statefile *sf; /* NULL: no state_file */
	struct rollout_ctl *rollouts;
};

/* Appends the file to out; -1 with err (out unchanged) on failure. */
int statedump_write(const struct statedump_ctx *x, struct evbuffer *out, char *err, size_t err_size);

/* Restores buf[0..len). 0 with a one-line summary, or -1 with err. */
int statedump_restore(const struct statedump_ctx *x, const char *buf, size_t len, char *summary, size_t summary_size,
                      char *err, size_t err_size);

#endif
