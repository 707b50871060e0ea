#include "redis_sentinel.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

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
