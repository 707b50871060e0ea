/* luapat.h - Lua's string pattern functions with a bound on their time.
 *
 * string.find, string.match, string.gmatch and string.gsub run their pattern
 * matcher inside one C call, where a Lua count hook never fires: a pattern
 * such as string.rep("a*", 8) .. "b" against 3,000 letters backtracks for
 * minutes. luapat_open() replaces those four functions (and string.rep,
 * whose size it bounds) in a string library table with versions that behave
 * as Lua 5.4's (same patterns, captures, results and error messages) but
 * count their matching steps and raise a Lua error once the budget's
 * deadline has passed or its step limit is reached. The config sandbox uses
 * them (conf_sandbox.c); the Lua policy runner is meant to as well, where an
 * unbounded match would be a denial of service on the request path.
 *
 * Contract: the budget is owned by the caller and must outlive the Lua
 * state's use of the functions (they keep a pointer to it); it may be changed
 * between calls (a new deadline per request). Errors are raised with
 * luaL_error, so they carry the calling Lua line ("conf.lua:3: string.find:
 * pattern too slow ..."). Not thread-safe beyond what a lua_State is.
 */
#ifndef SLUICE_LUAPAT_H
#define SLUICE_LUAPAT_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

struct luapat_budget {
	uint64_t deadline_ns;   /* CLOCK_MONOTONIC; 0: none */
	uint64_t max_steps;     /* matching steps per call; 0: no limit */
	size_t max_rep_bytes;   /* largest string.rep result; 0: no limit */
};

/* Replaces find, match, gmatch, gsub and rep in the table at stack index idx
 * (the string library) with bounded versions using b. */
void luapat_open(lua_State *L, int idx, struct luapat_budget *b);

/* CLOCK_MONOTONIC in nanoseconds, for deadlines. */
uint64_t luapat_now_ns(void);

#endif
