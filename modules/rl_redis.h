/* rl_redis.h - one worker's asynchronous Redis connection for shared rate
 * limits: hiredis on the worker's own event_base (libevent adapter), never
 * blocking the loop.
 *
 * - Commands run the embedded bucket script (rl_script.h) with EVALSHA; a
 *   NOSCRIPT answer re-sends the same command as EVAL (which also caches it).
 * - Every command has a deadline (`timeout`): when the oldest one passes it,
 *   Redis counts as down, the connection is dropped and every pending command
 *   fails at once (its callback gets ok = false), so nothing waits longer
 *   than the timeout. Connecting has its own deadline (`connect_timeout`).
 * - After a failure it reconnects with exponential backoff (100 ms doubling
 *   to 2 s, +-25% jitter). While down, rl_redis_usable() is false and callers
 *   decide without Redis; commands are only queued on the very first
 *   connection attempt (start-up), never while recovering.
 * - The state callback fires once per transition (up <-> down), never per
 *   request or per failed reconnect attempt.
 * - With sentinels (Redis Sentinel, redis_sentinel.h's rs_finder) each (re)connect first
 *   asks the sentinels in turn for the master (SENTINEL
 *   get-master-addr-by-name), connects there and checks with ROLE that it
 *   is the master before the connection counts as up (so requests during
 *   the start-up resolve use the fallback). A READONLY or MASTERDOWN answer
 *   (the old master demoted) drops the connection like a timeout, and the
 *   next connect asks the sentinels again. A second connection per worker
 *   subscribes to `+switch-master` on one sentinel (the next one when it
 *   fails): a switch of our master drops the connection and connects to
 *   the new master at once, without backoff. The process logs each switch
 *   once (the first worker to reach the new master).
 * Callbacks run on the worker's thread. rl_redis_free() fails pending
 * commands (callbacks with ok = false) before it returns. */
#ifndef SLUICE_RL_REDIS_H
#define SLUICE_RL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

struct rl_redis;
struct ctr_worker;

struct conf_redis_sentinel;

struct rl_redis_config {
	const char *host; /* numeric IPv4/IPv6; NULL with sentinels */
	int port;
	const struct conf_redis_sentinel *sentinels; /* num_sentinels > 0: find the master through them */
	size_t num_sentinels;
	const char *master_name;       /* the master's name at the sentinels */
	const char *sentinel_password; /* NULL: no AUTH to the sentinels */
	const char *password; /* NULL: no AUTH */
	unsigned db;
	uint64_t timeout_us;
	uint64_t connect_timeout_us;
};

struct rl_take_reply {
	uint64_t granted; /* tokens leased */
	uint64_t tokens;  /* whole tokens left in Redis */
	uint64_t wait_us; /* until one token is there */
	uint64_t full_us; /* until the bucket is full */
};

/* ok false: failed (timeout, connection lost, error reply); reply is NULL then. */
typedef void rl_take_cb(void *arg, bool ok, const struct rl_take_reply *reply);
/* instances < 0: failed */
typedef void rl_beat_cb(void *arg, long long instances);
/* up: Redis became usable; !up: it stopped being usable (why says how, no secrets). */
typedef void rl_state_cb(void *arg, bool up, const char *why);

/* Starts connecting at once. Returns NULL when out of memory. */
/* counters: the worker's counter set (counters.h), where commands and failures are counted. */
struct rl_redis *rl_redis_new(struct event_base *base, const struct rl_redis_config *cfg, struct ctr_worker *counters,
                              rl_state_cb *state_cb, void *state_arg);
void rl_redis_free(struct rl_redis *r);

bool rl_redis_usable(const struct rl_redis *r);

/* EVALSHA take: up to `want` tokens of the bucket KEYS[1] = key. Returns 0
 * (cb will be called exactly once, later, never from inside this call), or
 * -1 when Redis is not usable or the command could not be queued. */
int rl_redis_take(struct rl_redis *r, const char *key, size_t key_len, uint64_t rate, uint64_t per_us, uint64_t burst,
                  uint64_t want, rl_take_cb *cb, void *arg);
/* Heartbeat: records instance_id in the instances set; cb gets the count. */
int rl_redis_beat(struct rl_redis *r, const char *instances_key, const char *instance_id, unsigned window_s,
                  rl_beat_cb *cb, void *arg);

/* The Redis server this connection uses or last used ("host:port"; with
 * sentinels the master last learned, "(unresolved)" before the first). */
const char *rl_redis_address(const struct rl_redis *r);

/* r may be NULL in these (the state callback can run inside rl_redis_new): 0. */
/* Commands this worker sent so far (including AUTH, SELECT, retries; its counter set). */
uint64_t rl_redis_commands(const struct rl_redis *r);
/* Failures (timeouts, lost connections, refused connects) this worker saw so far. */
uint64_t rl_redis_failures(const struct rl_redis *r);

#endif
