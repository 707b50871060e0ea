/* lua_rt.c - the sandboxed Lua runtime for request scripts (lua_rt.h). */
#include "lua_rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_cache.h"
#include "lua_codec.h"
#include "lua_re.h"
#include "luapat.h"

/* Pattern matching runs in C, out of the count hook's reach: each match is
 * bounded by steps (the call's instruction budget) and every match of a call
 * by this much wall-clock time from the call's start. */
static const uint64_t rt_pattern_time_ns = 100000000;

/* How often the count hook charges the budget: small enough that a loop is
 * stopped promptly, large enough that the hook costs nothing measurable. */
enum { RT_HOOK_INTERVAL = 1000 };

/* Blocks parked on the free lists beyond this go back to malloc. */
static const size_t rt_pool_max = (size_t)4 << 20;
#define LUA_RT_POOL_MAX (LUA_RT_POOL_CLASSES * LUA_RT_POOL_GRAIN)

static size_t pool_class(size_t n)
{
	return (n + LUA_RT_POOL_GRAIN - 1) / LUA_RT_POOL_GRAIN - 1;
}

/* Where the running Lua code is, for a refused allocation (read-only walk of
 * the call stack: it allocates nothing). */
static void note_oom_where(struct lua_rt *rt)
{
	lua_Debug ar;
	for (int level = 0; lua_getstack(rt->L, level, &ar); level++) {
		if (lua_getinfo(rt->L, "Sl", &ar) && ar.currentline > 0) {
			snprintf(rt->oom_where, sizeof rt->oom_where, "%s:%d", ar.source[0] == '@' ? ar.source + 1 : ar.short_src,
			         ar.currentline);
			return;
		}
	}
	rt->oom_where[0] = '\0';
}

static void pool_put(struct lua_rt *rt, void *ptr, size_t size)
{
	if (size <= LUA_RT_POOL_MAX && rt->pooled + size <= rt_pool_max) {
		size_t c = pool_class(size);
		*(void **)ptr = rt->pool[c];
		rt->pool[c] = ptr;
		rt->pooled += (c + 1) * LUA_RT_POOL_GRAIN;
	} else {
		free(ptr);
	}
}

static void *pool_get(struct lua_rt *rt, size_t size)
{
	if (size > LUA_RT_POOL_MAX)
		return malloc(size);
	size_t c = pool_class(size);
	void *p = rt->pool[c];
	if (!p)
		return malloc((c + 1) * LUA_RT_POOL_GRAIN);
	rt->pool[c] = *(void **)p;
	rt->pooled -= (c + 1) * LUA_RT_POOL_GRAIN;
	return p;
}

static void *rt_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct lua_rt *rt = ud;
	size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
	if (nsize == 0) {
		if (ptr) {
			rt->mem_used -= old;
			pool_put(rt, ptr, old);
		}
		return NULL;
	}
	size_t used = rt->mem_used < rt->mem_limit ? rt->mem_used : rt->mem_limit;
	if (nsize > old && nsize - old > rt->mem_limit - used) {
		if (rt->in_call && !rt->out_of_memory && rt->L) {
			rt->out_of_memory = true;
			note_oom_where(rt);
		}
		return NULL;
	}
	void *p;
	if (ptr && old <= LUA_RT_POOL_MAX && nsize <= LUA_RT_POOL_MAX && pool_class(old) == pool_class(nsize)) {
		p = ptr; /* the block already has room */
	} else if (ptr && old > LUA_RT_POOL_MAX && nsize > LUA_RT_POOL_MAX) {
		p = realloc(ptr, nsize);
	} else {
		p = pool_get(rt, nsize);
		if (p && ptr) {
			memcpy(p, ptr, old < nsize ? old : nsize);
			pool_put(rt, ptr, old);
		}
	}
	if (!p) {
		if (nsize > old)
			return NULL;
		p = ptr; /* Lua assumes a shrink never fails; the block is large enough */
	}
	rt->mem_used = rt->mem_used - old + nsize;
	return p;
}

struct lua_rt *lua_rt_of(lua_State *L)
{
	void *ud = NULL;
	lua_getallocf(L, &ud);
	return ud;
}

static void rt_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	struct lua_rt *rt = lua_rt_of(L);
	if (!rt->out_of_budget) {
		int count = lua_gethookcount(L);
		rt->instr_left -= count;
		/* a coroutine an earlier call left failing at every instruction
		 * (hooks are per thread) counts normally again */
		if (count != RT_HOOK_INTERVAL)
			lua_sethook(L, rt_hook, LUA_MASKCOUNT, RT_HOOK_INTERVAL);
		if (rt->instr_left > 0)
			return;
		rt->out_of_budget = true;
	}
	/* from now on fail at every instruction: a pcall in the script may catch
	 * one error, but the code around it fails too */
	lua_sethook(L, rt_hook, LUA_MASKCOUNT, 1);
	/* no position here: the message handler adds the script's */
	lua_pushfstring(L, "instruction budget exceeded (%d instructions per call)", (int)rt->call_instructions);
	lua_error(L);
}

/* The pattern functions' deadline is set by the first pattern call of a
 * call (most calls use none, and a clock read per call is measurable);
 * these wrappers set it, then call luapat's function (upvalue 1). */
static void pattern_deadline(lua_State *L)
{
	struct lua_rt *rt = lua_rt_of(L);
	if (rt->in_call && rt->patterns.deadline_ns == 0)
		rt->patterns.deadline_ns = luapat_now_ns() + rt_pattern_time_ns;
}

static int pattern_call(lua_State *L)
{
	pattern_deadline(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

/* gmatch: its iterator runs in later calls too, so it is wrapped as well */
static int pattern_gmatch(lua_State *L)
{
	pattern_call(L);
	lua_settop(L, 1);
	lua_pushcclosure(L, pattern_call, 1);
	return 1;
}

static void wrap_patterns(lua_State *L, int strlib)
{
	static const char *const names[] = {"find", "match", "gsub", NULL};
	for (const char *const *n = names; *n; n++) {
		lua_getfield(L, strlib, *n);
		lua_pushcclosure(L, pattern_call, 1);
		lua_setfield(L, strlib, *n);
	}
	lua_getfield(L, strlib, "gmatch");
	lua_pushcclosure(L, pattern_gmatch, 1);
	lua_setfield(L, strlib, "gmatch");
}

/* setmetatable without __gc: finalizers run with hooks off, outside any
 * budget. Lua marks an object for finalization only when it gets its
 * metatable, so checking here suffices. Upvalues: the real setmetatable, and
 * what the message calls the sandbox. */
static int rt_setmetatable(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TTABLE) {
		if (lua_getfield(L, 2, "__gc") != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc metamethods are not allowed in %s",
			                  lua_tostring(L, lua_upvalueindex(2)));
		lua_pop(L, 1);
	}
	int nargs = lua_gettop(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, nargs, 1);
	return 1;
}

void lua_rt_push_setmetatable(lua_State *L, int base, const char *sandbox)
{
	lua_getfield(L, base, "setmetatable");
	lua_pushstring(L, sandbox);
	lua_pushcclosure(L, rt_setmetatable, 2);
}

/* load(chunk [, name [, mode [, env]]]): text only, never bytecode. */
static int rt_load(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	const char *name = luaL_optstring(L, 2, "=(load)");
	const char *mode = luaL_optstring(L, 3, "t");
	if (strchr(mode, 'b'))
		return luaL_error(L, "load: binary chunks are not allowed in policies");
	int env = lua_isnone(L, 4) ? 0 : 4;
	if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
		luaL_pushfail(L);
		lua_insert(L, -2);
		return 2;
	}
	if (env) {
		lua_pushvalue(L, env);
		if (!lua_setupvalue(L, -2, 1))
			lua_pop(L, 1);
	}
	return 1;
}

/* require(name): a module preloaded on the main thread, compiled once per state. */
static int rt_require(lua_State *L)
{
	struct lua_rt *rt = lua_rt_of(L);
	const char *name = luaL_checkstring(L, 1);
	lua_settop(L, 1);
	lua_getfield(L, LUA_REGISTRYINDEX, "sluice.loaded");
	if (lua_getfield(L, 2, name) != LUA_TNIL)
		return 1;
	lua_pop(L, 1);
	const struct lua_rt_module *m = NULL;
	for (size_t i = 0; i < rt->num_modules && !m; i++)
		if (strcmp(rt->modules[i].name, name) == 0)
			m = &rt->modules[i];
	char err[512];
	if (!m && rt->resolve && !(m = rt->resolve(rt, name, err, sizeof err)))
		return luaL_error(L, "require \"%s\": %s", name, err);
	if (!m)
		return luaL_error(L, "module \"%s\" not found (a policy may require only modules of the policy "
		                  "directories, and only while it loads)", name);
	if (!lua_rt_load(rt, m->path, m->src, m->len, 0, err, sizeof err))
		return luaL_error(L, "require \"%s\": %s", name, err);
	lua_pushstring(L, name);
	lua_call(L, 1, 1);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
	}
	lua_pushvalue(L, -1);
	lua_setfield(L, 2, name);
	return 1;
}

static void open_sandbox(lua_State *L)
{
	static const char *const base_functions[] = {
	    "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen", "rawset",
	    "select", "tonumber", "tostring", "type", "xpcall", "getmetatable", NULL,
	};
	static const struct {
		const char *name;
		lua_CFunction open;
	} libraries[] = {
	    {LUA_STRLIBNAME, luaopen_string}, {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
	    {LUA_UTF8LIBNAME, luaopen_utf8},  {LUA_COLIBNAME, luaopen_coroutine},
	};
	luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
	int base = lua_gettop(L);
	lua_newtable(L);
	int env = lua_gettop(L);
	for (const char *const *name = base_functions; *name; name++) {
		lua_getfield(L, base, *name);
		lua_setfield(L, env, *name);
	}
	lua_rt_push_setmetatable(L, base, "policies");
	lua_setfield(L, env, "setmetatable");
	lua_pushcfunction(L, rt_load);
	lua_setfield(L, env, "load");
	lua_pushcfunction(L, rt_require);
	lua_setfield(L, env, "require");
	lua_pushstring(L, LUA_VERSION);
	lua_setfield(L, env, "_VERSION");
	for (size_t i = 0; i < sizeof libraries / sizeof libraries[0]; i++) {
		luaL_requiref(L, libraries[i].name, libraries[i].open, 0);
		lua_setfield(L, env, libraries[i].name);
	}
	lua_getfield(L, env, LUA_STRLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump"); /* bytecode, which nothing here may load */
	struct lua_rt *rt = lua_rt_of(L);
	luapat_open(L, -1, &rt->patterns);
	wrap_patterns(L, lua_gettop(L));
	lua_pop(L, 1);
	codec_open(L, env);
	lua_re_open(L, env);
	lua_pushvalue(L, env);
	lua_setfield(L, env, "_G");
	/* the sandbox becomes the state's global table: load() and require()
	 * default to it, and the real base library is gone */
	lua_pushvalue(L, env);
	lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, "sluice.loaded");
	lua_pushnil(L);
	lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_settop(L, base - 1);
}

static int rt_open(lua_State *L)
{
	open_sandbox(L);
	return 0;
}

struct lua_rt *lua_rt_new(const struct lua_rt_limits *lim)
{
	struct lua_rt *rt = calloc(1, sizeof *rt);
	if (!rt)
		return NULL;
	rt->state_limit = lim->state_memory;
	rt->mem_limit = lim->state_memory;
	rt->call_memory = lim->memory;
	rt->call_instructions = lim->instructions;
	rt->instr_left = INT64_MAX;
	rt->L = lua_newstate(rt_alloc, rt);
	if (!rt->L) {
		lua_rt_free(rt);
		return NULL;
	}
	lua_pushcfunction(rt->L, rt_open);
	if (lua_pcall(rt->L, 0, 0, 0) != LUA_OK) {
		lua_rt_free(rt);
		return NULL;
	}
	/* generational GC: a request's short-lived tables die young */
	lua_gc(rt->L, LUA_GCGEN, 0, 0);
	return rt;
}

void lua_rt_free(struct lua_rt *rt)
{
	if (!rt)
		return;
	if (rt->L)
		lua_close(rt->L);
	for (size_t c = 0; c < LUA_RT_POOL_CLASSES; c++) {
		while (rt->pool[c]) {
			void *p = rt->pool[c];
			rt->pool[c] = *(void **)p;
			free(p);
		}
	}
	free(rt);
}

void lua_rt_open_cache(struct lua_rt *rt, struct lua_cache *cache)
{
	lua_State *L = rt->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
	lua_cache_open(L, -1, cache);
	lua_pop(L, 1);
}

void lua_rt_set_modules(struct lua_rt *rt, const struct lua_rt_module *mods, size_t n)
{
	rt->modules = mods;
	rt->num_modules = n;
}

void lua_rt_push_env(struct lua_rt *rt)
{
	lua_State *L = rt->L;
	lua_newtable(L);
	lua_newtable(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, -2);
}

bool lua_rt_load(struct lua_rt *rt, const char *name, const char *src, size_t len, int env, char *err,
                 size_t err_size)
{
	lua_State *L = rt->L;
	if (env)
		env = lua_absindex(L, env);
	if (len > 0 && src[0] == LUA_SIGNATURE[0]) {
		snprintf(err, err_size, "%s: precompiled (bytecode) chunks are refused; give Lua source text", name);
		return false;
	}
	lua_pushfstring(L, "@%s", name);
	int status = luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t");
	lua_remove(L, -2);
	if (status != LUA_OK) {
		const char *msg = lua_tostring(L, -1);
		/* Lua shortens long chunk names ("...tail.lua:3:"); name the whole file */
		const char *colon = msg ? strstr(msg, ".lua:") : NULL;
		if (msg && strncmp(msg, "...", 3) == 0 && colon)
			snprintf(err, err_size, "%s%s", name, colon + 4);
		else
			snprintf(err, err_size, "%s", msg ? msg : "cannot load");
		lua_pop(L, 1);
		return false;
	}
	if (env) {
		lua_pushvalue(L, env);
		lua_setupvalue(L, -2, 1);
	}
	return true;
}

static const char rt_stop_token = 0;

int lua_rt_stop(lua_State *L)
{
	lua_pushlightuserdata(L, (void *)&rt_stop_token);
	return lua_error(L);
}

static bool is_stop(lua_State *L, int idx)
{
	return lua_touserdata(L, idx) == (void *)&rt_stop_token;
}

/* The message handler: every message starts with FILE:LINE of the Lua code
 * that failed, however the error was raised (a Lua error with its position,
 * a C function's error without one, a non-string error value). */
static int rt_msgh(lua_State *L)
{
	if (is_stop(L, 1))
		return 1;
	const char *msg = lua_tostring(L, 1);
	lua_Debug ar;
	bool have = false;
	for (int level = 1; lua_getstack(L, level, &ar); level++) {
		if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
			have = true;
			break;
		}
	}
	if (!have) {
		if (!msg)
			lua_pushfstring(L, "error object is a %s value", luaL_typename(L, 1));
		return 1;
	}
	const char *full = ar.source[0] == '@' ? ar.source + 1 : ar.short_src;
	if (!msg) {
		lua_pushfstring(L, "%s:%d: error object is a %s value", full, ar.currentline, luaL_typename(L, 1));
		return 1;
	}
	size_t slen = strlen(ar.short_src);
	if (strncmp(msg, ar.short_src, slen) == 0 && msg[slen] == ':') {
		lua_pushfstring(L, "%s%s", full, msg + slen); /* the whole file name, not Lua's shortened one */
		return 1;
	}
	size_t flen = strlen(full);
	if (strncmp(msg, full, flen) == 0 && msg[flen] == ':')
		return 1;
	lua_pushfstring(L, "%s:%d: %s", full, ar.currentline, msg);
	return 1;
}

void lua_rt_push_handler(struct lua_rt *rt)
{
	lua_pushcfunction(rt->L, rt_msgh);
}

static bool call_under(struct lua_rt *rt, int handler, bool keep_handler, int nargs, int nresults, char *err,
                       size_t err_size);

bool lua_rt_call(struct lua_rt *rt, int nargs, int nresults, char *err, size_t err_size)
{
	lua_State *L = rt->L;
	int fn = lua_gettop(L) - nargs; /* the function's slot */
	/* the message handler below the function: pushed by the caller
	 * (lua_rt_push_handler), or slipped in here */
	bool own = fn <= 1 || lua_tocfunction(L, fn - 1) != rt_msgh;
	if (own) {
		lua_pushcfunction(L, rt_msgh);
		lua_insert(L, fn);
		fn++;
	}
	return call_under(rt, fn - 1, false, nargs, nresults, err, err_size);
}

bool lua_rt_call_at(struct lua_rt *rt, int msgh, int nargs, int nresults, char *err, size_t err_size)
{
	return call_under(rt, msgh, true, nargs, nresults, err, err_size);
}

static bool call_under(struct lua_rt *rt, int handler, bool keep_handler, int nargs, int nresults, char *err,
                       size_t err_size)
{
	lua_State *L = rt->L;
	rt->in_call = true;
	rt->out_of_memory = false;
	rt->instr_left = (int64_t)rt->call_instructions;
	rt->patterns.max_steps = rt->call_instructions;
	rt->patterns.max_rep_bytes = rt->call_memory;
	rt->patterns.deadline_ns = 0; /* set by the call's first pattern function */
	size_t cap = rt->mem_used + rt->call_memory;
	rt->mem_limit = cap < rt->state_limit ? cap : rt->state_limit;
	/* the hook stays between calls (no Lua runs then); it is set again only
	 * after a call that ran out, which left it failing at every instruction */
	if (rt->out_of_budget || lua_gethook(L) != rt_hook) {
		rt->out_of_budget = false;
		lua_sethook(L, rt_hook, LUA_MASKCOUNT, RT_HOOK_INTERVAL);
	}
	int status = lua_pcall(L, nargs, nresults, handler);
	rt->in_call = false;
	rt->mem_limit = rt->state_limit;
	rt->instr_left = INT64_MAX;
	if (!keep_handler) { /* else it stays where the caller keeps it */
		if (status == LUA_OK && nresults == 0)
			lua_settop(L, handler - 1); /* the handler is all that is left */
		else
			lua_remove(L, handler);
	}
	if (status == LUA_OK)
		return true;
	if (status == LUA_ERRRUN && is_stop(L, -1)) {
		lua_pop(L, 1);
		if (nresults > 0 && nresults != LUA_MULTRET)
			for (int i = 0; i < nresults; i++)
				lua_pushnil(L);
		return true;
	}
	if (status == LUA_ERRMEM || rt->out_of_memory) {
		snprintf(err, err_size, "%s: memory cap exceeded (%zu KiB per call)", rt->oom_where[0] ? rt->oom_where : "?",
		         rt->call_memory >> 10);
	} else {
		const char *msg = lua_tostring(L, -1);
		snprintf(err, err_size, "%s", msg ? msg : "error");
	}
	lua_pop(L, 1);
	/* whatever the failed call left behind goes now, not during the next request */
	lua_gc(L, LUA_GCCOLLECT, 0);
	return false;
}
