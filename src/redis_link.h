/* redis_link.h - a link to one Redis master, kept up on the main loop: a
 * command connection and a connection subscribed to one channel, both on
 * hiredis's libevent adapter (fleet control's, control.h; the workers'
 * rate-limit client has its own, modules/rl_redis.h).
 *
 * The master is the configured address, or what Redis Sentinel names
 * (redis_sentinel.h's rs_finder): each (re)connect asks the sentinels, and
 * with them the link is up only once ROLE on the command connection says
 * master (a sentinel's answer can be stale). AUTH (and SELECT on the command
 * connection) follow the config. Up means usable: both connections made and
 * their handshake answered (AUTH and SELECT, ROLE with sentinels, the
 * channel's SUBSCRIBE confirmed), so a wrong password never counts as up.
 * Down: a connect error, a lost connection, no connect and handshake within
 * connect_timeout, a command unanswered for longer than timeout, a refused
 * AUTH/SELECT/SUBSCRIBE, or the owner's redis_link_drop.
 * It reconnects a second after going down; at once after a `+switch-master`
 * for its master, a READONLY or MASTERDOWN answer (the master was demoted)
 * or a ROLE that is not master, when the sentinels may know better already.
 *
 * Ownership: the owner creates, starts and frees it; everything given is
 * copied. Events (up, down, a message on the channel) and command replies
 * are callbacks on the loop's thread (the main thread); none runs after
 * redis_link_free except the replies it fails (reply NULL) while freeing. */
#ifndef SLUICE_REDIS_LINK_H
#define SLUICE_REDIS_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "redis_sentinel.h"

struct event_base;
struct redis_link;

enum redis_link_state { REDIS_LINK_DOWN, REDIS_LINK_CONNECTING, REDIS_LINK_UP };

struct redis_link_events {
	/* Both connections are up, AUTH/SELECT (and ROLE) answered and the channel's SUBSCRIBE confirmed.
	 * switched_from: the master the link was up on before, when the
	 * sentinels have moved it since (NULL otherwise); after_outage: the
	 * link was reported down (below) since it was last up. */
	void (*up)(void *arg, const struct rs_addr *switched_from, bool after_outage);
	/* The link went down; the commands in flight have been failed already.
	 * report: the first failure since it was up (or since it started, when
	 * it never was): the one to log, not one per reconnect attempt. */
	void (*down)(void *arg, const char *why, bool report);
	/* A message on the channel (payload NUL-terminated too). */
	void (*message)(void *arg, const char *payload, size_t len);
};

/* A command's answer; reply NULL: the link went down (or is being freed) first. */
typedef void redis_link_reply_cb(void *arg, const redisReply *reply);

/* For the Redis of cr (its address, or its sentinels and master; password,
 * db), subscribed to channel. timeout_ms: the most a command waits for its
 * answer; connect_timeout_ms: the most a connect (and ROLE) takes, and each
 * sentinel asked. Nothing connects before redis_link_start. NULL when out of
 * memory or when cr names no usable address. */
struct redis_link *redis_link_new(struct event_base *base, const struct conf_redis *cr, const char *channel,
                                  uint64_t timeout_ms, uint64_t connect_timeout_ms,
                                  const struct redis_link_events *events, void *arg);
/* Starts connecting (events may run before this returns: every sentinel failed at once). */
void redis_link_start(struct redis_link *l);
void redis_link_free(struct redis_link *l);

bool redis_link_is_up(const struct redis_link *l);
/* Sends a command on the command connection; cb(arg, reply) runs once.
 * False when it was not sent (no connection, out of memory): cb never runs
 * and arg stays the caller's. */
bool redis_link_command(struct redis_link *l, redis_link_reply_cb *cb, void *arg, int argc, const char **argv,
                        const size_t *lens);
/* The owner judged the link broken (e.g. an error answer it cannot live with). */
void redis_link_drop(struct redis_link *l, const char *why);

/* A blocking connection to the master the link is up on (AUTH and SELECT as
 * the link's), for a last exchange at exit; timeout_us bounds the connect
 * and each command. NULL when the link is not up or it failed; redisFree it. */
redisContext *redis_link_connect_blocking(const struct redis_link *l, uint64_t timeout_us);

struct redis_link_status {
	enum redis_link_state state;
	const char *state_name;  /* "down", "connecting", "up" */
	uint64_t since_wall_us;  /* in this state since */
	const char *why;         /* the last failure ("" once up) */
	const char *address;     /* the config's (with sentinels: its description) */
	const char *master;      /* connected to or being connected to ("(not found yet)") */
	const char *master_name; /* as the sentinels name it; NULL: no sentinels */
	/* not up, and the last failure was the server refusing the handshake
	 * (a wrong password or db, NOAUTH): retrying helps only once the config
	 * or the server changes */
	bool refused;
};
void redis_link_status(const struct redis_link *l, struct redis_link_status *st);

#endif
