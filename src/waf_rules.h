/* waf_rules.h - the WAF rule set: loading lua/waf/ rules and compiling them
 * into per-target matchers (docs/waf.md). A policy over the set is planned
 * by waf_policy.h; a request is evaluated by waf_eval.h.
 *
 * Loading (main thread, at snapshot build or by `sluice waf test`): every
 * *.lua file of a directory, in name order, is evaluated in the config
 * sandbox (conf_sandbox.h: no io/os, a budget, a memory cap) and returns a
 * list of rule tables {id, paranoia, severity, targets, transforms, operator,
 * message, tags, mode}. Every error is reported as "FILE: rules[N].KEY:
 * message"; a set with any error is not built. Compiling groups rules by
 * transform chain and puts every phrase, and literals read from each regex
 * (one of which every match contains), into one Aho-Corasick automaton.
 *
 * A struct waf_ruleset is immutable after waf_rules_load() and shared by all
 * workers; its owner frees it (waf_rules_free()) after every policy plan and
 * evaluator made for it. Its layout is in waf_compiled.h, for the WAF's own
 * files.
 */
#ifndef SLUICE_WAF_RULES_H
#define SLUICE_WAF_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

enum waf_target {
	WAF_TGT_PATH,          /* the path, percent-decoded once, no query */
	WAF_TGT_QUERY,         /* the raw query string */
	WAF_TGT_ARGS,          /* query and body argument values */
	WAF_TGT_ARGS_NAMES,
	WAF_TGT_COOKIES,
	WAF_TGT_COOKIES_NAMES,
	WAF_TGT_HEADERS,       /* header values (not Cookie: see cookies) */
	WAF_TGT_HEADERS_NAMES,
	WAF_TGT_METHOD,
	WAF_TGT_FILES,         /* multipart file names */
	WAF_TGT_BODY,          /* a body of another type, raw */
	WAF_TGT_BODY_ERROR,    /* the parser's message when a body could not be parsed */
	WAF_TGT_COUNT
};

struct waf_rule; /* opaque */
struct waf_ruleset;

/* Loads every *.lua in dir; NULL with errs filled on any error. */
struct waf_ruleset *waf_rules_load(const char *dir, struct conf_errors *errs);
void waf_rules_free(struct waf_ruleset *rs);
size_t waf_rules_count(const struct waf_ruleset *rs);
/* The rule with this id, or NULL; and its tags (NULL-terminated). */
const struct waf_rule *waf_rules_find(const struct waf_ruleset *rs, uint32_t id);
const char *const *waf_rule_tags(const struct waf_rule *r);

/* "args", "args:NAME", "cookies:NAME", "headers:NAME", ...: false if unknown.
 * *name is set to the part after ':' (or NULL), pointing into spec. */
bool waf_target_parse(const char *spec, enum waf_target *kind, const char **name);
const char *waf_target_name(enum waf_target t);

#endif
