/* waf_rules.c - loading and compiling the rule set (waf_rules.h). */
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

#include "conf_sandbox.h"
#include "counters.h"
#include "conf_schema.h"
#include "waf_ac.h"
#include "waf_compiled.h"
#include "waf_lits.h"
#include "waf_transform.h"
#include "waf_xss.h"

/* Byte classes: one bit per ASCII punctuation byte and one per kind of the
 * other bytes. A value's class mask (the OR over its bytes, one pass) says
 * which transforms can change it and which rules cannot match it. */
enum { BC_SPACE = 32, BC_LOWER, BC_UPPER, BC_DIGIT, BC_NUL, BC_CTRL, BC_WSCTRL, BC_NBSP, BC_HIGH };
static const char punct[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

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
	struct waf_litset *lits; /* a regex's literal prefilter */
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
				struct waf_litset *ls = conf_xcalloc(1, sizeof(*ls));
				if (waf_lits_of_regex(pat, len, ls))
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
	if (nfiles > 1) /* qsort's array may not be NULL, even empty */
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
