/* conf_waf.h - the WAF module's config section (docs/configuration.md, "waf").
 *
 *   waf = { paranoia = 1, mode = "block", threshold = 5, rules = "lua/waf",
 *           audit_log = "/var/log/sluice/waf.jsonl",
 *           exclude = { rules = { 942100 }, tags = { "attack-xss" },
 *                       targets = { "args:password", "cookies:session",
 *                                   { target = "args:q", rules = { 19001 } } } },
 *           detect_rules = { 18011 } }
 * at top level enables the WAF for every route; a route says `waf = false`
 * to opt out or `waf = { ... }` to override paranoia, mode, threshold and
 * add exclusions and detect rules of its own (exclusions add up). A route's
 * `waf` table without a top-level one enables the WAF for that route only.
 *
 * Ownership: struct conf_waf belongs to the conf (conf->waf), freed with it.
 */
#ifndef SLUICE_CONF_WAF_H
#define SLUICE_CONF_WAF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf_schema.h"
#include "waf_policy.h"

struct conf_waf_opts {
	bool has_paranoia, has_threshold, has_mode;
	int paranoia;
	int threshold;
	bool detect; /* mode = "detect": log, never block */
	uint32_t *exclude_ids;
	size_t num_exclude_ids;
	char **exclude_tags;
	size_t num_exclude_tags;
	struct waf_exclusion *exclude_targets;
	size_t num_exclude_targets;
	uint32_t *detect_ids;
	size_t num_detect_ids;
};

enum conf_waf_route_state { CONF_WAF_INHERIT, CONF_WAF_OFF, CONF_WAF_OWN };

struct conf_waf_route {
	enum conf_waf_route_state state;
	struct conf_waf_opts opts;
};

struct conf_waf {
	bool top;                 /* a top-level `waf` table */
	struct conf_waf_opts opts;
	char *rules_dir;          /* resolved against the config's directory */
	char *audit_log;          /* NULL: none */
	uint64_t body_limit;      /* request body bytes inspected (routes read that much first); 0: heads only */
	bool body_limit_deny;     /* on_body_limit = "deny": a larger body is refused (413) */
	struct conf_waf_route *routes; /* conf->num_routes entries (when any route said `waf`) */
	size_t num_routes;
};

extern const struct conf_section conf_waf_section;

#endif
