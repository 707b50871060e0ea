/* waf_rules.h - the WAF rule set: loading lua/waf/ rules, compiling them into
 * per-target matchers, and evaluating a request (docs/waf.md).
 *
 * Loading (main thread, at snapshot build or by `sluice waf test`): every
 * *.lua file of a directory, in name order, is evaluated in the config
 * sandbox (conf_sandbox.h: no io/os, a budget, a memory cap) and returns a
 * list of rule tables {id, paranoia, severity, targets, transforms, operator,
 * message, tags, mode}. Every error is reported as "FILE: rules[N].KEY:
 * message"; a set with any error is not built. Compiling groups rules by
 * transform chain and puts every phrase, and literals read from each regex
 * (one of which every match contains), into one Aho-Corasick automaton.
 * Evaluating a value: its byte classes (one pass) say which transform steps
 * would leave it as it is (skipped, so chains that then coincide share one
 * transformed copy), the automaton scans the raw value and each distinct
 * transformed value once, and only the regex and detector rules whose
 * necessary byte classes and literals occur run. waf_eval_exhaustive()
 * turns every shortcut off (same verdicts, for tests).
 *
 * A struct waf_ruleset is immutable after waf_rules_load() and shared by all
 * workers. A struct waf_eval holds one evaluator's scratch (PCRE2 match data,
 * a buffer): one per worker or per thread, never shared.
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

struct waf_field {
	const char *name;
	size_t nlen;
	const char *value;
	size_t vlen;
};

struct waf_request {
	const char *method;
	size_t method_len;
	const char *target; /* origin-form request target: path and query as received */
	size_t target_len;
	const struct waf_field *headers;
	size_t nheaders;
	const char *body; /* NULL: not inspected */
	size_t body_len;
};

struct waf_rule; /* opaque */
struct waf_ruleset;
struct waf_plan;

/* A target exclusion: kind, and a name (NULL: every name). rule_id 0: all rules. */
struct waf_exclusion {
	uint32_t rule_id;
	enum waf_target kind;
	char *name;
};

/* How a rule set is applied (a route's `waf` settings). Owned by the caller. */
struct waf_policy {
	int paranoia;                 /* 1..4: rules of a higher level do not run */
	int threshold;                /* inbound anomaly score that blocks (default 5) */
	const uint32_t *exclude_ids;
	size_t nexclude_ids;
	const char *const *exclude_tags;
	size_t nexclude_tags;
	const struct waf_exclusion *exclude_targets;
	size_t nexclude_targets;
	const uint32_t *detect_ids;   /* rules that run (whatever their paranoia) but never count towards a block */
	size_t ndetect_ids;
	struct waf_plan *plan;        /* waf_policy_prepare(): what runs per target kind, worked out once */
};

#define WAF_MAX_HITS 16
#define WAF_SNIPPET 64

struct waf_hit {
	uint32_t rule_id;
	int score;
	bool detect_only;
	enum waf_target target;
	char name[48];                 /* the argument, cookie or header name, truncated */
	char snippet[WAF_SNIPPET + 1]; /* around the match, printable, redacted for secret-looking names */
	const char *message;           /* the rule's, lives as long as the rule set */
};

struct waf_verdict {
	int score;          /* counting rules */
	bool block;         /* score >= threshold */
	size_t nhits;       /* recorded hits (at most WAF_MAX_HITS) */
	size_t total_hits;
	uint32_t groups;    /* the rule groups of the counting hits: bits of enum ctr_waf_group (counters.h) */
	unsigned regex_limits; /* regex matches that gave up at their match or depth limit (no match assumed) */
	struct waf_hit hits[WAF_MAX_HITS];
};

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

/* Works out once what a policy runs for each target kind (active rules,
 * groups, names), into pol->plan; false when out of memory. Call it after
 * filling the policy and before evaluating with it; the plan belongs to
 * the rule set it was prepared for. waf_policy_release() frees the plan.
 * A policy without a plan still evaluates, planned on every call (slow). */
bool waf_policy_prepare(const struct waf_ruleset *rs, struct waf_policy *pol);
void waf_policy_release(struct waf_policy *pol);

struct waf_eval;
struct waf_eval *waf_eval_new(const struct waf_ruleset *rs);
void waf_eval_free(struct waf_eval *ev);
/* on: every chain runs on every value and every rule on every value of its
 * targets, without the shortcuts (byte classes, regex literals, chains that
 * leave a value as it is, the detectors' own): the same verdicts, slower.
 * For checking the shortcuts (`sluice waf test --exhaustive`). */
void waf_eval_exhaustive(struct waf_eval *ev, bool on);
/* Runs the rule set on a request. */
void waf_evaluate(struct waf_eval *ev, const struct waf_policy *pol, const struct waf_request *req,
                  struct waf_verdict *out);

#endif
