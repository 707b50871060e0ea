/* conf_sandbox.h - the Lua sandbox the config file is evaluated in.
 *
 * A config file is untrusted Lua: it runs in a fresh state whose global
 * environment offers only env("NAME"), file("PATH") and the string, table,
 * math and utf8 libraries (docs/configuration.md, "The sandbox"), bounded by
 * an instruction budget (a count hook), a memory cap (the allocator) and a
 * wall-clock deadline, checked by the hook and by the pattern functions,
 * which are luapat.h's bounded ones (a match runs inside one C call, where
 * the hook never fires).
 * Only source text is loaded, never bytecode. Errors from the Lua code are
 * added to errs as "FILE:LINE: message" with the whole file name.
 *
 * Contract: the struct conf_sandbox is the state's allocator data and must
 * outlive the lua_State (lua_close it first). Main thread only.
 */
#ifndef SLUICE_CONF_SANDBOX_H
#define SLUICE_CONF_SANDBOX_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "luapat.h"

struct conf_sandbox {
	size_t mem_used;
	size_t mem_limit;
	uint64_t instructions;
	uint64_t instruction_limit;
	uint64_t deadline_ns;            /* CLOCK_MONOTONIC; set when the chunk starts */
	struct luapat_budget patterns;   /* string.find & co. share the deadline */
	const char *base_dir; /* file() resolves relative paths here */
};

/* A fresh Lua state bounded by sb; file() resolves relative paths in base_dir. NULL when out of memory. */
lua_State *conf_sandbox_new(struct conf_sandbox *sb, const char *base_dir);
/* Evaluates the chunk (name: the file, for messages) in the sandbox; on
 * success leaves the returned table on the stack top, else adds one message to errs. */
bool conf_sandbox_run(lua_State *L, const char *name, const char *src, size_t len, struct conf_errors *errs);

#endif
