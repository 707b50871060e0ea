/* waf.h - the WAF in the request path (docs/waf.md, "In the gateway").
 *
 * Access phase, per route with the WAF on (conf_waf.h): the request's
 * method, target, headers and cookies are evaluated against the snapshot's
 * rule set (src/waf_rules.h, loaded and compiled once per snapshot on the
 * main thread: a broken rule fails `sluice check` and the reload with
 * FILE: rules[N].KEY, and the old rules keep running). A score at the
 * route's threshold in mode "block" answers 403 (reason waf_denied) with a
 * body naming the request id; every request with a match gets `waf_score`,
 * `waf_rules` and `waf_action` in its access-log line and, with `audit_log`,
 * one JSON line in the audit log (targets, redacted snippets, messages).
 * Bodies up to waf.body_limit are read before the access phase and
 * inspected (conf_waf.c raises the route's request_buffering). Each
 * request's outcome is counted per route (sluice_route_waf_total; blocks by
 * rule group in sluice_route_waf_blocks_total).
 *
 * State: the rule set and the audit-log descriptor per snapshot (read-only
 * on workers), with each route's policy and its plan (waf_policy_prepare);
 * per worker, evaluators (PCRE2 match data, scratch) for the current and
 * the previous rule set, never shared.
 */
#ifndef SLUICE_WAF_MODULE_H
#define SLUICE_WAF_MODULE_H

#include "module.h"

extern const struct module waf_module;

#endif
