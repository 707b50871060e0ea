/* conf_redis.h - one Redis endpoint in the config: where it is (`address`,
 * or `sentinels` + `master` to find the master through Redis Sentinel) and
 * how to talk to it (`password_file`, `sentinel_password_file`, `db`,
 * `timeout`, `connect_timeout`).
 *
 * The top-level `redis` block (modules/conf_ratelimit.c, which adds
 * `on_failure`) and `control.redis` (conf_control.c) are both walked here,
 * so they accept the same keys with the same errors (each at its own path),
 * and a reload compares them the same way (conf_redis_same).
 *
 * Ownership: a struct conf_redis owns its strings and its sentinel list;
 * conf_redis_clear frees them (secrets wiped first) and zeroes the struct. */
#ifndef SLUICE_CONF_REDIS_H
#define SLUICE_CONF_REDIS_H

#include <stdbool.h>

#include "conf.h"

struct conf_walker;

/* The table at stack slot t (checked to be a table) into r, which gets
 * enabled. more: keys the caller walks itself that t may also hold
 * (NULL-terminated; NULL: none); any other key is reported with a
 * did-you-mean. timeout and connect_timeout keep what r holds when absent
 * (the caller's defaults). */
void conf_redis_walk(struct conf_walker *w, int t, const char *const *more, struct conf_redis *r);
/* A deep copy of from into to (to is overwritten, not freed first). */
void conf_redis_copy(struct conf_redis *to, const struct conf_redis *from);
void conf_redis_clear(struct conf_redis *r);
/* The same connection settings (address or sentinels and master,
 * passwords, db, timeouts); on_failure is not one of them. */
bool conf_redis_same(const struct conf_redis *a, const struct conf_redis *b);

#endif
