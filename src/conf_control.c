/* conf_control.c - the `control` section (conf_control.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_control.h"

#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "conf_redis.h"
#include "conf_schema.h"

static const char redis_example[] = "\"main\" (the top-level redis block) or a table like "
                                    "{ address = \"127.0.0.1:6379\" } or { sentinels = { \"127.0.0.1:26379\" }, "
                                    "master = \"edge\" }";

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
			} else {
				cc->uses_main = true;
				conf_redis_copy(&cc->redis, &w->c->redis);
				/* the main block's timeout is tuned for requests (20ms); control waits longer */
				cc->redis.timeout = 2000;
			}
		} else if (lua_type(w->L, v) == LUA_TTABLE) {
			conf_redis_walk(w, v, NULL, &cc->redis);
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
	conf_redis_clear(&cc->redis);
	free(cc->prefix);
	free(cc->instance);
	free(cc);
}

bool conf_control_same(const struct conf_control *a, const struct conf_control *b)
{
	if (!a || !b)
		return a == b;
	return a->uses_main == b->uses_main && conf_redis_same(&a->redis, &b->redis) && conf_same_str(a->prefix, b->prefix) &&
	       conf_same_str(a->instance, b->instance) && a->lease == b->lease;
}
