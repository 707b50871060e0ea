/* reason.h - the one fixed set of reasons a request ended other than by a
 * normal upstream response (DESIGN.md "Shared vocabulary"). The strings are
 * used verbatim in access logs, metric labels and `sluice ctl` output; add a
 * reason here and nowhere else. */
#ifndef SLUICE_REASON_H
#define SLUICE_REASON_H

#define REASON_LIST(X)                                                                                   \
	X(NONE, "")                                                                                      \
	X(NO_ROUTE, "no_route")                                                                          \
	X(BAD_REQUEST, "bad_request")                                                                    \
	X(REQUEST_TOO_LARGE, "request_too_large")                                                        \
	X(CLIENT_TIMEOUT, "client_timeout")                                                              \
	X(CLIENT_BODY_TOO_SLOW, "client_body_too_slow")                                                  \
	X(CLIENT_RESET, "client_reset")                                                                  \
	X(RATE_LIMITED, "rate_limited")                                                                  \
	X(WAF_DENIED, "waf_denied")                                                                      \
	X(POLICY_ERROR, "policy_error")                                                                  \
	X(POLICY_DENIED, "policy_denied")                                                                \
	X(NO_HEALTHY_UPSTREAM, "no_healthy_upstream")                                                    \
	X(BREAKER_OPEN, "breaker_open")                                                                  \
	X(POOL_OVERFLOW, "pool_overflow")                                                                \
	X(RETRY_BUDGET_EXHAUSTED, "retry_budget_exhausted")                                              \
	X(UPSTREAM_CONNECT_FAILED, "upstream_connect_failed")                                            \
	X(UPSTREAM_RESET, "upstream_reset")                                                              \
	X(UPSTREAM_TIMEOUT, "upstream_timeout")                                                          \
	X(UPSTREAM_BAD_RESPONSE, "upstream_bad_response")                                                \
	X(REDIS_FALLBACK, "redis_fallback")                                                              \
	X(DRAINING, "draining")

enum reason {
#define REASON_ENUM(sym, str) REASON_##sym,
	REASON_LIST(REASON_ENUM)
#undef REASON_ENUM
	REASON__COUNT
};

/* The snake_case string ("" for REASON_NONE). */
const char *reason_name(enum reason r);

#endif
