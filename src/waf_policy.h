/* waf_policy.h - how a route applies the rule set: paranoia level,
 * threshold, rules and targets excluded, rules tried in detect mode
 * (a route's `waf` settings, docs/waf.md), and the plan worked out from them
 * once: per target kind, which rule groups and rules run, as bitsets the
 * evaluator combines per value (layout: waf_compiled.h).
 *
 * The caller owns a struct waf_policy and what it points to. The plan is
 * built on the main thread when a snapshot is built (modules/waf.c) and only
 * read afterwards, by any number of workers' evaluators at once.
 */
#ifndef SLUICE_WAF_POLICY_H
#define SLUICE_WAF_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "waf_rules.h"

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

/* Works out once what a policy runs for each target kind (active rules,
 * groups, names), into pol->plan; false when out of memory. Call it after
 * filling the policy and before evaluating with it; the plan belongs to
 * the rule set it was prepared for. waf_policy_release() frees the plan.
 * A policy without a plan still evaluates, planned on every call (slow). */
bool waf_policy_prepare(const struct waf_ruleset *rs, struct waf_policy *pol);
void waf_policy_release(struct waf_policy *pol);

#endif
