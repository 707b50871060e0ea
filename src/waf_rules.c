/* waf_rules.c - rule loading, compilation and evaluation (waf_rules.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#define PCRE2_CODE_UNIT_WIDTH 8

#include "waf_rules.h"

#include <dirent.h>
#include <lauxlib.h>
#include <lua.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf_sandbox.h"
#include "counters.h"
#include "conf_schema.h"
#include "waf_ac.h"
#include "waf_body.h"
#include "waf_sqli.h"
#include "waf_transform.h"
#include "waf_xss.h"

#define MAX_CHAIN 8
#define MAX_RULE_TARGETS 16
#define MAX_VALUE 65536 /* bytes of one value inspected */

enum waf_op { OP_PHRASES, OP_REGEX, OP_SQLI, OP_XSS, OP_NOT_WITHIN, OP_MISSING, OP_LENGTH_OVER };

struct rule_target {
	enum waf_target kind;
	char *name; /* NULL: every name */
};

struct waf_rule {
	uint32_t id;
	int paranoia;
	int score;
	bool detect;
	struct rule_target targets[MAX_RULE_TARGETS];
	size_t ntargets;
	uint32_t target_mask;
	size_t group;
	enum waf_op op;
	pcre2_code *re;
	char **words; /* not_within */
	size_t nwords;
	size_t length_over;
	/* necessary bytes, as class masks (0: none known): a value none of whose
	 * bytes is in need_first, or in need_last, or shorter than minlen, is
	 * not matched (regexes: from PCRE2's own analysis; xss: its detector's) */
	uint64_t need_first, need_last;
	size_t minlen;
	bool lits;        /* a regex with a literal prefilter in the union automaton (ids nrules + index) */
	uint32_t all_names; /* kinds (bits) the rule reads every name of */
	char *message;
	char **tags; /* NULL-terminated */
	uint32_t groups; /* bits of enum ctr_waf_group, from the tags */
};

/* The rules that share one transform chain. */
struct group {
	enum waf_transform chain[MAX_CHAIN];
	size_t nchain;
};

/* Byte classes: one bit per ASCII punctuation byte and one per kind of the
 * other bytes. A value's class mask (the OR over its bytes, one pass) says
 * which transforms can change it and which rules cannot match it. */
enum { BC_SPACE = 32, BC_LOWER, BC_UPPER, BC_DIGIT, BC_NUL, BC_CTRL, BC_WSCTRL, BC_NBSP, BC_HIGH };
static const char punct[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

struct class_masks {
	uint64_t url, amp, upper, space, ws_other, hash, slash, star, dash, dot, backslash, cmdline, nul, base64;
	uint64_t by_content; /* classes whose bytes' places, not presence, decide a transform */
};

struct waf_ruleset {
	struct waf_rule *rules;
	size_t nrules;
	struct group *groups;
	size_t ngroups;
	struct waf_ac *uac; /* every phrase of every rule (ids: rule indexes), for values no chain changes */
	uint64_t cls[256];
	struct class_masks cm;
};

static uint64_t class_bit(unsigned char c)
{
	const char *p = c ? strchr(punct, c) : NULL;
	if (p)
		return 1ull << (p - punct);
	if (c == ' ')
		return 1ull << BC_SPACE;
	if (c >= 'a' && c <= 'z')
		return 1ull << BC_LOWER;
	if (c >= 'A' && c <= 'Z')
		return 1ull << BC_UPPER;
	if (c >= '0' && c <= '9')
		return 1ull << BC_DIGIT;
	if (c == 0)
		return 1ull << BC_NUL;
	if (c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')
		return 1ull << BC_WSCTRL;
	if (c == 0xa0)
		return 1ull << BC_NBSP;
	if (c >= 0x80)
		return 1ull << BC_HIGH;
	return 1ull << BC_CTRL;
}

/* The classes of c in either ASCII case. */
static uint64_t class_ci(unsigned char c)
{
	uint64_t m = class_bit(c);
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		m |= (1ull << BC_LOWER) | (1ull << BC_UPPER);
	return m;
}

static uint64_t classes_of(const char *bytes)
{
	uint64_t m = 0;
	for (const char *p = bytes; *p; p++)
		m |= class_bit((unsigned char)*p);
	return m;
}

static void classes_init(struct waf_ruleset *rs)
{
	for (int c = 0; c < 256; c++)
		rs->cls[c] = class_bit((unsigned char)c);
	struct class_masks *m = &rs->cm;
	m->url = classes_of("%+");
	m->amp = classes_of("&");
	m->upper = 1ull << BC_UPPER;
	m->space = 1ull << BC_SPACE;
	m->ws_other = (1ull << BC_WSCTRL) | (1ull << BC_NBSP);
	m->hash = classes_of("#");
	m->slash = classes_of("/");
	m->star = classes_of("*");
	m->dash = classes_of("-");
	m->dot = classes_of(".");
	m->backslash = classes_of("\\");
	m->cmdline = classes_of("\\\"'^$,") | m->ws_other | m->upper;
	m->nul = 1ull << BC_NUL;
	m->base64 = classes_of("+-/_=") | (1ull << BC_LOWER) | m->upper | (1ull << BC_DIGIT) | m->space | m->ws_other;
	m->by_content = m->space | m->ws_other | m->dash | m->slash | m->dot;
}

/* need_first, need_last and minlen of a regex rule, from PCRE2's analysis:
 * a match starts with a byte of its first-code-unit set and holds its last
 * required code unit (either in both ASCII cases, as the pattern may be caseless). */
static void regex_prefilter(struct waf_rule *r)
{
	uint32_t type = 0, cu = 0, minlen = 0;
	if (pcre2_pattern_info(r->re, PCRE2_INFO_FIRSTCODETYPE, &type) == 0 && type == 1 &&
	    pcre2_pattern_info(r->re, PCRE2_INFO_FIRSTCODEUNIT, &cu) == 0 && cu < 256) {
		r->need_first = class_ci((unsigned char)cu);
	} else if (type == 0) {
		const uint8_t *bm = NULL;
		if (pcre2_pattern_info(r->re, PCRE2_INFO_FIRSTBITMAP, &bm) == 0 && bm)
			for (int c = 0; c < 256; c++)
				if (bm[c / 8] & (1u << (c % 8)))
					r->need_first |= class_ci((unsigned char)c);
	}
	if (pcre2_pattern_info(r->re, PCRE2_INFO_LASTCODETYPE, &type) == 0 && type == 1 &&
	    pcre2_pattern_info(r->re, PCRE2_INFO_LASTCODEUNIT, &cu) == 0 && cu < 256)
		r->need_last = class_ci((unsigned char)cu);
	if (pcre2_pattern_info(r->re, PCRE2_INFO_MINLENGTH, &minlen) == 0)
		r->minlen = minlen;
}

static const char *const target_names[WAF_TGT_COUNT] = {
    [WAF_TGT_PATH] = "path",       [WAF_TGT_QUERY] = "query",
    [WAF_TGT_ARGS] = "args",       [WAF_TGT_ARGS_NAMES] = "args_names",
    [WAF_TGT_COOKIES] = "cookies", [WAF_TGT_COOKIES_NAMES] = "cookies_names",
    [WAF_TGT_HEADERS] = "headers", [WAF_TGT_HEADERS_NAMES] = "headers_names",
    [WAF_TGT_METHOD] = "method",   [WAF_TGT_FILES] = "files",
    [WAF_TGT_BODY] = "body",       [WAF_TGT_BODY_ERROR] = "body_error",
};

const char *waf_target_name(enum waf_target t)
{
	return (unsigned)t < WAF_TGT_COUNT ? target_names[t] : "?";
}

bool waf_target_parse(const char *spec, enum waf_target *kind, const char **name)
{
	const char *colon = strchr(spec, ':');
	size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
	for (int t = 0; t < WAF_TGT_COUNT; t++) {
		if (strlen(target_names[t]) == len && strncmp(spec, target_names[t], len) == 0) {
			if (colon && (colon[1] == '\0' ||
			              !(t == WAF_TGT_ARGS || t == WAF_TGT_COOKIES || t == WAF_TGT_HEADERS || t == WAF_TGT_FILES)))
				return false;
			*kind = (enum waf_target)t;
			*name = colon ? colon + 1 : NULL;
			return true;
		}
	}
	return false;
}

static const struct {
	const char *name;
	int score;
} severities[] = {{"critical", 5}, {"error", 4}, {"warning", 3}, {"notice", 2}};

/* Literal prefilters for regexes ------------------------------------------
 *
 * A set of literal strings at least one of which occurs (ASCII case aside)
 * in every match, read from the pattern: for a sequence, the best of its
 * literal runs and of its required groups; for an alternation, the union of
 * its branches' sets (every branch must have one). Quantified items, classes,
 * escapes other than single bytes, anchors and lookarounds end a run; a
 * construct not understood gives no set, and the rule then runs on every
 * value its byte classes allow (still correct, only slower). The literals go
 * into the rule set's union automaton: a value none of them occurs in is not
 * given to PCRE2 at all. */

#define LIT_MAX 24
#define LITS_MAX 96

struct litset {
	bool ok;
	size_t n;
	char lit[LITS_MAX][LIT_MAX];
	size_t len[LITS_MAX];
};

struct litparse {
	const char *p;
	size_t n, i;
	bool fail;
};

static size_t lits_score(const struct litset *s)
{
	if (!s->ok || s->n == 0)
		return 0;
	size_t m = SIZE_MAX;
	for (size_t k = 0; k < s->n; k++)
		if (s->len[k] < m)
			m = s->len[k];
	return m;
}

static void lits_better(struct litset *best, const struct litset *cand)
{
	size_t a = lits_score(best), b = lits_score(cand);
	if (b > a || (b == a && b > 0 && cand->n < best->n))
		*best = *cand;
}

static void lits_run(struct litset *best, const char *run, size_t len)
{
	if (len == 0)
		return;
	struct litset c = {.ok = true, .n = 1};
	memcpy(c.lit[0], run, len);
	c.len[0] = len;
	lits_better(best, &c);
}

/* A quantifier at lp->i: its minimum (1 if none), consumed with its lazy or possessive mark. */
static unsigned lit_quant(struct litparse *lp)
{
	unsigned min = 1;
	if (lp->i >= lp->n)
		return 1;
	char c = lp->p[lp->i];
	if (c == '?' || c == '*') {
		min = 0;
		lp->i++;
	} else if (c == '+') {
		lp->i++;
	} else if (c == '{' && lp->i + 1 < lp->n && lp->p[lp->i + 1] >= '0' && lp->p[lp->i + 1] <= '9') {
		size_t j = lp->i + 1;
		unsigned v = 0;
		while (j < lp->n && lp->p[j] >= '0' && lp->p[j] <= '9')
			v = v * 10 + (unsigned)(lp->p[j++] - '0');
		while (j < lp->n && lp->p[j] != '}')
			j++;
		lp->i = j < lp->n ? j + 1 : j;
		min = v;
	} else {
		return 1;
	}
	if (lp->i < lp->n && (lp->p[lp->i] == '?' || lp->p[lp->i] == '+'))
		lp->i++;
	return min;
}

static int hexdig(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
		return (c | 0x20) - 'a' + 10;
	return -1;
}

static void lit_alt(struct litparse *lp, struct litset *out);

/* One branch: the best set of its items. Stops at '|' or ')'. */
static void lit_seq(struct litparse *lp, struct litset *best)
{
	char run[LIT_MAX];
	size_t rl = 0;
	memset(best, 0, sizeof(*best));
	while (lp->i < lp->n && !lp->fail) {
		char c = lp->p[lp->i];
		if (c == '|' || c == ')')
			break;
		int lit = -1; /* the byte of a literal item */
		if (c == '(') {
			lits_run(best, run, rl);
			rl = 0;
			lp->i++;
			bool capture = true, zero_width = false;
			if (lp->i < lp->n && lp->p[lp->i] == '?') {
				capture = false;
				const char *q = lp->p + lp->i + 1;
				size_t left = lp->n - lp->i - 1;
				if (left >= 1 && (q[0] == ':' || q[0] == '>' || q[0] == '|')) {
					lp->i += 2;
				} else if (left >= 1 && (q[0] == '=' || q[0] == '!')) {
					zero_width = true;
					lp->i += 2;
				} else if (left >= 2 && q[0] == '<' && (q[1] == '=' || q[1] == '!')) {
					zero_width = true;
					lp->i += 3;
				} else {
					/* inline flags "(?i)" or "(?i:": extended mode changes what a byte means */
					size_t j = 0;
					while (j < left && ((q[j] >= 'a' && q[j] <= 'z') || q[j] == '-') && q[j] != 'x')
						j++;
					if (j < left && q[j] == ')') {
						lp->i += j + 2;
						continue;
					}
					if (j < left && q[j] == ':') {
						lp->i += j + 2;
					} else {
						lp->fail = true;
						return;
					}
				}
			}
			(void)capture;
			struct litset inner;
			lit_alt(lp, &inner);
			if (lp->i >= lp->n || lp->p[lp->i] != ')') {
				lp->fail = true;
				return;
			}
			lp->i++;
			unsigned min = lit_quant(lp);
			if (!zero_width && min > 0)
				lits_better(best, &inner);
			continue;
		}
		if (c == '[') {
			lits_run(best, run, rl);
			rl = 0;
			size_t j = lp->i + 1;
			if (j < lp->n && lp->p[j] == '^')
				j++;
			if (j < lp->n && lp->p[j] == ']')
				j++;
			while (j < lp->n && lp->p[j] != ']') {
				if (lp->p[j] == '\\')
					j++;
				else if (lp->p[j] == '[' && j + 1 < lp->n && lp->p[j + 1] == ':') {
					while (j + 1 < lp->n && !(lp->p[j] == ':' && lp->p[j + 1] == ']'))
						j++;
					j++;
				}
				j++;
			}
			if (j >= lp->n) {
				lp->fail = true;
				return;
			}
			lp->i = j + 1;
			(void)lit_quant(lp);
			continue;
		}
		if (c == '\\') {
			if (lp->i + 1 >= lp->n) {
				lp->fail = true;
				return;
			}
			char e = lp->p[lp->i + 1];
			lp->i += 2;
			if (e == 'x') {
				int h1 = lp->i < lp->n ? hexdig(lp->p[lp->i]) : -1;
				int h2 = lp->i + 1 < lp->n ? hexdig(lp->p[lp->i + 1]) : -1;
				if (h1 < 0 || h2 < 0) {
					lp->fail = true; /* \x{...} and one-digit forms: not read here */
					return;
				}
				lp->i += 2;
				lit = h1 * 16 + h2;
			} else if (e == 'n') {
				lit = '\n';
			} else if (e == 'r') {
				lit = '\r';
			} else if (e == 't') {
				lit = '\t';
			} else if (e == 'Q' || e == 'E' || (e >= '0' && e <= '9') || e == 'g' || e == 'k' || e == 'p' ||
			           e == 'P' || e == 'c' || e == 'o' || e == 'N') {
				lp->fail = true;
				return;
			} else if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
				/* \d \w \s \b \B ... : not a literal */
				lits_run(best, run, rl);
				rl = 0;
				(void)lit_quant(lp);
				continue;
			} else {
				lit = (unsigned char)e;
			}
		} else if (c == '.' || c == '^' || c == '$') {
			lp->i++;
			lits_run(best, run, rl);
			rl = 0;
			(void)lit_quant(lp);
			continue;
		} else if (c == '*' || c == '+' || c == '?' || c == '{') {
			lp->fail = true; /* a quantifier without an item */
			return;
		} else {
			lit = (unsigned char)c;
			lp->i++;
		}
		unsigned min = lit_quant(lp);
		if (min == 0 || rl + (min > 4 ? 4 : min) > LIT_MAX) {
			lits_run(best, run, rl);
			rl = 0;
			if (min == 0)
				continue;
		}
		for (unsigned k = 0; k < min && k < 4; k++)
			run[rl++] = (char)lit;
		if (lp->i < lp->n && lp->i > 0 && (lp->p[lp->i - 1] == '+' || lp->p[lp->i - 1] == '}')) {
			/* a repeated byte: the run ends with it */
			lits_run(best, run, rl);
			rl = 0;
		}
	}
	lits_run(best, run, rl);
}

static void lit_alt(struct litparse *lp, struct litset *out)
{
	memset(out, 0, sizeof(*out));
	out->ok = true;
	for (;;) {
		struct litset b;
		lit_seq(lp, &b);
		if (lp->fail || !b.ok || b.n == 0 || out->n + b.n > LITS_MAX)
			out->ok = false;
		for (size_t k = 0; out->ok && k < b.n; k++) {
			memcpy(out->lit[out->n], b.lit[k], b.len[k]);
			out->len[out->n++] = b.len[k];
		}
		if (lp->fail || lp->i >= lp->n || lp->p[lp->i] != '|')
			break;
		lp->i++;
	}
	if (!out->ok)
		out->n = 0;
}

/* The literal set of a pattern, or false (no prefilter). Literals shorter
 * than 2 bytes are left to the byte classes. */
static bool regex_literals(const char *pat, size_t len, struct litset *out)
{
	struct litparse lp = {.p = pat, .n = len};
	lit_alt(&lp, out);
	return !lp.fail && lp.i == len && out->ok && lits_score(out) >= 2;
}

/* loading ---------------------------------------------------------------- */

struct loader {
	struct conf_errors *errs;
	const char *file;
	size_t index; /* 1-based rule index in the file */
	bool ok;
};

static void lerr(struct loader *ld, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void lerr(struct loader *ld, const char *key, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	conf_errors_add(ld->errs, "%s: rules[%zu]%s%s: %s", ld->file, ld->index, key[0] ? "." : "", key, msg);
	ld->ok = false;
}

static char *xstrdup(const char *s)
{
	return conf_xstrdup(s);
}

/* A list of strings at key (absent: *n = 0); false after an error. */
static bool string_list(lua_State *L, int t, const char *key, struct loader *ld, char ***out, size_t *n)
{
	*out = NULL;
	*n = 0;
	int ty = lua_getfield(L, t, key);
	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		return true;
	}
	if (ty != LUA_TTABLE) {
		lerr(ld, key, "expected a list of strings");
		lua_pop(L, 1);
		return false;
	}
	size_t len = lua_rawlen(L, -1);
	*out = conf_xcalloc(len + 1, sizeof(char *));
	for (size_t i = 1; i <= len; i++) {
		if (lua_rawgeti(L, -1, (lua_Integer)i) != LUA_TSTRING) {
			lerr(ld, key, "expected a list of strings");
			lua_pop(L, 2);
			return false;
		}
		size_t sl;
		const char *s = lua_tolstring(L, -1, &sl);
		(*out)[(*n)++] = conf_xstrndup(s, sl);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return true;
}

static void free_list(char **l)
{
	if (!l)
		return;
	for (char **p = l; *p; p++)
		free(*p);
	free(l);
}

static const char *const group_names[CTR_WAF_GROUP__COUNT] = {
#define GROUP_NAME(sym, str) str,
    CTR_WAF_GROUP_LIST(GROUP_NAME)
#undef GROUP_NAME
};

/* A rule's groups: tags "protocol", "scanner" and "attack-<group>"; "other" without any. */
static uint32_t rule_groups(char **tags)
{
	uint32_t g = 0;
	for (char **t = tags; *t; t++) {
		const char *name = strncmp(*t, "attack-", 7) == 0 ? *t + 7 : *t;
		for (int i = 0; i < CTR_WAF_GROUP__COUNT; i++)
			if (i != CTR_WAF_GROUP_OTHER && strcmp(name, group_names[i]) == 0 &&
			    (name != *t || i == CTR_WAF_GROUP_PROTOCOL || i == CTR_WAF_GROUP_SCANNER))
				g |= 1u << i;
	}
	return g ? g : 1u << CTR_WAF_GROUP_OTHER;
}

static const char *const rule_keys[] = {"id",      "paranoia", "severity", "targets", "transforms",
                                        "operator", "message",  "tags",     "mode",    NULL};
static const char *const operator_keys[] = {"phrases", "regex", "sqli", "xss", "not_within", "missing",
                                            "length_over", NULL};

struct pending_phrases {
	char **phrases;
	size_t n;
	struct litset *lits; /* a regex's literal prefilter */
};

static bool read_rule(lua_State *L, struct loader *ld, struct waf_rule *r, struct pending_phrases *pp,
                      enum waf_transform *chain, size_t *nchain)
{
	int t = lua_gettop(L);
	memset(r, 0, sizeof(*r));
	pp->phrases = NULL;
	pp->n = 0;
	pp->lits = NULL;
	*nchain = 0;
	if (!lua_istable(L, t)) {
		lerr(ld, "", "a rule is a table");
		return false;
	}
	/* unknown keys are mistakes (a misspelt "paranoia" would silently be 1) */
	lua_pushnil(L);
	while (lua_next(L, t)) {
		bool known = false;
		if (lua_type(L, -2) == LUA_TSTRING)
			for (const char *const *k = rule_keys; *k; k++)
				known |= strcmp(*k, lua_tostring(L, -2)) == 0;
		if (!known)
			lerr(ld, lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?", "unknown key");
		lua_pop(L, 1);
	}
	lua_getfield(L, t, "id");
	if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) <= 0 || lua_tointeger(L, -1) > 0xffffffffLL)
		lerr(ld, "id", "a positive integer is required");
	else
		r->id = (uint32_t)lua_tointeger(L, -1);
	lua_pop(L, 1);
	r->paranoia = 1;
	if (lua_getfield(L, t, "paranoia") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 4)
			lerr(ld, "paranoia", "an integer from 1 to 4");
		else
			r->paranoia = (int)lua_tointeger(L, -1);
	}
	lua_pop(L, 1);
	r->score = 5;
	if (lua_getfield(L, t, "severity") != LUA_TNIL) {
		const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
		bool found = false;
		for (size_t i = 0; i < sizeof(severities) / sizeof(severities[0]); i++)
			if (strcmp(s, severities[i].name) == 0) {
				r->score = severities[i].score;
				found = true;
			}
		if (!found)
			lerr(ld, "severity", "\"%s\" is not one of critical, error, warning, notice", s);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, t, "mode") != LUA_TNIL) {
		const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
		if (strcmp(s, "detect") == 0)
			r->detect = true;
		else if (strcmp(s, "block") != 0)
			lerr(ld, "mode", "\"%s\" is not \"block\" or \"detect\"", s);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, t, "message") != LUA_TSTRING)
		lerr(ld, "message", "a string is required");
	else
		r->message = xstrdup(lua_tostring(L, -1));
	lua_pop(L, 1);
	size_t ntags;
	if (!string_list(L, t, "tags", ld, &r->tags, &ntags))
		return false;
	if (!r->tags)
		r->tags = conf_xcalloc(1, sizeof(char *));
	r->groups = rule_groups(r->tags);
	char **targets;
	size_t ntargets;
	if (!string_list(L, t, "targets", ld, &targets, &ntargets))
		return false;
	if (ntargets == 0)
		lerr(ld, "targets", "at least one target is required");
	if (ntargets > MAX_RULE_TARGETS)
		lerr(ld, "targets", "at most 16 targets");
	for (size_t i = 0; i < ntargets && i < MAX_RULE_TARGETS; i++) {
		enum waf_target kind;
		const char *name;
		if (!waf_target_parse(targets[i], &kind, &name)) {
			lerr(ld, "targets", "unknown target \"%s\" (args, args:NAME, args_names, cookies, headers:NAME, path, ...)",
			     targets[i]);
			continue;
		}
		r->targets[r->ntargets].kind = kind;
		r->targets[r->ntargets].name = name ? xstrdup(name) : NULL;
		r->ntargets++;
		r->target_mask |= 1u << kind;
		if (!name)
			r->all_names |= 1u << kind;
	}
	free_list(targets);
	char **tr;
	size_t ntr;
	if (!string_list(L, t, "transforms", ld, &tr, &ntr))
		return false;
	if (ntr > MAX_CHAIN)
		lerr(ld, "transforms", "at most 8 transforms");
	for (size_t i = 0; i < ntr && i < MAX_CHAIN; i++) {
		int id = waf_transform_by_name(tr[i]);
		if (id < 0)
			lerr(ld, "transforms", "unknown transform \"%s\" (see docs/waf.md, Transforms)", tr[i]);
		else
			chain[(*nchain)++] = (enum waf_transform)id;
	}
	free_list(tr);
	if (lua_getfield(L, t, "operator") != LUA_TTABLE) {
		lerr(ld, "operator", "a table such as { phrases = {...} } or { regex = \"...\" } is required");
		lua_pop(L, 1);
		return ld->ok;
	}
	int o = lua_gettop(L);
	int kinds = 0;
	lua_pushnil(L);
	while (lua_next(L, o)) {
		bool known = false;
		if (lua_type(L, -2) == LUA_TSTRING)
			for (const char *const *k = operator_keys; *k; k++)
				known |= strcmp(*k, lua_tostring(L, -2)) == 0;
		if (!known)
			lerr(ld, "operator", "unknown operator \"%s\"", lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
		kinds++;
		lua_pop(L, 1);
	}
	if (kinds != 1)
		lerr(ld, "operator", "exactly one operator per rule");
	if (lua_getfield(L, o, "phrases") != LUA_TNIL) {
		lua_pop(L, 1);
		r->op = OP_PHRASES;
		if (!string_list(L, o, "phrases", ld, &pp->phrases, &pp->n))
			goto out;
		if (pp->n == 0)
			lerr(ld, "operator.phrases", "at least one phrase");
		for (size_t i = 0; i < pp->n; i++)
			if (pp->phrases[i][0] == '\0')
				lerr(ld, "operator.phrases", "an empty phrase matches everything");
	} else {
		lua_pop(L, 1);
	}
	if (lua_getfield(L, o, "regex") != LUA_TNIL) {
		r->op = OP_REGEX;
		if (lua_type(L, -1) != LUA_TSTRING) {
			lerr(ld, "operator.regex", "a string");
		} else {
			int code;
			PCRE2_SIZE off;
			size_t len;
			const char *pat = lua_tolstring(L, -1, &len);
			r->re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_DOTALL, &code, &off, NULL);
			if (!r->re) {
				PCRE2_UCHAR buf[160];
				pcre2_get_error_message(code, buf, sizeof(buf));
				char msg[200];
				snprintf(msg, sizeof(msg), "%s at offset %zu", (const char *)buf, (size_t)off);
				lerr(ld, "operator.regex", "%s", msg);
			} else {
				(void)pcre2_jit_compile(r->re, PCRE2_JIT_COMPLETE); /* the interpreter serves without JIT */
				regex_prefilter(r);
				struct litset *ls = conf_xcalloc(1, sizeof(*ls));
				if (regex_literals(pat, len, ls))
					pp->lits = ls;
				else
					free(ls);
			}
		}
	}
	lua_pop(L, 1);
	if (lua_getfield(L, o, "sqli") != LUA_TNIL)
		r->op = OP_SQLI;
	lua_pop(L, 1);
	if (lua_getfield(L, o, "xss") != LUA_TNIL) {
		r->op = OP_XSS;
		r->need_first = classes_of(WAF_XSS_NEEDS); /* every shape needs one of these */
	}
	lua_pop(L, 1);
	if (lua_getfield(L, o, "missing") != LUA_TNIL)
		r->op = OP_MISSING;
	lua_pop(L, 1);
	if (lua_getfield(L, o, "length_over") != LUA_TNIL) {
		r->op = OP_LENGTH_OVER;
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
			lerr(ld, "operator.length_over", "a non-negative integer");
		else
			r->length_over = (size_t)lua_tointeger(L, -1);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, o, "not_within") != LUA_TNIL) {
		lua_pop(L, 1);
		r->op = OP_NOT_WITHIN;
		if (!string_list(L, o, "not_within", ld, &r->words, &r->nwords))
			goto out;
	} else {
		lua_pop(L, 1);
	}
out:
	lua_pop(L, 1); /* operator */
	return ld->ok;
}

static void rule_free(struct waf_rule *r)
{
	for (size_t i = 0; i < r->ntargets; i++)
		free(r->targets[i].name);
	if (r->re)
		pcre2_code_free(r->re);
	free_list(r->words);
	free(r->message);
	free_list(r->tags);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t group_for(struct waf_ruleset *rs, const enum waf_transform *chain, size_t n)
{
	for (size_t g = 0; g < rs->ngroups; g++)
		if (rs->groups[g].nchain == n && memcmp(rs->groups[g].chain, chain, n * sizeof(*chain)) == 0)
			return g;
	rs->groups = conf_xreallocarray(rs->groups, rs->ngroups + 1, sizeof(*rs->groups));
	struct group *g = &rs->groups[rs->ngroups];
	memset(g, 0, sizeof(*g));
	memcpy(g->chain, chain, n * sizeof(*chain));
	g->nchain = n;
	return rs->ngroups++;
}

static int chain_cmp(const struct group *a, const struct group *b)
{
	for (size_t k = 0; k < a->nchain && k < b->nchain; k++)
		if (a->chain[k] != b->chain[k])
			return a->chain[k] < b->chain[k] ? -1 : 1;
	return a->nchain < b->nchain ? -1 : a->nchain > b->nchain;
}

/* Orders groups by chain (prefixes together) and renumbers the rules'. */
static void sort_groups(struct waf_ruleset *rs)
{
	size_t n = rs->ngroups;
	if (n < 2)
		return;
	size_t *order = conf_xcalloc(n, sizeof(size_t)), *where = conf_xcalloc(n, sizeof(size_t));
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	for (size_t i = 1; i < n; i++) /* insertion sort: tens of groups */
		for (size_t j = i; j > 0 && chain_cmp(&rs->groups[order[j - 1]], &rs->groups[order[j]]) > 0; j--) {
			size_t t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	struct group *sorted = conf_xcalloc(n, sizeof(*sorted));
	for (size_t i = 0; i < n; i++) {
		sorted[i] = rs->groups[order[i]];
		where[order[i]] = i;
	}
	for (size_t i = 0; i < rs->nrules; i++)
		rs->rules[i].group = where[rs->rules[i].group];
	free(rs->groups);
	rs->groups = sorted;
	free(order);
	free(where);
}

struct waf_ruleset *waf_rules_load(const char *dir, struct conf_errors *errs)
{
	size_t errs_before = errs->count;
	DIR *d = opendir(dir);
	if (!d) {
		conf_errors_add(errs, "%s: cannot open the rules directory (%m): set --rules DIR or waf.rules", dir);
		return NULL;
	}
	char **files = NULL;
	size_t nfiles = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l > 4 && strcmp(de->d_name + l - 4, ".lua") == 0 && de->d_name[0] != '.') {
			files = conf_xreallocarray(files, nfiles + 1, sizeof(char *));
			files[nfiles++] = conf_xasprintf("%s/%s", dir, de->d_name);
		}
	}
	closedir(d);
	qsort(files, nfiles, sizeof(char *), name_cmp);
	if (nfiles == 0)
		conf_errors_add(errs, "%s: no *.lua rule files", dir);

	struct waf_ruleset *rs = conf_xcalloc(1, sizeof(*rs));
	classes_init(rs);
	/* phrases per rule until the automata are built */
	struct pending_phrases *pend = NULL;
	for (size_t f = 0; f < nfiles; f++) {
		size_t len;
		char *src = conf_read_file(files[f], &len, errs);
		if (!src)
			continue;
		struct conf_sandbox sb;
		lua_State *L = conf_sandbox_new(&sb, dir);
		if (!L) {
			conf_errors_add(errs, "%s: out of memory", files[f]);
			free(src);
			continue;
		}
		struct loader ld = {.errs = errs, .file = files[f], .ok = true};
		if (conf_sandbox_run(L, files[f], src, len, errs)) {
			if (!lua_istable(L, -1)) {
				conf_errors_add(errs, "%s: the file must return a list of rules", files[f]);
			} else {
				size_t n = lua_rawlen(L, -1);
				for (size_t i = 1; i <= n; i++) {
					ld.index = i;
					ld.ok = true;
					lua_rawgeti(L, -1, (lua_Integer)i);
					struct waf_rule r;
					struct pending_phrases pp;
					enum waf_transform chain[MAX_CHAIN];
					size_t nchain;
					bool ok = read_rule(L, &ld, &r, &pp, chain, &nchain);
					lua_settop(L, lua_gettop(L) - 1);
					for (size_t k = 0; ok && k < rs->nrules; k++)
						if (rs->rules[k].id == r.id) {
							char id[16];
							snprintf(id, sizeof(id), "%u", r.id);
							lerr(&ld, "id", "duplicate rule id %s", id);
							ok = false;
						}
					if (!ok) {
						rule_free(&r);
						free_list(pp.phrases);
						free(pp.lits);
						continue;
					}
					r.group = group_for(rs, chain, nchain);
					rs->rules = conf_xreallocarray(rs->rules, rs->nrules + 1, sizeof(*rs->rules));
					pend = conf_xreallocarray(pend, rs->nrules + 1, sizeof(*pend));
					rs->rules[rs->nrules] = r;
					pend[rs->nrules] = pp;
					rs->nrules++;
				}
			}
		}
		lua_close(L);
		free(src);
	}
	for (size_t f = 0; f < nfiles; f++)
		free(files[f]);
	free(files);
	sort_groups(rs);
	/* one automaton for every phrase of every rule (ids: rule indexes) and
	 * every regex literal (ids: nrules + rule index) */
	for (size_t i = 0; i < rs->nrules; i++) {
		struct waf_rule *r = &rs->rules[i];
		if (!pend[i].n && !pend[i].lits)
			continue;
		if (!rs->uac)
			rs->uac = waf_ac_new();
		if (!rs->uac) {
			conf_errors_add(errs, "%s: out of memory compiling phrases", dir);
			break;
		}
		for (size_t k = 0; r->op == OP_PHRASES && k < pend[i].n; k++)
			if (!waf_ac_add(rs->uac, pend[i].phrases[k], strlen(pend[i].phrases[k]), (uint32_t)i))
				conf_errors_add(errs, "rule %u: out of memory adding phrases", r->id);
		for (size_t k = 0; pend[i].lits && k < pend[i].lits->n; k++)
			if (!waf_ac_add(rs->uac, pend[i].lits->lit[k], pend[i].lits->len[k], (uint32_t)(rs->nrules + i)))
				conf_errors_add(errs, "rule %u: out of memory adding its literals", r->id);
		r->lits = pend[i].lits != NULL;
	}
	if (rs->uac && !waf_ac_compile(rs->uac))
		conf_errors_add(errs, "%s: out of memory compiling phrases", dir);
	for (size_t i = 0; i < rs->nrules; i++) {
		free_list(pend[i].phrases);
		free(pend[i].lits);
	}
	free(pend);
	if (errs->count > errs_before) {
		waf_rules_free(rs);
		return NULL;
	}
	return rs;
}

void waf_rules_free(struct waf_ruleset *rs)
{
	if (!rs)
		return;
	for (size_t i = 0; i < rs->nrules; i++)
		rule_free(&rs->rules[i]);
	free(rs->rules);
	free(rs->groups);
	waf_ac_free(rs->uac);
	free(rs);
}

size_t waf_rules_count(const struct waf_ruleset *rs)
{
	return rs->nrules;
}

const struct waf_rule *waf_rules_find(const struct waf_ruleset *rs, uint32_t id)
{
	for (size_t i = 0; i < rs->nrules; i++)
		if (rs->rules[i].id == id)
			return &rs->rules[i];
	return NULL;
}

const char *const *waf_rule_tags(const struct waf_rule *r)
{
	return (const char *const *)r->tags;
}

/* evaluation -------------------------------------------------------------- */

/* A policy's plan: what runs for each target kind, worked out once per
 * policy instead of per request. An entry is one group that has an active
 * rule reading the kind. The kind's non-phrase rules are numbered (local
 * indexes) and kept as bitsets: which may run when a byte class occurs
 * (from need_first and need_last), which belong to each entry, which have
 * a literal prefilter. A value's candidates are then a few ORs and ANDs of
 * bitsets instead of a test per rule; `names` lists the names the kind's
 * named targets use (headers:user-agent), so a header no rule reads by name
 * costs one bit test per rule. */
struct entry {
	size_t group;
	uint16_t tset;     /* the transforms of the chain, as bits */
	size_t nchain_ci;  /* the chain without trailing lowercase steps: enough for phrases (matched case-insensitively) */
	bool phrases;      /* an active phrase rule of the group reads this kind */
	bool phrase_all;   /* one of them reads every name of the kind */
	uint32_t phrase_names;
	bool base64_last;  /* the chain ends with its only base64_decode */
};

struct orule {
	size_t ri;      /* rule index */
	size_t entry;
	bool all_names; /* reads every name of the kind */
	uint32_t names; /* else: bit i, reads names[i] */
};

#define MAX_NAMES 32
#define NCLASS 64

struct plan_kind {
	struct entry *e;
	size_t n;
	uint16_t tset;     /* every entry's transforms */
	const char *names[MAX_NAMES];
	size_t name_len[MAX_NAMES];
	size_t nnames;
	int32_t *entry_of; /* per rule: the entry of its group, -1 */
	int32_t *local_of; /* per rule: its index in o, -1 */
	bool phrases;      /* some entry has phrases */
	bool any_lits;     /* some rule has literals */
	struct orule *o;   /* the active non-phrase rules reading this kind, in group order */
	size_t no, nw;     /* nw: 64-bit words of a bitset over o */
	uint64_t *bits;    /* the bitsets below, in one allocation */
	uint64_t *first_any, *last_any, *lits; /* need no first / no last class; have literals */
	uint64_t *first, *last;                /* [class][nw]: may run when the class occurs */
	uint64_t *of_entry;                    /* [entry][nw] */
	size_t enw;                            /* 64-bit words of a bitset over e */
	uint64_t *with;                        /* [transform][enw]: the entries whose chain has it */
};

struct waf_plan {
	const struct waf_ruleset *rs;
	uint8_t *active; /* per rule: runs under the policy */
	uint8_t *detect; /* per rule: never counts towards a block */
	struct plan_kind kinds[WAF_TGT_COUNT];
	size_t max_nw;
	size_t *missing; /* the active `missing` rules */
	size_t nmissing;
};

static bool policy_has(const uint32_t *ids, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

static bool rule_active(const struct waf_rule *r, const struct waf_policy *p)
{
	if (policy_has(p->exclude_ids, p->nexclude_ids, r->id))
		return false;
	/* a rule tried in detect mode runs whatever its paranoia level */
	if (r->paranoia > p->paranoia && !policy_has(p->detect_ids, p->ndetect_ids, r->id))
		return false;
	for (size_t i = 0; i < p->nexclude_tags; i++)
		for (char **t = r->tags; *t; t++)
			if (strcmp(*t, p->exclude_tags[i]) == 0)
				return false;
	return true;
}

static void plan_free(struct waf_plan *pl)
{
	if (!pl)
		return;
	for (int k = 0; k < WAF_TGT_COUNT; k++) {
		free(pl->kinds[k].e);
		free(pl->kinds[k].entry_of);
		free(pl->kinds[k].local_of);
		free(pl->kinds[k].o);
		free(pl->kinds[k].bits);
		free(pl->kinds[k].with);
	}
	free(pl->active);
	free(pl->detect);
	free(pl->missing);
	free(pl);
}

static int name_index(struct plan_kind *pk, const char *name)
{
	for (size_t i = 0; i < pk->nnames; i++)
		if (strcasecmp(pk->names[i], name) == 0)
			return (int)i;
	if (pk->nnames == MAX_NAMES)
		return -1;
	pk->names[pk->nnames] = name;
	pk->name_len[pk->nnames] = strlen(name);
	return (int)pk->nnames++;
}

#define SETBIT(set, i) ((set)[(i) / 64] |= 1ull << ((i) % 64))
#define HASBIT(set, i) (((set)[(i) / 64] >> ((i) % 64)) & 1)

static bool plan_kind_build(struct plan_kind *pk, const struct waf_ruleset *rs, const uint8_t *active, int k)
{
	pk->entry_of = malloc((rs->nrules + 1) * sizeof(*pk->entry_of));
	pk->local_of = malloc((rs->nrules + 1) * sizeof(*pk->local_of));
	pk->e = calloc(rs->ngroups + 1, sizeof(*pk->e));
	pk->o = calloc(rs->nrules + 1, sizeof(*pk->o));
	if (!pk->entry_of || !pk->local_of || !pk->e || !pk->o)
		return false;
	for (size_t i = 0; i < rs->nrules; i++)
		pk->entry_of[i] = pk->local_of[i] = -1;
	for (size_t g = 0; g < rs->ngroups; g++) {
		const struct group *gr = &rs->groups[g];
		struct entry *e = &pk->e[pk->n];
		bool used = false;
		for (size_t i = 0; i < rs->nrules; i++) {
			const struct waf_rule *r = &rs->rules[i];
			if (r->group != g || !active[i] || !(r->target_mask & (1u << k)) || r->op == OP_MISSING)
				continue;
			used = true;
			pk->entry_of[i] = (int32_t)pk->n;
			bool all = false;
			uint32_t names = 0;
			for (size_t t = 0; t < r->ntargets; t++) {
				if (r->targets[t].kind != (enum waf_target)k)
					continue;
				int ni = r->targets[t].name ? name_index(pk, r->targets[t].name) : -1;
				if (ni < 0)
					all = true; /* every name, or past MAX_NAMES: applies() still checks */
				else
					names |= 1u << ni;
			}
			if (r->op == OP_PHRASES) {
				e->phrases = true;
				e->phrase_all |= all;
				e->phrase_names |= names;
				pk->phrases = true;
				continue;
			}
			struct orule *o = &pk->o[pk->no];
			o->ri = i;
			o->entry = pk->n;
			o->all_names = all;
			o->names = names;
			pk->any_lits |= r->lits;
			pk->local_of[i] = (int32_t)pk->no++;
		}
		if (!used)
			continue;
		e->group = g;
		size_t nci = gr->nchain;
		while (nci > 0 && gr->chain[nci - 1] == WAF_T_LOWERCASE)
			nci--;
		e->nchain_ci = nci;
		size_t nb64 = 0;
		for (size_t d = 0; d < gr->nchain; d++) {
			e->tset |= (uint16_t)(1u << gr->chain[d]);
			nb64 += gr->chain[d] == WAF_T_BASE64;
		}
		e->base64_last = nb64 == 1 && gr->chain[gr->nchain - 1] == WAF_T_BASE64;
		pk->tset |= e->tset;
		pk->n++;
	}
	pk->enw = pk->n / 64 + 1;
	pk->with = calloc((size_t)WAF_T_COUNT * pk->enw, sizeof(uint64_t));
	if (!pk->with)
		return false;
	for (size_t i = 0; i < pk->n; i++)
		for (int t = 0; t < WAF_T_COUNT; t++)
			if (pk->e[i].tset & (1u << t))
				SETBIT(pk->with + (size_t)t * pk->enw, i);
	size_t nw = pk->no / 64 + 1;
	pk->nw = nw;
	pk->bits = calloc((3 + 2 * NCLASS + pk->n + 1) * nw, sizeof(uint64_t));
	if (!pk->bits)
		return false;
	pk->first_any = pk->bits;
	pk->last_any = pk->first_any + nw;
	pk->lits = pk->last_any + nw;
	pk->first = pk->lits + nw;
	pk->last = pk->first + NCLASS * nw;
	pk->of_entry = pk->last + NCLASS * nw;
	for (size_t j = 0; j < pk->no; j++) {
		const struct waf_rule *r = &rs->rules[pk->o[j].ri];
		if (!r->need_first)
			SETBIT(pk->first_any, j);
		if (!r->need_last)
			SETBIT(pk->last_any, j);
		if (r->lits)
			SETBIT(pk->lits, j);
		for (int c = 0; c < NCLASS; c++) {
			if (r->need_first & (1ull << c))
				SETBIT(pk->first + (size_t)c * nw, j);
			if (r->need_last & (1ull << c))
				SETBIT(pk->last + (size_t)c * nw, j);
		}
		SETBIT(pk->of_entry + pk->o[j].entry * nw, j);
	}
	return true;
}

static struct waf_plan *plan_new(const struct waf_ruleset *rs, const struct waf_policy *pol)
{
	struct waf_plan *pl = calloc(1, sizeof(*pl));
	if (!pl)
		return NULL;
	pl->rs = rs;
	pl->active = calloc(rs->nrules + 1, 1);
	pl->detect = calloc(rs->nrules + 1, 1);
	if (!pl->active || !pl->detect)
		goto oom;
	pl->missing = calloc(rs->nrules + 1, sizeof(*pl->missing));
	if (!pl->missing)
		goto oom;
	for (size_t i = 0; i < rs->nrules; i++) {
		const struct waf_rule *r = &rs->rules[i];
		pl->active[i] = rule_active(r, pol);
		pl->detect[i] = r->detect || policy_has(pol->detect_ids, pol->ndetect_ids, r->id);
		if (pl->active[i] && r->op == OP_MISSING)
			pl->missing[pl->nmissing++] = i;
	}
	for (int k = 0; k < WAF_TGT_COUNT; k++) {
		if (!plan_kind_build(&pl->kinds[k], rs, pl->active, k))
			goto oom;
		if (pl->kinds[k].nw > pl->max_nw)
			pl->max_nw = pl->kinds[k].nw;
	}
	return pl;
oom:
	plan_free(pl);
	return NULL;
}

bool waf_policy_prepare(const struct waf_ruleset *rs, struct waf_policy *pol)
{
	waf_policy_release(pol);
	pol->plan = plan_new(rs, pol);
	return pol->plan != NULL;
}

void waf_policy_release(struct waf_policy *pol)
{
	plan_free(pol->plan);
	pol->plan = NULL;
}

/* A value transformed by steps that changed it, a node of a per-value tree
 * (its parent and the step that made it from the parent): a chain is walked
 * from the raw value, skipping every step that would leave the current bytes
 * as they are, so chains that differ only by such steps end at the same
 * memo, share its transforms, its scan and its detector runs. */
struct memo {
	int parent;       /* the memo this one transformed one step further; -1: the raw value */
	enum waf_transform step;
	bool noops_known;
	unsigned noops;   /* as raw_noops(), for a further step */
	bool scan;        /* some group's phrases are looked for in it */
	char *buf;
	size_t cap, len;
	uint64_t mask;
	int8_t sqli, xss; /* -1: not run yet */
	bool phrases_done;
	bool lits_done;
	uint64_t *lits;   /* regex rules (bits) a literal of which occurs in buf */
};

/* Header and cookie values found clean, per evaluator: a browser sends the
 * same User-Agent, Accept and cookies with every request, and a value that
 * matched nothing under a policy matches nothing the next time (the
 * evaluation is a function of the policy, the kind, the name and the
 * bytes). A header or cookie is kept as its name and value together (one
 * look-up for both); argument names alone: they are the application's
 * vocabulary, the same from one request to the next. Only what was
 * evaluated in full is kept: no rule had
 * matched yet in its request (a rule that matched is not tried again), none
 * matched on it and no regex gave up. Two ways per set (a browser's dozen
 * values in a direct-mapped table collide a third of the time, and two
 * that share a slot would push each other out on every request), the one
 * used less recently replaced; a slot holds name and value whole (compared
 * byte for byte, the hash only picks the set).
 * Argument values, the path and the query vary from request to request and
 * are not kept. */
#define CLEAN_SLOTS 256
#define CLEAN_MAX 240
/* the kinds remembered: header and cookie name-and-value pairs (under the
 * value's kind), argument names */
#define CLEAN_KINDS (1u << WAF_TGT_HEADERS | 1u << WAF_TGT_COOKIES | 1u << WAF_TGT_ARGS_NAMES)
struct clean {
	uint64_t hash;
	const struct waf_policy *pol;
	int kind; /* -1: empty */
	uint16_t nlen, vlen;
	bool recent; /* used after the other way of its set */
	char bytes[CLEAN_MAX]; /* the name, then the value */
};

#define NOOPS_MEMO 32 /* a request's few masks per kind, spread by a multiplicative hash */
struct noops_memo {
	bool valid;
	uint64_t mask;
	unsigned need, noops, noops_ci;
};

struct waf_eval {
	const struct waf_ruleset *rs;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	struct memo *memo; /* 2 per group at most: the chain without its trailing lowercase, and whole */
	size_t nmemo, cap_memo;
	int32_t *entry_memo; /* per entry of the kind: its phrases' memo, while memos are scanned */
	char *scratch; /* body and query parsing */
	size_t scap;
	uint8_t *matched; /* per rule: already counted for this request */
	struct waf_plan *own_plan; /* for a policy that was not prepared */
	struct clean *clean;       /* CLEAN_SLOTS */
	bool exhaustive;           /* waf_eval_exhaustive() */
	/* per request */
	const struct waf_plan *plan;
	const struct waf_policy *pol;
	struct waf_verdict *out;
	bool seen[WAF_TGT_COUNT]; /* a value of this kind was visited */
	/* the value being matched */
	enum waf_target kind;
	const char *name;
	size_t nlen;
	int name_bit;      /* the name's index in the kind's names, -1 */
	const char *raw;
	size_t rawlen;
	uint64_t rawmask;
	unsigned noops;    /* transforms that leave the raw value as it is (bits) */
	unsigned noops_ci; /* ... as it is, ASCII case aside */
	unsigned need;     /* the transforms the kind's chains use */
	uint64_t *lit_raw; /* the kind's rules (local bits) a literal of which occurs in the raw value */
	uint64_t *lit_into; /* where the automaton's literal hits go; NULL: nowhere */
	uint64_t *nonid;   /* the kind's rules (local bits) whose chain changes the value, case aside */
	uint64_t *cand;
	uint64_t *ents;    /* the kind's entries (bits) whose chain changes the value */
	size_t nwords;
	int8_t raw_sqli, raw_xss;
	struct noops_memo nm[NOOPS_MEMO]; /* raw_noops() of masks that decide alone */
	int8_t b64;        /* -1: not looked at; 0: not base64; 1: b64_mask and b64_len hold its decoded bytes' */
	uint64_t b64_mask;
	size_t b64_len;
	const char *cur;   /* the value a hit is reported from */
	size_t curlen;
	int cur_mode;      /* on_phrase: SCAN_RAW, SCAN_LITS, or SCAN_MEMO + the memo's index */
};

struct waf_eval *waf_eval_new(const struct waf_ruleset *rs)
{
	struct waf_eval *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return NULL;
	ev->rs = rs;
	ev->md = pcre2_match_data_create(2, NULL);
	ev->mctx = pcre2_match_context_create(NULL);
	ev->matched = calloc(rs->nrules + 1, 1);
	ev->clean = calloc(CLEAN_SLOTS, sizeof(*ev->clean));
	if (!ev->clean) {
		waf_eval_free(ev);
		return NULL;
	}
	for (size_t i = 0; i < CLEAN_SLOTS; i++)
		ev->clean[i].kind = -1;
	ev->nwords = rs->nrules / 64 + 1;
	ev->cap_memo = rs->ngroups * MAX_CHAIN + 2; /* one node per step of each chain at most */
	ev->memo = calloc(ev->cap_memo, sizeof(*ev->memo));
	ev->entry_memo = calloc(rs->ngroups + 1, sizeof(*ev->entry_memo));
	if (!ev->memo || !ev->entry_memo) {
		waf_eval_free(ev);
		return NULL;
	}
	ev->lit_raw = calloc(ev->nwords, sizeof(uint64_t));
	ev->nonid = calloc(ev->nwords, sizeof(uint64_t));
	ev->cand = calloc(ev->nwords, sizeof(uint64_t));
	ev->ents = calloc(rs->ngroups / 64 + 1, sizeof(uint64_t));
	bool ok = ev->lit_raw && ev->nonid && ev->cand && ev->ents;
	for (size_t i = 0; i < ev->cap_memo; i++)
		ok = ok && (ev->memo[i].lits = calloc(ev->nwords, sizeof(uint64_t))) != NULL;
	if (!ev->md || !ev->mctx || !ev->matched || !ok) {
		waf_eval_free(ev);
		return NULL;
	}
	/* a pathological regex gives up instead of holding the worker */
	pcre2_set_match_limit(ev->mctx, 100000);
	pcre2_set_depth_limit(ev->mctx, 5000);
	return ev;
}

void waf_eval_exhaustive(struct waf_eval *ev, bool on)
{
	ev->exhaustive = on;
}

void waf_eval_free(struct waf_eval *ev)
{
	if (!ev)
		return;
	pcre2_match_data_free(ev->md);
	pcre2_match_context_free(ev->mctx);
	for (size_t d = 0; ev->memo && d < ev->cap_memo; d++) {
		free(ev->memo[d].buf);
		free(ev->memo[d].lits);
	}
	free(ev->memo);
	free(ev->entry_memo);
	free(ev->clean);
	free(ev->lit_raw);
	free(ev->nonid);
	free(ev->cand);
	free(ev->ents);
	free(ev->scratch);
	free(ev->matched);
	plan_free(ev->own_plan);
	free(ev);
}

/* Zeroes a bitset of n words: one store for the usual one word. */
static inline void zero_words(uint64_t *w, size_t n)
{
	if (n == 1)
		w[0] = 0;
	else
		memset(w, 0, n * sizeof(*w));
}

static bool grow(char **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t c = *cap ? *cap : 4096;
	while (c < need)
		c *= 2;
	char *q = realloc(*p, c);
	if (!q)
		return false;
	*p = q;
	*cap = c;
	return true;
}

static bool name_eq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x >= 'A' && x <= 'Z')
			x += 32;
		if (y >= 'A' && y <= 'Z')
			y += 32;
		if (x != y)
			return false;
	}
	return true;
}

static bool applies(const struct waf_eval *ev, const struct waf_rule *r)
{
	if ((r->all_names & (1u << ev->kind)) && ev->pol->nexclude_targets == 0)
		return true;
	for (size_t i = 0; i < r->ntargets; i++)
		if (r->targets[i].kind == ev->kind && (!r->targets[i].name || name_eq(ev->name, ev->nlen, r->targets[i].name)))
			break;
		else if (i + 1 == r->ntargets)
			return false;
	const struct waf_policy *p = ev->pol;
	for (size_t i = 0; i < p->nexclude_targets; i++) {
		const struct waf_exclusion *x = &p->exclude_targets[i];
		if ((x->rule_id == 0 || x->rule_id == r->id) && x->kind == ev->kind &&
		    (!x->name || name_eq(ev->name, ev->nlen, x->name)))
			return false;
	}
	return true;
}

static bool secret_name(const char *name, size_t n)
{
	static const char *const secrets[] = {"pass", "pwd", "token", "secret", "auth", "session", "key", "card",
	                                      "cvv", "ssn", "cookie"};
	char low[48];
	size_t k = n < sizeof(low) - 1 ? n : sizeof(low) - 1;
	for (size_t i = 0; i < k; i++)
		low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
	low[k] = '\0';
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		if (strstr(low, secrets[i]))
			return true;
	return false;
}

static void record(struct waf_eval *ev, size_t ri, size_t at)
{
	const struct waf_rule *r = &ev->rs->rules[ri];
	ev->matched[ri] = 1;
	bool detect = ev->plan->detect[ri];
	struct waf_verdict *v = ev->out;
	if (!detect) {
		v->score += r->score;
		v->groups |= r->groups;
	}
	v->total_hits++;
	if (v->nhits >= WAF_MAX_HITS)
		return;
	struct waf_hit *h = &v->hits[v->nhits++];
	h->rule_id = r->id;
	h->score = r->score;
	h->detect_only = detect;
	h->target = ev->kind;
	h->message = r->message;
	size_t nl = ev->nlen < sizeof(h->name) - 1 ? ev->nlen : sizeof(h->name) - 1;
	memcpy(h->name, ev->name ? ev->name : "", nl);
	h->name[nl] = '\0';
	if (secret_name(ev->name ? ev->name : "", ev->nlen) || ev->kind == WAF_TGT_COOKIES ||
	    (ev->kind == WAF_TGT_HEADERS && secret_name(ev->name, ev->nlen))) {
		/* cookie values and secret-looking arguments are never logged */
		snprintf(h->snippet, sizeof(h->snippet), "[redacted %zu bytes]", ev->curlen);
		return;
	}
	size_t start = at > WAF_SNIPPET / 2 ? at - WAF_SNIPPET / 2 : 0;
	size_t k = 0;
	for (size_t i = start; i < ev->curlen && k < WAF_SNIPPET; i++) {
		unsigned char c = (unsigned char)ev->cur[i];
		h->snippet[k++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '.';
	}
	h->snippet[k] = '\0';
}

enum { SCAN_RAW, SCAN_LITS, SCAN_MEMO };

static bool on_phrase(uint32_t id, size_t end, void *arg)
{
	struct waf_eval *ev = arg;
	size_t nr = ev->rs->nrules;
	if (id >= nr) {
		int32_t local = ev->plan->kinds[ev->kind].local_of[id - nr];
		if (ev->lit_into && local >= 0)
			SETBIT(ev->lit_into, (size_t)local);
		return false;
	}
	if (ev->matched[id] || !ev->plan->active[id] || ev->cur_mode == SCAN_LITS)
		return false;
	const struct waf_rule *r = &ev->rs->rules[id];
	int32_t ei = ev->plan->kinds[ev->kind].entry_of[id];
	if (ei < 0)
		return false;
	if (ev->cur_mode == SCAN_RAW) {
		/* the raw value: a phrase counts only for groups whose chain
		 * leaves this value as it is (case aside) */
		if (ev->plan->kinds[ev->kind].e[ei].tset & ~ev->noops_ci)
			return false;
	} else if (ev->entry_memo[ei] != ev->cur_mode - SCAN_MEMO) {
		return false; /* a memo: only for the groups whose chain made it */
	}
	if (applies(ev, r))
		record(ev, id, end);
	return false;
}

static bool not_within(const struct waf_rule *r, const char *v, size_t n)
{
	/* a media type is compared without its parameters */
	size_t end = 0;
	while (end < n && v[end] != ';')
		end++;
	while (end > 0 && (v[end - 1] == ' ' || v[end - 1] == '\t'))
		end--;
	size_t b = 0;
	while (b < end && (v[b] == ' ' || v[b] == '\t'))
		b++;
	for (size_t i = 0; i < r->nwords; i++) {
		const char *w = r->words[i];
		if (w[0] == '*') {
			size_t wl = strlen(w + 1);
			if (end - b >= wl && name_eq(v + end - wl, wl, w + 1))
				return false;
		} else if (name_eq(v + b, end - b, w)) {
			return false;
		}
	}
	return true;
}

static uint64_t mask_of(const struct waf_ruleset *rs, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	const uint64_t *cls = rs->cls;
	uint64_t a = 0, b = 0;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		a |= cls[p[i]] | cls[p[i + 1]];
		b |= cls[p[i + 2]] | cls[p[i + 3]];
	}
	for (; i < n; i++)
		a |= cls[p[i]];
	return a | b;
}

/* Whether a detector's or regex's necessary bytes occur in a value of class mask m. */
static bool may_match(const struct waf_rule *r, uint64_t m, size_t n)
{
	return n >= r->minlen && (!r->need_first || (m & r->need_first)) && (!r->need_last || (m & r->need_last));
}

static void run_other(struct waf_eval *ev, size_t ri, const char *s, size_t n, uint64_t m, int8_t *sqli, int8_t *xss)
{
	const struct waf_rule *r = &ev->rs->rules[ri];
	if (!ev->exhaustive && !may_match(r, m, n))
		return;
	switch (r->op) {
	case OP_REGEX: {
		int rc = pcre2_match(r->re, (PCRE2_SPTR)s, n, 0, 0, ev->md, ev->mctx);
		if (rc >= 0) {
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ev->md);
			record(ev, ri, ov[1]);
		} else if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT) {
			ev->out->regex_limits++;
		}
		break;
	}
	case OP_SQLI:
		if (*sqli < 0)
			*sqli = ev->exhaustive ? waf_sqli_detect_all(s, n, NULL) : waf_sqli_detect(s, n, NULL);
		if (*sqli)
			record(ev, ri, 0);
		break;
	case OP_XSS:
		if (*xss < 0)
			*xss = ev->exhaustive ? waf_xss_detect_all(s, n, NULL) : waf_xss_detect(s, n, NULL);
		if (*xss)
			record(ev, ri, 0);
		break;
	case OP_NOT_WITHIN:
		if (not_within(r, s, n))
			record(ev, ri, 0);
		break;
	case OP_LENGTH_OVER:
		if (n > r->length_over)
			record(ev, ri, 0);
		break;
	case OP_PHRASES:
	case OP_MISSING:
		break;
	}
}

/* Whether "--" occurs. */
static bool has_dashes(const char *s, size_t n)
{
	for (const char *p = memchr(s, '-', n); p && p + 1 < s + n; p = memchr(p + 1, '-', (size_t)(s + n - p - 1)))
		if (p[1] == '-')
			return true;
	return false;
}

/* One pass over the spaces: whether one is followed by a space (*twice),
 * and by a space, '/' or '(' (*before, what cmdline removes). */
static void space_pairs(const char *s, size_t n, bool *twice, bool *before)
{
	*twice = *before = false;
	for (const char *p = memchr(s, ' ', n); p && p + 1 < s + n; p = memchr(p + 1, ' ', (size_t)(s + n - p - 1))) {
		if (p[1] == ' ') {
			*twice = *before = true;
			return;
		}
		if (p[1] == '/' || p[1] == '(')
			*before = true;
	}
}

static bool path_is_normal(const char *s, size_t n)
{
	size_t i = n > 0 && s[0] == '/' ? 1 : 0;
	while (i < n) {
		size_t start = i;
		while (i < n && s[i] != '/')
			i++;
		size_t seg = i - start;
		if (seg == 0 || (seg == 1 && s[start] == '.') || (seg == 2 && s[start] == '.' && s[start + 1] == '.'))
			return false;
		if (i < n)
			i++;
	}
	return true;
}

static bool is_ws_byte(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0xa0;
}

/* The transforms (bits) that cannot change the value s (class mask m):
 * conservative, a transform not in the set is simply run. Lower case is a
 * no-op for a value without capitals. */
static unsigned raw_noops(const struct waf_ruleset *rs, const char *s, size_t n, uint64_t m, unsigned need,
                          unsigned *ci)
{
	const struct class_masks *c = &rs->cm;
	/* a transform no chain of the kind has is never asked about: "noop" */
	unsigned ok = ~need & ((1u << WAF_T_COUNT) - 1);
	*ci = 1u << WAF_T_LOWERCASE;
	if (!(m & c->url))
		ok |= 1u << WAF_T_URL_DECODE;
	if (!(m & c->amp))
		ok |= 1u << WAF_T_HTML_ENTITY;
	if (!(m & c->upper))
		ok |= 1u << WAF_T_LOWERCASE;
	bool sp_twice = false, sp_before = false;
	if ((m & c->space) && (need & ((1u << WAF_T_COMPRESS_WS) | (1u << WAF_T_CMDLINE))))
		space_pairs(s, n, &sp_twice, &sp_before);
	if ((need & (1u << WAF_T_COMPRESS_WS)) && !(m & c->ws_other) && !sp_twice)
		ok |= 1u << WAF_T_COMPRESS_WS;
	if ((need & (1u << WAF_T_REMOVE_COMMENTS)) && !(m & c->hash) && !((m & c->slash) && (m & c->star)) &&
	    (!(m & c->dash) || !has_dashes(s, n)))
		ok |= 1u << WAF_T_REMOVE_COMMENTS;
	if ((need & (1u << WAF_T_NORMALIZE_PATH)) && !(m & c->backslash) &&
	    (!(m & (c->slash | c->dot)) || path_is_normal(s, n)))
		ok |= 1u << WAF_T_NORMALIZE_PATH;
	if ((need & (1u << WAF_T_CMDLINE)) && !(m & (c->cmdline & ~c->upper)) && !sp_before)
		*ci |= 1u << WAF_T_CMDLINE; /* it lower-cases, and does nothing else here */
	if (!(m & c->upper))
		ok |= *ci & (1u << WAF_T_CMDLINE);
	if (!(m & c->nul))
		ok |= 1u << WAF_T_REMOVE_NULLS;
	if (m & ~c->base64)
		ok |= 1u << WAF_T_BASE64; /* a byte outside the alphabet: not base64, left as it is */
	if (!(m & c->backslash))
		ok |= 1u << WAF_T_JS_DECODE;
	if (n == 0 || (!is_ws_byte((unsigned char)s[0]) && !is_ws_byte((unsigned char)s[n - 1])))
		ok |= 1u << WAF_T_TRIM;
	*ci |= ok;
	return ok;
}

static unsigned memo_noops(struct waf_eval *ev, struct memo *mo)
{
	if (!mo->noops_known) {
		unsigned ci;
		mo->noops = raw_noops(ev->rs, mo->buf, mo->len, mo->mask, ev->need, &ci);
		mo->noops_known = true;
	}
	return mo->noops;
}

/* The memo made from memo `parent` (-1: the raw value) by step t, found or
 * made: its index, or -1 when out of memory. */
static int memo_child(struct waf_eval *ev, int parent, enum waf_transform t)
{
	for (size_t i = 0; i < ev->nmemo; i++)
		if (ev->memo[i].parent == parent && ev->memo[i].step == t)
			return (int)i;
	if (ev->nmemo == ev->cap_memo)
		return -1; /* not reached: one node per step of a chain at most */
	struct memo *mo = &ev->memo[ev->nmemo];
	const char *src = parent < 0 ? ev->raw : ev->memo[parent].buf;
	size_t len = parent < 0 ? ev->rawlen : ev->memo[parent].len;
	if (!grow(&mo->buf, &mo->cap, len + 1))
		return -1;
	memcpy(mo->buf, src, len);
	mo->len = waf_transform_apply(t, mo->buf, len); /* WAF_T_COUNT: a copy */
	mo->mask = mask_of(ev->rs, mo->buf, mo->len);
	mo->parent = parent;
	mo->step = t;
	mo->noops_known = mo->scan = false;
	mo->sqli = mo->xss = -1;
	mo->lits_done = mo->phrases_done = false;
	return (int)ev->nmemo++;
}

/* The value after chain[0..n) (a step that would change nothing is
 * skipped): a memo, or NULL when out of memory. A chain that leaves the raw
 * value as it is (only in exhaustive mode: callers ask for chains that
 * change it) gets a copy of it. */
static struct memo *transformed(struct waf_eval *ev, const enum waf_transform *chain, size_t n)
{
	int cur = -1;
	for (size_t k = 0; k < n; k++) {
		unsigned nz = cur < 0 ? ev->noops : memo_noops(ev, &ev->memo[cur]);
		if (nz & (1u << chain[k]))
			continue;
		if ((cur = memo_child(ev, cur, chain[k])) < 0)
			return NULL;
	}
	if (cur < 0 && (cur = memo_child(ev, -1, WAF_T_COUNT)) < 0)
		return NULL;
	return &ev->memo[cur];
}

/* Scans a transformed value for the literals of the kind's regex rules (once per memo). */
static void memo_lits(struct waf_eval *ev, struct memo *mo)
{
	if (mo->lits_done)
		return;
	zero_words(mo->lits, ev->nwords);
	ev->lit_into = mo->lits;
	ev->cur_mode = SCAN_LITS;
	waf_ac_search(ev->rs->uac, mo->buf, mo->len, on_phrase, ev);
	ev->lit_into = NULL;
	mo->lits_done = true;
}

/* One value of a target. One pass for its byte classes; the union
 * automaton once over it (the phrases of every group whose chain leaves
 * the value as it is, case aside, and the regex literals); a group's own
 * automaton only on the value its chain changed; and of the non-phrase
 * rules only those whose necessary byte classes and literals occur
 * (bitsets of the plan), each on the value its chain gives. */
/* The first 8 bytes of p as a word; of a shorter p, its first, middle and
 * last bytes (a sample is all the hash needs). */
static uint64_t load8(const char *p, size_t len)
{
	uint64_t w = 0;
	if (len >= 8) {
		memcpy(&w, p, 8);
		return w;
	}
	if (len == 0)
		return 0;
	const unsigned char *u = (const unsigned char *)p;
	return (uint64_t)u[0] | (uint64_t)u[len / 2] << 8 | (uint64_t)u[len - 1] << 16;
}

/* Picks a value's slot from a sample of its bytes (the start of the name,
 * the start, middle and end of the value) and the lengths: the slot's bytes
 * are compared whole, so the hash only has to spread the values a browser
 * sends (a User-Agent or a session cookie that changes changes at its end). */
static uint64_t clean_hash(int kind, const char *name, size_t nlen, const char *v, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull * (uint64_t)(kind + 1) ^ ((uint64_t)nlen << 32 | n);
	uint64_t mid = n > 16 ? load8(v + n / 2 - 4, 8) : 0, last = n > 8 ? load8(v + n - 8, 8) : 0;
	h = (h ^ load8(name, nlen)) * 0xff51afd7ed558ccdull;
	h ^= h >> 32;
	h = (h ^ load8(v, n)) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	h = (h ^ mid ^ (last << 1 | last >> 63)) * 0xff51afd7ed558ccdull;
	h ^= h >> 32;
	return h;
}

static struct clean *clean_slot(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen,
                                const char *v, size_t n, uint64_t *hash, bool *hit)
{
	*hit = false;
	if (!(CLEAN_KINDS & (1u << kind)) || ev->exhaustive || nlen + n > CLEAN_MAX)
		return NULL;
	*hash = clean_hash((int)kind, name, nlen, v, n);
	struct clean *set = &ev->clean[(*hash % (CLEAN_SLOTS / 2)) * 2];
	for (int w = 0; w < 2; w++) {
		struct clean *c = &set[w];
		if (c->kind == (int)kind && c->hash == *hash && c->pol == ev->pol && c->nlen == nlen && c->vlen == n &&
		    memcmp(c->bytes, name, nlen) == 0 && memcmp(c->bytes + nlen, v, n) == 0) {
			*hit = true;
			c->recent = true;
			set[1 - w].recent = false;
			return c;
		}
	}
	/* the slot a clean value would take: an empty one, else the older */
	int w = set[0].kind < 0 ? 0 : set[1].kind < 0 ? 1 : set[0].recent ? 1 : 0;
	return &set[w];
}

static void inspect_value(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen, const char *v,
                          size_t n);

/* A value of kind `kind` (with its name), and first the name itself as a
 * value of kind `names` when names is not WAF_TGT_COUNT (a header or a
 * cookie: the pair is remembered as one, under `kind`). The slot is
 * filled only when evaluated in full: nothing matched in the request so
 * far (the counts only grow: nothing before it either), no regex gave up. */
static void inspect_pair(struct waf_eval *ev, enum waf_target names, enum waf_target kind, const char *name,
                         size_t nlen, const char *v, size_t n)
{
	bool do_names = names != WAF_TGT_COUNT;
	if (do_names)
		ev->seen[names] = true;
	ev->seen[kind] = true;
	do_names = do_names && ev->plan->kinds[names].n != 0;
	bool do_value = ev->plan->kinds[kind].n != 0;
	if (!do_names && !do_value)
		return;
	if (!name)
		nlen = 0;
	/* a name inspected as the value (args_names) is keyed by its bytes once */
	size_t klen = name == v ? 0 : nlen;
	uint64_t hash = 0;
	bool hit;
	struct clean *c = clean_slot(ev, kind, name, klen, v, n, &hash, &hit);
	if (hit)
		return;
	if (do_names)
		inspect_value(ev, names, name, nlen, name, nlen);
	if (do_value)
		inspect_value(ev, kind, name, nlen, v, n);
	if (c && ev->out->total_hits == 0 && ev->out->regex_limits == 0) {
		c->hash = hash;
		c->pol = ev->pol;
		c->kind = (int)kind;
		c->nlen = (uint16_t)klen;
		c->vlen = (uint16_t)n;
		memcpy(c->bytes, name, klen);
		memcpy(c->bytes + klen, v, n);
		/* now the newer of its set */
		struct clean *set = &ev->clean[(size_t)(c - ev->clean) & ~(size_t)1];
		set[0].recent = c == &set[0];
		set[1].recent = c == &set[1];
	}
}

static void inspect(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen, const char *v, size_t n)
{
	if (CLEAN_KINDS & (1u << kind)) {
		inspect_pair(ev, WAF_TGT_COUNT, kind, name, nlen, v, n);
		return;
	}
	ev->seen[kind] = true;
	if (ev->plan->kinds[kind].n != 0)
		inspect_value(ev, kind, name, name ? nlen : 0, v, n);
}

static void inspect_value(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen, const char *v,
                          size_t n)
{
	const struct plan_kind *pk = &ev->plan->kinds[kind];
	if (n > MAX_VALUE)
		n = MAX_VALUE;
	const struct waf_ruleset *rs = ev->rs;
	ev->kind = kind;
	ev->name = name ? name : "";
	ev->nlen = name ? nlen : 0;
	ev->name_bit = -1;
	for (size_t i = 0; i < pk->nnames && name; i++)
		if (pk->name_len[i] == nlen && strncasecmp(name, pk->names[i], nlen) == 0) {
			ev->name_bit = (int)i;
			break;
		}
	ev->raw = v;
	ev->rawlen = n;
	uint64_t m = mask_of(rs, v, n);
	ev->need = pk->tset;
	/* what the transforms do depends on the bytes themselves only through
	 * spaces, dashes, slashes, dots and other whitespace (pairs, segments,
	 * ends); without them the class mask decides, and values of one
	 * request mostly share a few masks */
	struct noops_memo *nm = &ev->nm[(size_t)(((m ^ ev->need) * 0x9e3779b97f4a7c15ull) >> 32) % NOOPS_MEMO];
	if (!(m & rs->cm.by_content) && nm->valid && nm->mask == m && nm->need == ev->need) {
		ev->noops = nm->noops;
		ev->noops_ci = nm->noops_ci;
	} else {
		ev->noops = raw_noops(rs, v, n, m, ev->need, &ev->noops_ci);
		if (!(m & rs->cm.by_content))
			*nm = (struct noops_memo){.valid = true, .mask = m, .need = ev->need, .noops = ev->noops,
			                          .noops_ci = ev->noops_ci};
	}
	if (ev->exhaustive)
		ev->noops = ev->noops_ci = 0; /* every chain runs, every rule is a candidate */
	ev->raw_sqli = ev->raw_xss = ev->b64 = -1;
	ev->nmemo = 0;
	size_t nw = pk->nw;
	zero_words(ev->lit_raw, nw);
	if ((pk->phrases || pk->any_lits) && rs->uac) {
		ev->lit_into = ev->lit_raw;
		ev->cur = v;
		ev->curlen = n;
		ev->cur_mode = SCAN_RAW;
		waf_ac_search(rs->uac, v, n, on_phrase, ev);
		ev->lit_into = NULL;
	}
	uint64_t *nonid = ev->nonid, *cand = ev->cand;
	zero_words(nonid, nw);
	if (pk->tset & ~ev->noops_ci) {
		/* groups whose chain changes the value: their phrases are looked
		 * for in what the chain makes of it, one scan per distinct result */
		size_t enw = pk->enw;
		zero_words(ev->ents, enw);
		for (unsigned t = pk->tset & ~ev->noops_ci; t; t &= t - 1)
			for (size_t w = 0; w < enw; w++)
				ev->ents[w] |= pk->with[(size_t)__builtin_ctz(t) * enw + w];
		for (size_t i = 0; i < pk->n; i++)
			ev->entry_memo[i] = -1;
		for (size_t ew = 0; ew < enw; ew++) {
			for (uint64_t ex = ev->ents[ew]; ex; ex &= ex - 1) {
				size_t i = ew * 64 + (size_t)__builtin_ctzll(ex);
				const struct entry *e = &pk->e[i];
				for (size_t w = 0; w < nw; w++)
					nonid[w] |= pk->of_entry[i * nw + w];
				if (!e->phrases ||
				    !(e->phrase_all || (ev->name_bit >= 0 && (e->phrase_names >> ev->name_bit) & 1)))
					continue;
				const struct group *gr = &rs->groups[e->group];
				struct memo *mo = transformed(ev, gr->chain, e->nchain_ci);
				if (!mo)
					return;
				mo->scan = true;
				ev->entry_memo[i] = (int32_t)(mo - ev->memo);
			}
		}
		for (size_t q = 0; q < ev->nmemo; q++) {
			struct memo *mo = &ev->memo[q];
			if (!mo->scan)
				continue;
			zero_words(mo->lits, nw);
			ev->lit_into = mo->lits;
			ev->cur = mo->buf;
			ev->curlen = mo->len;
			ev->cur_mode = SCAN_MEMO + (int)q;
			waf_ac_search(rs->uac, mo->buf, mo->len, on_phrase, ev);
			ev->lit_into = NULL;
			mo->lits_done = mo->phrases_done = true;
		}
	}
	/* the candidates: byte classes and literals decide for values the chain
	 * leaves as they are (case aside); the others are checked one by one */
	for (size_t w = 0; w < nw; w++) {
		uint64_t f = pk->first_any[w], l = pk->last_any[w];
		for (uint64_t x = m; x; x &= x - 1) {
			size_t c = (size_t)__builtin_ctzll(x);
			f |= pk->first[c * nw + w];
			l |= pk->last[c * nw + w];
		}
		cand[w] = (f & l & (ev->lit_raw[w] | ~pk->lits[w]) & ~nonid[w]) | nonid[w];
		if (ev->exhaustive)
			cand[w] = ~0ull;
	}
	for (size_t w = 0; w < nw; w++) {
		for (uint64_t x = cand[w]; x; x &= x - 1) {
			size_t j = w * 64 + (size_t)__builtin_ctzll(x);
			if (j >= pk->no)
				break;
			const struct orule *o = &pk->o[j];
			size_t ri = o->ri;
			const struct waf_rule *r = &rs->rules[ri];
			if (ev->matched[ri] || !(o->all_names || (ev->name_bit >= 0 && (o->names >> ev->name_bit) & 1)))
				continue;
			if (ev->pol->nexclude_targets && !applies(ev, r))
				continue;
			const struct entry *e = &pk->e[o->entry];
			if (e->base64_last && (e->tset & ~ev->noops) == 1u << WAF_T_BASE64 && !ev->exhaustive) {
				/* only the last step, base64, changes the value: its
				 * bytes' classes, without decoding, decide first */
				if (ev->b64 < 0)
					ev->b64 = waf_base64_classes(v, n, rs->cls, &ev->b64_mask, &ev->b64_len);
				if (!ev->b64) {
					ev->cur = v; /* not base64: the chain leaves it as it is */
					ev->curlen = n;
					run_other(ev, ri, v, n, m, &ev->raw_sqli, &ev->raw_xss);
					continue;
				}
				if (!may_match(r, ev->b64_mask, ev->b64_len))
					continue;
			}
			if (!(e->tset & ~ev->noops)) {
				ev->cur = v;
				ev->curlen = n;
				run_other(ev, ri, v, n, m, &ev->raw_sqli, &ev->raw_xss);
				continue;
			}
			const struct group *gr = &rs->groups[e->group];
			struct memo *mo = transformed(ev, gr->chain, gr->nchain);
			if (!mo)
				return;
			if (!ev->exhaustive && !may_match(r, mo->mask, mo->len))
				continue;
			if (r->lits && HASBIT(nonid, j) && !ev->exhaustive) {
				memo_lits(ev, mo);
				if (!HASBIT(mo->lits, j))
					continue;
			}
			ev->cur = mo->buf;
			ev->curlen = mo->len;
			run_other(ev, ri, mo->buf, mo->len, mo->mask, &mo->sqli, &mo->xss);
		}
	}
}

static bool visit_arg(void *arg, enum waf_arg_kind kind, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct waf_eval *ev = arg;
	if (kind == WAF_ARG_FILE) {
		inspect(ev, WAF_TGT_FILES, name, nlen, value, vlen);
		inspect(ev, WAF_TGT_ARGS_NAMES, name, nlen, name, nlen);
		return true;
	}
	inspect(ev, WAF_TGT_ARGS_NAMES, name, nlen, name, nlen);
	inspect(ev, WAF_TGT_ARGS, name, nlen, value, vlen);
	return true;
}

static void cookies(struct waf_eval *ev, const char *v, size_t n)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == ';'))
			i++;
		size_t start = i;
		const char *semi = memchr(v + i, ';', n - i);
		i = semi ? (size_t)(semi - v) : n;
		const char *eqp = memchr(v + start, '=', i - start);
		size_t eq = eqp ? (size_t)(eqp - v) : i;
		if (i > start) {
			const char *val = eq < i ? v + eq + 1 : v + i;
			size_t vl = eq < i ? i - eq - 1 : 0;
			inspect_pair(ev, WAF_TGT_COOKIES_NAMES, WAF_TGT_COOKIES, v + start, eq - start, val, vl);
		}
	}
}

void waf_evaluate(struct waf_eval *ev, const struct waf_policy *pol, const struct waf_request *req,
                  struct waf_verdict *out)
{
	const struct waf_ruleset *rs = ev->rs;
	/* the hits are written as they are recorded: the rest of out is what needs zeroing */
	out->score = 0;
	out->block = false;
	out->nhits = out->total_hits = 0;
	out->groups = 0;
	out->regex_limits = 0;
	memset(ev->seen, 0, sizeof(ev->seen));
	ev->pol = pol;
	ev->out = out;
	ev->plan = pol->plan;
	if (!ev->plan || ev->plan->rs != rs) {
		/* an unprepared policy: planned for this call */
		plan_free(ev->own_plan);
		ev->own_plan = plan_new(rs, pol);
		ev->plan = ev->own_plan;
		if (!ev->plan)
			return;
	}
	memset(ev->matched, 0, rs->nrules);
	size_t need = req->target_len + req->body_len + 1;
	if (!grow(&ev->scratch, &ev->scap, need))
		return;
	inspect(ev, WAF_TGT_METHOD, NULL, 0, req->method, req->method_len);
	const char *q = memchr(req->target, '?', req->target_len);
	size_t plen = q ? (size_t)(q - req->target) : req->target_len;
	/* the path, percent-decoded once, as the application sees it */
	memcpy(ev->scratch, req->target, plen);
	size_t dl = plen;
	for (size_t i = 0; i < dl; i++)
		if (ev->scratch[i] == '+')
			ev->scratch[i] = '\x01'; /* '+' is literal in a path: keep it through the decoder */
	dl = waf_url_decode(ev->scratch, dl);
	for (size_t i = 0; i < dl; i++)
		if (ev->scratch[i] == '\x01')
			ev->scratch[i] = '+';
	inspect(ev, WAF_TGT_PATH, NULL, 0, ev->scratch, dl);
	const char *err = NULL;
	if (q) {
		size_t ql = req->target_len - plen - 1;
		inspect(ev, WAF_TGT_QUERY, NULL, 0, q + 1, ql);
		(void)waf_parse_urlencoded(q + 1, ql, ev->scratch, visit_arg, ev, &err);
	}
	const char *ct = NULL;
	size_t ctlen = 0;
	for (size_t i = 0; i < req->nheaders; i++) {
		const struct waf_field *f = &req->headers[i];
		char first = (char)(f->nlen ? f->name[0] | 0x20 : 0);
		if (f->nlen == 6 && first == 'c' && name_eq(f->name, f->nlen, "cookie")) {
			cookies(ev, f->value, f->vlen);
			continue;
		}
		if (f->nlen == 12 && first == 'c' && name_eq(f->name, f->nlen, "content-type")) {
			ct = f->value;
			ctlen = f->vlen;
		}
		inspect_pair(ev, WAF_TGT_HEADERS_NAMES, WAF_TGT_HEADERS, f->name, f->nlen, f->value, f->vlen);
	}
	if (req->body && req->body_len > 0) {
		enum waf_body_kind bk = ct ? waf_body_kind_of(ct, ctlen) : WAF_BODY_OTHER;
		bool ok = true;
		err = NULL;
		if (bk == WAF_BODY_URLENCODED)
			ok = waf_parse_urlencoded(req->body, req->body_len, ev->scratch, visit_arg, ev, &err);
		else if (bk == WAF_BODY_JSON)
			ok = waf_parse_json(req->body, req->body_len, ev->scratch, visit_arg, ev, &err);
		else if (bk == WAF_BODY_MULTIPART)
			ok = waf_parse_multipart(ct, ctlen, req->body, req->body_len, ev->scratch, visit_arg, ev, &err);
		else
			inspect(ev, WAF_TGT_BODY, NULL, 0, req->body, req->body_len);
		if (!ok && err)
			inspect(ev, WAF_TGT_BODY_ERROR, NULL, 0, err, strlen(err));
	}
	/* `missing`: a rule whose target (e.g. headers:user-agent) was never seen */
	for (size_t k = 0; k < ev->plan->nmissing; k++) {
		size_t i = ev->plan->missing[k];
		const struct waf_rule *r = &rs->rules[i];
		bool present = false;
		for (size_t t = 0; t < r->ntargets && !present; t++) {
			const struct rule_target *rt = &r->targets[t];
			if (rt->kind == WAF_TGT_HEADERS && rt->name) {
				for (size_t h = 0; h < req->nheaders && !present; h++)
					present = name_eq(req->headers[h].name, req->headers[h].nlen, rt->name);
			} else {
				present = ev->seen[rt->kind];
			}
		}
		if (!present) {
			ev->kind = r->targets[0].kind;
			ev->name = r->targets[0].name ? r->targets[0].name : "";
			ev->nlen = strlen(ev->name);
			ev->cur = "";
			ev->curlen = 0;
			record(ev, i, 0);
		}
	}
	out->block = out->score >= pol->threshold;
}
