/* redis_sentinel.h - finding the Redis master through Redis Sentinel, and
 * one blocking "connect to the configured redis" for main-thread tools.
 *
 * The protocol pieces are pure functions on hiredis replies (unit-tested,
 * t/unit/check_sentinel.c): the answer to SENTINEL get-master-addr-by-name,
 * the answer to ROLE, and the payload of a `+switch-master` message. A
 * master's address must be numeric (IPv4 or IPv6) with a port 1..65535:
 * hiredis would resolve a hostname with a blocking lookup on the event loop.
 *
 * rs_connect() is blocking, bounded by its timeout per step (main thread
 * only: `ctl dump-state`/`restore-state`, fleet tools): with `address` it
 * connects there; with `sentinels` it asks each sentinel in turn for the
 * master, connects, and checks with ROLE that it is the master. AUTH and
 * SELECT follow the config. The workers' asynchronous client
 * (modules/rl_redis.c) uses the same parsers.
 *
 * rs_finder is the asynchronous "where is the master?" on an event loop,
 * for a client that keeps its own connections to the master (fleet control,
 * control.c): a round asks each sentinel in turn (the last one that answered
 * first, each bounded by the timeout) until one names the master; a second
 * connection subscribes to `+switch-master` on one sentinel (the next one
 * when it fails, retried each second) and reports a switch of this master
 * at once. The client checks ROLE on the master itself (a sentinel's answer
 * can be stale) and calls rs_finder_stale when the master it was given
 * failed, so the next round asks another sentinel first. Callbacks run on
 * the loop's thread; none runs after rs_finder_free. Tested against real
 * redis-sentinel and redis-server processes in t/unit/check_rs_finder.c.
 *
 * Process-wide state (documented global): the master last reached by any
 * worker, how many times it changed and when — so a switch is logged once
 * per process, not once per worker, and `sluice ctl show redis` can name
 * it. Guarded by a mutex; any thread. */
#ifndef SLUICE_REDIS_SENTINEL_H
#define SLUICE_REDIS_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "conf.h"

#define RS_HOST_MAX 46 /* INET6_ADDRSTRLEN */

struct rs_addr {
	char host[RS_HOST_MAX];
	int port;
};

/* "host:port" (IPv6 as [h]:p) into buf. */
void rs_addr_format(const struct rs_addr *a, char *buf, size_t size);
bool rs_addr_equal(const struct rs_addr *a, const struct rs_addr *b);

/* A numeric host and a decimal port, both with lengths (not NUL-terminated). */
bool rs_addr_parse(const char *host, size_t host_len, const char *port, size_t port_len, struct rs_addr *out);

/* The reply to SENTINEL get-master-addr-by-name: [ip, port]. False with
 * why (no secrets; e.g. "the sentinel does not know master edge") else. */
bool rs_parse_master_reply(const redisReply *r, const char *name, struct rs_addr *out, char *why, size_t why_size);
/* The reply to ROLE: true when its first element is "master"; else why
 * (e.g. "it is a replica"). */
bool rs_role_is_master(const redisReply *r, char *why, size_t why_size);
/* The payload of a `+switch-master` message, "NAME OLDIP OLDPORT NEWIP
 * NEWPORT": true, with the new address, when it is about master name. */
bool rs_parse_switch_master(const char *msg, size_t len, const char *name, struct rs_addr *out);

/* Record that a connection reached master a (named name at the sentinels,
 * NULL without sentinels). True when it differs from the one recorded
 * before (a switch); *before gets that one then. */
bool rs_master_note(const struct rs_addr *a, struct rs_addr *before);
/* The master last reached: false when none yet. switches counts changes
 * since start; since_wall_us is when the current one was first reached. */
bool rs_master_current(struct rs_addr *out, unsigned long long *switches, uint64_t *since_wall_us);

/* Connect to the configured Redis (blocking; timeout_us bounds each connect
 * and each command). NULL with err on failure (names the step and the
 * server, never a password). master gets the address reached. The context
 * keeps timeout_us as its command timeout; redisFree() it. */
redisContext *rs_connect(const struct conf_redis *cr, uint64_t timeout_us, struct rs_addr *master, char *err,
                         size_t err_size);

struct event_base;
struct rs_finder;
/* A round ended: master is where a sentinel says it is (why NULL), or NULL
 * with why (no secrets) when no sentinel gave it. */
typedef void rs_found_cb(void *arg, const struct rs_addr *master, const char *why);
/* The sentinels moved the master to `to` (`+switch-master`). */
typedef void rs_switched_cb(void *arg, const struct rs_addr *to);

/* For the n (> 0) sentinels, the master name and the sentinels' password
 * (NULL: no AUTH), all copied. Subscribes at once. NULL when out of memory. */
struct rs_finder *rs_finder_new(struct event_base *base, const struct conf_redis_sentinel *sentinels, size_t n,
                                const char *master, const char *password, uint64_t timeout_us, rs_found_cb *found,
                                rs_switched_cb *switched, void *arg);
/* Starts a round unless one is running; found is called once when it ends,
 * possibly before this returns (every sentinel failed at once). */
void rs_finder_ask(struct rs_finder *f);
/* Ends a round in progress without calling found. */
void rs_finder_cancel(struct rs_finder *f);
/* The master the last round gave could not be reached or is no master. */
void rs_finder_stale(struct rs_finder *f);
void rs_finder_free(struct rs_finder *f);

#endif
