/* ratelimit.h - the rate-limit module (docs/rate-limiting.md): token
 * buckets per (limit, key), applied in the access phase to the limits a
 * route names (`rate_limit = { ... }`), in order.
 *
 * - Local limits: one bucket per key in a process-wide table (rl_table.h),
 *   exact across workers.
 * - Shared limits: the bucket lives in Redis (lua/redis/ratelimit.lua, on
 *   Redis's clock); each process leases batches of tokens from it and
 *   refills them in the background before they run out (also at a batch of
 *   one token near the limit), and refuses locally while Redis has said the
 *   key is empty, so requests are decided without waiting. A request
 *   suspends (pipeline_resume) for one asynchronous round trip on its
 *   worker's connection (rl_redis.h), bounded by redis.timeout, only for a
 *   cold key, in exact mode (burst <= 8 x instances: every token is taken by
 *   the request that uses it, so logins stay exact), or when its lease ran
 *   dry while Redis still had tokens. The batch shrinks to one token as a
 *   key nears its limit, bounding over-admission (docs: "Accuracy bound").
 *   Redis down: decisions follow redis.on_failure.
 * - Refused: 429 (reason rate_limited) with Retry-After and RateLimit-Limit,
 *   -Remaining, -Reset; `headers = true` adds the RateLimit-* headers to
 *   allowed responses too. on_failure = "deny" refuses with 503
 *   (reason redis_fallback).
 * Counters are per worker (no sharing on the request path); they appear in
 * the log lines at Redis transitions and, summed, in one "ratelimit totals"
 * line at shutdown.
 *
 * State: the bucket tables are runtime state keyed by limit name in
 * rl_table's process-wide registry (rl_table_get), referenced by each
 * snapshot's limits, so buckets survive a reload while the limit keeps its
 * name and shape. Process-wide too (the module's one global, in
 * ratelimit.c: rl_proc): this instance's id in Redis, the instance count of
 * the last heartbeat, and the totals summed as workers end. The per-worker
 * state (Redis connection, counters, requests in flight) follows the
 * worker's current snapshot (worker_adopt); a request or a Redis command in
 * flight keeps its own snapshot's limits. */
#ifndef SLUICE_RATELIMIT_H
#define SLUICE_RATELIMIT_H

#include "module.h"

extern const struct module ratelimit_module;

#endif
