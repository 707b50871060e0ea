/* conf_sandbox.c - the Lua sandbox the config file runs in (conf_sandbox.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_sandbox.h"
#include "conf_schema.h"
#include "lua_rt.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

/* Evaluation bounds: far above what any real config needs, low enough that a
 * runaway loop or allocation fails within about a second. */
enum { SANDBOX_HOOK_INTERVAL = 10000 };
static const uint64_t sandbox_instruction_limit = 50000000;
static const size_t sandbox_memory_limit = (size_t)256 << 20;
/* Wall-clock bound on the whole evaluation, and on one pattern match: the
 * instruction budget takes about a second; this leaves room for a loaded
 * machine or a sanitizer build. */
static const uint64_t sandbox_time_limit_ns = (uint64_t)5 * 1000000000u;
static const uint64_t sandbox_pattern_max_steps = 200000000;

static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct conf_sandbox *sb = ud;
	size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag, not a size */
	if (nsize == 0) {
		free(ptr);
		sb->mem_used -= old;
		return NULL;
	}
	if (nsize > old && nsize - old > sb->mem_limit - sb->mem_used)
		return NULL;
	void *p = realloc(ptr, nsize);
	if (!p)
		return NULL;
	sb->mem_used = sb->mem_used - old + nsize;
	return p;
}

static struct conf_sandbox *sandbox_of(lua_State *L)
{
	void *ud = NULL;
	lua_getallocf(L, &ud);
	return ud;
}

static void sandbox_hook(lua_State *L, lua_Debug *ar)
{
	struct conf_sandbox *sb = sandbox_of(L);
	bool over_time = sb->deadline_ns && luapat_now_ns() > sb->deadline_ns;
	if (sb->instructions < sb->instruction_limit && !over_time) {
		sb->instructions += SANDBOX_HOOK_INTERVAL;
		if (sb->instructions < sb->instruction_limit)
			return;
	}
	/* From now on fail at every instruction: a pcall in the config may catch
	 * one error, but then the code around it fails too. */
	lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, 1);
	/* luaL_error would name the caller's line; the loop is in this function. */
	if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
		lua_pushfstring(L, "%s:%d: ", ar->short_src, ar->currentline);
	else
		lua_pushliteral(L, "");
	if (over_time)
		lua_pushfstring(L, "config took too long (stopped after %d seconds)",
		                (int)(sandbox_time_limit_ns / 1000000000u));
	else
		lua_pushfstring(L, "config took too long (stopped after %d million Lua instructions)",
		                (int)(sb->instruction_limit / 1000000));
	lua_concat(L, 2);
	lua_error(L);
}

static int sandbox_env(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *value = getenv(name);
	if (value)
		lua_pushstring(L, value);
	else
		lua_pushnil(L);
	return 1;
}

static int sandbox_file(lua_State *L)
{
	const struct conf_sandbox *sb = sandbox_of(L);
	size_t name_len;
	const char *name = luaL_checklstring(L, 1, &name_len);
	if (name_len == 0 || strlen(name) != name_len)
		return luaL_error(L, "file(): expected a file path");
	const char *full = name[0] == '/' ? name : lua_pushfstring(L, "%s/%s", sb->base_dir, name);

	/* Size the buffer first, as a userdata: if Lua runs out of memory it raises
	 * before the file is open, so no descriptor can leak through the longjmp.
	 * One byte more than the size, to notice a file that has more than it says. */
	struct stat st;
	char why[160];
	if (stat(full, &st) != 0)
		return luaL_error(L, "file(\"%s\"): cannot read %s: %s", name, full, strerror(errno));
	if ((uintmax_t)st.st_size >= sb->mem_limit)
		return luaL_error(L, "file(\"%s\"): %s is too large", name, full);
	size_t size = (size_t)st.st_size;
	char *buf = lua_newuserdatauv(L, size + 1, 0);

	int fd = conf_open_regular_file(full, &st, why, sizeof why);
	if (fd < 0)
		return luaL_error(L, "file(\"%s\"): cannot read %s: %s", name, full, why);
	size_t got = 0;
	int read_errno = 0;
	while (got <= size) {
		ssize_t r = read(fd, buf + got, size + 1 - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			read_errno = errno;
			break;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	if (close(fd) != 0 && read_errno == 0)
		read_errno = errno;
	if (read_errno)
		return luaL_error(L, "file(\"%s\"): cannot read %s: %s", name, full, strerror(read_errno));
	/* A /proc or /sys file says it has 0 bytes and then has some: reading it
	 * by its size gave an empty string without a word. */
	if (got > size)
		return luaL_error(L,
		                  "file(\"%s\"): %s has more bytes than its size says (%I): a /proc or /sys file, or "
		                  "one being written; file() reads regular files only (copy it to a file, or use env())",
		                  name, full, (lua_Integer)size);
	lua_pushlstring(L, buf, got);
	return 1;
}

/* Builds the config's whole world: an empty table plus the listed helpers. */
static int sandbox_open(lua_State *L)
{
	static const char *const base_functions[] = {
		"pairs", "ipairs", "next", "select", "type", "tostring", "tonumber", "error", "assert", "pcall",
		"getmetatable", "rawget", "rawequal", "rawlen", "rawset", NULL,
	};
	static const struct {
		const char *name;
		lua_CFunction open;
	} libraries[] = {
		{ LUA_STRLIBNAME, luaopen_string },
		{ LUA_TABLIBNAME, luaopen_table },
		{ LUA_MATHLIBNAME, luaopen_math },
		{ LUA_UTF8LIBNAME, luaopen_utf8 },
	};

	luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
	int globals = lua_gettop(L);
	lua_newtable(L);
	int env = lua_gettop(L);
	for (const char *const *name = base_functions; *name; name++) {
		lua_getfield(L, globals, *name);
		lua_setfield(L, env, *name);
	}
	/* finalizers would run outside the instruction budget */
	lua_rt_push_setmetatable(L, globals, "the config");
	lua_setfield(L, env, "setmetatable");
	for (size_t i = 0; i < sizeof libraries / sizeof libraries[0]; i++) {
		luaL_requiref(L, libraries[i].name, libraries[i].open, 0);
		lua_setfield(L, env, libraries[i].name);
	}
	/* string.dump only produces bytecode, which nothing here may load; the
	 * pattern functions run in one C call each, out of the hook's reach. */
	lua_getfield(L, env, LUA_STRLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	luapat_open(L, -1, &sandbox_of(L)->patterns);
	lua_pop(L, 1);
	lua_pushcfunction(L, sandbox_env);
	lua_setfield(L, env, "env");
	lua_pushcfunction(L, sandbox_file);
	lua_setfield(L, env, "file");
	lua_settop(L, env);
	return 1;
}

/* Lua shortens chunk names to LUA_IDSIZE ("...tail/of/name.lua:3: msg"); put
 * the whole name back so that every message starts with the same FILE. */
static void add_lua_error(struct conf_errors *errs, const char *name, lua_State *L, int status)
{
	if (status == LUA_ERRMEM) {
		conf_errors_add(errs, "%s: config used too much memory (limit %zu MiB)", name,
		                sandbox_memory_limit >> 20);
		return;
	}
	int type = lua_type(L, -1);
	if (type != LUA_TSTRING && type != LUA_TNUMBER) {
		conf_errors_add(errs, "%s: error raised with a %s value instead of a message", name,
		                lua_typename(L, type));
		return;
	}
	const char *msg = lua_tostring(L, -1);
	size_t name_len = strlen(name);
	if (strncmp(msg, name, name_len) == 0 && msg[name_len] == ':') {
		conf_errors_add(errs, "%s", msg);
		return;
	}
	if (strncmp(msg, "...", 3) == 0) {
		const char *tail = msg + 3;
		for (const char *colon = strchr(tail, ':'); colon; colon = strchr(colon + 1, ':')) {
			size_t tail_len = (size_t)(colon - tail);
			if (tail_len <= name_len && memcmp(name + name_len - tail_len, tail, tail_len) == 0) {
				conf_errors_add(errs, "%s%s", name, colon);
				return;
			}
		}
	}
	conf_errors_add(errs, "%s: %s", name, msg);
}

bool conf_sandbox_run(lua_State *L, const char *name, const char *src, size_t len, struct conf_errors *errs)
{
	lua_pushcfunction(L, sandbox_open);
	int status = lua_pcall(L, 0, 1, 0);
	if (status != LUA_OK) {
		add_lua_error(errs, name, L, status);
		return false;
	}
	int env = lua_gettop(L);
	if (len > 0 && src[0] == LUA_SIGNATURE[0]) {
		conf_errors_add(errs, "%s: precompiled (bytecode) chunks are refused; the config must be Lua source text",
		                name);
		return false;
	}
	char *chunkname = conf_xasprintf("@%s", name);
	status = luaL_loadbufferx(L, src, len, chunkname, "t");
	free(chunkname);
	if (status != LUA_OK) {
		add_lua_error(errs, name, L, status);
		return false;
	}
	lua_pushvalue(L, env);
	if (!lua_setupvalue(L, -2, 1)) {
		/* A main chunk always has _ENV as its only upvalue; without it the sandbox would not apply. */
		conf_errors_add(errs, "%s: cannot install the sandbox", name);
		return false;
	}
	struct conf_sandbox *sb = sandbox_of(L);
	sb->deadline_ns = luapat_now_ns() + sandbox_time_limit_ns;
	sb->patterns.deadline_ns = sb->deadline_ns;
	lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, SANDBOX_HOOK_INTERVAL);
	status = lua_pcall(L, 0, 1, 0);
	if (status != LUA_OK) {
		add_lua_error(errs, name, L, status);
		return false;
	}
	if (lua_type(L, -1) != LUA_TTABLE) {
		conf_errors_add(errs, "%s: the config must return a table (return { ... }), got %s", name,
		                luaL_typename(L, -1));
		return false;
	}
	return true;
}

lua_State *conf_sandbox_new(struct conf_sandbox *sb, const char *base_dir)
{
	*sb = (struct conf_sandbox){
		.mem_used = 0,
		.mem_limit = sandbox_memory_limit,
		.instructions = 0,
		.instruction_limit = sandbox_instruction_limit,
		.deadline_ns = 0,
		.patterns = { .deadline_ns = 0, .max_steps = sandbox_pattern_max_steps, .max_rep_bytes = sandbox_memory_limit },
		.base_dir = base_dir,
	};
	return lua_newstate(sandbox_alloc, sb);
}
