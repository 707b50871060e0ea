/* conf_control.c - the `control` section (conf_control.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_control.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "conf_schema.h"

static const char redis_example[] = "\"main\" (the top-level redis block) or a table like "
                                    "{ address = \"127.0.0.1:6379\" }";

static char *dup_or_null(const char *s)
{
	return s ? conf_xstrdup(s) : NULL;
}

static void copy_redis(struct conf_redis *to, const struct conf_redis *from)
{
	*to = *from;
	to->sentinels = NULL; /* refused before a copy is made (conf_walk_control) */
	to->num_sentinels = 0;
	to->master = NULL;
	to->sentinel_password = NULL;
	to->address = dup_or_null(from->address);
	to->host = dup_or_null(from->host);
	to->password = dup_or_null(from->password);
}

/* The password file's first line, as the main redis block reads its own. */
static void read_password(struct conf_walker *w, struct conf_redis *r, const char *file)
{
	char *path = conf_resolve_path(w, file);
	struct conf_errors errs;
	conf_errors_init(&errs);
	size_t len = 0;
	char *buf = conf_read_file(path, &len, &errs);
	char *q = conf_quoted(path);
	if (!buf) {
		conf_werr(w, "%s (give a readable file holding the Redis password)",
		          errs.count ? errs.msgs[0] : "cannot read it");
	} else {
		size_t n = strcspn(buf, "\r\n");
		if (n == 0)
			conf_werr(w, "%s is empty (write the Redis password into it, or remove password_file)", q);
		else if (n > 1023)
			conf_werr(w, "%s: the password is longer than 1023 bytes", q);
		else
			r->password = conf_xstrndup(buf, n);
	}
	free(q);
	free(buf);
	free(path);
	conf_errors_free(&errs);
}

static void walk_own_redis(struct conf_walker *w, int t, struct conf_redis *r)
{
	static const char *const keys[] = { "address", "password_file", "db", "timeout", "connect_timeout", NULL };
	conf_check_record_keys(w, t, keys);
	r->enabled = true;
	struct conf_field g;
	if (conf_field_open(w, t, "address", &g)) {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		const char *s = conf_value_address(w, lua_gettop(w->L), &ss, &len);
		char host[INET6_ADDRSTRLEN] = "";
		if (s && len > 0 && ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &((const struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
			r->port = ntohs(((const struct sockaddr_in *)&ss)->sin_port);
		} else if (s && len > 0 && ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
			r->port = ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port);
		}
		if (host[0]) {
			r->address = conf_xstrdup(s);
			r->host = conf_xstrdup(host);
		} else if (s && len > 0) {
			conf_werr(w, "not an IPv4 or IPv6 address (write \"127.0.0.1:6379\")");
		}
		conf_field_close(w, &g);
	} else {
		conf_werr_key(w, "address", "missing (write address = \"127.0.0.1:6379\")");
	}
	if (conf_field_open(w, t, "password_file", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && *s)
			read_password(w, r, s);
		else if (s)
			conf_werr(w, "must not be empty (a path to a file holding the password)");
		conf_field_close(w, &g);
	}
	conf_field_unsigned(w, t, "db", 0, 1000000, &r->db);
	conf_field_duration(w, t, "timeout", false, &r->timeout);
	conf_field_duration(w, t, "connect_timeout", false, &r->connect_timeout);
}

/* Redis keys and the lease hold these names: printable words. */
static char *walk_name(struct conf_walker *w, int t, const char *key, size_t max, const char *what)
{
	struct conf_field g;
	if (!conf_field_open(w, t, key, &g))
		return NULL;
	const char *s = conf_value_string(w, lua_gettop(w->L));
	char *out = NULL;
	if (s) {
		size_t n = strlen(s);
		bool ok = n > 0 && n <= max;
		for (size_t i = 0; ok && i < n; i++)
			ok = conf_is_alpha(s[i]) || conf_is_digit(s[i]) || strchr("_-.:", s[i]);
		if (ok)
			out = conf_xstrdup(s);
		else
			conf_werr(w, "%s: 1 to %zu letters, digits, \"_\", \"-\", \".\" or \":\"", what, max);
	}
	conf_field_close(w, &g);
	return out;
}

void conf_walk_control(struct conf_walker *w, int root)
{
	static const char *const keys[] = { "redis", "prefix", "instance", "lease", NULL };
	struct conf_field f;
	if (!conf_field_open_record(w, root, "control", keys, "a table like { redis = \"main\" }", &f))
		return;
	int t = lua_gettop(w->L);
	struct conf_control *cc = conf_xcalloc(1, sizeof *cc);
	w->c->control = cc;
	cc->lease = 3000;
	cc->redis.timeout = 2000;
	cc->redis.connect_timeout = 500;
	struct conf_field g;
	if (!conf_field_open(w, t, "redis", &g)) {
		conf_werr_key(w, "redis", "missing (write redis = \"main\" to use the top-level redis block, or "
		                          "redis = { address = \"127.0.0.1:6379\" })");
	} else {
		int v = lua_gettop(w->L);
		if (lua_type(w->L, v) == LUA_TSTRING) {
			const char *s = lua_tostring(w->L, v);
			if (strcmp(s, "main") != 0) {
				char *q = conf_quoted(s);
				conf_werr(w, "unknown redis block %s (the top-level redis block is named \"main\"; or give a "
				             "table like { address = \"127.0.0.1:6379\" })", q);
				free(q);
			} else if (!w->c->redis.enabled) {
				conf_werr(w, "\"main\" names the top-level redis block, and there is none (add redis = { address = "
				             "\"127.0.0.1:6379\" } at the top level, or give control its own: "
				             "redis = { address = ... })");
			} else if (w->c->redis.num_sentinels > 0) {
				conf_werr(w, "\"main\" uses Redis Sentinel (redis.sentinels), which fleet control does not follow "
				             "yet; give control a Redis of its own: redis = { address = \"10.0.0.5:6379\" }");
			} else {
				cc->uses_main = true;
				copy_redis(&cc->redis, &w->c->redis);
				/* the main block's timeout is tuned for requests (20ms); control waits longer */
				cc->redis.timeout = 2000;
			}
		} else if (lua_type(w->L, v) == LUA_TTABLE) {
			walk_own_redis(w, v, &cc->redis);
		} else {
			conf_type_error(w, v, redis_example);
		}
		conf_field_close(w, &g);
	}
	cc->prefix = walk_name(w, t, "prefix", CONF_CONTROL_PREFIX_MAX, "the fleet's key prefix");
	if (!cc->prefix)
		cc->prefix = conf_xstrdup("sluice");
	cc->instance = walk_name(w, t, "instance", CONF_CONTROL_INSTANCE_MAX, "this instance's name");
	if (conf_field_duration(w, t, "lease", false, &cc->lease) == CONF_FIELD_SET &&
	    (cc->lease < 1000 || cc->lease > 600000))
		conf_werr_key(w, "lease", "must be from 1s to 10m (a dead driver's rollout waits this long for another)");
	conf_field_close(w, &f);
}

void conf_control_free(struct conf_control *cc)
{
	if (!cc)
		return;
	free(cc->redis.address);
	free(cc->redis.host);
	free(cc->redis.password);
	free(cc->prefix);
	free(cc->instance);
	free(cc);
}

bool conf_control_same(const struct conf_control *a, const struct conf_control *b)
{
	if (!a || !b)
		return a == b;
	return a->uses_main == b->uses_main && conf_same_str(a->redis.host, b->redis.host) && a->redis.port == b->redis.port &&
	       conf_same_str(a->redis.password, b->redis.password) && a->redis.db == b->redis.db &&
	       a->redis.timeout == b->redis.timeout && a->redis.connect_timeout == b->redis.connect_timeout &&
	       conf_same_str(a->prefix, b->prefix) && conf_same_str(a->instance, b->instance) && a->lease == b->lease;
}
