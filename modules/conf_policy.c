/* conf_policy.c - the `policies` config section and a route's `policies`
 * (conf_policy.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_policy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "lua_cache.h"

enum { POLICY_CONFIG_MAX_DEPTH = 32 };
static const uint64_t policy_default_instructions = 1000000;
static const uint64_t policy_default_memory = (uint64_t)8 << 20;
static const uint64_t policy_state_memory = (uint64_t)256 << 20;
static const off_t policy_max_file = (off_t)4 << 20;

static const char *const phase_names[CONF_POLICY_PHASES] = {"access", "response", "log"};

void conf_policy_limits(const struct conf_policies *ps, const struct conf_policy *p, struct lua_rt_limits *out)
{
	out->instructions = p ? p->instructions : policy_default_instructions;
	out->memory = (size_t)(p ? p->memory : policy_default_memory);
	out->state_memory = (size_t)(ps && ps->state_memory ? ps->state_memory : policy_state_memory);
}

/* ---- reading files ---- */

static char *read_text(const char *path, size_t *len, char *err, size_t err_size)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		snprintf(err, err_size, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, err_size, "%s is not a regular file", path);
		return NULL;
	}
	if (st.st_size > policy_max_file) {
		snprintf(err, err_size, "%s is larger than 4 MiB", path);
		return NULL;
	}
	FILE *fp = fopen(path, "re");
	if (!fp) {
		snprintf(err, err_size, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	char *buf = conf_xmalloc((size_t)st.st_size + 1);
	size_t got = fread(buf, 1, (size_t)st.st_size, fp);
	bool bad = ferror(fp) != 0;
	fclose(fp);
	if (bad) {
		snprintf(err, err_size, "cannot read %s", path);
		free(buf);
		return NULL;
	}
	buf[got] = '\0';
	*len = got;
	return buf;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return conf_xstrdup(".");
	return conf_xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
}

/* ---- the config table as Lua source ---- */

/* The config's Lua source grows in a memory stream (open_memstream). */
static void sb_str(FILE *b, const char *s)
{
	fputs(s, b);
}

static void sb_quoted(FILE *b, const char *s, size_t n)
{
	fputc('"', b);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			fprintf(b, "\\%c", ch);
		else if (ch < 32 || ch == 127)
			fprintf(b, "\\%03u", ch);
		else
			fputc(ch, b);
	}
	fputc('"', b);
}

static bool ser_scalar(lua_State *L, int v, FILE *b)
{
	char num[64];
	switch (lua_type(L, v)) {
	case LUA_TBOOLEAN:
		sb_str(b, lua_toboolean(L, v) ? "true" : "false");
		return true;
	case LUA_TNUMBER:
		if (lua_isinteger(L, v)) {
			snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, v));
		} else {
			double d = lua_tonumber(L, v);
			if (isnan(d))
				snprintf(num, sizeof num, "(0/0)");
			else if (isinf(d))
				snprintf(num, sizeof num, d > 0 ? "(1/0)" : "(-1/0)");
			else
				snprintf(num, sizeof num, "%.17g", d);
		}
		sb_str(b, num);
		return true;
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, v, &n);
		sb_quoted(b, s, n);
		return true;
	}
	default:
		return false;
	}
}

static void serialize(struct conf_walker *w, int v, FILE *b, int depth)
{
	lua_State *L = w->L;
	v = lua_absindex(L, v);
	if (ser_scalar(L, v, b))
		return;
	if (lua_type(L, v) != LUA_TTABLE) {
		conf_werr(w, "a %s cannot be passed to a policy (use strings, numbers, booleans and tables)",
		          luaL_typename(L, v));
		sb_str(b, "nil");
		return;
	}
	if (depth >= POLICY_CONFIG_MAX_DEPTH) {
		conf_werr(w, "nested more than %d tables deep (or a table that contains itself)", POLICY_CONFIG_MAX_DEPTH);
		sb_str(b, "nil");
		return;
	}
	sb_str(b, "{");
	lua_pushnil(L);
	while (lua_next(L, v)) {
		int kt = lua_type(L, -2);
		sb_str(b, "[");
		if (kt == LUA_TSTRING || kt == LUA_TNUMBER || kt == LUA_TBOOLEAN) {
			ser_scalar(L, lua_gettop(L) - 1, b);
		} else {
			conf_werr(w, "a %s key cannot be passed to a policy", lua_typename(L, kt));
			sb_str(b, "false");
		}
		sb_str(b, "]=");
		size_t mark;
		if (kt == LUA_TSTRING)
			mark = conf_path_push_key(w, lua_tostring(L, -2));
		else if (kt == LUA_TNUMBER && lua_isinteger(L, -2) && lua_tointeger(L, -2) > 0)
			mark = conf_path_push_index(w, (size_t)lua_tointeger(L, -2));
		else
			mark = conf_path_push_key(w, "?");
		serialize(w, -1, b, depth + 1);
		conf_path_pop(w, mark);
		sb_str(b, ",");
		lua_pop(L, 1);
	}
	sb_str(b, "}");
}

/* ---- require() while loading: modules from the policy directories ---- */

struct loader {
	struct conf_walker *w;
	struct conf_policies *ps;
};

static bool module_name_ok(const char *name)
{
	if (!*name || *name == '.')
		return false;
	for (const char *p = name; *p; p++) {
		bool word = conf_is_alpha(*p) || conf_is_digit(*p) || *p == '_' || *p == '-';
		if (!word && !(*p == '.' && p[1] && p[1] != '.'))
			return false;
	}
	return true;
}

static const struct lua_rt_module *resolve_module(struct lua_rt *rt, const char *name, char *err, size_t err_size)
{
	struct loader *ld = rt->user;
	struct conf_policies *ps = ld->ps;
	for (size_t i = 0; i < ps->num_modules; i++)
		if (strcmp(ps->modules[i].name, name) == 0)
			return &ps->modules[i];
	if (!module_name_ok(name)) {
		snprintf(err, err_size, "invalid module name (letters, digits, _ and - separated by dots)");
		return NULL;
	}
	char *rel = conf_xasprintf("%s.lua", name);
	for (char *p = rel; *p; p++)
		if (*p == '.' && strcmp(p, ".lua") != 0)
			*p = '/';
	/* the directories of the policies, in the order they were declared */
	for (size_t i = 0; i < ps->n; i++) {
		if (!ps->v[i].path)
			continue;
		char *dir = dir_of(ps->v[i].path);
		char *full = conf_xasprintf("%s/%s", dir, rel);
		free(dir);
		struct stat st;
		if (stat(full, &st) != 0) {
			free(full);
			continue;
		}
		size_t len;
		char *src = read_text(full, &len, err, err_size);
		if (!src) {
			free(full);
			free(rel);
			return NULL;
		}
		ps->modules = conf_xreallocarray(ps->modules, ps->num_modules + 1, sizeof *ps->modules);
		struct lua_rt_module *m = &ps->modules[ps->num_modules++];
		m->name = conf_xstrdup(name);
		m->path = full;
		m->src = src;
		m->len = len;
		lua_rt_set_modules(rt, ps->modules, ps->num_modules);
		free(rel);
		return m;
	}
	snprintf(err, err_size, "no %s in the policy directories", rel);
	free(rel);
	return NULL;
}

/* ---- loading one policy ---- */

bool conf_policy_instantiate(struct lua_rt *rt, const struct conf_policy *p, char *err, size_t err_size)
{
	lua_State *L = rt->L;
	int top = lua_gettop(L);
	lua_rt_push_env(rt);
	int env = lua_gettop(L);
	if (!lua_rt_load(rt, p->file, p->src, p->src_len, env, err, err_size)) {
		lua_settop(L, top);
		return false;
	}
	/* the config, built from its source in this state */
	char cerr[256];
	char *cname = conf_xasprintf("config of policy %s", p->name);
	bool ok = lua_rt_load(rt, cname, p->config_src, strlen(p->config_src), 0, cerr, sizeof cerr) &&
	          lua_rt_call(rt, 0, 1, cerr, sizeof cerr);
	free(cname);
	if (!ok) {
		snprintf(err, err_size, "%s: %s", p->file, cerr);
		lua_settop(L, top);
		return false;
	}
	lua_pushvalue(L, -1);
	lua_setfield(L, env, "config"); /* also a global of the script */
	lua_pushvalue(L, -1);
	lua_insert(L, env + 1); /* kept below the chunk for the caller */
	if (!lua_rt_call(rt, 1, 1, err, err_size)) {
		lua_settop(L, top);
		return false;
	}
	if (lua_type(L, -1) != LUA_TTABLE) {
		snprintf(err, err_size, "%s: the policy must return a table of phase functions "
		         "(return { access = function(r) ... end }), got %s", p->file, luaL_typename(L, -1));
		lua_settop(L, top);
		return false;
	}
	int t = lua_gettop(L);
	lua_pushnil(L);
	while (lua_next(L, t)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		int known = -1;
		for (int i = 0; k && i < CONF_POLICY_PHASES; i++)
			if (strcmp(k, phase_names[i]) == 0)
				known = i;
		if (known < 0) {
			snprintf(err, err_size, "%s: the returned table has %s%s%s: a policy returns only access, response "
			         "and log functions", p->file, k ? "a key \"" : "a non-string key", k ? k : "", k ? "\"" : "");
			lua_settop(L, top);
			return false;
		}
		if (lua_type(L, -1) != LUA_TFUNCTION) {
			snprintf(err, err_size, "%s: %s must be a function, got %s", p->file, k, luaL_typename(L, -1));
			lua_settop(L, top);
			return false;
		}
		lua_pop(L, 1);
	}
	lua_remove(L, env);
	return true;
}

/* ---- the section ---- */

static struct conf_policies *policies_of(struct conf *c)
{
	if (!c->policies)
		c->policies = conf_xcalloc(1, sizeof *c->policies);
	return c->policies;
}

static void walk_policy(struct conf_walker *w, int t, struct conf_policy *p)
{
	static const char *const keys[] = {"file", "config", "on_error", "instructions", "memory", "body", NULL};
	conf_check_record_keys(w, t, keys);
	p->instructions = policy_default_instructions;
	p->memory = policy_default_memory;
	conf_field_size(w, t, "body", 0, CONF_REQUEST_BUFFERING_MAX, &p->body);
	struct conf_field f;
	if (conf_field_open(w, t, "file", &f)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "must not be empty (the path of a Lua file, e.g. \"policies/tenant.lua\")");
		else if (s) {
			p->file = conf_xstrdup(s);
			p->path = conf_resolve_path(w, s);
		}
		conf_field_close(w, &f);
	} else {
		conf_werr_key(w, "file", "missing (write file = \"policies/%s.lua\")", p->name);
	}
	size_t size = 0;
	FILE *b = open_memstream(&p->config_src, &size);
	if (!b)
		abort(); /* out of memory, as conf_x* */
	sb_str(b, "return ");
	if (conf_field_open(w, t, "config", &f)) {
		if (lua_type(w->L, -1) != LUA_TTABLE)
			conf_type_error(w, lua_gettop(w->L), "a table (config = { ... })");
		else
			serialize(w, -1, b, 0);
		conf_field_close(w, &f);
	} else {
		sb_str(b, "{}");
	}
	if (fclose(b) != 0)
		abort();
	if (conf_field_open(w, t, "on_error", &f)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && strcmp(s, "deny") == 0) {
			p->on_error_deny = true;
		} else if (s && strcmp(s, "pass") != 0) {
			char *q = conf_quoted(s);
			conf_werr(w, "unknown value %s (expected \"pass\" or \"deny\")", q);
			free(q);
		}
		conf_field_close(w, &f);
	}
	unsigned instr;
	if (conf_field_unsigned(w, t, "instructions", 10000, 1000000000, &instr) == CONF_FIELD_SET)
		p->instructions = instr;
	conf_field_size(w, t, "memory", 64 << 10, (uint64_t)1 << 30, &p->memory);
	if (p->path) {
		char err[512];
		p->src = read_text(p->path, &p->src_len, err, sizeof err);
		if (!p->src)
			conf_werr_key(w, "file", "%s", err);
	}
}

/* Compile and run every script once, as a worker will. */
static void check_policies(struct conf_walker *w, struct conf_policies *ps)
{
	struct loader ld = {w, ps};
	struct lua_cache *cache = lua_cache_new(64, 1 << 20); /* what a top level may use */
	if (!cache) {
		conf_werr(w, "out of memory for the Lua state");
		return;
	}
	for (size_t i = 0; i < ps->n; i++) {
		struct conf_policy *p = &ps->v[i];
		if (!p->src || !p->config_src)
			continue;
		struct lua_rt_limits lim;
		conf_policy_limits(ps, p, &lim);
		struct lua_rt *rt = lua_rt_new(&lim);
		if (!rt) {
			conf_werr(w, "out of memory for the Lua state");
			break;
		}
		rt->user = &ld;
		rt->resolve = resolve_module;
		lua_rt_open_cache(rt, cache);
		lua_rt_set_modules(rt, ps->modules, ps->num_modules);
		char err[1024];
		size_t mark = conf_path_push_key(w, p->name);
		if (conf_policy_instantiate(rt, p, err, sizeof err)) {
			int t = lua_gettop(rt->L);
			for (int ph = 0; ph < CONF_POLICY_PHASES; ph++) {
				p->phases[ph] = lua_getfield(rt->L, t, phase_names[ph]) == LUA_TFUNCTION;
				lua_pop(rt->L, 1);
			}
			if (!p->phases[0] && !p->phases[1] && !p->phases[2])
				conf_werr(w, "%s: the policy returns no phase function (access, response or log)", p->file);
		} else {
			conf_werr(w, "%s", err);
		}
		conf_path_pop(w, mark);
		lua_rt_free(rt);
	}
	lua_cache_free(cache);
}

static void walk_root(struct conf_walker *w, int root)
{
	struct conf_field f;
	if (!conf_field_open(w, root, "policies", &f))
		return;
	int map = lua_gettop(w->L);
	if (lua_type(w->L, map) != LUA_TTABLE) {
		conf_type_error(w, map, "a table of named policies like { tenant = { file = \"policies/tenant.lua\" } }");
		conf_field_close(w, &f);
		return;
	}
	size_t n;
	const char **names = conf_map_keys(w, map, "policies = { tenant = { file = \"policies/tenant.lua\" } }", &n);
	struct conf_policies *ps = policies_of(w->c);
	ps->v = conf_xcalloc(n ? n : 1, sizeof *ps->v);
	ps->n = n;
	for (size_t i = 0; i < n; i++) {
		struct conf_field e;
		conf_entry_open(w, map, names[i], &e);
		struct conf_policy *p = &ps->v[i];
		p->name = conf_xstrdup(names[i]);
		conf_check_object_name(w, "policy", names[i]);
		int v = lua_gettop(w->L);
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_policy(w, v, p);
		else
			conf_type_error(w, v, "a table like { file = \"policies/tenant.lua\", config = { ... } }");
		conf_field_close(w, &e);
	}
	check_policies(w, ps);
	conf_field_close(w, &f);
}

static int find_policy(const struct conf *c, const char *name)
{
	const struct conf_policies *ps = c->policies;
	for (size_t i = 0; ps && i < ps->n; i++)
		if (strcmp(ps->v[i].name, name) == 0)
			return (int)i;
	return -1;
}

static void add_route_policy(struct conf_walker *w, struct conf_route *r, const char *name)
{
	int idx = find_policy(w->c, name);
	char *q = conf_quoted(name);
	if (idx < 0) {
		struct conf_suggestion sg = {NULL, 0};
		for (size_t i = 0; w->c->policies && i < w->c->policies->n; i++)
			conf_suggest_consider(&sg, name, w->c->policies->v[i].name);
		char *hint = conf_suggestion_text(&sg);
		if (!w->c->policies || w->c->policies->n == 0)
			conf_werr(w, "unknown policy %s (no policies are defined; add policies = { %s = { file = \"...\" } })", q,
			          name);
		else
			conf_werr(w, "unknown policy %s%s", q, *hint ? hint : " (define it under policies)");
		free(hint);
	} else {
		for (size_t i = 0; i < r->num_policies; i++)
			if (r->policies[i] == (size_t)idx) {
				conf_werr(w, "policy %s is listed twice", q);
				free(q);
				return;
			}
		r->policies[r->num_policies++] = (size_t)idx;
	}
	free(q);
}

static void walk_route(struct conf_walker *w, int t, struct conf_route *r)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "policies", &f))
		return;
	int v = lua_gettop(w->L);
	if (lua_type(w->L, v) == LUA_TSTRING) {
		r->policies = conf_xcalloc(1, sizeof *r->policies);
		add_route_policy(w, r, lua_tostring(w->L, v));
	} else if (lua_type(w->L, v) == LUA_TTABLE) {
		size_t n;
		if (conf_list_length(w, v, "{ \"tenant\", \"headers\" }", &n)) {
			r->policies = conf_xcalloc(n ? n : 1, sizeof *r->policies);
			for (size_t i = 1; i <= n; i++) {
				struct conf_field item;
				conf_item_open(w, v, i, &item);
				const char *s = conf_value_string(w, lua_gettop(w->L));
				if (s)
					add_route_policy(w, r, s);
				conf_field_close(w, &item);
			}
		}
	} else {
		conf_type_error(w, v, "a list of policy names like { \"tenant\" }");
	}
	conf_field_close(w, &f);
	/* a policy that reads the body makes its routes read that much first */
	const struct conf_policies *ps = w->c->policies;
	for (size_t i = 0; ps && i < r->num_policies; i++)
		if (ps->v[r->policies[i]].body > r->request_buffering)
			r->request_buffering = ps->v[r->policies[i]].body;
}

static void free_section(struct conf *c)
{
	for (size_t i = 0; i < c->num_routes; i++) {
		free(c->routes[i].policies);
		c->routes[i].policies = NULL;
		c->routes[i].num_policies = 0;
	}
	struct conf_policies *ps = c->policies;
	if (!ps)
		return;
	for (size_t i = 0; i < ps->n; i++) {
		free(ps->v[i].name);
		free(ps->v[i].file);
		free(ps->v[i].path);
		free(ps->v[i].src);
		free(ps->v[i].config_src);
	}
	free(ps->v);
	for (size_t i = 0; i < ps->num_modules; i++) {
		free((char *)ps->modules[i].name);
		free((char *)ps->modules[i].path);
		free((char *)ps->modules[i].src);
	}
	free(ps->modules);
	free(ps);
	c->policies = NULL;
}

static const char *const root_keys[] = {"policies", NULL};
static const char *const route_keys[] = {"policies", NULL};

const struct conf_section conf_policy_section = {
    .root_keys = root_keys,
    .walk = walk_root,
    .route_keys = route_keys,
    .walk_route = walk_route,
    .free = free_section,
};
