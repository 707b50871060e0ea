#include "conf_ratelimit.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_redis.h"

/* The bucket arithmetic (modules/rl_bucket.h) and the Redis script count in
 * token-microseconds; Lua numbers in Redis are doubles, exact up to 2^53. */
#define RL_MAX_CAPACITY ((uint64_t)1 << 53)

static void rl_free_limit(struct conf_rate_limit *l)
{
	free(l->name);
	for (size_t i = 0; i < l->num_keys; i++)
		free(l->keys[i].name);
	free(l->keys);
}

void conf_rl_free(struct conf *c)
{
	for (size_t i = 0; i < c->num_rate_limits; i++)
		rl_free_limit(&c->rate_limits[i]);
	free(c->rate_limits);
	c->rate_limits = NULL;
	c->num_rate_limits = 0;
	for (size_t i = 0; i < c->num_routes; i++) {
		free(c->routes[i].rate_limits);
		c->routes[i].rate_limits = NULL;
	}
	conf_redis_clear(&c->redis);
}

int conf_rl_find(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->num_rate_limits; i++)
		if (strcmp(c->rate_limits[i].name, name) == 0)
			return (int)i;
	return -1;
}

static char lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* Levenshtein distance, for did-you-mean on limit names (short strings). */
static unsigned distance(const char *a, const char *b)
{
	size_t n = strlen(a), m = strlen(b);
	if (n > 64 || m > 64)
		return 1000;
	unsigned row[65];
	for (size_t j = 0; j <= m; j++)
		row[j] = (unsigned)j;
	for (size_t i = 1; i <= n; i++) {
		unsigned diag = row[0];
		row[0] = (unsigned)i;
		for (size_t j = 1; j <= m; j++) {
			unsigned up = row[j];
			unsigned best = diag + (lower(a[i - 1]) == lower(b[j - 1]) ? 0u : 1u);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[m];
}

static bool is_token_char(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool parse_key_part(struct conf_walker *w, const char *s, struct conf_rl_key *k)
{
	static const struct {
		const char *name;
		enum conf_rl_key_kind kind;
	} plain[] = {
	    {"client_ip", CONF_RL_KEY_CLIENT_IP},
	    {"path", CONF_RL_KEY_PATH},
	    {"route", CONF_RL_KEY_ROUTE},
	    {"host", CONF_RL_KEY_HOST},
	};
	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
		if (strcmp(s, plain[i].name) == 0) {
			k->kind = plain[i].kind;
			k->name = NULL;
			return true;
		}
	}
	const char *rest = NULL;
	if (strncmp(s, "header:", 7) == 0) {
		k->kind = CONF_RL_KEY_HEADER;
		rest = s + 7;
	} else if (strncmp(s, "cookie:", 7) == 0) {
		k->kind = CONF_RL_KEY_COOKIE;
		rest = s + 7;
	} else if (strncmp(s, "policy:", 7) == 0) {
		k->kind = CONF_RL_KEY_POLICY;
		rest = s + 7;
	}
	if (!rest) {
		char *q = conf_quoted(s);
		conf_werr(w, "unknown key %s (expected client_ip, path, route, host, header:NAME, cookie:NAME or policy:NAME)", q);
		free(q);
		return false;
	}
	bool ok = *rest != '\0';
	for (const char *p = rest; *p && ok; p++)
		ok = is_token_char((unsigned char)*p) && !(k->kind == CONF_RL_KEY_COOKIE && *p == '=');
	if (!ok) {
		char *q = conf_quoted(s);
		conf_werr(w, "key %s: the %s name after the colon must be a non-empty token (e.g. header:authorization)", q,
		          k->kind == CONF_RL_KEY_HEADER ? "header" : k->kind == CONF_RL_KEY_COOKIE ? "cookie" : "policy key");
		free(q);
		return false;
	}
	k->name = conf_xstrdup(rest);
	if (k->kind == CONF_RL_KEY_HEADER || k->kind == CONF_RL_KEY_POLICY)
		for (char *p = k->name; *p; p++)
			*p = lower(*p);
	return true;
}

static void walk_key(struct conf_walker *w, int t, struct conf_rate_limit *l)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "key", &f)) {
		conf_werr_key(w, "key", "missing (write key = \"client_ip\" or key = { \"client_ip\", \"path\" })");
		return;
	}
	int v = lua_gettop(w->L);
	if (lua_type(w->L, v) == LUA_TSTRING) {
		l->keys = conf_xcalloc(1, sizeof *l->keys);
		if (parse_key_part(w, lua_tostring(w->L, v), &l->keys[0]))
			l->num_keys = 1;
	} else if (lua_type(w->L, v) == LUA_TTABLE) {
		size_t n;
		if (conf_list_length(w, v, "{ \"client_ip\", \"path\" }", &n)) {
			if (n == 0)
				conf_werr(w, "empty (name at least one key part, e.g. { \"client_ip\" })");
			l->keys = conf_xcalloc(n ? n : 1, sizeof *l->keys);
			for (size_t i = 1; i <= n; i++) {
				struct conf_field item;
				conf_item_open(w, v, i, &item);
				const char *s = conf_value_string(w, lua_gettop(w->L));
				if (s && parse_key_part(w, s, &l->keys[l->num_keys]))
					l->num_keys++;
				conf_field_close(w, &item);
			}
		}
	} else {
		conf_type_error(w, v, "a key like \"client_ip\" or a list like { \"client_ip\", \"path\" }");
	}
	conf_field_close(w, &f);
}

static void walk_bool(struct conf_walker *w, int t, const char *key, bool *out)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return;
	int v = lua_gettop(w->L);
	if (lua_type(w->L, v) == LUA_TBOOLEAN)
		*out = lua_toboolean(w->L, v);
	else
		conf_type_error(w, v, "true or false");
	conf_field_close(w, &f);
}

static bool walk_count(struct conf_walker *w, int t, const char *key, uint64_t *out)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return false;
	long long v;
	bool ok = conf_value_integer(w, lua_gettop(w->L), 1, 1000000000, &v);
	if (ok)
		*out = (uint64_t)v;
	conf_field_close(w, &f);
	return ok;
}

static bool present(struct conf_walker *w, int t, const char *key)
{
	lua_pushstring(w->L, key);
	bool yes = lua_rawget(w->L, t) != LUA_TNIL;
	lua_pop(w->L, 1);
	return yes;
}

static void walk_limit(struct conf_walker *w, int t, struct conf_rate_limit *l)
{
	static const char *const keys[] = { "key", "rate", "per", "burst", "shared", "headers", "batch", "max_keys",
	                                    NULL };
	conf_check_record_keys(w, t, keys);
	l->batch = 100;
	l->max_keys = 65536;
	walk_key(w, t, l);
	bool rate_ok = walk_count(w, t, "rate", &l->rate);
	if (!present(w, t, "rate"))
		conf_werr_key(w, "rate", "missing (write rate = 100, tokens per `per`)");
	bool per_ok = conf_field_duration(w, t, "per", false, &l->per) == CONF_FIELD_SET;
	if (!present(w, t, "per"))
		conf_werr_key(w, "per", "missing (write per = \"1s\" or per = \"1m\")");
	bool burst_ok;
	if (present(w, t, "burst")) {
		burst_ok = walk_count(w, t, "burst", &l->burst);
	} else {
		l->burst = l->rate; /* documented default: one `per` worth of tokens */
		burst_ok = rate_ok;
	}
	walk_bool(w, t, "shared", &l->shared);
	walk_bool(w, t, "headers", &l->headers);
	conf_field_unsigned(w, t, "batch", 1, 100000, &l->batch);
	conf_field_unsigned(w, t, "max_keys", 16, 100000000, &l->max_keys);
	if (rate_ok && per_ok && burst_ok && l->per > 0) {
		uint64_t per_us = l->per * 1000;
		if (l->burst > RL_MAX_CAPACITY / per_us)
			conf_werr(w, "burst x per is too large (%llu x %llums; at most 2^53 token-microseconds): lower the "
			          "burst or use a shorter per",
			          (unsigned long long)l->burst, (unsigned long long)l->per);
	}
	if (l->shared && !w->c->redis.enabled)
		conf_werr_key(w, "shared", "a shared limit needs a `redis` section (redis = { address = \"127.0.0.1:6379\" })");
}

void conf_rl_walk_limits(struct conf_walker *w, int root)
{
	struct conf_field f;
	if (!conf_field_open(w, root, "rate_limits", &f))
		return;
	int map = lua_gettop(w->L);
	if (lua_type(w->L, map) != LUA_TTABLE) {
		conf_type_error(w, map, "a table of named limits like { per_client = { key = \"client_ip\", rate = 100, per = \"1s\" } }");
		conf_field_close(w, &f);
		return;
	}
	size_t n;
	const char **names = conf_map_keys(w, map, "rate_limits = { per_client = { key = \"client_ip\", rate = 100, per = \"1s\" } }", &n);
	struct conf *c = w->c;
	c->rate_limits = conf_xcalloc(n ? n : 1, sizeof *c->rate_limits);
	c->num_rate_limits = n;
	for (size_t i = 0; i < n; i++) {
		struct conf_field e;
		conf_entry_open(w, map, names[i], &e);
		int v = lua_gettop(w->L);
		struct conf_rate_limit *l = &c->rate_limits[i];
		l->name = conf_xstrdup(names[i]);
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_limit(w, v, l);
		else
			conf_type_error(w, v, "a table like { key = \"client_ip\", rate = 100, per = \"1s\", burst = 200 }");
		conf_field_close(w, &e);
	}
	conf_field_close(w, &f);
}

void conf_rl_walk_redis(struct conf_walker *w, int root)
{
	static const char *const more[] = { "on_failure", NULL };
	struct conf_redis *r = &w->c->redis;
	r->timeout = 20;
	r->connect_timeout = 500;
	r->on_failure = CONF_REDIS_FAIL_LOCAL;
	struct conf_field f;
	if (!conf_field_open(w, root, "redis", &f))
		return;
	int t = lua_gettop(w->L);
	conf_redis_walk(w, t, more, r);
	struct conf_field g;
	if (r->enabled && conf_field_open(w, t, "on_failure", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s) {
			if (strcmp(s, "local") == 0) {
				r->on_failure = CONF_REDIS_FAIL_LOCAL;
			} else if (strcmp(s, "allow") == 0) {
				r->on_failure = CONF_REDIS_FAIL_ALLOW;
			} else if (strcmp(s, "deny") == 0) {
				r->on_failure = CONF_REDIS_FAIL_DENY;
			} else {
				char *q = conf_quoted(s);
				conf_werr(w, "unknown value %s (expected \"local\", \"allow\" or \"deny\")", q);
				free(q);
			}
		}
		conf_field_close(w, &g);
	}
	conf_field_close(w, &f);
}

static void add_route_limit(struct conf_walker *w, struct conf_route *r, const char *name, size_t cap)
{
	int idx = conf_rl_find(w->c, name);
	char *q = conf_quoted(name);
	if (idx < 0) {
		const char *best = NULL;
		unsigned best_d = 3;
		for (size_t i = 0; i < w->c->num_rate_limits; i++) {
			unsigned d = distance(name, w->c->rate_limits[i].name);
			if (d < best_d) {
				best = w->c->rate_limits[i].name;
				best_d = d;
			}
		}
		char *bq = best ? conf_quoted(best) : NULL;
		if (w->c->num_rate_limits == 0)
			conf_werr(w, "unknown rate limit %s (no rate_limits are defined; add rate_limits = { %s = { ... } })", q,
			          name);
		else if (bq)
			conf_werr(w, "unknown rate limit %s (did you mean %s?)", q, bq);
		else
			conf_werr(w, "unknown rate limit %s (define it under rate_limits)", q);
		free(bq);
	} else {
		bool dup = false;
		for (size_t i = 0; i < r->num_rate_limits; i++)
			dup = dup || r->rate_limits[i] == (size_t)idx;
		if (dup)
			conf_werr(w, "rate limit %s is listed twice", q);
		else if (r->num_rate_limits < cap)
			r->rate_limits[r->num_rate_limits++] = (size_t)idx;
	}
	free(q);
}

void conf_rl_walk_route(struct conf_walker *w, int t, struct conf_route *r)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "rate_limit", &f))
		return;
	int v = lua_gettop(w->L);
	if (lua_type(w->L, v) == LUA_TSTRING) {
		r->rate_limits = conf_xcalloc(1, sizeof *r->rate_limits);
		add_route_limit(w, r, lua_tostring(w->L, v), 1);
	} else if (lua_type(w->L, v) == LUA_TTABLE) {
		size_t n;
		if (conf_list_length(w, v, "{ \"per_client\", \"per_token\" }", &n)) {
			r->rate_limits = conf_xcalloc(n ? n : 1, sizeof *r->rate_limits);
			for (size_t i = 1; i <= n; i++) {
				struct conf_field item;
				conf_item_open(w, v, i, &item);
				const char *s = conf_value_string(w, lua_gettop(w->L));
				if (s)
					add_route_limit(w, r, s, n);
				conf_field_close(w, &item);
			}
		}
	} else {
		conf_type_error(w, v, "a limit name or a list of names like { \"per_client\", \"per_token\" }");
	}
	conf_field_close(w, &f);
}

static void walk_root(struct conf_walker *w, int root)
{
	conf_rl_walk_redis(w, root);
	conf_rl_walk_limits(w, root);
}

static const char *const root_keys[] = { "rate_limits", "redis", NULL };
static const char *const route_keys[] = { "rate_limit", NULL };

const struct conf_section conf_rl_section = {
	.root_keys = root_keys,
	.walk = walk_root,
	.route_keys = route_keys,
	.walk_route = conf_rl_walk_route,
	.free = conf_rl_free,
};
