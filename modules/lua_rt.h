/* lua_rt.h - the sandboxed Lua runtime that request scripts run in (Lua
 * policies, modules/policy.c; the WAF reuses it).
 *
 * A struct lua_rt is one lua_State with its own allocator and budget. The
 * allocator serves small blocks from per-state free lists (so a request's
 * strings and tables do not reach malloc in the steady state) and refuses to
 * grow past a cap; a count hook charges instructions. lua_rt_call() runs one
 * call under a fresh budget (instructions, and memory on top of what the
 * state held when the call began): a call that errors, runs out of
 * instructions or memory, recurses without end or tries to yield across the
 * C boundary returns false with a message that starts "FILE:LINE:".
 *
 * The global table holds only the sandbox: the safe base functions,
 * string (bytecode dump removed; rep and the pattern functions bounded,
 * luapat.h: steps per match, and time per call), table, math, utf8, coroutine, `load` of text chunks only,
 * and `require` of modules preloaded with lua_rt_add_module() (no file is
 * opened by a worker). No io, os, debug, package, dofile or loadfile;
 * setmetatable refuses __gc (finalizers run with hooks off). Helper
 * libraries: url, html, base64, json (lua_codec.h) and re (lua_re.h), and
 * `cache` once the embedder gives one (lua_rt_open_cache()).
 *
 * Ownership: a runtime belongs to one thread (a worker, or the main thread
 * while a snapshot is built); lua_rt_free() closes it. */
#ifndef SLUICE_LUA_RT_H
#define SLUICE_LUA_RT_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "luapat.h"

enum { LUA_RT_POOL_CLASSES = 16, LUA_RT_POOL_GRAIN = 16 }; /* pooled blocks: 16..256 bytes */

struct lua_rt_module {
	const char *name; /* "tenant.util" */
	const char *path; /* the file, for messages */
	const char *src;
	size_t len;
};

struct lua_rt {
	lua_State *L;
	size_t mem_used;
	size_t mem_limit;      /* what the allocator refuses to grow past now */
	size_t state_limit;    /* outside calls */
	size_t call_memory;    /* per call, on top of what the state holds */
	int64_t instr_left;
	uint64_t call_instructions;
	bool in_call;
	bool out_of_budget;
	bool out_of_memory;
	char oom_where[160]; /* "FILE:LINE" of the allocation refused last */
	struct luapat_budget patterns; /* the bounded pattern functions' (luapat.h), set per call */
	void *pool[LUA_RT_POOL_CLASSES];
	size_t pooled;             /* bytes parked on the free lists */
	const struct lua_rt_module *modules; /* what require() may load */
	size_t num_modules;
	/* when set, asked for a module that is not in `modules` (the main thread
	 * reading a policy directory while a config loads); NULL with err set */
	const struct lua_rt_module *(*resolve)(struct lua_rt *rt, const char *name, char *err, size_t err_size);
	void *user; /* the embedder's */
};

struct lua_rt_limits {
	uint64_t instructions; /* per call */
	size_t memory;         /* per call */
	size_t state_memory;   /* the state as a whole */
};

/* A new sandboxed runtime; NULL when out of memory. */
struct lua_rt *lua_rt_new(const struct lua_rt_limits *lim);
void lua_rt_free(struct lua_rt *rt);

struct lua_cache;
/* Adds the global `cache` (lua_cache.h), bound to c, which must outlive rt. */
void lua_rt_open_cache(struct lua_rt *rt, struct lua_cache *c);

/* Modules require() may load (the array must outlive the runtime). */
void lua_rt_set_modules(struct lua_rt *rt, const struct lua_rt_module *mods, size_t n);

/* Compiles source text (never bytecode) as chunk "@name" and pushes the
 * function with env (stack index, 0: the globals) as its _ENV. On failure
 * pushes nothing and writes "NAME:LINE: message" into err. */
bool lua_rt_load(struct lua_rt *rt, const char *name, const char *src, size_t len, int env, char *err,
                 size_t err_size);

/* Calls the function below nargs arguments under a fresh budget; on success
 * leaves nresults values, else nothing and writes "FILE:LINE: message" into
 * err (the state is usable afterwards). A caller on a hot path pushes the
 * message handler first (lua_rt_push_handler, then the function and its
 * arguments), which saves moving it under them; the call consumes it. */
void lua_rt_push_handler(struct lua_rt *rt);
bool lua_rt_call(struct lua_rt *rt, int nargs, int nresults, char *err, size_t err_size);
/* The same with the message handler kept at stack index msgh (absolute,
 * below the function) by a caller that calls often: it stays there. */
bool lua_rt_call_at(struct lua_rt *rt, int msgh, int nargs, int nresults, char *err, size_t err_size);

/* Pushes a new environment table for one script: its globals are its own,
 * reads fall through to the sandbox's globals. */
void lua_rt_push_env(struct lua_rt *rt);

/* Ends the running call as a success (a decision was taken, e.g. a deny):
 * raises an error that lua_rt_call() recognises. Never returns. */
int lua_rt_stop(lua_State *L);

/* Pushes a setmetatable that refuses __gc ("not allowed in SANDBOX"), built
 * on the base library's at stack index base; for any sandbox (the config's
 * too). */
void lua_rt_push_setmetatable(lua_State *L, int base, const char *sandbox);

/* The runtime whose state L is (any of its threads). */
struct lua_rt *lua_rt_of(lua_State *L);

#endif
