/* redis_link.c - a link to one Redis master on the main loop (redis_link.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "redis_link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "clock.h"

#define REDIS_LINK_TICK_MS 200
#define REDIS_LINK_RECONNECT_MS 1000

static const char *const state_names[] = { "down", "connecting", "up" };

struct redis_link {
	struct event_base *base;
	struct redis_link_events ev;
	void *arg;
	/* settings (copies) */
	char *address, *password, *channel;
	unsigned db;
	uint64_t timeout_ms, connect_timeout_ms;
	/* where the master is: the configured address, or what the sentinels say */
	struct rs_finder *finder; /* NULL: no sentinels */
	bool resolving;           /* a round of asking the sentinels is running */
	struct rs_addr target;    /* connected to, or being connected to */
	char target_text[80];
	char master_name[208];  /* with sentinels, as the sentinels know it */
	struct rs_addr reached; /* the master of the last link up; port 0: none yet */
	/* the connections */
	redisAsyncContext *cmd, *sub;
	/* the link is up once both are connected and have answered their
	 * handshake (AUTH, SELECT and ROLE on cmd; AUTH and SUBSCRIBE on sub):
	 * a server that refuses the password never counts as up */
	bool cmd_connected, sub_connected;
	unsigned cmd_handshake, sub_handshake; /* handshake answers still awaited */
	enum redis_link_state state;
	bool ever_up, reported_down;
	bool refused; /* the last failure: the server answered the handshake with an error */
	uint64_t state_since_wall_us;
	char why[200];
	uint64_t connect_started_ms, next_connect_ms;
	unsigned inflight;
	uint64_t waiting_since_ms;
	struct event *tick;
	bool started, freeing;
};

/* A command in flight. AUTH, SELECT and ROLE are the link's own; the owner's
 * go to its callback. */
enum link_cmd_kind { CMD_OWNER, CMD_AUTH, CMD_ROLE };
struct link_cmd {
	struct redis_link *link;
	enum link_cmd_kind kind;
	redis_link_reply_cb *cb;
	void *arg;
};

static uint64_t mono_ms(void)
{
	return clock_mono_us() / 1000;
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata);

static void set_state(struct redis_link *l, enum redis_link_state st)
{
	if (l->state != st)
		l->state_since_wall_us = clock_wall_us();
	l->state = st;
}

static void link_down_as(struct redis_link *l, const char *why, bool refused)
{
	redisAsyncContext *cmd = l->cmd, *sub = l->sub;
	l->cmd = l->sub = NULL;
	l->cmd_connected = l->sub_connected = false;
	l->cmd_handshake = l->sub_handshake = 0;
	l->refused = refused;
	bool was_up = l->state == REDIS_LINK_UP;
	if (l->finder && l->resolving) {
		rs_finder_cancel(l->finder);
		l->resolving = false;
	} else if (l->finder && l->state == REDIS_LINK_CONNECTING) {
		/* the master a sentinel named is unreachable or none (ROLE): that
		 * sentinel may be stale, another one is asked first next time */
		rs_finder_stale(l->finder);
	}
	set_state(l, REDIS_LINK_DOWN);
	l->next_connect_ms = mono_ms() + REDIS_LINK_RECONNECT_MS;
	snprintf(l->why, sizeof l->why, "%s", why);
	bool report = !l->reported_down && (was_up || !l->ever_up) && !l->freeing;
	if (report)
		l->reported_down = true;
	/* hiredis fails the pending commands (callbacks with NULL) */
	if (cmd)
		redisAsyncFree(cmd);
	if (sub)
		redisAsyncFree(sub);
	l->inflight = 0;
	if (!l->freeing)
		l->ev.down(l->arg, l->why, report);
}

static void link_down(struct redis_link *l, const char *why)
{
	link_down_as(l, why, false);
}

/* The server answered a handshake command with an error (a wrong password,
 * a db it does not have, NOAUTH): retrying helps only once one side changes. */
static void link_refused(struct redis_link *l, const char *what, const char *err)
{
	char why[200];
	snprintf(why, sizeof why, "%s refused: %.150s", what, err);
	link_down_as(l, why, true);
}

static struct link_cmd *cmd_new(struct redis_link *l, enum link_cmd_kind kind, redis_link_reply_cb *cb, void *arg)
{
	struct link_cmd *c = malloc(sizeof *c);
	if (c)
		*c = (struct link_cmd){ l, kind, cb, arg };
	return c;
}

/* False (c freed) when it was not sent. */
static bool send_argv(struct redis_link *l, redisAsyncContext *ac, struct link_cmd *c, int argc, const char **argv,
                      const size_t *lens)
{
	if (!c)
		return false;
	if (!ac || redisAsyncCommandArgv(ac, reply_cb, c, argc, argv, lens) != REDIS_OK) {
		free(c);
		return false;
	}
	if (ac == l->cmd && l->inflight++ == 0)
		l->waiting_since_ms = mono_ms();
	return true;
}

/* One handshake command on ac (counted in *awaited until answered); false when not sent. */
static bool send_handshake(struct redis_link *l, redisAsyncContext *ac, unsigned *awaited, enum link_cmd_kind kind,
                           int argc, const char **argv, const size_t *lens)
{
	if (!send_argv(l, ac, cmd_new(l, kind, NULL, NULL), argc, argv, lens))
		return false;
	(*awaited)++;
	return true;
}

static bool auth_and_select(struct redis_link *l, redisAsyncContext *ac, unsigned *awaited, bool select)
{
	if (l->password) {
		const char *argv[] = { "AUTH", l->password };
		size_t lens[] = { 4, strlen(l->password) };
		if (!send_handshake(l, ac, awaited, CMD_AUTH, 2, argv, lens))
			return false;
	}
	if (select && l->db) {
		char db[16];
		int n = snprintf(db, sizeof db, "%u", l->db);
		const char *argv[] = { "SELECT", db };
		size_t lens[] = { 6, (size_t)n };
		if (!send_handshake(l, ac, awaited, CMD_AUTH, 2, argv, lens))
			return false;
	}
	return true;
}

static void maybe_up(struct redis_link *l);

static void sub_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct redis_link *l = privdata;
	redisReply *reply = reply_v;
	if (!reply || l->freeing)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		link_refused(l, "SUBSCRIBE", reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(reply->element[0]->str, "subscribe") == 0 && ac == l->sub && l->sub_handshake) {
		l->sub_handshake--;
		maybe_up(l);
		return;
	}
	if (strcmp(reply->element[0]->str, "message") != 0 || l->state != REDIS_LINK_UP)
		return;
	const redisReply *m = reply->element[2];
	if (m->type != REDIS_REPLY_STRING)
		return;
	l->ev.message(l->arg, m->str, m->len);
}

static void link_up(struct redis_link *l)
{
	struct rs_addr from = l->reached;
	bool switched = l->finder && from.port && !rs_addr_equal(&from, &l->target);
	l->reached = l->target;
	set_state(l, REDIS_LINK_UP);
	l->ever_up = true;
	l->why[0] = '\0';
	l->refused = false;
	bool after_outage = l->reported_down;
	l->reported_down = false;
	l->ev.up(l->arg, switched ? &from : NULL, after_outage);
}

/* Up once both connections are made and every handshake command has been answered. */
static void maybe_up(struct redis_link *l)
{
	if (l->state == REDIS_LINK_CONNECTING && l->cmd_connected && l->sub_connected && !l->cmd_handshake &&
	    !l->sub_handshake)
		link_up(l);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct redis_link *l = ac->data;
	if (!l || l->freeing || (ac != l->cmd && ac != l->sub))
		return;
	if (status != REDIS_OK) {
		/* hiredis frees this context after the callback */
		char why[200];
		snprintf(why, sizeof why, "connect failed: %.150s", ac->errstr);
		if (ac == l->cmd)
			l->cmd = NULL;
		else
			l->sub = NULL;
		link_down(l, why);
		return;
	}
	if (ac == l->cmd)
		l->cmd_connected = true;
	else
		l->sub_connected = true;
	maybe_up(l);
}

/* A sentinel's answer can be stale: only the server itself knows it is the master. */
static void role_reply(struct redis_link *l, const redisReply *reply)
{
	char why[200];
	if (!rs_role_is_master(reply, why, sizeof why)) {
		char msg[300];
		snprintf(msg, sizeof msg, "%s: %s", l->target_text, why);
		link_down(l, msg);
		/* a stale sentinel named it: ask the next one on the next tick, not after a second */
		l->next_connect_ms = mono_ms();
		return;
	}
	if (l->cmd_handshake)
		l->cmd_handshake--;
	maybe_up(l);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct redis_link *l = ac->data;
	if (!l || l->freeing || (ac != l->cmd && ac != l->sub))
		return; /* one we dropped ourselves */
	/* hiredis drops a connection whose SUBSCRIBE (or any command without a
	 * callback) is answered with an error (NOAUTH: a password is needed) */
	bool refused = status != REDIS_OK && ac->err == REDIS_ERR_OTHER && l->state == REDIS_LINK_CONNECTING;
	char why[200];
	snprintf(why, sizeof why, "%s: %.150s",
	         !refused ? "connection lost" : ac == l->sub ? "SUBSCRIBE refused" : "connection refused by Redis",
	         status == REDIS_OK ? "closed" : ac->errstr);
	if (ac == l->cmd)
		l->cmd = NULL;
	else
		l->sub = NULL;
	link_down_as(l, why, refused);
}

static void reply_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct link_cmd *c = privdata;
	struct redis_link *l = c->link;
	const redisReply *reply = reply_v;
	if (ac == l->cmd && l->inflight) {
		l->inflight--;
		l->waiting_since_ms = mono_ms();
	}
	if (c->kind == CMD_OWNER) {
		c->cb(c->arg, reply);
	} else if (reply && c->kind == CMD_AUTH && reply->type == REDIS_REPLY_ERROR) {
		if (!l->freeing)
			link_refused(l, "AUTH/SELECT", reply->str);
	} else if (reply && c->kind == CMD_AUTH && !l->freeing && (ac == l->cmd || ac == l->sub)) {
		unsigned *awaited = ac == l->cmd ? &l->cmd_handshake : &l->sub_handshake;
		if (*awaited)
			(*awaited)--;
		maybe_up(l);
	} else if (reply && c->kind == CMD_ROLE) {
		if (ac == l->cmd && !l->freeing)
			role_reply(l, reply);
	}
	if (reply && reply->type == REDIS_REPLY_ERROR && reply->str && ac == l->cmd && !l->freeing &&
	    (strstr(reply->str, "READONLY") || strncmp(reply->str, "MASTERDOWN", 10) == 0)) {
		/* the server was demoted (a failover) or lost its master: the next
		 * connect finds the master (with sentinels, asks them again) */
		char why[300];
		snprintf(why, sizeof why, "%.80s answered %.150s", l->target_text, reply->str);
		link_down(l, why);
		if (l->finder)
			l->next_connect_ms = mono_ms(); /* the sentinels know the new master already */
	}
	free(c);
}

/* select: the command connection (SELECT, ROLE), else the subscriber (SUBSCRIBE);
 * *awaited counts the handshake answers it is waiting for. */
static redisAsyncContext *open_context(struct redis_link *l, bool select, unsigned *awaited, char *why,
                                       size_t why_size)
{
	redisAsyncContext *ac = redisAsyncConnect(l->target.host, l->target.port);
	if (!ac) {
		snprintf(why, why_size, "out of memory");
		return NULL;
	}
	if (ac->err) {
		snprintf(why, why_size, "connect failed: %.150s", ac->errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = l;
	if (redisLibeventAttach(ac, l->base) != REDIS_OK) {
		redisAsyncFree(ac);
		snprintf(why, why_size, "cannot attach to the event loop");
		return NULL;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	bool sent = auth_and_select(l, ac, awaited, select);
	if (sent && select && l->finder) {
		const char *argv[] = { "ROLE" };
		size_t lens[] = { 4 };
		sent = send_handshake(l, ac, awaited, CMD_ROLE, 1, argv, lens);
	}
	if (sent && !select) {
		/* the subscriber: up once its SUBSCRIBE is confirmed */
		const char *argv[] = { "SUBSCRIBE", l->channel };
		size_t lens[] = { 9, strlen(l->channel) };
		sent = redisAsyncCommandArgv(ac, sub_cb, l, 2, argv, lens) == REDIS_OK;
		*awaited += sent;
	}
	if (!sent) {
		snprintf(why, why_size, "out of memory");
		redisAsyncFree(ac); /* fails what was queued: those callbacks see it is not l->cmd or l->sub */
		return NULL;
	}
	return ac;
}

/* Connects both connections to l->target. */
static void connect_master(struct redis_link *l)
{
	char why[200];
	set_state(l, REDIS_LINK_CONNECTING);
	l->connect_started_ms = mono_ms();
	l->cmd_handshake = l->sub_handshake = 0;
	if (!(l->cmd = open_context(l, true, &l->cmd_handshake, why, sizeof why)) ||
	    !(l->sub = open_context(l, false, &l->sub_handshake, why, sizeof why)))
		link_down(l, why);
}

static void connect_now(struct redis_link *l)
{
	if (!l->finder) {
		connect_master(l);
		return;
	}
	if (l->resolving)
		return;
	/* each sentinel asked is bounded by connect_timeout (the finder's), not the whole round */
	set_state(l, REDIS_LINK_CONNECTING);
	l->resolving = true;
	rs_finder_ask(l->finder); /* may end the round (master_found) before it returns */
}

static void master_found(void *arg, const struct rs_addr *master, const char *why)
{
	struct redis_link *l = arg;
	l->resolving = false;
	if (!master) {
		link_down(l, why);
		return;
	}
	l->target = *master;
	rs_addr_format(master, l->target_text, sizeof l->target_text);
	connect_master(l);
}

/* The sentinels moved the master: leave the old one now, connect to the new one at once. */
static void master_switched(void *arg, const struct rs_addr *to)
{
	struct redis_link *l = arg;
	if (l->freeing || (!l->resolving && l->state != REDIS_LINK_DOWN && rs_addr_equal(&l->target, to)))
		return;
	char addr[80], why[200];
	rs_addr_format(to, addr, sizeof addr);
	snprintf(why, sizeof why, "the sentinels switched the master to %s", addr);
	link_down(l, why);
	l->target = *to;
	snprintf(l->target_text, sizeof l->target_text, "%s", addr);
	connect_master(l);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct redis_link *l = arg;
	if (!l->started)
		return;
	uint64_t now = mono_ms();
	if (l->state == REDIS_LINK_DOWN && now >= l->next_connect_ms)
		connect_now(l);
	else if (l->state == REDIS_LINK_CONNECTING && !l->resolving && now - l->connect_started_ms > l->connect_timeout_ms)
		link_down(l, !(l->cmd_connected && l->sub_connected) ? "connect timeout"
		             : l->finder ? "no answer to AUTH/SELECT/ROLE/SUBSCRIBE within connect_timeout"
		                         : "no answer to AUTH/SELECT/SUBSCRIBE within connect_timeout");
	else if (l->state == REDIS_LINK_UP && l->inflight && now - l->waiting_since_ms > l->timeout_ms)
		link_down(l, "no answer in time");
}

struct redis_link *redis_link_new(struct event_base *base, const struct conf_redis *cr, const char *channel,
                                  uint64_t timeout_ms, uint64_t connect_timeout_ms,
                                  const struct redis_link_events *events, void *arg)
{
	struct redis_link *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->base = base;
	l->ev = *events;
	l->arg = arg;
	l->db = cr->db;
	l->timeout_ms = timeout_ms;
	l->connect_timeout_ms = connect_timeout_ms;
	bool target_ok = true;
	if (cr->num_sentinels) {
		snprintf(l->master_name, sizeof l->master_name, "%s", cr->master ? cr->master : "");
		snprintf(l->target_text, sizeof l->target_text, "(not found yet)");
		l->finder = rs_finder_new(base, cr->sentinels, cr->num_sentinels, cr->master, cr->sentinel_password,
		                          connect_timeout_ms * 1000, master_found, master_switched, l);
		target_ok = l->finder != NULL;
	} else {
		target_ok = cr->host && strlen(cr->host) < sizeof l->target.host;
		if (target_ok) {
			snprintf(l->target.host, sizeof l->target.host, "%s", cr->host);
			l->target.port = cr->port;
			rs_addr_format(&l->target, l->target_text, sizeof l->target_text);
		}
	}
	l->address = strdup(cr->address ? cr->address : "");
	l->password = cr->password ? strdup(cr->password) : NULL;
	l->channel = strdup(channel);
	l->tick = event_new(base, -1, EV_PERSIST, tick_cb, l);
	struct timeval tv = { 0, REDIS_LINK_TICK_MS * 1000 };
	if (!target_ok || !l->address || (cr->password && !l->password) || !l->channel || !l->tick ||
	    event_add(l->tick, &tv) != 0) {
		redis_link_free(l);
		return NULL;
	}
	l->state_since_wall_us = clock_wall_us();
	return l;
}

void redis_link_start(struct redis_link *l)
{
	l->started = true;
	connect_now(l);
}

void redis_link_free(struct redis_link *l)
{
	if (!l)
		return;
	l->freeing = true;
	rs_finder_free(l->finder);
	redisAsyncContext *cmd = l->cmd, *sub = l->sub;
	l->cmd = l->sub = NULL;
	/* fails the commands in flight: their callbacks get NULL */
	if (cmd)
		redisAsyncFree(cmd);
	if (sub)
		redisAsyncFree(sub);
	if (l->tick)
		event_free(l->tick);
	free(l->address);
	free(l->password);
	free(l->channel);
	free(l);
}

bool redis_link_is_up(const struct redis_link *l)
{
	return l->state == REDIS_LINK_UP;
}

bool redis_link_command(struct redis_link *l, redis_link_reply_cb *cb, void *arg, int argc, const char **argv,
                        const size_t *lens)
{
	return send_argv(l, l->cmd, cmd_new(l, CMD_OWNER, cb, arg), argc, argv, lens);
}

void redis_link_drop(struct redis_link *l, const char *why)
{
	if (!l->freeing)
		link_down(l, why);
}

redisContext *redis_link_connect_blocking(const struct redis_link *l, uint64_t timeout_us)
{
	if (l->state != REDIS_LINK_UP)
		return NULL;
	struct timeval tv = { (time_t)(timeout_us / 1000000u), (suseconds_t)(timeout_us % 1000000u) };
	redisContext *c = redisConnectWithTimeout(l->target.host, l->target.port, tv);
	if (!c || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisReply *rep = l->password ? redisCommand(c, "AUTH %s", l->password) : NULL;
	if (rep)
		freeReplyObject(rep);
	rep = l->db ? redisCommand(c, "SELECT %u", l->db) : NULL; /* the keys live in that db */
	if (rep)
		freeReplyObject(rep);
	return c;
}

void redis_link_status(const struct redis_link *l, struct redis_link_status *st)
{
	st->state = l->state;
	st->state_name = state_names[l->state];
	st->since_wall_us = l->state_since_wall_us;
	st->why = l->why;
	st->address = l->address;
	st->master = l->target_text;
	st->master_name = l->finder ? l->master_name : NULL;
	st->refused = l->state != REDIS_LINK_UP && l->refused;
}
