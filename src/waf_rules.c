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

#include "conf_sandbox.h"
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
	char *message;
	char **tags; /* NULL-terminated */
};

struct group {
	enum waf_transform chain[MAX_CHAIN];
	size_t nchain;
	struct waf_ac *ac;      /* phrases of the group's phrase rules; ids: rule indexes */
	size_t *others;         /* indexes of the group's non-phrase rules */
	size_t nothers;
	uint32_t target_mask;  /* kinds some rule of the group reads */
	uint32_t phrase_mask;  /* kinds some phrase rule reads: the automaton runs only for those */
};

struct waf_ruleset {
	struct waf_rule *rules;
	size_t nrules;
	struct group *groups;
	size_t ngroups;
};

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

static const char *const rule_keys[] = {"id",      "paranoia", "severity", "targets", "transforms",
                                        "operator", "message",  "tags",     "mode",    NULL};
static const char *const operator_keys[] = {"phrases", "regex", "sqli", "xss", "not_within", "missing",
                                            "length_over", NULL};

struct pending_phrases {
	char **phrases;
	size_t n;
};

static bool read_rule(lua_State *L, struct loader *ld, struct waf_rule *r, struct pending_phrases *pp,
                      enum waf_transform *chain, size_t *nchain)
{
	int t = lua_gettop(L);
	memset(r, 0, sizeof(*r));
	pp->phrases = NULL;
	pp->n = 0;
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
			}
		}
	}
	lua_pop(L, 1);
	if (lua_getfield(L, o, "sqli") != LUA_TNIL)
		r->op = OP_SQLI;
	lua_pop(L, 1);
	if (lua_getfield(L, o, "xss") != LUA_TNIL)
		r->op = OP_XSS;
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
	/* compile the groups */
	for (size_t g = 0; g < rs->ngroups; g++) {
		struct group *gr = &rs->groups[g];
		for (size_t i = 0; i < rs->nrules; i++) {
			struct waf_rule *r = &rs->rules[i];
			if (r->group != g)
				continue;
			gr->target_mask |= r->target_mask;
			if (r->op == OP_PHRASES) {
				gr->phrase_mask |= r->target_mask;
				if (!gr->ac)
					gr->ac = waf_ac_new();
				for (size_t k = 0; gr->ac && k < pend[i].n; k++)
					if (!waf_ac_add(gr->ac, pend[i].phrases[k], strlen(pend[i].phrases[k]), (uint32_t)i))
						conf_errors_add(errs, "rule %u: out of memory adding phrases", r->id);
			} else {
				gr->others = conf_xreallocarray(gr->others, gr->nothers + 1, sizeof(size_t));
				gr->others[gr->nothers++] = i;
			}
		}
		if (gr->ac && !waf_ac_compile(gr->ac))
			conf_errors_add(errs, "%s: out of memory compiling phrases", dir);
	}
	for (size_t i = 0; i < rs->nrules; i++)
		free_list(pend[i].phrases);
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
	for (size_t g = 0; g < rs->ngroups; g++) {
		waf_ac_free(rs->groups[g].ac);
		free(rs->groups[g].others);
	}
	free(rs->groups);
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

struct waf_eval {
	const struct waf_ruleset *rs;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	char *tbuf[MAX_CHAIN];   /* tbuf[d]: the value after the chain's first d+1 transforms */
	size_t tcap[MAX_CHAIN];
	char *scratch; /* body and query parsing */
	size_t scap;
	uint8_t *matched; /* per rule: already counted for this request */
	uint8_t *active;  /* per rule: runs under the current policy */
	/* per request */
	const struct waf_policy *pol;
	struct waf_verdict *out;
	bool seen[WAF_TGT_COUNT]; /* a value of this kind was visited */
	/* the value being matched */
	enum waf_target kind;
	const char *name;
	size_t nlen;
	const char *cur;
	size_t curlen;
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
	ev->active = calloc(rs->nrules + 1, 1);
	if (!ev->md || !ev->mctx || !ev->matched || !ev->active) {
		waf_eval_free(ev);
		return NULL;
	}
	/* a pathological regex gives up instead of holding the worker */
	pcre2_set_match_limit(ev->mctx, 100000);
	pcre2_set_depth_limit(ev->mctx, 5000);
	return ev;
}

void waf_eval_free(struct waf_eval *ev)
{
	if (!ev)
		return;
	pcre2_match_data_free(ev->md);
	pcre2_match_context_free(ev->mctx);
	for (int d = 0; d < MAX_CHAIN; d++)
		free(ev->tbuf[d]);
	free(ev->scratch);
	free(ev->matched);
	free(ev->active);
	free(ev);
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
	bool detect = r->detect;
	for (size_t i = 0; i < ev->pol->ndetect_ids; i++)
		detect |= ev->pol->detect_ids[i] == r->id;
	struct waf_verdict *v = ev->out;
	if (!detect)
		v->score += r->score;
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

static bool on_phrase(uint32_t id, size_t end, void *arg)
{
	struct waf_eval *ev = arg;
	if (ev->active[id] && !ev->matched[id] && applies(ev, &ev->rs->rules[id]))
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

static void run_other(struct waf_eval *ev, size_t ri, const char *s, size_t n)
{
	const struct waf_rule *r = &ev->rs->rules[ri];
	switch (r->op) {
	case OP_REGEX: {
		int rc = pcre2_match(r->re, (PCRE2_SPTR)s, n, 0, 0, ev->md, ev->mctx);
		if (rc >= 0) {
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ev->md);
			record(ev, ri, ov[1]);
		}
		break;
	}
	case OP_SQLI:
		if (waf_sqli_detect(s, n, NULL))
			record(ev, ri, 0);
		break;
	case OP_XSS:
		if (waf_xss_detect(s, n, NULL))
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

/* One value of a target: every group with a rule for this kind. Groups are
 * sorted by chain, so consecutive groups share prefixes: the value after
 * each step is kept (tbuf) and a group starts from the longest prefix it
 * shares with the group run before it. */
static void inspect(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen, const char *v, size_t n)
{
	ev->seen[kind] = true;
	if (n > MAX_VALUE)
		n = MAX_VALUE;
	ev->kind = kind;
	ev->name = name ? name : "";
	ev->nlen = name ? nlen : 0;
	const struct waf_ruleset *rs = ev->rs;
	const struct group *prev = NULL;
	size_t lens[MAX_CHAIN];
	for (size_t g = 0; g < rs->ngroups; g++) {
		const struct group *gr = &rs->groups[g];
		if (!(gr->target_mask & (1u << kind)))
			continue;
		size_t k = 0;
		while (prev && k < gr->nchain && k < prev->nchain && gr->chain[k] == prev->chain[k])
			k++;
		for (size_t d = k; d < gr->nchain; d++) {
			if (!grow(&ev->tbuf[d], &ev->tcap[d], n + 1))
				return;
			const char *src = d == 0 ? v : ev->tbuf[d - 1];
			size_t slen = d == 0 ? n : lens[d - 1];
			memcpy(ev->tbuf[d], src, slen);
			lens[d] = waf_transform_apply(gr->chain[d], ev->tbuf[d], slen);
		}
		prev = gr;
		ev->cur = gr->nchain ? ev->tbuf[gr->nchain - 1] : v;
		ev->curlen = gr->nchain ? lens[gr->nchain - 1] : n;
		if (gr->ac && (gr->phrase_mask & (1u << kind)))
			waf_ac_search(gr->ac, ev->cur, ev->curlen, on_phrase, ev);
		for (size_t j = 0; j < gr->nothers; j++) {
			size_t ri = gr->others[j];
			if (ev->active[ri] && !ev->matched[ri] && applies(ev, &rs->rules[ri]))
				run_other(ev, ri, ev->cur, ev->curlen);
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
		while (i < n && v[i] != ';')
			i++;
		size_t eq = start;
		while (eq < i && v[eq] != '=')
			eq++;
		if (i > start) {
			inspect(ev, WAF_TGT_COOKIES_NAMES, v + start, eq - start, v + start, eq - start);
			const char *val = eq < i ? v + eq + 1 : v + i;
			size_t vl = eq < i ? i - eq - 1 : 0;
			inspect(ev, WAF_TGT_COOKIES, v + start, eq - start, val, vl);
		}
	}
}

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

void waf_evaluate(struct waf_eval *ev, const struct waf_policy *pol, const struct waf_request *req,
                  struct waf_verdict *out)
{
	const struct waf_ruleset *rs = ev->rs;
	memset(out, 0, sizeof(*out));
	memset(ev->seen, 0, sizeof(ev->seen));
	ev->pol = pol;
	ev->out = out;
	for (size_t i = 0; i < rs->nrules; i++) {
		ev->matched[i] = 0;
		ev->active[i] = rule_active(&rs->rules[i], pol);
	}
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
		if (name_eq(f->name, f->nlen, "cookie")) {
			cookies(ev, f->value, f->vlen);
			continue;
		}
		if (name_eq(f->name, f->nlen, "content-type")) {
			ct = f->value;
			ctlen = f->vlen;
		}
		inspect(ev, WAF_TGT_HEADERS_NAMES, f->name, f->nlen, f->name, f->nlen);
		inspect(ev, WAF_TGT_HEADERS, f->name, f->nlen, f->value, f->vlen);
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
	for (size_t i = 0; i < rs->nrules; i++) {
		const struct waf_rule *r = &rs->rules[i];
		if (r->op != OP_MISSING || !ev->active[i])
			continue;
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
