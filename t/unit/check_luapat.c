/* check_luapat.c - the bounded pattern functions (src/luapat.c) against Lua's
 * own string library, and their bounds.
 *
 * The same Lua script runs in two states, one with Lua's string library and
 * one where luapat_open() replaced find, match, gmatch, gsub and rep; every
 * result (values, or the error message without its location) must be the
 * same. Then the cases Lua's library cannot stop: a backtracking pattern ends
 * with an error once the step limit or the deadline is reached.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luapat.h"

/* Each case is a function of no arguments; the script prints one line per
 * case: its results (type-tagged) or "error: MESSAGE" without the location. */
static const char parity_script[] =
	"local cases = {\n"
	"  function() return string.find('hello world', 'o w') end,\n"
	"  function() return string.find('hello world', 'o', 6) end,\n"
	"  function() return string.find('hello', 'l', -2) end,\n"
	"  function() return string.find('hello', 'l', -100) end,\n"
	"  function() return string.find('hello', '', 10) end,\n"
	"  function() return string.find('hello', '', 6) end,\n"
	"  function() return string.find('a.b', '.', 1, true) end,\n"
	"  function() return string.find('a+b', '+', 1, true) end,\n"
	"  function() return string.find('abc', '(b)(c)') end,\n"
	"  function() return string.find('abc', '()b()') end,\n"
	"  function() return string.find('  x', '^%s*()') end,\n"
	"  function() return string.find('abc', '^b') end,\n"
	"  function() return string.find('abc', 'c$') end,\n"
	"  function() return string.find('a$c', '$c') end,\n"
	"  function() return string.match('key = value', '(%w+)%s*=%s*(%w+)') end,\n"
	"  function() return string.match('2026-12-06', '(%d+)-(%d+)-(%d+)') end,\n"
	"  function() return string.match('[[x]]', '%[(%b[])%]') end,\n"
	"  function() return string.match('THE (quick) fox', '%f[%a]%a+') end,\n"
	"  function() return string.match('THE (quick) fox', '%f[%l]%a+') end,\n"
	"  function() return string.match('abcabc', '(abc)%1') end,\n"
	"  function() return string.match('aaab', 'a-b') end,\n"
	"  function() return string.match('aaab', 'a*') end,\n"
	"  function() return string.match('aaab', 'a+b') end,\n"
	"  function() return string.match('aaab', 'x?a') end,\n"
	"  function() return string.match('a]b', '[]]') end,\n"
	"  function() return string.match('a-b', '[a%-]+') end,\n"
	"  function() return string.match('Zz09', '[^%l]+') end,\n"
	"  function() return string.match('x=1, y=22', '[%a_][%w_]*=(%d+)', 3) end,\n"
	"  function() return #string.match('\\0a\\0', '%z'), string.find('a\\0b', '%z') end,\n"
	"  function() return string.match('tab\\there', '%c') end,\n"
	"  function() return string.match('A1_b', '%W') end,\n"
	"  function() return string.match('hello', '.-(l+)(.*)') end,\n"
	"  function() return string.match('hello', 'h(e)(l)(l)(o)') end,\n"
	"  function() return string.gsub('hello world', 'o', '0') end,\n"
	"  function() return string.gsub('hello world', '(o)', '[%1%0%%]') end,\n"
	"  function() return string.gsub('hello world', '%w+', '%0 %0', 1) end,\n"
	"  function() return string.gsub('abc', '', '-') end,\n"
	"  function() return string.gsub('abc', '^', '>') end,\n"
	"  function() return string.gsub('$name is $age', '%$(%w+)', { name = 'Ann', age = 7 }) end,\n"
	"  function() return string.gsub('$name $x', '%$(%w+)', { name = false }) end,\n"
	"  function() return string.gsub('1 2 3', '%d', function(d) return d * 2 end) end,\n"
	"  function() return string.gsub('a b', '%w', function() return nil end) end,\n"
	"  function() return string.gsub('abc', 'b', 5) end,\n"
	"  function() return string.gsub('abc', '()', '%1') end,\n"
	"  function() local t = {} for k, v in string.gmatch('a=1, b=2', '(%w+)=(%w+)') do t[#t+1] = k .. v end"
	" return table.concat(t, ';') end,\n"
	"  function() local t = {} for w in string.gmatch('one two  three', '%a*') do t[#t+1] = '<' .. w .. '>' end"
	" return table.concat(t) end,\n"
	"  function() local t = {} for w in string.gmatch('abcde', '.', 3) do t[#t+1] = w end return table.concat(t) end,\n"
	"  function() local t = {} for p in string.gmatch('abc', '()') do t[#t+1] = p end return table.concat(t, ',') end,\n"
	"  function() return ('x'):rep(3), ('ab'):rep(3, ','), ('ab'):rep(0), ('ab'):rep(-1), (''):rep(5, '') end,\n"
	"  function() return ('hello'):find('l+'), ('hello'):match('(h)(.)') end,\n"
	"  function() return string.find('abc', '[a') end,\n"
	"  function() return string.find('abc', 'a%') end,\n"
	"  function() return string.find('abc', '(a') end,\n"
	"  function() return string.find('abc', 'a)') end,\n"
	"  function() return string.find('abc', '%1') end,\n"
	"  function() return string.find('abc', '%f') end,\n"
	"  function() return string.find('abc', '%b') end,\n"
	"  function() return string.gsub('abc', 'a', '%2') end,\n"
	"  function() return string.gsub('abc', 'a', '%x') end,\n"
	"  function() return string.gsub('abc', 'a', {a = {}}) end,\n"
	"  function() return string.gsub('abc', 'a', true) end,\n"
	"  function() return string.find('abc', string.rep('(', 33)) end,\n"
	"  function() return string.match(string.rep('a', 300), string.rep('a?', 300) .. string.rep('a', 300)) end,\n"
	"}\n"
	"local out = {}\n"
	"for i, case in ipairs(cases) do\n"
	"  local r = table.pack(pcall(case))\n"
	"  local parts = {}\n"
	"  if not r[1] then\n"
	"    parts[1] = 'error: ' .. tostring(r[2]):gsub('^[^:]*:%d+: ', '')\n"
	"  else\n"
	"    for j = 2, r.n do parts[#parts + 1] = type(r[j]) .. ':' .. tostring(r[j]) end\n"
	"  end\n"
	"  out[#out + 1] = i .. ' ' .. table.concat(parts, ' ')\n"
	"end\n"
	"return table.concat(out, '\\n')\n";

static char *run_script(bool bounded, struct luapat_budget *b)
{
	lua_State *L = luaL_newstate();
	ck_assert_ptr_nonnull(L);
	luaL_openlibs(L);
	if (bounded) {
		lua_getglobal(L, "string");
		luapat_open(L, -1, b);
		lua_pop(L, 1);
	}
	int rc = luaL_loadstring(L, parity_script);
	ck_assert_msg(rc == LUA_OK, "%s", lua_tostring(L, -1));
	rc = lua_pcall(L, 0, 1, 0);
	ck_assert_msg(rc == LUA_OK, "%s", lua_tostring(L, -1));
	char *out = strdup(lua_tostring(L, -1));
	lua_close(L);
	return out;
}

START_TEST(test_same_results_as_lua)
{
	struct luapat_budget b = { .deadline_ns = 0, .max_steps = 0, .max_rep_bytes = 0 };
	char *want = run_script(false, NULL);
	char *got = run_script(true, &b);
	/* compare line by line for a readable failure */
	char *wsave = NULL, *gsave = NULL;
	char *w = strtok_r(want, "\n", &wsave), *g = strtok_r(got, "\n", &gsave);
	size_t lines = 0;
	while (w || g) {
		ck_assert_msg(w && g && strcmp(w, g) == 0, "Lua: %s\nluapat: %s", w ? w : "(none)", g ? g : "(none)");
		w = strtok_r(NULL, "\n", &wsave);
		g = strtok_r(NULL, "\n", &gsave);
		lines++;
	}
	ck_assert_uint_gt(lines, 60);
	free(want);
	free(got);
}
END_TEST

static const char *run_bounded(const char *code, struct luapat_budget *b)
{
	static char msg[512];
	lua_State *L = luaL_newstate();
	luaL_openlibs(L);
	lua_getglobal(L, "string");
	luapat_open(L, -1, b);
	lua_pop(L, 1);
	ck_assert_int_eq(luaL_loadstring(L, code), LUA_OK);
	int rc = lua_pcall(L, 0, 1, 0);
	snprintf(msg, sizeof msg, "%s%s", rc == LUA_OK ? "ok: " : "", lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
	lua_close(L);
	return msg;
}

/* issue 17: the pattern that ran for minutes ends with an error naming the function. */
START_TEST(test_backtracking_stopped_by_steps)
{
	struct luapat_budget b = { .deadline_ns = 0, .max_steps = 1000000, .max_rep_bytes = 0 };
	const char *msg = run_bounded("return string.find(string.rep('a', 3000), string.rep('a*', 8) .. 'b')", &b);
	ck_assert_msg(strstr(msg, "[string \"return string.find(") == msg &&
	                  strstr(msg, "string.find: pattern too slow (stopped after "),
	              "%s", msg);
	msg = run_bounded("return (string.gsub(string.rep('a', 3000), string.rep('a*', 8) .. 'b', ''))", &b);
	ck_assert_msg(strstr(msg, "string.gsub: pattern too slow"), "%s", msg);
	msg = run_bounded("for x in string.gmatch(string.rep('a', 3000), string.rep('a-', 8) .. 'b') do end", &b);
	ck_assert_msg(strstr(msg, "string.gmatch: pattern too slow"), "%s", msg);
	msg = run_bounded("return ('x'):rep(10):match('^(x*)$')", &b);
	ck_assert_str_eq(msg, "ok: xxxxxxxxxx");
}
END_TEST

START_TEST(test_backtracking_stopped_by_deadline)
{
	/* a deadline already past: the first clock check ends the match */
	struct luapat_budget b = { .deadline_ns = 1, .max_steps = 0, .max_rep_bytes = 0 };
	const char *msg = run_bounded("return string.match(string.rep('a', 3000), string.rep('a*', 8) .. 'b')", &b);
	ck_assert_msg(strstr(msg, "string.match: time limit reached inside a pattern match"), "%s", msg);
	/* a match too short to reach a clock check still works */
	msg = run_bounded("return string.match('abc', 'b')", &b);
	ck_assert_str_eq(msg, "ok: b");
}
END_TEST

START_TEST(test_rep_bounded)
{
	struct luapat_budget b = { .deadline_ns = 0, .max_steps = 0, .max_rep_bytes = 1000 };
	ck_assert_str_eq(run_bounded("return #string.rep('ab', 500)", &b), "ok: 1000");
	const char *msg = run_bounded("return string.rep('ab', 501)", &b);
	ck_assert_msg(strstr(msg, "string.rep: the result would be larger than 1000 bytes"), "%s", msg);
	msg = run_bounded("return string.rep('x', math.maxinteger, 'y')", &b);
	ck_assert_msg(strstr(msg, "string.rep: the result would be larger than 1000 bytes"), "%s", msg);
	ck_assert_str_eq(run_bounded("return #string.rep('', math.maxinteger)", &b), "ok: 0");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("luapat");
	TCase *tc = tcase_create("luapat");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_same_results_as_lua);
	tcase_add_test(tc, test_backtracking_stopped_by_steps);
	tcase_add_test(tc, test_backtracking_stopped_by_deadline);
	tcase_add_test(tc, test_rep_bounded);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
