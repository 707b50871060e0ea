/* luapat.c - Lua 5.4's pattern functions with a step count and a deadline
 * (luapat.h). The matcher follows the semantics of the reference manual
 * (6.4.1): a backtracking matcher over single-character classes, sets,
 * quantifiers * + - ?, anchors, captures, back-references, %b and %f. Every
 * step (a call of the matcher, a character tried by a quantifier or %b)
 * counts; every STEP_CHECK_EVERY steps the step limit and the deadline are
 * checked and the call ends with a Lua error once either is reached. */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* memmem */
#endif

#include "luapat.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "clock.h"

#include <lauxlib.h>

enum {
	MAX_CAPTURES = 32,        /* LUA_MAXCAPTURES */
	MAX_MATCH_DEPTH = 200,    /* nested matcher calls (MAXCCALLS): "pattern too complex" past it */
	STEP_CHECK_EVERY = 4096,  /* a clock read per this many steps */
};

#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define PAT_ESC '%'
#define PAT_SPECIALS "^$*+?.([%-"

struct capture {
	const char *init;
	ptrdiff_t len; /* or CAP_UNFINISHED, CAP_POSITION */
};

struct match_state {
	const char *src_init, *src_end, *p_end;
	lua_State *L;
	const struct luapat_budget *budget;
	const char *fname; /* "string.find", for messages */
	uint64_t steps;
	int depth_left;
	int level; /* captures open or closed so far */
	struct capture capture[MAX_CAPTURES];
};

uint64_t luapat_now_ns(void)
{
	return clock_mono_ns();
}

static void step(struct match_state *ms)
{
	if (++ms->steps % STEP_CHECK_EVERY != 0)
		return;
	const struct luapat_budget *b = ms->budget;
	if (b->max_steps && ms->steps >= b->max_steps)
		luaL_error(ms->L,
		           "%s: pattern too slow (stopped after %I matching steps): it backtracks too much on this "
		           "subject; simplify it (fewer * + - ? in a row) or match a shorter string",
		           ms->fname, (lua_Integer)ms->steps);
	if (b->deadline_ns && luapat_now_ns() > b->deadline_ns)
		luaL_error(ms->L,
		           "%s: time limit reached inside a pattern match (after %I matching steps): it backtracks too "
		           "much on this subject; simplify it (fewer * + - ? in a row) or match a shorter string",
		           ms->fname, (lua_Integer)ms->steps);
}

static int uchar(char c)
{
	return (unsigned char)c;
}

/* The end of the single-character class starting at p. */
static const char *class_end(struct match_state *ms, const char *p)
{
	char c = *p++;
	if (c == PAT_ESC) {
		if (p == ms->p_end)
			luaL_error(ms->L, "malformed pattern (ends with '%%')");
		return p + 1;
	}
	if (c == '[') {
		if (*p == '^')
			p++;
		/* the first character of a set is itself even when it is ']' */
		do {
			if (p == ms->p_end)
				luaL_error(ms->L, "malformed pattern (missing ']')");
			c = *p++;
			if (c == PAT_ESC && p < ms->p_end)
				p++;
		} while (*p != ']');
		return p + 1;
	}
	return p;
}

static bool match_class(int c, int cl)
{
	bool res;
	switch (tolower(cl)) {
	case 'a': res = isalpha(c); break;
	case 'c': res = iscntrl(c); break;
	case 'd': res = isdigit(c); break;
	case 'g': res = isgraph(c); break;
	case 'l': res = islower(c); break;
	case 'p': res = ispunct(c); break;
	case 's': res = isspace(c); break;
	case 'u': res = isupper(c); break;
	case 'w': res = isalnum(c); break;
	case 'x': res = isxdigit(c); break;
	case 'z': res = c == 0; break; /* deprecated in Lua, still accepted */
	default: return cl == c;
	}
	return isupper(cl) ? !res : res;
}

/* p at '[', end at the closing ']'. */
static bool match_set(int c, const char *p, const char *end)
{
	bool found_means = true;
	if (p[1] == '^') {
		found_means = false;
		p++;
	}
	while (++p < end) {
		if (*p == PAT_ESC) {
			p++;
			if (match_class(c, uchar(*p)))
				return found_means;
		} else if (p[1] == '-' && p + 2 < end) {
			p += 2;
			if (uchar(p[-2]) <= c && c <= uchar(*p))
				return found_means;
		} else if (uchar(*p) == c) {
			return found_means;
		}
	}
	return !found_means;
}

static bool single_match(struct match_state *ms, const char *s, const char *p, const char *ep)
{
	if (s >= ms->src_end)
		return false;
	int c = uchar(*s);
	switch (*p) {
	case '.': return true;
	case PAT_ESC: return match_class(c, uchar(p[1]));
	case '[': return match_set(c, p, ep - 1);
	default: return uchar(*p) == c;
	}
}

static const char *match(struct match_state *ms, const char *s, const char *p);

/* %bxy: p just after "%b". */
static const char *match_balance(struct match_state *ms, const char *s, const char *p)
{
	if (p >= ms->p_end - 1)
		luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
	if (s >= ms->src_end || *s != *p)
		return NULL;
	char open = p[0], close = p[1];
	int depth = 1;
	while (++s < ms->src_end) {
		step(ms);
		if (*s == close) {
			if (--depth == 0)
				return s + 1;
		} else if (*s == open) {
			depth++;
		}
	}
	return NULL;
}

static const char *max_expand(struct match_state *ms, const char *s, const char *p, const char *ep)
{
	ptrdiff_t n = 0;
	while (single_match(ms, s + n, p, ep)) {
		step(ms);
		n++;
	}
	/* try the rest with as many repetitions as possible, then one fewer, ... */
	for (; n >= 0; n--) {
		const char *res = match(ms, s + n, ep + 1);
		if (res)
			return res;
	}
	return NULL;
}

static const char *min_expand(struct match_state *ms, const char *s, const char *p, const char *ep)
{
	for (;;) {
		const char *res = match(ms, s, ep + 1);
		if (res)
			return res;
		if (!single_match(ms, s, p, ep))
			return NULL;
		s++;
	}
}

static const char *start_capture(struct match_state *ms, const char *s, const char *p, ptrdiff_t what)
{
	if (ms->level >= MAX_CAPTURES)
		luaL_error(ms->L, "too many captures");
	ms->capture[ms->level].init = s;
	ms->capture[ms->level].len = what;
	ms->level++;
	const char *res = match(ms, s, p);
	if (!res)
		ms->level--;
	return res;
}

static const char *end_capture(struct match_state *ms, const char *s, const char *p)
{
	int l = -1;
	for (int i = ms->level - 1; i >= 0 && l < 0; i--)
		if (ms->capture[i].len == CAP_UNFINISHED)
			l = i;
	if (l < 0)
		luaL_error(ms->L, "invalid pattern capture");
	ms->capture[l].len = s - ms->capture[l].init;
	const char *res = match(ms, s, p);
	if (!res)
		ms->capture[l].len = CAP_UNFINISHED;
	return res;
}

static int check_capture(struct match_state *ms, int digit)
{
	int l = digit - '1';
	if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
		return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
	return l;
}

static const char *match_capture(struct match_state *ms, const char *s, int digit)
{
	int l = check_capture(ms, digit);
	size_t len = (size_t)ms->capture[l].len;
	if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
		return s + len;
	return NULL;
}

static const char *match(struct match_state *ms, const char *s, const char *p)
{
	if (ms->depth_left-- == 0)
		luaL_error(ms->L, "pattern too complex");
	step(ms);
	/* the loop stands for tail calls: only real branching recurses */
	while (s && p != ms->p_end) {
		if (*p == '(') {
			s = p[1] == ')' ? start_capture(ms, s, p + 2, CAP_POSITION) : start_capture(ms, s, p + 1, CAP_UNFINISHED);
			break;
		}
		if (*p == ')') {
			s = end_capture(ms, s, p + 1);
			break;
		}
		if (*p == '$' && p + 1 == ms->p_end) {
			s = s == ms->src_end ? s : NULL;
			break;
		}
		if (*p == PAT_ESC && p[1] == 'b') {
			s = match_balance(ms, s, p + 2);
			p += 4;
			continue;
		}
		if (*p == PAT_ESC && p[1] == 'f') {
			p += 2;
			if (*p != '[')
				luaL_error(ms->L, "missing '[' after '%%f' in pattern");
			const char *ep = class_end(ms, p);
			int before = s == ms->src_init ? '\0' : uchar(s[-1]);
			int here = s < ms->src_end ? uchar(*s) : '\0';
			if (match_set(before, p, ep - 1) || !match_set(here, p, ep - 1))
				s = NULL;
			p = ep;
			continue;
		}
		if (*p == PAT_ESC && isdigit(uchar(p[1]))) {
			s = match_capture(ms, s, uchar(p[1]));
			p += 2;
			continue;
		}
		const char *ep = class_end(ms, p);
		if (!single_match(ms, s, p, ep)) {
			if (*ep == '*' || *ep == '?' || *ep == '-') {
				p = ep + 1; /* zero repetitions are fine */
				continue;
			}
			s = NULL;
			break;
		}
		if (*ep == '?') {
			const char *res = match(ms, s + 1, ep + 1);
			if (res) {
				s = res;
				break;
			}
			p = ep + 1;
			continue;
		}
		if (*ep == '+') {
			s = max_expand(ms, s + 1, p, ep);
			break;
		}
		if (*ep == '*') {
			s = max_expand(ms, s, p, ep);
			break;
		}
		if (*ep == '-') {
			s = min_expand(ms, s, p, ep);
			break;
		}
		s++;
		p = ep;
	}
	ms->depth_left++;
	return s;
}

static void push_one_capture(struct match_state *ms, int i, const char *s, const char *e)
{
	if (i >= ms->level) {
		if (i != 0)
			luaL_error(ms->L, "invalid capture index %%%d", i + 1);
		lua_pushlstring(ms->L, s, (size_t)(e - s)); /* no captures: the whole match */
		return;
	}
	ptrdiff_t len = ms->capture[i].len;
	if (len == CAP_UNFINISHED)
		luaL_error(ms->L, "unfinished capture");
	if (len == CAP_POSITION)
		lua_pushinteger(ms->L, (lua_Integer)(ms->capture[i].init - ms->src_init) + 1);
	else
		lua_pushlstring(ms->L, ms->capture[i].init, (size_t)len);
}

/* s NULL: only the captures (string.find pushes the positions itself). */
static int push_captures(struct match_state *ms, const char *s, const char *e)
{
	int n = ms->level == 0 && s ? 1 : ms->level;
	luaL_checkstack(ms->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		push_one_capture(ms, i, s, e);
	return n;
}

static void state_init(struct match_state *ms, lua_State *L, const char *fname, const char *s, size_t ls,
                       const char *p, size_t lp)
{
	ms->L = L;
	ms->budget = lua_touserdata(L, lua_upvalueindex(1));
	ms->fname = fname;
	ms->steps = 0;
	ms->src_init = s;
	ms->src_end = s + ls;
	ms->p_end = p + lp;
}

static void state_reset(struct match_state *ms)
{
	ms->level = 0;
	ms->depth_left = MAX_MATCH_DEPTH;
}

/* A string.find / string.match init argument as an offset (may exceed ls: no match). */
static size_t start_offset(lua_State *L, int arg, size_t ls)
{
	lua_Integer pos = luaL_optinteger(L, arg, 1);
	if (pos > 0)
		return (size_t)pos - 1;
	if (pos == 0 || pos < -(lua_Integer)ls)
		return 0;
	return ls + (size_t)pos;
}

static bool has_specials(const char *p, size_t lp)
{
	for (size_t i = 0; i < lp; i++)
		if (p[i] && strchr(PAT_SPECIALS, p[i]))
			return true;
	return false;
}

static int find_or_match(lua_State *L, bool find)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = start_offset(L, 3, ls);
	if (init > ls) {
		luaL_pushfail(L);
		return 1;
	}
	if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
		/* memmem is linear (two-way), so a plain find needs no budget */
		const char *hit = lp == 0 ? s + init : memmem(s + init, ls - init, p, lp);
		if (hit) {
			lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
			lua_pushinteger(L, (lua_Integer)(hit - s) + (lua_Integer)lp);
			return 2;
		}
		luaL_pushfail(L);
		return 1;
	}
	struct match_state ms;
	bool anchor = *p == '^';
	if (anchor) {
		p++;
		lp--;
	}
	state_init(&ms, L, find ? "string.find" : "string.match", s, ls, p, lp);
	const char *s1 = s + init;
	do {
		state_reset(&ms);
		const char *e = match(&ms, s1, p);
		if (e) {
			if (!find)
				return push_captures(&ms, s1, e);
			lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
			lua_pushinteger(L, (lua_Integer)(e - s));
			return push_captures(&ms, NULL, NULL) + 2;
		}
	} while (s1++ < ms.src_end && !anchor);
	luaL_pushfail(L);
	return 1;
}

static int bounded_find(lua_State *L)
{
	return find_or_match(L, true);
}

static int bounded_match(lua_State *L)
{
	return find_or_match(L, false);
}

/* gmatch's position between calls. */
struct gmatch_pos {
	size_t next;      /* where the next search starts */
	size_t last_end;  /* end of the last match, or SIZE_MAX: an empty match there is skipped */
};

static int gmatch_next(lua_State *L)
{
	size_t ls, lp;
	const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
	const char *p = lua_tolstring(L, lua_upvalueindex(3), &lp);
	struct gmatch_pos *pos = lua_touserdata(L, lua_upvalueindex(4));
	struct match_state ms;
	state_init(&ms, L, "string.gmatch", s, ls, p, lp);
	for (const char *src = s + pos->next; src <= ms.src_end; src++) {
		state_reset(&ms);
		const char *e = match(&ms, src, p);
		if (e && (size_t)(e - s) != pos->last_end) {
			pos->next = pos->last_end = (size_t)(e - s);
			return push_captures(&ms, src, e);
		}
	}
	return 0;
}

static int bounded_gmatch(lua_State *L)
{
	size_t ls;
	luaL_checklstring(L, 1, &ls);
	luaL_checkstring(L, 2);
	size_t init = start_offset(L, 3, ls);
	lua_settop(L, 2);
	struct gmatch_pos *pos = lua_newuserdatauv(L, sizeof *pos, 0);
	pos->next = init > ls ? ls + 1 : init;
	pos->last_end = SIZE_MAX;
	lua_pushvalue(L, lua_upvalueindex(1)); /* the budget */
	lua_insert(L, 1);
	lua_pushcclosure(L, gmatch_next, 4); /* budget, s, p, pos */
	return 1;
}

/* Appends the replacement string (argument 3) for the match s..e, with %0-%9 and %%. */
static void add_replacement_string(struct match_state *ms, luaL_Buffer *b, const char *s, const char *e)
{
	lua_State *L = ms->L;
	size_t l;
	const char *news = lua_tolstring(L, 3, &l);
	const char *pct;
	while ((pct = memchr(news, PAT_ESC, l)) != NULL) {
		luaL_addlstring(b, news, (size_t)(pct - news));
		pct++;
		if (*pct == PAT_ESC) {
			luaL_addchar(b, PAT_ESC);
		} else if (*pct == '0') {
			luaL_addlstring(b, s, (size_t)(e - s));
		} else if (isdigit(uchar(*pct))) {
			push_one_capture(ms, *pct - '1', s, e);
			luaL_tolstring(L, -1, NULL);
			lua_remove(L, -2);
			luaL_addvalue(b);
		} else {
			luaL_error(L, "invalid use of '%c' in replacement string", PAT_ESC);
		}
		l -= (size_t)(pct + 1 - news);
		news = pct + 1;
	}
	luaL_addlstring(b, news, l);
}

/* Appends the replacement for s..e; false when the match is kept as it is. */
static bool add_replacement(struct match_state *ms, luaL_Buffer *b, const char *s, const char *e, int repl_type)
{
	lua_State *L = ms->L;
	if (repl_type == LUA_TFUNCTION) {
		lua_pushvalue(L, 3);
		int n = push_captures(ms, s, e);
		lua_call(L, n, 1);
	} else if (repl_type == LUA_TTABLE) {
		push_one_capture(ms, 0, s, e);
		lua_gettable(L, 3);
	} else {
		add_replacement_string(ms, b, s, e);
		return true;
	}
	if (!lua_toboolean(L, -1)) {
		lua_pop(L, 1);
		luaL_addlstring(b, s, (size_t)(e - s));
		return false;
	}
	if (!lua_isstring(L, -1))
		luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	luaL_addvalue(b);
	return true;
}

static int bounded_gsub(lua_State *L)
{
	size_t ls, lp;
	const char *src = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	int repl_type = lua_type(L, 3);
	lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
	luaL_argexpected(L,
	                 repl_type == LUA_TNUMBER || repl_type == LUA_TSTRING || repl_type == LUA_TFUNCTION ||
	                     repl_type == LUA_TTABLE,
	                 3, "string/function/table");
	bool anchor = *p == '^';
	if (anchor) {
		p++;
		lp--;
	}
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	struct match_state ms;
	state_init(&ms, L, "string.gsub", src, ls, p, lp);
	const char *last_end = NULL;
	lua_Integer n = 0;
	bool changed = false;
	while (n < max_n) {
		state_reset(&ms);
		const char *e = match(&ms, src, p);
		if (e && e != last_end) {
			n++;
			changed = add_replacement(&ms, &b, src, e, repl_type) || changed;
			src = last_end = e;
		} else if (src < ms.src_end) {
			luaL_addchar(&b, *src++);
		} else {
			break;
		}
		if (anchor)
			break;
	}
	if (!changed) {
		lua_pushvalue(L, 1);
	} else {
		luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
		luaL_pushresult(&b);
	}
	lua_pushinteger(L, n);
	return 2;
}

static int bounded_rep(lua_State *L)
{
	const struct luapat_budget *budget = lua_touserdata(L, lua_upvalueindex(1));
	size_t l, lsep;
	const char *s = luaL_checklstring(L, 1, &l);
	lua_Integer n = luaL_checkinteger(L, 2);
	const char *sep = luaL_optlstring(L, 3, "", &lsep);
	size_t unit = l + lsep;
	if (n <= 0 || unit == 0) {
		lua_pushliteral(L, "");
		return 1;
	}
	size_t max = budget->max_rep_bytes ? budget->max_rep_bytes : (size_t)-1 / 2;
	/* n * l + (n - 1) * lsep = n * unit - lsep, without overflow */
	if ((lua_Unsigned)n > (max + lsep) / unit)
		return luaL_error(L, "string.rep: the result would be larger than %I bytes (the most allowed here)",
		                  (lua_Integer)max);
	size_t total = unit * (size_t)n - lsep;
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, total);
	for (lua_Integer i = 0; i < n; i++) {
		memcpy(out, s, l);
		out += l;
		if (lsep > 0 && i + 1 < n) {
			memcpy(out, sep, lsep);
			out += lsep;
		}
	}
	luaL_pushresultsize(&b, total);
	return 1;
}

void luapat_open(lua_State *L, int idx, struct luapat_budget *b)
{
	static const luaL_Reg functions[] = {
		{ "find", bounded_find }, { "match", bounded_match }, { "gmatch", bounded_gmatch },
		{ "gsub", bounded_gsub }, { "rep", bounded_rep },     { NULL, NULL },
	};
	idx = lua_absindex(L, idx);
	for (const luaL_Reg *f = functions; f->name; f++) {
		lua_pushlightuserdata(L, b);
		lua_pushcclosure(L, f->func, 1);
		lua_setfield(L, idx, f->name);
	}
}
