#include "rl_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/evp.h>

#include "clock.h"
#include "conf.h"
#include "counters.h"
#include "log.h"
#include "redis_sentinel.h"
#include "rl_script.h"

#define BACKOFF_MIN_US 100000u
#define BACKOFF_MAX_US 2000000u
#define CMD_KEY_MAX 384

/* RESOLVING: asking the sentinels for the master; CONNECTING: connecting to
 * the master (and, with sentinels, waiting for ROLE to say it is one) */
enum conn_state { CONN_DOWN, CONN_RESOLVING, CONN_CONNECTING, CONN_READY };
enum cmd_kind { CMD_TAKE, CMD_BEAT };

struct rl_cmd {
	struct rl_cmd *prev, *next; /* pending list (send order), or free list (next) */
	struct rl_redis *r;
	enum cmd_kind kind;
	uint64_t deadline_us;
	uint64_t sent_us; /* when it went to Redis (the latency histogram) */
	bool evaled; /* already re-sent as EVAL after NOSCRIPT */
	rl_take_cb *take_cb;
	rl_beat_cb *beat_cb;
	void *arg;
	int argc;
	char nums[5][24];
	char key[CMD_KEY_MAX];
	size_t key_len;
	char id[64];
	const char *argv[9];
	size_t argvlen[9];
};

struct rl_redis {
	struct event_base *base;
	struct rl_redis_config cfg;
	char *host;
	char *password;
	/* Redis Sentinel (redis_sentinel.h; NULL: one address) */
	struct rs_finder *finder;
	char *master_name;
	struct rs_addr target;    /* the master connected to (or being connected to) */
	char target_text[80];
	rl_state_cb *state_cb;
	void *state_arg;
	redisAsyncContext *ac;
	enum conn_state state;
	bool ever_up;      /* connected at least once */
	bool reported_down; /* the last transition reported was "down" */
	bool first_attempt; /* the start-up connection: commands may queue on it */
	struct event *reconnect_ev;
	struct event *connect_timeout_ev;
	struct event *cmd_timeout_ev;
	bool cmd_timer_armed;
	uint64_t backoff_us;
	uint64_t rng;
	struct rl_cmd *pending_head, *pending_tail;
	struct rl_cmd *free_cmds;
	char sha[41];
	struct ctr_worker *counters; /* the worker's: commands and failures are counted there */
};

static struct timeval us_to_tv(uint64_t us)
{
	struct timeval tv = {(time_t)(us / 1000000u), (suseconds_t)(us % 1000000u)};
	return tv;
}

static void connect_now(struct rl_redis *r);
static void connect_master(struct rl_redis *r);

static void pending_remove(struct rl_redis *r, struct rl_cmd *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		r->pending_head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		r->pending_tail = c->prev;
	c->prev = c->next = NULL;
}

static void cmd_release(struct rl_redis *r, struct rl_cmd *c)
{
	c->next = r->free_cmds;
	r->free_cmds = c;
}

/* Completes c (removed from the pending list) with a failure. */
static void cmd_fail(struct rl_cmd *c)
{
	struct rl_redis *r = c->r;
	if (c->kind == CMD_TAKE)
		c->take_cb(c->arg, false, NULL);
	else
		c->beat_cb(c->arg, -1);
	cmd_release(r, c);
}

static void set_down(struct rl_redis *r, const char *why)
{
	CTR_GLOBAL_ADD(r->counters, RL_REDIS_FAILURES, 0, 1);
	r->state = CONN_DOWN;
	r->first_attempt = false;
	evtimer_del(r->connect_timeout_ev);
	/* exponential backoff with jitter, so instances do not reconnect in lockstep */
	r->backoff_us = r->backoff_us ? r->backoff_us * 2 : BACKOFF_MIN_US;
	if (r->backoff_us > BACKOFF_MAX_US)
		r->backoff_us = BACKOFF_MAX_US;
	r->rng ^= r->rng << 13;
	r->rng ^= r->rng >> 7;
	r->rng ^= r->rng << 17;
	uint64_t jitter = r->backoff_us / 2;
	uint64_t delay = r->backoff_us - r->backoff_us / 4 + (jitter ? r->rng % jitter : 0);
	struct timeval tv = us_to_tv(delay);
	evtimer_add(r->reconnect_ev, &tv);
	if (!r->reported_down) {
		r->reported_down = true;
		r->state_cb(r->state_arg, false, why);
	}
}

/* Drops the connection (if any) and fails every pending command. */
static void fail_connection(struct rl_redis *r, const char *why)
{
	redisAsyncContext *ac = r->ac;
	r->ac = NULL;
	/* a master that a sentinel named could not be reached or is none (ROLE):
	 * that sentinel may be stale, so another one is asked first next time */
	if (r->state == CONN_CONNECTING && r->finder)
		rs_finder_stale(r->finder);
	set_down(r, why);
	if (ac) {
		/* hiredis calls each pending callback with a NULL reply, which
		 * fails the matching command; inside a callback it defers the free */
		redisAsyncFree(ac);
	}
}

static void arm_cmd_timer(struct rl_redis *r)
{
	if (r->cmd_timer_armed || !r->pending_head)
		return;
	uint64_t now = clock_mono_us();
	uint64_t d = r->pending_head->deadline_us > now ? r->pending_head->deadline_us - now : 0;
	struct timeval tv = us_to_tv(d);
	if (evtimer_add(r->cmd_timeout_ev, &tv) == 0)
		r->cmd_timer_armed = true;
}

static void cmd_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct rl_redis *r = arg;
	r->cmd_timer_armed = false;
	if (!r->pending_head)
		return;
	if (r->pending_head->deadline_us <= clock_mono_us()) {
		fail_connection(r, "command timeout");
		return;
	}
	arm_cmd_timer(r);
}

static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct rl_redis *r = arg;
	if (r->state == CONN_CONNECTING)
		fail_connection(r, r->finder ? "connect (or ROLE) timeout" : "connect timeout");
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	connect_now(arg);
}

static bool parse_u64(const redisReply *e, uint64_t *out)
{
	if (!e || e->type != REDIS_REPLY_INTEGER || e->integer < 0)
		return false;
	*out = (uint64_t)e->integer;
	return true;
}

static int send_cmd(struct rl_redis *r, struct rl_cmd *c);

static void cmd_reply_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	(void)ac;
	struct rl_cmd *c = privdata;
	struct rl_redis *r = c->r;
	redisReply *reply = reply_v;
	if (reply && reply->type == REDIS_REPLY_ERROR && !c->evaled && r->ac &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0) {
		/* the script is not cached (Redis restarted or flushed): send it whole once */
		c->evaled = true;
		c->argv[0] = "EVAL";
		c->argvlen[0] = 4;
		c->argv[1] = rl_script_text;
		c->argvlen[1] = rl_script_len;
		if (send_cmd(r, c) == 0)
			return;
	}
	pending_remove(r, c);
	if (reply)
		CTR_GLOBAL_OBSERVE(r->counters, RL_REDIS_LATENCY, clock_elapsed_us(c->sent_us, clock_mono_us()));
	if (!reply) {
		/* the connection went away; fail_connection reports it */
		cmd_fail(c);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR && reply->str && r->ac == ac &&
	    (strstr(reply->str, "READONLY") || strncmp(reply->str, "MASTERDOWN", 10) == 0)) {
		/* the server was demoted (a failover) or lost its master: this
		 * command fails over to on_failure, the next connect finds the master */
		char why[200];
		snprintf(why, sizeof why, "%.80s answered %.100s", r->target_text, reply->str);
		cmd_fail(c);
		fail_connection(r, why);
		return;
	}
	if (c->kind == CMD_BEAT) {
		long long n = reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
		c->beat_cb(c->arg, n);
		cmd_release(r, c);
		return;
	}
	struct rl_take_reply t;
	bool ok = reply->type == REDIS_REPLY_ARRAY && reply->elements == 4 && parse_u64(reply->element[0], &t.granted) &&
	          parse_u64(reply->element[1], &t.tokens) && parse_u64(reply->element[2], &t.wait_us) &&
	          parse_u64(reply->element[3], &t.full_us);
	c->take_cb(c->arg, ok, ok ? &t : NULL);
	cmd_release(r, c);
}

/* Hands c to hiredis; on success it is (still) on the pending list. */
static int send_cmd(struct rl_redis *r, struct rl_cmd *c)
{
	if (!r->ac)
		return -1;
	if (redisAsyncCommandArgv(r->ac, cmd_reply_cb, c, c->argc, c->argv, c->argvlen) != REDIS_OK)
		return -1;
	c->sent_us = clock_mono_us();
	CTR_GLOBAL_ADD(r->counters, RL_REDIS_COMMANDS, 0, 1);
	return 0;
}

static void auth_reply_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct rl_redis *r = privdata;
	redisReply *reply = reply_v;
	if (!reply || ac != r->ac)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		char why[160];
		snprintf(why, sizeof why, "AUTH/SELECT refused: %.120s", reply->str);
		fail_connection(r, why);
	}
}

/* The master (with sentinels: confirmed by ROLE) is connected. */
static void became_ready(struct rl_redis *r)
{
	evtimer_del(r->connect_timeout_ev);
	r->state = CONN_READY;
	r->backoff_us = 0;
	struct rs_addr before;
	if (r->finder && rs_master_note(&r->target, &before)) {
		/* the first worker of the process to reach a new master says so, once */
		char from[80];
		rs_addr_format(&before, from, sizeof from);
		struct log_line l;
		log_begin(&l, LOG_WARN, "redis: master switched");
		log_str(&l, "master_name", r->master_name);
		log_str(&l, "from", from);
		log_str(&l, "to", r->target_text);
		log_end(&l);
	}
	if (!r->ever_up || r->reported_down) {
		r->ever_up = true;
		r->reported_down = false;
		r->state_cb(r->state_arg, true, "connected");
	}
}

static void role_reply_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct rl_redis *r = privdata;
	if (!reply_v || ac != r->ac)
		return;
	char why[200];
	if (!rs_role_is_master(reply_v, why, sizeof why)) {
		char msg[300];
		snprintf(msg, sizeof msg, "%s: %s", r->target_text, why);
		fail_connection(r, msg);
		return;
	}
	became_ready(r);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rl_redis *r = ac->data;
	if (!r || ac != r->ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback */
		char why[160];
		snprintf(why, sizeof why, "connect failed: %.120s", ac->errstr);
		r->ac = NULL;
		fail_connection(r, why);
		return;
	}
	if (!r->finder)
		became_ready(r);
	/* with sentinels: role_reply_cb decides */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rl_redis *r = ac->data;
	if (!r || ac != r->ac)
		return; /* we dropped it ourselves */
	/* hiredis frees the context after this callback and has already failed the pending commands */
	char why[160];
	snprintf(why, sizeof why, "connection lost: %.120s", status == REDIS_OK ? "closed" : ac->errstr);
	r->ac = NULL;
	fail_connection(r, why);
}

/* Queues argv on ac (counted when queued): the connect-time commands, whose
 * failure to queue shows up as the connection failing. */
static void send_counted(struct rl_redis *r, redisAsyncContext *ac, redisCallbackFn *cb, int argc, const char **argv)
{
	size_t lens[3];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	if (redisAsyncCommandArgv(ac, cb, r, argc, argv, lens) == REDIS_OK)
		CTR_GLOBAL_ADD(r->counters, RL_REDIS_COMMANDS, 0, 1);
}

/* ---- the sentinels (rs_finder) ---- */

/* A round of asking the sentinels ended. */
static void master_found(void *arg, const struct rs_addr *m, const char *why)
{
	struct rl_redis *r = arg;
	if (!m) {
		set_down(r, why);
		return;
	}
	r->target = *m;
	rs_addr_format(m, r->target_text, sizeof r->target_text);
	connect_master(r);
}

/* The sentinels moved the master: leave the old one now, connect to the new one at once. */
static void follow_switch(void *arg, const struct rs_addr *to)
{
	struct rl_redis *r = arg;
	if (r->state == CONN_READY && rs_addr_equal(&r->target, to))
		return;
	if (r->state == CONN_CONNECTING && rs_addr_equal(&r->target, to))
		return;
	char msg[200];
	char addr[80];
	rs_addr_format(to, addr, sizeof addr);
	snprintf(msg, sizeof msg, "the sentinels switched the master to %s", addr);
	if (r->ac) {
		fail_connection(r, msg);
	} else if (r->state == CONN_RESOLVING) {
		rs_finder_cancel(r->finder);
		set_down(r, msg);
	} else if (r->state != CONN_DOWN) {
		set_down(r, msg);
	}
	evtimer_del(r->reconnect_ev);
	evtimer_del(r->connect_timeout_ev);
	r->backoff_us = 0;
	r->target = *to;
	rs_addr_format(to, r->target_text, sizeof r->target_text);
	connect_master(r);
}

/* ---- the master ---- */

static void connect_now(struct rl_redis *r)
{
	if (r->ac || r->state == CONN_RESOLVING)
		return;
	if (r->finder) {
		r->state = CONN_RESOLVING;
		rs_finder_ask(r->finder); /* master_found may run before this returns */
		return;
	}
	connect_master(r);
}

static void connect_master(struct rl_redis *r)
{
	if (r->ac)
		return;
	redisAsyncContext *ac = redisAsyncConnect(r->target.host, r->target.port);
	if (!ac) {
		set_down(r, "out of memory");
		return;
	}
	if (ac->err) {
		char why[160];
		snprintf(why, sizeof why, "connect failed: %.120s", ac->errstr);
		redisAsyncFree(ac);
		set_down(r, why);
		return;
	}
	ac->data = r;
	if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
		redisAsyncFree(ac);
		set_down(r, "cannot attach to the event loop");
		return;
	}
	r->ac = ac;
	r->state = CONN_CONNECTING;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	struct timeval tv = us_to_tv(r->cfg.connect_timeout_us);
	evtimer_add(r->connect_timeout_ev, &tv);
	/* queued ahead of any command, so they run first once connected */
	const char *auth[2] = {"AUTH", r->password};
	if (r->password)
		send_counted(r, ac, auth_reply_cb, 2, auth);
	char db[16];
	snprintf(db, sizeof db, "%u", r->cfg.db);
	const char *sel[2] = {"SELECT", db};
	if (r->cfg.db)
		send_counted(r, ac, auth_reply_cb, 2, sel);
	/* a sentinel's answer can be stale: only the server itself knows it is the master */
	const char *role[1] = {"ROLE"};
	if (r->finder)
		send_counted(r, ac, role_reply_cb, 1, role);
}

struct rl_redis *rl_redis_new(struct event_base *base, const struct rl_redis_config *cfg, struct ctr_worker *counters,
                              rl_state_cb *state_cb, void *state_arg)
{
	struct rl_redis *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->base = base;
	r->counters = counters;
	r->cfg = *cfg;
	r->state_cb = state_cb;
	r->state_arg = state_arg;
	r->host = strdup(cfg->host ? cfg->host : "");
	r->password = cfg->password ? strdup(cfg->password) : NULL;
	r->cfg.host = r->host;
	r->cfg.password = r->password;
	r->cfg.sentinels = NULL;
	r->cfg.master_name = r->cfg.sentinel_password = NULL;
	bool sentinels_ok = true;
	if (cfg->num_sentinels) {
		/* asks the sentinels on this worker's loop, and subscribes to +switch-master at once */
		r->master_name = strdup(cfg->master_name ? cfg->master_name : "");
		r->finder = rs_finder_new(base, cfg->sentinels, cfg->num_sentinels, cfg->master_name,
		                          cfg->sentinel_password, cfg->connect_timeout_us, master_found, follow_switch, r);
		sentinels_ok = r->master_name && r->finder;
		snprintf(r->target_text, sizeof r->target_text, "(unresolved)");
	} else {
		snprintf(r->target.host, sizeof r->target.host, "%s", r->host ? r->host : "");
		r->target.port = cfg->port;
		rs_addr_format(&r->target, r->target_text, sizeof r->target_text);
	}
	r->reconnect_ev = evtimer_new(base, reconnect_cb, r);
	r->connect_timeout_ev = evtimer_new(base, connect_timeout_cb, r);
	r->cmd_timeout_ev = evtimer_new(base, cmd_timeout_cb, r);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	if (!r->host || !sentinels_ok || (cfg->password && !r->password) || !r->reconnect_ev || !r->connect_timeout_ev ||
	    !r->cmd_timeout_ev || EVP_Digest(rl_script_text, rl_script_len, md, &mdlen, EVP_sha1(), NULL) != 1 ||
	    mdlen != 20) {
		rl_redis_free(r);
		return NULL;
	}
	for (unsigned i = 0; i < 20; i++)
		snprintf(r->sha + 2 * i, 3, "%02x", md[i]);
	if (getrandom(&r->rng, sizeof r->rng, 0) != (ssize_t)sizeof r->rng || r->rng == 0)
		r->rng = (uint64_t)(uintptr_t)r | 1;
	r->first_attempt = true;
	connect_now(r);
	return r;
}

void rl_redis_free(struct rl_redis *r)
{
	if (!r)
		return;
	redisAsyncContext *ac = r->ac;
	r->ac = NULL;
	r->state = CONN_DOWN;
	if (ac)
		redisAsyncFree(ac); /* fails its pending commands */
	rs_finder_free(r->finder);
	r->finder = NULL;
	while (r->pending_head) {
		struct rl_cmd *c = r->pending_head;
		pending_remove(r, c);
		cmd_fail(c);
	}
	while (r->free_cmds) {
		struct rl_cmd *c = r->free_cmds;
		r->free_cmds = c->next;
		free(c);
	}
	if (r->reconnect_ev)
		event_free(r->reconnect_ev);
	if (r->connect_timeout_ev)
		event_free(r->connect_timeout_ev);
	if (r->cmd_timeout_ev)
		event_free(r->cmd_timeout_ev);
	free(r->master_name);
	free(r->host);
	if (r->password) {
		memset(r->password, 0, strlen(r->password));
		free(r->password);
	}
	free(r);
}

bool rl_redis_usable(const struct rl_redis *r)
{
	return r->ac && (r->state == CONN_READY || (r->state == CONN_CONNECTING && r->first_attempt));
}

static struct rl_cmd *cmd_new(struct rl_redis *r)
{
	struct rl_cmd *c = r->free_cmds;
	if (c)
		r->free_cmds = c->next;
	else if (!(c = malloc(sizeof *c)))
		return NULL;
	c->prev = c->next = NULL;
	c->r = r;
	c->evaled = false;
	c->deadline_us = clock_mono_us() + r->cfg.timeout_us;
	return c;
}

static int queue_cmd(struct rl_redis *r, struct rl_cmd *c)
{
	/* on the list before sending: a callback can only come later, from the loop */
	c->prev = r->pending_tail;
	c->next = NULL;
	if (r->pending_tail)
		r->pending_tail->next = c;
	else
		r->pending_head = c;
	r->pending_tail = c;
	if (send_cmd(r, c) != 0) {
		pending_remove(r, c);
		cmd_release(r, c);
		return -1;
	}
	arm_cmd_timer(r);
	return 0;
}

static void set_arg(struct rl_cmd *c, int i, const char *s, size_t n)
{
	c->argv[i] = s;
	c->argvlen[i] = n;
}

static void set_num(struct rl_cmd *c, int i, int slot, uint64_t v)
{
	int n = snprintf(c->nums[slot], sizeof c->nums[slot], "%llu", (unsigned long long)v);
	set_arg(c, i, c->nums[slot], (size_t)n);
}

int rl_redis_take(struct rl_redis *r, const char *key, size_t key_len, uint64_t rate, uint64_t per_us, uint64_t burst,
                  uint64_t want, rl_take_cb *cb, void *arg)
{
	if (!rl_redis_usable(r) || key_len > CMD_KEY_MAX)
		return -1;
	struct rl_cmd *c = cmd_new(r);
	if (!c)
		return -1;
	c->kind = CMD_TAKE;
	c->take_cb = cb;
	c->arg = arg;
	memcpy(c->key, key, key_len);
	c->key_len = key_len;
	c->argc = 9;
	set_arg(c, 0, "EVALSHA", 7);
	set_arg(c, 1, r->sha, 40);
	set_arg(c, 2, "1", 1);
	set_arg(c, 3, c->key, key_len);
	set_arg(c, 4, "take", 4);
	set_num(c, 5, 0, rate);
	set_num(c, 6, 1, per_us);
	set_num(c, 7, 2, burst);
	set_num(c, 8, 3, want);
	return queue_cmd(r, c);
}

int rl_redis_beat(struct rl_redis *r, const char *instances_key, const char *instance_id, unsigned window_s,
                  rl_beat_cb *cb, void *arg)
{
	size_t klen = strlen(instances_key);
	size_t ilen = strlen(instance_id);
	if (!rl_redis_usable(r) || klen > CMD_KEY_MAX || ilen > sizeof(((struct rl_cmd *)0)->id))
		return -1;
	struct rl_cmd *c = cmd_new(r);
	if (!c)
		return -1;
	c->kind = CMD_BEAT;
	c->beat_cb = cb;
	c->arg = arg;
	memcpy(c->key, instances_key, klen);
	c->key_len = klen;
	memcpy(c->id, instance_id, ilen);
	c->argc = 7;
	set_arg(c, 0, "EVALSHA", 7);
	set_arg(c, 1, r->sha, 40);
	set_arg(c, 2, "1", 1);
	set_arg(c, 3, c->key, klen);
	set_arg(c, 4, "beat", 4);
	set_arg(c, 5, c->id, ilen);
	set_num(c, 6, 0, window_s);
	return queue_cmd(r, c);
}

const char *rl_redis_address(const struct rl_redis *r)
{
	return r ? r->target_text : "(unresolved)";
}

uint64_t rl_redis_commands(const struct rl_redis *r)
{
	return r ? ctr_global_own(r->counters, CTR_RL_REDIS_COMMANDS) : 0;
}

uint64_t rl_redis_failures(const struct rl_redis *r)
{
	return r ? ctr_global_own(r->counters, CTR_RL_REDIS_FAILURES) : 0;
}
