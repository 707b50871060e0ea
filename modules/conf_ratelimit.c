#include "conf_ratelimit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	free(c->redis.address);
	free(c->redis.host);
	if (c->redis.password) {
		/* a secret: do not leave it in freed memory */
		volatile char *p = c->redis.password;
		while (*p)
			*p++ = 0;
		free(c->redis.password);
	}
	if (c->redis.sentinel_password) {
		volatile char *p = c->redis.sentinel_password;
		while (*p)
			*p++ = 0;
		free(c->redis.sentinel_password);
	}
	for (size_t i = 0; i < c->redis.num_sentinels; i++) {
		free(c->redis.sentinels[i].address);
		free(c->redis.sentinels[i].host);
	}
	free(c->redis.sentinels);
	free(c->redis.master);
	memset(&c->redis, 0, sizeof c->redis);
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

/* A secret from a file (trailing newline stripped), into *out; what names it in errors. */
static void read_password(struct conf_walker *w, const char *path, const char *what, char **out)
{
	char *full = path[0] == '/' || strcmp(w->base_dir, ".") == 0 ? conf_xstrdup(path)
	                                                              : conf_xasprintf("%s/%s", w->base_dir, path);
	FILE *fp = fopen(full, "re");
	if (!fp) {
		char *q = conf_quoted(full);
		conf_werr(w, "cannot read %s: %s (give a readable file holding the %s)", q, strerror(errno), what);
		free(q);
		free(full);
		return;
	}
	char buf[1024];
	size_t got = fread(buf, 1, sizeof buf, fp);
	bool err = ferror(fp) != 0;
	bool more = !err && got == sizeof buf && fgetc(fp) != EOF;
	fclose(fp);
	while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == '\r'))
		got--;
	char *q = conf_quoted(full);
	if (err)
		conf_werr(w, "cannot read %s (give a readable file holding the %s)", q, what);
	else if (more)
		conf_werr(w, "%s is larger than 1023 bytes (it must hold only the %s)", q, what);
	else if (got == 0)
		conf_werr(w, "%s is empty (write the %s into it, or remove the key)", q, what);
	else
		*out = conf_xstrndup(buf, got);
	free(q);
	free(full);
	memset(buf, 0, sizeof buf);
}

/* The address string at stack slot v: numeric host and port for hiredis. */
static bool walk_hostport(struct conf_walker *w, int v, char **address, char **host_out, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	const char *s = conf_value_address(w, v, &ss, &len);
	if (!s || len == 0)
		return false;
	char host[INET6_ADDRSTRLEN] = "";
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		*port = ntohs(in->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		*port = ntohs(in6->sin6_port);
	}
	if (!host[0]) {
		conf_werr(w, "not an IPv4 or IPv6 address (write \"127.0.0.1:6379\")");
		return false;
	}
	*address = conf_xstrdup(s);
	*host_out = conf_xstrdup(host);
	return true;
}

/* sentinels = { "127.0.0.1:26379", ... } and master = "NAME" */
static void walk_sentinels(struct conf_walker *w, int t, struct conf_redis *r)
{
	struct conf_field g;
	if (!conf_field_open(w, t, "sentinels", &g))
		return;
	int v = lua_gettop(w->L);
	size_t n;
	if (lua_type(w->L, v) != LUA_TTABLE) {
		conf_type_error(w, v, "a list like { \"127.0.0.1:26379\", \"127.0.0.1:26380\", \"127.0.0.1:26381\" }");
	} else if (conf_list_length(w, v, "{ \"127.0.0.1:26379\", \"127.0.0.1:26380\" }", &n)) {
		if (n == 0)
			conf_werr(w, "empty (list the sentinels, e.g. { \"127.0.0.1:26379\", \"127.0.0.1:26380\" })");
		else if (n > 64)
			conf_werr(w, "%zu sentinels (at most 64)", n);
		r->sentinels = conf_xcalloc(n ? n : 1, sizeof *r->sentinels);
		for (size_t i = 1; i <= n && i <= 64; i++) {
			struct conf_field item;
			conf_item_open(w, v, i, &item);
			struct conf_redis_sentinel *s = &r->sentinels[r->num_sentinels];
			if (walk_hostport(w, lua_gettop(w->L), &s->address, &s->host, &s->port)) {
				bool dup = false;
				for (size_t j = 0; j < r->num_sentinels; j++)
					dup = dup || (r->sentinels[j].port == s->port && strcmp(r->sentinels[j].host, s->host) == 0);
				if (dup) {
					conf_werr(w, "%s is listed twice", s->address);
					free(s->address);
					free(s->host);
					s->address = s->host = NULL;
				} else {
					r->num_sentinels++;
				}
			}
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &g);
}

void conf_rl_walk_redis(struct conf_walker *w, int root)
{
	static const char *const keys[] = { "address", "sentinels", "master", "sentinel_password_file",
	                                    "password_file", "db", "timeout", "connect_timeout", "on_failure", NULL };
	struct conf_redis *r = &w->c->redis;
	r->timeout = 20;
	r->connect_timeout = 500;
	r->on_failure = CONF_REDIS_FAIL_LOCAL;
	struct conf_field f;
	if (!conf_field_open_record(w, root, "redis", keys,
	                            "a table like { address = \"127.0.0.1:6379\" } or "
	                            "{ sentinels = { \"127.0.0.1:26379\" }, master = \"edge\" }",
	                            &f))
		return;
	r->enabled = true;
	int t = lua_gettop(w->L);
	bool has_address = present(w, t, "address"), has_sentinels = present(w, t, "sentinels");
	struct conf_field g;
	if (has_address && has_sentinels) {
		conf_werr_key(w, "sentinels", "`address` and `sentinels` exclude each other: give `address` for one Redis, "
		                              "or `sentinels` and `master` to find the master through Redis Sentinel");
	} else if (has_address) {
		if (conf_field_open(w, t, "address", &g)) {
			walk_hostport(w, lua_gettop(w->L), &r->address, &r->host, &r->port);
			conf_field_close(w, &g);
		}
		if (present(w, t, "master"))
			conf_werr_key(w, "master", "only with `sentinels` (the name the sentinels monitor); remove it, or "
			                           "replace `address` with sentinels = { \"HOST:PORT\", ... }");
		if (present(w, t, "sentinel_password_file"))
			conf_werr_key(w, "sentinel_password_file", "only with `sentinels`; remove it");
	} else if (has_sentinels) {
		walk_sentinels(w, t, r);
		if (conf_field_open(w, t, "master", &g)) {
			const char *s = conf_value_string(w, lua_gettop(w->L));
			bool ok = s && *s && strlen(s) <= 200;
			for (const char *p = s; ok && *p; p++)
				ok = *p > ' ' && *p < 0x7f;
			if (ok)
				r->master = conf_xstrdup(s);
			else if (s)
				conf_werr(w, "must be the master's name as the sentinels know it (printable, no spaces, at most "
				             "200 bytes; e.g. master = \"edge\")");
			conf_field_close(w, &g);
		} else {
			conf_werr_key(w, "master", "missing (the name the sentinels monitor, e.g. master = \"edge\": "
			                           "`sentinel monitor edge 127.0.0.1 6379 2` in sentinel.conf)");
		}
		if (conf_field_open(w, t, "sentinel_password_file", &g)) {
			const char *s = conf_value_string(w, lua_gettop(w->L));
			if (s && *s)
				read_password(w, s, "sentinel password", &r->sentinel_password);
			else if (s)
				conf_werr(w, "must not be empty (a path to a file holding the sentinels' password)");
			conf_field_close(w, &g);
		}
		if (r->master && r->num_sentinels) {
			size_t len = 0;
			for (size_t i = 0; i < r->num_sentinels; i++)
				len += strlen(r->sentinels[i].address) + 1;
			char *list = conf_xcalloc(1, len + 1);
			for (size_t i = 0; i < r->num_sentinels; i++) {
				if (i)
					strcat(list, ",");
				strcat(list, r->sentinels[i].address);
			}
			r->address = conf_xasprintf("sentinel master %s via %s", r->master, list);
			free(list);
		}
	} else {
		conf_werr_key(w, "address", "missing (write address = \"127.0.0.1:6379\", or sentinels = { "
		                            "\"127.0.0.1:26379\", ... } with master = \"NAME\" for Redis Sentinel)");
	}
	if (conf_field_open(w, t, "password_file", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && *s)
			read_password(w, s, "Redis password", &r->password);
		else if (s)
			conf_werr(w, "must not be empty (a path to a file holding the password)");
		conf_field_close(w, &g);
	}
	conf_field_unsigned(w, t, "db", 0, 1000000, &r->db);
	conf_field_duration(w, t, "timeout", false, &r->timeout);
	conf_field_duration(w, t, "connect_timeout", false, &r->connect_timeout);
	if (conf_field_open(w, t, "on_failure", &g)) {
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
