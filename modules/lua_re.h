/* lua_re.h - the `re` library of request scripts: PCRE2 regular expressions
 * with JIT (docs/policies.md, "Helpers"): re.match, re.find, re.gmatch,
 * re.gsub.
 *
 * A pattern is compiled (and JIT-compiled) once per Lua state and kept in a
 * per-state cache keyed by (flags, pattern); the cache is emptied when it
 * reaches LUA_RE_CACHE_MAX patterns, so patterns built from request data
 * cannot grow memory without bound. Every match runs under a PCRE2 match
 * limit and depth limit (a catastrophic pattern fails with an error instead
 * of holding the worker). Matching uses one match block per state.
 *
 * Contract: lua_re_open() sets `re` in the table at stack index t; the state
 * owns everything (freed with it). */
#ifndef SLUICE_LUA_RE_H
#define SLUICE_LUA_RE_H

#include <lua.h>

enum { LUA_RE_CACHE_MAX = 512 };

void lua_re_open(lua_State *L, int t);

#endif
