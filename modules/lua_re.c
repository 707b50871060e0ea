/* lua_re.c - PCRE2 regular expressions for request scripts (lua_re.h). */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "lua_re.h"

#include <pcre2.h>
#include <stdbool.h>
#include <string.h>

#include <lauxlib.h>

/* Far above what a sane pattern needs on a header or a query string, low
 * enough that a backtracking one fails in milliseconds. */
enum { RE_MATCH_LIMIT = 1000000, RE_DEPTH_LIMIT = 10000, RE_MAX_GROUPS = 32 };

#define RE_STATE "sluice.re.state"
#define RE_CODE "sluice.re.code"

/* Per Lua state: one match block and context, the JIT stack, the cache size. */
struct re_state {
	pcre2_match_data *md;
	pcre2_match_context *mc;
	pcre2_jit_stack *jit;
	int cached;
};

static int re_state_gc(lua_State *L)
{
	struct re_state *st = luaL_checkudata(L, 1, RE_STATE);
	pcre2_match_data_free(st->md);
	pcre2_match_context_free(st->mc);
	pcre2_jit_stack_free(st->jit);
	st->md = NULL;
	st->mc = NULL;
	st->jit = NULL;
	return 0;
}

static int re_code_gc(lua_State *L)
{
	pcre2_code **code = luaL_checkudata(L, 1, RE_CODE);
	pcre2_code_free(*code);
	*code = NULL;
	return 0;
}

static struct re_state *state_of(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}

static uint32_t parse_flags(lua_State *L, int idx)
{
	const char *f = luaL_optstring(L, idx, "");
	uint32_t opts = 0;
	for (; *f; f++) {
		switch (*f) {
		case 'i': opts |= PCRE2_CASELESS; break;
		case 'm': opts |= PCRE2_MULTILINE; break;
		case 's': opts |= PCRE2_DOTALL; break;
		case 'x': opts |= PCRE2_EXTENDED; break;
		case 'u': opts |= PCRE2_UTF; break;
		default: luaL_argerror(L, idx, "flags are letters of \"imsxu\""); break;
		}
	}
	return opts;
}

/* The compiled pattern at idx with flags at fidx, from the cache (upvalue 2) or compiled now. */
static pcre2_code *compiled(lua_State *L, int idx, int fidx)
{
	struct re_state *st = state_of(L);
	size_t plen;
	const char *pat = luaL_checklstring(L, idx, &plen);
	uint32_t opts = parse_flags(L, fidx);
	lua_pushfstring(L, "%d:", (int)opts);
	lua_pushvalue(L, idx);
	lua_concat(L, 2);
	lua_pushvalue(L, -1);
	if (lua_rawget(L, lua_upvalueindex(2)) == LUA_TUSERDATA) {
		pcre2_code *code = *(pcre2_code **)lua_touserdata(L, -1);
		lua_pop(L, 2);
		return code;
	}
	lua_pop(L, 1);
	int err;
	PCRE2_SIZE off;
	pcre2_code *code = pcre2_compile((PCRE2_SPTR)pat, plen, opts, &err, &off, NULL);
	if (!code) {
		PCRE2_UCHAR msg[160];
		if (pcre2_get_error_message(err, msg, sizeof msg) < 0)
			strcpy((char *)msg, "invalid pattern");
		luaL_error(L, "re: bad pattern at offset %d: %s", (int)off, (const char *)msg);
	}
	pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* without JIT (not available) the interpreter runs it */
	pcre2_code **box = lua_newuserdatauv(L, sizeof *box, 0);
	*box = code;
	luaL_setmetatable(L, RE_CODE);
	if (st->cached >= LUA_RE_CACHE_MAX) {
		/* patterns built from request data: start over rather than grow
		 * (in place: every function of the library shares the table) */
		lua_pushnil(L);
		while (lua_next(L, lua_upvalueindex(2))) {
			lua_pop(L, 1);
			lua_pushvalue(L, -1);
			lua_pushnil(L);
			lua_rawset(L, lua_upvalueindex(2));
		}
		st->cached = 0;
	}
	lua_rawset(L, lua_upvalueindex(2)); /* key (below) -> box; both popped */
	st->cached++;
	return code;
}

/* Runs code on s from offset; the match count (>0), 0 for none; raises on limits. */
static int run(lua_State *L, pcre2_code *code, const char *s, size_t len, size_t offset)
{
	struct re_state *st = state_of(L);
	int rc = pcre2_match(code, (PCRE2_SPTR)s, len, offset, 0, st->md, st->mc);
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
		return luaL_error(L, "re: pattern too slow (PCRE2 match limit reached): simplify it");
	if (rc < 0) {
		PCRE2_UCHAR msg[160];
		if (pcre2_get_error_message(rc, msg, sizeof msg) < 0)
			strcpy((char *)msg, "match error");
		return luaL_error(L, "re: %s", (const char *)msg);
	}
	return rc == 0 ? RE_MAX_GROUPS : rc;
}

/* Pushes group i of the last match (false when it did not take part). */
static void push_group(lua_State *L, const char *s, int i)
{
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(state_of(L)->md);
	if (ov[2 * i] == PCRE2_UNSET)
		lua_pushboolean(L, 0);
	else
		lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
}

/* The captures of the last match like string.match: the groups, or the whole match. */
static int push_captures(lua_State *L, const char *s, int n)
{
	if (n <= 1) {
		push_group(L, s, 0);
		return 1;
	}
	luaL_checkstack(L, n, "re: too many groups");
	for (int i = 1; i < n; i++)
		push_group(L, s, i);
	return n - 1;
}

static size_t start_offset(lua_State *L, int idx, size_t len)
{
	lua_Integer init = luaL_optinteger(L, idx, 1);
	if (init < 0)
		init = (lua_Integer)len + init + 1;
	if (init < 1)
		init = 1;
	return (size_t)init - 1;
}

/* re.match and re.find: the match of s (argument 1) against the pattern
 * (2) with flags (3) from init (4); its group count, 0 for none. */
static int match_args(lua_State *L, const char **s)
{
	size_t len;
	*s = luaL_checklstring(L, 1, &len);
	pcre2_code *code = compiled(L, 2, 3);
	size_t off = start_offset(L, 4, len);
	return off > len ? 0 : run(L, code, *s, len, off);
}

/* re.match(s, pattern [, flags [, init]]) -> the captures (or the whole match), or nil */
static int re_match(lua_State *L)
{
	const char *s;
	int n = match_args(L, &s);
	if (n == 0)
		return luaL_pushfail(L), 1;
	return push_captures(L, s, n);
}

/* re.find(s, pattern [, flags [, init]]) -> start, end (1-based, inclusive), captures...; or nil */
static int re_find(lua_State *L)
{
	const char *s;
	int n = match_args(L, &s);
	if (n == 0)
		return luaL_pushfail(L), 1;
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(state_of(L)->md);
	lua_pushinteger(L, (lua_Integer)ov[0] + 1);
	lua_pushinteger(L, (lua_Integer)ov[1]);
	luaL_checkstack(L, n, "re: too many groups");
	for (int i = 1; i < n; i++)
		push_group(L, s, i);
	return n + 1;
}

/* the iterator of re.gmatch: upvalues state, cache, subject, code box, position */
static int gmatch_next(lua_State *L)
{
	size_t len;
	const char *s = lua_tolstring(L, lua_upvalueindex(3), &len);
	pcre2_code *code = *(pcre2_code **)lua_touserdata(L, lua_upvalueindex(4));
	lua_Integer pos = lua_tointeger(L, lua_upvalueindex(5));
	if (pos < 0 || (size_t)pos > len)
		return 0;
	int n = run(L, code, s, len, (size_t)pos);
	if (n == 0) {
		lua_pushinteger(L, -1);
		lua_replace(L, lua_upvalueindex(5));
		return 0;
	}
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(state_of(L)->md);
	/* an empty match moves on by one, so the loop ends */
	lua_pushinteger(L, (lua_Integer)(ov[1] > ov[0] ? ov[1] : ov[1] + 1));
	lua_replace(L, lua_upvalueindex(5));
	return push_captures(L, s, n);
}

/* re.gmatch(s, pattern [, flags]) -> iterator over matches (captures or whole) */
static int re_gmatch(lua_State *L)
{
	luaL_checkstring(L, 1);
	compiled(L, 2, 3);
	/* the box from the cache keeps the code alive while the iterator lives */
	lua_pushfstring(L, "%d:", (int)parse_flags(L, 3));
	lua_pushvalue(L, 2);
	lua_concat(L, 2);
	lua_rawget(L, lua_upvalueindex(2));
	int box = lua_gettop(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, lua_upvalueindex(2));
	lua_pushvalue(L, 1);
	lua_pushvalue(L, box);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, gmatch_next, 5);
	return 1;
}

static void add_replacement(lua_State *L, luaL_Buffer *b, const char *s, int n, int repl)
{
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(state_of(L)->md);
	int type = lua_type(L, repl);
	if (type == LUA_TSTRING || type == LUA_TNUMBER) {
		size_t rl;
		const char *r = lua_tolstring(L, repl, &rl);
		for (size_t i = 0; i < rl; i++) {
			if (r[i] != '%' || i + 1 == rl) {
				luaL_addchar(b, r[i]);
				continue;
			}
			char c = r[++i];
			if (c >= '0' && c <= '9') {
				int g = c - '0';
				if (g >= n)
					luaL_error(L, "re.gsub: no group %d in the pattern", g);
				if (ov[2 * g] != PCRE2_UNSET)
					luaL_addlstring(b, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
			} else {
				luaL_addchar(b, c); /* %% and %x give the character */
			}
		}
		return;
	}
	if (type == LUA_TFUNCTION) {
		lua_pushvalue(L, repl);
		int k = push_captures(L, s, n);
		lua_call(L, k, 1);
	} else {
		push_group(L, s, n > 1 ? 1 : 0);
		lua_gettable(L, repl);
	}
	if (!lua_toboolean(L, -1)) {
		lua_pop(L, 1);
		luaL_addlstring(b, s + ov[0], ov[1] - ov[0]);
	} else if (!lua_isstring(L, -1)) {
		luaL_error(L, "re.gsub: invalid replacement value (a %s)", luaL_typename(L, -1));
	} else {
		luaL_addvalue(b);
	}
}

/* re.gsub(s, pattern, repl [, flags [, max]]) -> string, count; repl: string with %0-%9, table or function */
static int re_gsub(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	int t = lua_type(L, 3);
	luaL_argexpected(L, t == LUA_TSTRING || t == LUA_TNUMBER || t == LUA_TTABLE || t == LUA_TFUNCTION, 3,
	                 "string/function/table");
	pcre2_code *code = compiled(L, 2, 4);
	lua_Integer max = luaL_optinteger(L, 5, (lua_Integer)len + 1);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	size_t pos = 0, copied = 0;
	lua_Integer count = 0;
	while (count < max && pos <= len) {
		int n = run(L, code, s, len, pos);
		if (n == 0)
			break;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(state_of(L)->md);
		size_t ms = ov[0], me = ov[1];
		luaL_addlstring(&b, s + copied, ms - copied);
		add_replacement(L, &b, s, n, 3);
		count++;
		copied = me;
		if (me == ms) {
			if (me < len)
				luaL_addchar(&b, s[me]);
			copied = me + 1;
			pos = me + 1;
		} else {
			pos = me;
		}
	}
	if (copied < len)
		luaL_addlstring(&b, s + copied, len - copied);
	luaL_pushresult(&b);
	lua_pushinteger(L, count);
	return 2;
}

void lua_re_open(lua_State *L, int t)
{
	static const luaL_Reg fns[] = {
	    {"match", re_match}, {"find", re_find}, {"gmatch", re_gmatch}, {"gsub", re_gsub}, {NULL, NULL},
	};
	t = lua_absindex(L, t);
	if (luaL_newmetatable(L, RE_CODE)) {
		lua_pushcfunction(L, re_code_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	struct re_state *st = lua_newuserdatauv(L, sizeof *st, 0);
	memset(st, 0, sizeof *st);
	if (luaL_newmetatable(L, RE_STATE)) {
		lua_pushcfunction(L, re_state_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	st->md = pcre2_match_data_create(RE_MAX_GROUPS, NULL);
	st->mc = pcre2_match_context_create(NULL);
	if (!st->md || !st->mc)
		luaL_error(L, "re: out of memory");
	pcre2_set_match_limit(st->mc, RE_MATCH_LIMIT);
	pcre2_set_depth_limit(st->mc, RE_DEPTH_LIMIT);
	uint32_t jit = 0;
	if (pcre2_config(PCRE2_CONFIG_JIT, &jit) >= 0 && jit && (st->jit = pcre2_jit_stack_create(32 << 10, 512 << 10, NULL)))
		pcre2_jit_stack_assign(st->mc, NULL, st->jit);
	lua_newtable(L); /* the pattern cache */
	lua_createtable(L, 0, 4);
	for (const luaL_Reg *f = fns; f->name; f++) {
		lua_pushvalue(L, -3);
		lua_pushvalue(L, -3);
		lua_pushcclosure(L, f->func, 2);
		lua_setfield(L, -2, f->name);
	}
	lua_setfield(L, t, "re");
	lua_pop(L, 2);
}
