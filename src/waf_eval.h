/* waf_eval.h - evaluating a request against the rule set under a policy:
 * a score, the block decision and the hits (docs/waf.md).
 *
 * Evaluating a value: its byte classes (one pass) say which transform steps
 * would leave it as it is (skipped, so chains that then coincide share one
 * transformed copy), the automaton scans the raw value and each distinct
 * transformed value once, and only the regex and detector rules whose
 * necessary byte classes and literals occur run. waf_eval_exhaustive()
 * turns every shortcut off (same verdicts, for tests).
 *
 * A struct waf_eval holds one evaluator's scratch (PCRE2 match data,
 * buffers, memos, the values it found clean): one per worker or per thread,
 * never shared; made for one rule set, which must outlive it. The request,
 * the policy and the verdict are the caller's; hits point into the rule set.
 */
#ifndef SLUICE_WAF_EVAL_H
#define SLUICE_WAF_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "waf_policy.h"
#include "waf_rules.h"

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
