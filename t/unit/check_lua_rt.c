/* check_lua_rt.c - unit tests for the Lua runtime of policies (modules/lua_rt.c,
 * lua_codec.c; the bounded patterns are src/luapat.c's, tested in
 * check_luapat): budgets and caps stop runaway code with FILE:LINE and leave
 * the state usable, the allocator's pool serves a steady state, and the
 * sandbox holds nothing unsafe. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <check.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_cache.h"
#include "lua_rt.h"

static const struct lua_rt_limits test_limits = {
    .instructions = 2000000,
    .memory = 4 << 20,
    .state_memory = 64 << 20,
};

/* Runs one chunk in a fresh runtime; returns whether it succeeded, with err. */
static bool run_chunk(const char *src, char *err, size_t errsz, struct lua_rt **keep)
{
	struct lua_rt *rt = lua_rt_new(&test_limits);
	ck_assert_ptr_nonnull(rt);
	bool ok = lua_rt_load(rt, "policies/t.lua", src, strlen(src), 0, err, errsz) && lua_rt_call(rt, 0, 0, err, errsz);
	if (keep)
		*keep = rt;
	else
		lua_rt_free(rt);
	return ok;
}

START_TEST(test_budgets_stop_runaway_code)
{
	static const struct {
		const char *src;
		const char *want;
	} cases[] = {
	    {"while true do end", "policies/t.lua:1: instruction budget exceeded"},
	    {"local x = 0\nwhile true do pcall(function() while true do x = x + 1 end end) end",
	     "instruction budget exceeded"},
	    {"local t = {}\nfor i = 1, 1e9 do t[i] = i end", "policies/t.lua:2: memory cap exceeded"},
	    {"local s = ('x'):rep(1 << 20)\nlocal u = s .. s .. s .. s .. s", "policies/t.lua:2: memory cap exceeded"},
	    {"return ('x'):rep(1e12)", "policies/t.lua:1: string.rep: the result would be larger"},
	    {"return (('a'):rep(30000)):find('.-.-.-.-.-b')", "policies/t.lua:1: string.find: "},
	    {"return (('a'):rep(5000)):gsub('a-a-a-a-b', '')", "string.gsub: "},
	    {"for _ in (('a'):rep(5000)):gmatch('a-a-a-a-b') do end", "string.gmatch: "},
	    {"for _ = 1, 1e6 do local _ = (('a'):rep(100)):find('a-a-b') end",
	     "time limit reached inside a pattern match"},
	    {"local function f() return f() + 1 end\nf()", "policies/t.lua:1:"},
	    {"coroutine.yield()", "attempt to yield from outside a coroutine"},
	    {"error({})", "policies/t.lua:1: error object is a table value"},
	    {"setmetatable({}, { __gc = function() end })", "__gc metamethods are not allowed"},
	    {"return load(string.dump(function() end))", "policies/t.lua:1:"},
	    {"assert(load('\\27Lua') == nil)\nreturn load('return 1', 'x', 'b')", "binary chunks are not allowed"},
	    {"require('os')", "module \"os\" not found"},
	    {"return io.open('/etc/passwd')", "policies/t.lua:1: attempt to index a nil value (global 'io')"},
	    {"return os.exit()", "attempt to index a nil value (global 'os')"},
	    {"return debug.getinfo(1)", "attempt to index a nil value (global 'debug')"},
	    {"return package.loaded", "attempt to index a nil value (global 'package')"},
	    {"return dofile('/etc/passwd')", "attempt to call a nil value (global 'dofile')"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char err[512] = "";
		struct lua_rt *rt = NULL;
		bool ok = run_chunk(cases[i].src, err, sizeof err, &rt);
		ck_assert_msg(!ok, "case %zu succeeded: %s", i, cases[i].src);
		ck_assert_msg(strstr(err, cases[i].want) != NULL, "case %zu: %s\n want: %s", i, err, cases[i].want);
		/* the state goes on: the next call runs normally and its memory went back */
		char err2[512] = "";
		const char *next = "local t = {} for i = 1, 1000 do t[i] = tostring(i) end return #t";
		ck_assert_msg(lua_rt_load(rt, "next.lua", next, strlen(next), 0, err2, sizeof err2), "%s", err2);
		ck_assert_msg(lua_rt_call(rt, 0, 1, err2, sizeof err2), "case %zu, next call: %s", i, err2);
		ck_assert_int_eq(lua_tointeger(rt->L, -1), 1000);
		lua_pop(rt->L, 1);
		ck_assert_msg(rt->mem_used < (size_t)(2 << 20), "case %zu: %zu bytes still held", i, rt->mem_used);
		lua_rt_free(rt);
	}
}
END_TEST

START_TEST(test_coroutines_and_pcall_inside_a_script)
{
	char err[512] = "";
	const char *src = "local co = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)\n"
	                  "assert(co() + co() + co() == 6)\n"
	                  "local ok, e = pcall(error, 'x')\n"
	                  "assert(not ok and e == 'x')\n"
	                  "assert(load('return 1 + 1')() == 2)\n"
	                  "assert(json.decode('[1,2]')[2] == 2 and base64.decode('aGk=') == 'hi')\n"
	                  "assert((''):rep(1e15) == '' and ('ab'):rep(3, ',') == 'ab,ab,ab')\n";
	ck_assert_msg(run_chunk(src, err, sizeof err, NULL), "%s", err);
}
END_TEST

static int stop_fn(lua_State *L)
{
	return lua_rt_stop(L);
}

START_TEST(test_stop_ends_a_call_as_success)
{
	struct lua_rt *rt = lua_rt_new(&test_limits);
	lua_pushcfunction(rt->L, stop_fn);
	lua_setglobal(rt->L, "stop");
	char err[512] = "";
	const char *src = "stop()\nerror('not reached')";
	ck_assert(lua_rt_load(rt, "s.lua", src, strlen(src), 0, err, sizeof err));
	ck_assert_msg(lua_rt_call(rt, 0, 0, err, sizeof err), "%s", err);
	ck_assert_int_eq(lua_gettop(rt->L), 0);
	lua_rt_free(rt);
}
END_TEST

START_TEST(test_syntax_errors_name_file_and_line)
{
	struct lua_rt *rt = lua_rt_new(&test_limits);
	char err[512] = "";
	const char *src = "return {\n  x = = 1\n}";
	ck_assert(!lua_rt_load(rt, "a/very/long/directory/name/that/lua/would/shorten/in/its/messages/policy.lua", src,
	                       strlen(src), 0, err, sizeof err));
	ck_assert_msg(strstr(err, "a/very/long/directory/name/that/lua/would/shorten/in/its/messages/policy.lua:2:") == err,
	              "%s", err);
	const char bytecode[] = "\x1bLuaT";
	ck_assert(!lua_rt_load(rt, "b.lua", bytecode, sizeof bytecode - 1, 0, err, sizeof err));
	ck_assert_msg(strstr(err, "bytecode") != NULL, "%s", err);
	lua_rt_free(rt);
}
END_TEST

START_TEST(test_pool_serves_the_steady_state)
{
	struct lua_rt *rt = lua_rt_new(&test_limits);
	char err[512] = "";
	const char *src = "local t = {} for i = 1, 200 do t[i] = { name = 'x' .. i } end return #t";
	for (int round = 0; round < 3; round++) {
		ck_assert(lua_rt_load(rt, "p.lua", src, strlen(src), 0, err, sizeof err));
		ck_assert_msg(lua_rt_call(rt, 0, 1, err, sizeof err), "%s", err);
		lua_pop(rt->L, 1);
		lua_gc(rt->L, LUA_GCCOLLECT, 0);
	}
	/* what the rounds freed waits on the free lists for the next ones */
	ck_assert_uint_gt(rt->pooled, 10000);
	lua_rt_free(rt);
}
END_TEST

START_TEST(test_re_cache_is_bounded)
{
	struct lua_rt *rt = lua_rt_new(&test_limits);
	char err[512] = "";
	/* more distinct patterns than the cache keeps: it starts over, and every match still works */
	const char *src = "local n = 0\n"
	                  "for i = 1, 1300 do if re.find('x' .. i .. 'y', 'x' .. i .. 'y') then n = n + 1 end end\n"
	                  "return n";
	ck_assert(lua_rt_load(rt, "re.lua", src, strlen(src), 0, err, sizeof err));
	ck_assert_msg(lua_rt_call(rt, 0, 1, err, sizeof err), "%s", err);
	ck_assert_int_eq(lua_tointeger(rt->L, -1), 1300);
	lua_pop(rt->L, 1);
	lua_rt_free(rt);
}
END_TEST

START_TEST(test_cache_lru_and_ttl)
{
	struct lua_cache *c = lua_cache_new(3, 1 << 20);
	struct lua_rt *rt = lua_rt_new(&test_limits);
	lua_rt_open_cache(rt, c);
	char err[512] = "";
	const char *src = "cache.set('a', 1) cache.set('b', 'two') cache.set('c', true)\n"
	                  "assert(cache.get('a') == 1)  -- a is now the most recent\n"
	                  "cache.set('d', 4.5)          -- evicts b, the least recently used\n"
	                  "assert(cache.get('b') == nil and cache.get('c') == true and cache.get('d') == 4.5)\n"
	                  "cache.set('e', 'x', 0.001)\n"
	                  "local t = os and 0 or 0 for i = 1, 200000 do t = t + i end\n"
	                  "assert(cache.delete('d') and not cache.delete('zz'))\n"
	                  "assert(not pcall(cache.set, 'f', {}))\n"
	                  "return 1";
	ck_assert(lua_rt_load(rt, "c.lua", src, strlen(src), 0, err, sizeof err));
	ck_assert_msg(lua_rt_call(rt, 0, 1, err, sizeof err), "%s", err);
	lua_pop(rt->L, 1);
	ck_assert_uint_le(lua_cache_count(c), 3);
	struct timespec ts = {0, 5000000};
	nanosleep(&ts, NULL);
	const char *expired = "return cache.get('e')";
	ck_assert(lua_rt_load(rt, "e.lua", expired, strlen(expired), 0, err, sizeof err));
	ck_assert_msg(lua_rt_call(rt, 0, 1, err, sizeof err), "%s", err);
	ck_assert(lua_isnil(rt->L, -1));
	lua_rt_free(rt);
	lua_cache_free(c);
}
END_TEST

static Suite *lua_rt_suite(void)
{
	Suite *s = suite_create("lua_rt");
	TCase *t = tcase_create("runtime");
	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_budgets_stop_runaway_code);
	tcase_add_test(t, test_coroutines_and_pcall_inside_a_script);
	tcase_add_test(t, test_stop_ends_a_call_as_success);
	tcase_add_test(t, test_syntax_errors_name_file_and_line);
	tcase_add_test(t, test_pool_serves_the_steady_state);
	tcase_add_test(t, test_re_cache_is_bounded);
	tcase_add_test(t, test_cache_lru_and_ttl);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(lua_rt_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
