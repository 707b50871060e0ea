#include "redis_sentinel.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "clock.h"

void rs_addr_format(const struct rs_addr *a, char *buf, size_t size)
{
	if (strchr(a->host, ':'))
		snprintf(buf, size, "[%s]:%d", a->host, a->port);
	else
		snprintf(buf, size, "%s:%d", a->host, a->port);
}

bool rs_addr_equal(const struct rs_addr *a, const struct rs_addr *b)
{
	return a->port == b->port && strcmp(a->host, b->host) == 0;
}

bool rs_addr_parse(const char *host, size_t host_len, const char *port, size_t port_len, struct rs_addr *out)
{
	if (host_len == 0 || host_len >= RS_HOST_MAX || port_len == 0 || port_len > 5)
		return false;
	char h[RS_HOST_MAX];
	memcpy(h, host, host_len);
	h[host_len] = '\0';
	unsigned char bin[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, h, bin) != 1 && inet_pton(AF_INET6, h, bin) != 1)
		return false;
	long p = 0;
	for (size_t i = 0; i < port_len; i++) {
		if (port[i] < '0' || port[i] > '9')
			return false;
		p = p * 10 + (port[i] - '0');
	}
	if (p < 1 || p > 65535)
		return false;
	memcpy(out->host, h, host_len + 1);
	out->port = (int)p;
	return true;
}

static bool is_str(const redisReply *r)
{
	return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->str;
}

bool rs_parse_master_reply(const redisReply *r, const char *name, struct rs_addr *out, char *why, size_t why_size)
{
	if (!r) {
		snprintf(why, why_size, "no answer");
		return false;
	}
	if (r->type == REDIS_REPLY_NIL) {
		snprintf(why, why_size, "the sentinel does not know a master named %.100s (check `master`)", name);
		return false;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(why, why_size, "the sentinel refused: %.120s", r->str ? r->str : "");
		return false;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !is_str(r->element[0]) || !is_str(r->element[1])) {
		snprintf(why, why_size, "unexpected answer to SENTINEL get-master-addr-by-name (is it a sentinel?)");
		return false;
	}
	if (!rs_addr_parse(r->element[0]->str, r->element[0]->len, r->element[1]->str, r->element[1]->len, out)) {
		snprintf(why, why_size,
		         "the sentinel gave a master address that is not a numeric IP and port (set `sentinel "
		         "resolve-hostnames no` or announce IPs)");
		return false;
	}
	return true;
}

bool rs_role_is_master(const redisReply *r, char *why, size_t why_size)
{
	if (!r) {
		snprintf(why, why_size, "no answer to ROLE");
		return false;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(why, why_size, "ROLE refused: %.120s", r->str ? r->str : "");
		return false;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !is_str(r->element[0])) {
		snprintf(why, why_size, "unexpected answer to ROLE");
		return false;
	}
	const redisReply *e = r->element[0];
	if (e->len == 6 && memcmp(e->str, "master", 6) == 0)
		return true;
	snprintf(why, why_size, "it is not the master (ROLE: %.20s): a failover is under way or the sentinels are stale",
	         e->str);
	return false;
}

/* The next space-separated word of s[*i..len). */
static bool next_word(const char *s, size_t len, size_t *i, const char **w, size_t *wl)
{
	while (*i < len && s[*i] == ' ')
		(*i)++;
	size_t start = *i;
	while (*i < len && s[*i] != ' ')
		(*i)++;
	*w = s + start;
	*wl = *i - start;
	return *wl > 0;
}

bool rs_parse_switch_master(const char *msg, size_t len, const char *name, struct rs_addr *out)
{
	const char *w[5];
	size_t wl[5], i = 0;
	for (int k = 0; k < 5; k++)
		if (!next_word(msg, len, &i, &w[k], &wl[k]))
			return false;
	const char *extra;
	size_t extra_len;
	if (next_word(msg, len, &i, &extra, &extra_len))
		return false;
	if (wl[0] != strlen(name) || memcmp(w[0], name, wl[0]) != 0)
		return false;
	return rs_addr_parse(w[3], wl[3], w[4], wl[4], out);
}

/* ---- the process-wide record of the master reached ---- */

static struct {
	pthread_mutex_t mu;
	bool known;
	struct rs_addr current;
	unsigned long long switches;
	uint64_t since_wall_us;
} rs_seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

bool rs_master_note(const struct rs_addr *a, struct rs_addr *before)
{
	bool switched = false;
	pthread_mutex_lock(&rs_seen.mu);
	if (!rs_seen.known || !rs_addr_equal(&rs_seen.current, a)) {
		if (rs_seen.known) {
			switched = true;
			*before = rs_seen.current;
			rs_seen.switches++;
		}
		rs_seen.known = true;
		rs_seen.current = *a;
		rs_seen.since_wall_us = clock_wall_us();
	}
	pthread_mutex_unlock(&rs_seen.mu);
	return switched;
}

bool rs_master_current(struct rs_addr *out, unsigned long long *switches, uint64_t *since_wall_us)
{
	pthread_mutex_lock(&rs_seen.mu);
	bool known = rs_seen.known;
	*out = rs_seen.current;
	*switches = rs_seen.switches;
	*since_wall_us = rs_seen.since_wall_us;
	pthread_mutex_unlock(&rs_seen.mu);
	return known;
}

/* ---- blocking connect ---- */

static redisContext *open_ctx(const char *host, int port, uint64_t timeout_us, char *err, size_t err_size)
{
	struct timeval tv = {(time_t)(timeout_us / 1000000u), (suseconds_t)(timeout_us % 1000000u)};
	redisContext *c = redisConnectWithTimeout(host, port, tv);
	if (!c) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		snprintf(err, err_size, "cannot connect to %s:%d: %.120s", host, port, c->err ? c->errstr : "set timeout");
		redisFree(c);
		return NULL;
	}
	return c;
}

/* One command whose answer must not be an error; false with err. */
static bool simple_cmd(redisContext *c, int argc, const char **argv, const char *what, char *err, size_t err_size)
{
	size_t lens[4];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	redisReply *r = redisCommandArgv(c, argc, argv, lens);
	if (!r || r->type == REDIS_REPLY_ERROR) {
		snprintf(err, err_size, "%s refused: %.120s", what, r ? r->str : c->errstr);
		if (r)
			freeReplyObject(r);
		return false;
	}
	freeReplyObject(r);
	return true;
}

static redisContext *open_master(const struct conf_redis *cr, const struct rs_addr *a, uint64_t timeout_us, char *err,
                                 size_t err_size)
{
	redisContext *c = open_ctx(a->host, a->port, timeout_us, err, err_size);
	if (!c)
		return NULL;
	char db[16];
	snprintf(db, sizeof db, "%u", cr->db);
	const char *auth[2] = {"AUTH", cr->password};
	const char *sel[2] = {"SELECT", db};
	if ((cr->password && !simple_cmd(c, 2, auth, "AUTH", err, err_size)) ||
	    (cr->db && !simple_cmd(c, 2, sel, "SELECT", err, err_size))) {
		redisFree(c);
		return NULL;
	}
	if (cr->num_sentinels) {
		redisReply *r = redisCommand(c, "ROLE");
		char why[200];
		bool ok = rs_role_is_master(r, why, sizeof why);
		if (r)
			freeReplyObject(r);
		if (!ok) {
			char addr[80];
			rs_addr_format(a, addr, sizeof addr);
			snprintf(err, err_size, "%s: %s", addr, why);
			redisFree(c);
			return NULL;
		}
	}
	return c;
}

redisContext *rs_connect(const struct conf_redis *cr, uint64_t timeout_us, struct rs_addr *master, char *err,
                         size_t err_size)
{
	if (!cr->enabled) {
		snprintf(err, err_size, "no `redis` section in the config");
		return NULL;
	}
	if (!cr->num_sentinels) {
		struct rs_addr a;
		snprintf(a.host, sizeof a.host, "%s", cr->host);
		a.port = cr->port;
		redisContext *c = open_master(cr, &a, timeout_us, err, err_size);
		if (c)
			*master = a;
		return c;
	}
	char last[300] = "no sentinel listed";
	for (size_t i = 0; i < cr->num_sentinels; i++) {
		const struct conf_redis_sentinel *s = &cr->sentinels[i];
		char why[240];
		redisContext *sc = open_ctx(s->host, s->port, timeout_us, why, sizeof why);
		if (!sc) {
			snprintf(last, sizeof last, "sentinel %s: %s", s->address, why);
			continue;
		}
		const char *auth[2] = {"AUTH", cr->sentinel_password};
		if (cr->sentinel_password && !simple_cmd(sc, 2, auth, "AUTH", why, sizeof why)) {
			snprintf(last, sizeof last, "sentinel %s: %s", s->address, why);
			redisFree(sc);
			continue;
		}
		const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", cr->master};
		size_t lens[3] = {8, 23, strlen(cr->master)};
		redisReply *r = redisCommandArgv(sc, 3, argv, lens);
		struct rs_addr a;
		bool ok = rs_parse_master_reply(r, cr->master, &a, why, sizeof why);
		if (!r)
			snprintf(why, sizeof why, "%.120s", sc->errstr);
		if (r)
			freeReplyObject(r);
		redisFree(sc);
		if (!ok) {
			snprintf(last, sizeof last, "sentinel %s: %s", s->address, why);
			continue;
		}
		redisContext *c = open_master(cr, &a, timeout_us, why, sizeof why);
		if (c) {
			*master = a;
			return c;
		}
		snprintf(last, sizeof last, "master from sentinel %s: %s", s->address, why);
	}
	snprintf(err, err_size, "no master of %s reached (%zu sentinel%s asked); last: %s", cr->master,
	         cr->num_sentinels, cr->num_sentinels == 1 ? "" : "s", last);
	return NULL;
}

/* ---- asynchronous: the finder ---- */

#define RS_SUB_RETRY_US 1000000u

struct rs_finder {
	struct event_base *base;
	struct rs_addr *sentinels;
	size_t num_sentinels;
	char *master_name;
	char *password; /* the sentinels' (NULL: no AUTH) */
	uint64_t timeout_us;
	rs_found_cb *found;
	rs_switched_cb *switched;
	void *arg;
	/* a round */
	redisAsyncContext *ask; /* the sentinel being asked */
	bool asking;
	size_t next;  /* asked next (the last that answered is asked first) */
	size_t tries; /* in this round */
	char last_err[256];
	struct event *ask_timer;
	/* the +switch-master subscription */
	redisAsyncContext *sub;
	bool sub_ready;
	size_t sub_next;
	struct event *sub_timer; /* its connect deadline, then its retry */
};

static struct timeval rs_tv(uint64_t us)
{
	struct timeval tv = {(time_t)(us / 1000000u), (suseconds_t)(us % 1000000u)};
	return tv;
}

/* Connects to sentinel s, attached to the loop; NULL with why. */
static redisAsyncContext *finder_open(struct rs_finder *f, const struct rs_addr *s, char *why, size_t why_size)
{
	redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
	if (!ac) {
		snprintf(why, why_size, "out of memory");
		return NULL;
	}
	if (ac->err || (ac->data = f, redisLibeventAttach(ac, f->base) != REDIS_OK)) {
		snprintf(why, why_size, "connect failed: %.120s", ac->err ? ac->errstr : "cannot attach to the event loop");
		redisAsyncFree(ac);
		return NULL;
	}
	return ac;
}

static void finder_send(redisAsyncContext *ac, redisCallbackFn *cb, void *arg, int argc, const char **argv)
{
	size_t lens[3];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	/* a command that cannot be queued shows up as the connection failing */
	(void)redisAsyncCommandArgv(ac, cb, arg, argc, argv, lens);
}

static void ask_drop(struct rs_finder *f)
{
	redisAsyncContext *ac = f->ask;
	f->ask = NULL;
	evtimer_del(f->ask_timer);
	if (ac)
		redisAsyncFree(ac); /* inside its own callback hiredis defers the free */
}

static void ask_next(struct rs_finder *f);

/* The sentinel being asked failed: the next one, or the round ends. */
static void ask_failed(struct rs_finder *f, const char *why)
{
	const struct rs_addr *s = &f->sentinels[(f->next + f->num_sentinels - 1) % f->num_sentinels];
	char addr[80];
	rs_addr_format(s, addr, sizeof addr);
	snprintf(f->last_err, sizeof f->last_err, "sentinel %.60s: %.150s", addr, why);
	ask_drop(f);
	ask_next(f);
}

static void ask_reply_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct rs_finder *f = privdata;
	if (!reply_v || ac != f->ask)
		return; /* a failed connection is handled by its disconnect callback */
	char why[200];
	struct rs_addr m;
	if (!rs_parse_master_reply(reply_v, f->master_name, &m, why, sizeof why)) {
		ask_failed(f, why);
		return;
	}
	/* this sentinel answered: it is asked first next time */
	f->next = (f->next + f->num_sentinels - 1) % f->num_sentinels;
	ask_drop(f);
	f->asking = false;
	f->found(f->arg, &m, NULL);
}

static void ask_auth_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct rs_finder *f = privdata;
	redisReply *reply = reply_v;
	if (!reply || ac != f->ask || reply->type != REDIS_REPLY_ERROR)
		return;
	char why[160];
	snprintf(why, sizeof why, "AUTH refused: %.120s", reply->str);
	ask_failed(f, why);
}

static void ask_on_connect(const redisAsyncContext *ac, int status)
{
	struct rs_finder *f = ac->data;
	if (!f || ac != f->ask || status == REDIS_OK)
		return;
	char why[160];
	snprintf(why, sizeof why, "connect failed: %.120s", ac->errstr);
	f->ask = NULL; /* hiredis frees it after this callback */
	ask_failed(f, why);
}

static void ask_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rs_finder *f = ac->data;
	if (!f || ac != f->ask)
		return;
	char why[160];
	snprintf(why, sizeof why, "connection lost: %.120s", status == REDIS_OK ? "closed" : ac->errstr);
	f->ask = NULL;
	ask_failed(f, why);
}

static void ask_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct rs_finder *f = arg;
	if (f->ask)
		ask_failed(f, "no answer within connect_timeout");
}

static void ask_next(struct rs_finder *f)
{
	while (f->tries < f->num_sentinels) {
		const struct rs_addr *s = &f->sentinels[f->next];
		f->next = (f->next + 1) % f->num_sentinels;
		f->tries++;
		char why[160];
		redisAsyncContext *ac = finder_open(f, s, why, sizeof why);
		if (!ac) {
			char addr[80];
			rs_addr_format(s, addr, sizeof addr);
			snprintf(f->last_err, sizeof f->last_err, "sentinel %.60s: %.150s", addr, why);
			continue;
		}
		f->ask = ac;
		redisAsyncSetConnectCallback(ac, ask_on_connect);
		redisAsyncSetDisconnectCallback(ac, ask_on_disconnect);
		struct timeval tv = rs_tv(f->timeout_us);
		evtimer_add(f->ask_timer, &tv);
		const char *auth[2] = {"AUTH", f->password};
		if (f->password)
			finder_send(ac, ask_auth_cb, f, 2, auth);
		const char *q[3] = {"SENTINEL", "get-master-addr-by-name", f->master_name};
		finder_send(ac, ask_reply_cb, f, 3, q);
		return;
	}
	char why[400];
	snprintf(why, sizeof why, "no sentinel gave the master of %.60s (%zu asked; last: %.200s)", f->master_name,
	         f->num_sentinels, f->last_err);
	f->asking = false;
	f->found(f->arg, NULL, why);
}

void rs_finder_ask(struct rs_finder *f)
{
	if (f->asking)
		return;
	f->asking = true;
	f->tries = 0;
	ask_next(f);
}

void rs_finder_cancel(struct rs_finder *f)
{
	ask_drop(f);
	f->asking = false;
}

void rs_finder_stale(struct rs_finder *f)
{
	f->next = (f->next + 1) % f->num_sentinels;
}

/* ---- the +switch-master subscription ---- */

static void sub_retry(struct rs_finder *f)
{
	redisAsyncContext *ac = f->sub;
	f->sub = NULL;
	f->sub_ready = false;
	if (ac)
		redisAsyncFree(ac);
	struct timeval tv = rs_tv(RS_SUB_RETRY_US);
	evtimer_add(f->sub_timer, &tv);
}

static void sub_msg_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct rs_finder *f = privdata;
	redisReply *reply = reply_v;
	if (!reply || ac != f->sub)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		sub_retry(f);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING)
		return;
	const redisReply *kind = reply->element[0];
	if (kind->len == 9 && memcmp(kind->str, "subscribe", 9) == 0) {
		f->sub_ready = true;
		evtimer_del(f->sub_timer);
		return;
	}
	const redisReply *payload = reply->element[2];
	struct rs_addr to;
	if (kind->len == 7 && memcmp(kind->str, "message", 7) == 0 && payload->type == REDIS_REPLY_STRING &&
	    rs_parse_switch_master(payload->str, payload->len, f->master_name, &to))
		f->switched(f->arg, &to);
}

static void sub_auth_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct rs_finder *f = privdata;
	redisReply *reply = reply_v;
	if (reply && ac == f->sub && reply->type == REDIS_REPLY_ERROR)
		sub_retry(f);
}

static void sub_on_connect(const redisAsyncContext *ac, int status)
{
	struct rs_finder *f = ac->data;
	if (!f || ac != f->sub || status == REDIS_OK)
		return;
	f->sub = NULL; /* hiredis frees it */
	sub_retry(f);
}

static void sub_on_disconnect(const redisAsyncContext *ac, int status)
{
	(void)status;
	struct rs_finder *f = ac->data;
	if (!f || ac != f->sub)
		return;
	f->sub = NULL;
	sub_retry(f);
}

static void sub_connect(struct rs_finder *f)
{
	if (f->sub)
		return;
	const struct rs_addr *s = &f->sentinels[f->sub_next];
	f->sub_next = (f->sub_next + 1) % f->num_sentinels;
	char why[160];
	redisAsyncContext *ac = finder_open(f, s, why, sizeof why);
	if (!ac) {
		sub_retry(f);
		return;
	}
	f->sub = ac;
	f->sub_ready = false;
	redisAsyncSetConnectCallback(ac, sub_on_connect);
	redisAsyncSetDisconnectCallback(ac, sub_on_disconnect);
	const char *auth[2] = {"AUTH", f->password};
	if (f->password)
		finder_send(ac, sub_auth_cb, f, 2, auth);
	const char *sub[2] = {"SUBSCRIBE", "+switch-master"};
	finder_send(ac, sub_msg_cb, f, 2, sub);
	/* until SUBSCRIBE is answered this is the connect deadline */
	struct timeval tv = rs_tv(f->timeout_us);
	evtimer_add(f->sub_timer, &tv);
}

static void sub_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct rs_finder *f = arg;
	if (f->sub && !f->sub_ready) {
		redisAsyncContext *ac = f->sub;
		f->sub = NULL;
		redisAsyncFree(ac);
	}
	sub_connect(f);
}

struct rs_finder *rs_finder_new(struct event_base *base, const struct conf_redis_sentinel *sentinels, size_t n,
                                const char *master, const char *password, uint64_t timeout_us, rs_found_cb *found,
                                rs_switched_cb *switched, void *arg)
{
	if (!n || !master)
		return NULL;
	struct rs_finder *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	f->base = base;
	f->timeout_us = timeout_us;
	f->found = found;
	f->switched = switched;
	f->arg = arg;
	f->sentinels = calloc(n, sizeof *f->sentinels);
	f->master_name = strdup(master);
	f->password = password ? strdup(password) : NULL;
	f->ask_timer = evtimer_new(base, ask_timer_cb, f);
	f->sub_timer = evtimer_new(base, sub_timer_cb, f);
	bool ok = f->sentinels && f->master_name && (!password || f->password) && f->ask_timer && f->sub_timer;
	for (size_t i = 0; ok && i < n; i++) {
		const struct conf_redis_sentinel *cs = &sentinels[i];
		ok = cs->host && strlen(cs->host) < sizeof f->sentinels[i].host;
		if (ok) {
			snprintf(f->sentinels[i].host, sizeof f->sentinels[i].host, "%s", cs->host);
			f->sentinels[i].port = cs->port;
			f->num_sentinels++;
		}
	}
	if (!ok) {
		rs_finder_free(f);
		return NULL;
	}
	sub_connect(f);
	return f;
}

void rs_finder_free(struct rs_finder *f)
{
	if (!f)
		return;
	redisAsyncContext *ask = f->ask, *sub = f->sub;
	f->ask = f->sub = NULL;
	/* their callbacks run inside these frees and find nothing of theirs */
	if (ask)
		redisAsyncFree(ask);
	if (sub)
		redisAsyncFree(sub);
	if (f->ask_timer)
		event_free(f->ask_timer);
	if (f->sub_timer)
		event_free(f->sub_timer);
	free(f->sentinels);
	free(f->master_name);
	if (f->password) {
		memset(f->password, 0, strlen(f->password));
		free(f->password);
	}
	free(f);
}
