/* counters.h - the one counter registry (DESIGN.md "Shared vocabulary: Counters").
 *
 * Declared once: every counter and histogram is a line in one of the family
 * tables below (symbol, exported name, kind, fixed label set, help). A
 * family belongs to a dimension: GLOBAL (one series per fixed label value)
 * or a configured name (listener, route, service, pool, server = pool +
 * address), with at most one fixed label set besides it (status class,
 * reason, HTTP/2 close reason, TLS failure, rate-limit decision). Label
 * values therefore come only from the config and from fixed sets, never
 * from a client, and `ctl show counters` / `/metrics` are a plain walk of
 * the tables.
 *
 * Names: the registry interns every configured name once, on the main
 * thread, as a snapshot is built (counters_map_new), and never forgets it:
 * an id stays the name's for the life of the process. A snapshot carries a
 * map from its own indices (route i, pool j, ...) to those ids, so a request
 * that started on an old snapshot counts into the right series after a
 * reload, a route that is still configured keeps its totals, a new one
 * starts at 0, and one that is removed keeps its final value hidden (it is
 * shown again, with its totals, if it comes back). What is shown is the
 * current snapshot's names.
 *
 * Per worker: each worker owns a `struct ctr_worker` (rows of slots per
 * dimension, indexed by name id) and is its only writer: an increment is a
 * relaxed load and store (plain instructions, no lock prefix). The main
 * thread sums all workers' slots on demand; it also owns one set of its own
 * (admin changes). Rows grow (on the worker, when it meets a map with names
 * it has no row for): the new array is published with a release store and
 * the old one is kept until counters_free, so a concurrent reader never
 * reads freed memory and never sees a total go down.
 *
 * The process has one registry, `counters_process`, set by the main thread
 * before the first snapshot is built and cleared after the last is freed;
 * without it (sluice check, unit tests) snapshots carry no map and nothing
 * is counted. */
#ifndef SLUICE_COUNTERS_H
#define SLUICE_COUNTERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reason.h"

struct conf;
struct evbuffer;
struct request;

/* ---- fixed label sets ---- */

/* Status class of the response sent to the client; "none": no response was sent. */
#define CTR_STATUS_CLASS_LIST(X) X(NONE, "none") X(1XX, "1xx") X(2XX, "2xx") X(3XX, "3xx") X(4XX, "4xx") X(5XX, "5xx")
enum ctr_status_class {
#define CTR_SC_ENUM(sym, str) CTR_SC_##sym,
	CTR_STATUS_CLASS_LIST(CTR_SC_ENUM)
#undef CTR_SC_ENUM
	CTR_SC__COUNT
};

/* Why an HTTP/2 connection was closed by sluice (h2.c). */
#define CTR_H2_CLOSE_LIST(X)                                                                                           \
	X(RAPID_RESET, "rapid_reset")                                                                                  \
	X(CONTINUATION_FLOOD, "continuation_flood")                                                                    \
	X(SETTINGS_FLOOD, "settings_flood")                                                                            \
	X(PING_FLOOD, "ping_flood")                                                                                    \
	X(EMPTY_FRAME_FLOOD, "empty_frame_flood")                                                                      \
	X(HEADER_LIST_TOO_LARGE, "header_list_too_large")                                                              \
	X(GLITCHES, "glitches")                                                                                        \
	X(INVALID_STREAM_ID, "invalid_stream_id")                                                                      \
	X(PROTOCOL_ERROR, "protocol_error")                                                                            \
	X(IDLE_TIMEOUT, "idle_timeout")
enum ctr_h2_close {
#define CTR_H2_CLOSE_ENUM(sym, str) CTR_H2_CLOSE_##sym,
	CTR_H2_CLOSE_LIST(CTR_H2_CLOSE_ENUM)
#undef CTR_H2_CLOSE_ENUM
	CTR_H2_CLOSE__COUNT
};

/* Why a TLS handshake failed (tls.c). */
#define CTR_TLS_FAIL_LIST(X)                                                                                           \
	X(TIMEOUT, "timeout")                                                                                          \
	X(CLOSED, "client_closed")                                                                                     \
	X(PROTOCOL_VERSION, "protocol_version")                                                                        \
	X(NO_SHARED_CIPHER, "no_shared_cipher")                                                                        \
	X(NOT_TLS, "not_tls")                                                                                          \
	X(CLIENT_CERTIFICATE, "client_certificate")                                                                    \
	X(CLIENT_ALERT, "client_alert")                                                                                \
	X(OTHER, "other")
enum ctr_tls_fail {
#define CTR_TLS_FAIL_ENUM(sym, str) CTR_TLS_FAIL_##sym,
	CTR_TLS_FAIL_LIST(CTR_TLS_FAIL_ENUM)
#undef CTR_TLS_FAIL_ENUM
	CTR_TLS_FAIL__COUNT
};

/* A rate-limit decision for one request (ratelimit.c). */
#define CTR_RL_DECISION_LIST(X) X(ALLOWED, "allowed") X(LIMITED, "limited")
enum ctr_rl_decision {
#define CTR_RL_ENUM(sym, str) CTR_RL_##sym,
	CTR_RL_DECISION_LIST(CTR_RL_ENUM)
#undef CTR_RL_ENUM
	CTR_RL__COUNT
};

/* What the WAF did with a request (modules/waf.c, docs/waf.md "Counters"). */
#define CTR_WAF_OUTCOME_LIST(X)                                                                                        \
	X(PASSED, "passed")                                                                                            \
	X(BLOCKED, "blocked")                                                                                          \
	X(DETECTED, "detected")                                                                                        \
	X(BODY_LIMIT, "body_limit")                                                                                    \
	X(BUDGET, "budget_exceeded")                                                                                   \
	X(ERROR, "error")
enum ctr_waf_outcome {
#define CTR_WAF_OUTCOME_ENUM(sym, str) CTR_WAF_##sym,
	CTR_WAF_OUTCOME_LIST(CTR_WAF_OUTCOME_ENUM)
#undef CTR_WAF_OUTCOME_ENUM
	CTR_WAF__COUNT
};

/* The shipped rules' groups (lua/waf/: a rule's tag "protocol", "scanner"
 * or "attack-<group>"); "other": a rule with none of these tags. */
#define CTR_WAF_GROUP_LIST(X)                                                                                          \
	X(PROTOCOL, "protocol")                                                                                        \
	X(SCANNER, "scanner")                                                                                          \
	X(LFI, "lfi")                                                                                                  \
	X(RFI, "rfi")                                                                                                  \
	X(RCE, "rce")                                                                                                  \
	X(PHP, "php")                                                                                                  \
	X(JAVA, "java")                                                                                                \
	X(NODE, "node")                                                                                                \
	X(XSS, "xss")                                                                                                  \
	X(SQLI, "sqli")                                                                                                \
	X(OTHER, "other")
enum ctr_waf_group {
#define CTR_WAF_GROUP_ENUM(sym, str) CTR_WAF_GROUP_##sym,
	CTR_WAF_GROUP_LIST(CTR_WAF_GROUP_ENUM)
#undef CTR_WAF_GROUP_ENUM
	CTR_WAF_GROUP__COUNT
};

/* What a route's policies did in the access phase (modules/policy.c). */
#define CTR_POLICY_OUTCOME_LIST(X)                                                                                     \
	X(ALLOWED, "allowed")                                                                                          \
	X(DENIED, "denied")                                                                                            \
	X(RESPONDED, "responded")                                                                                      \
	X(ERROR, "error")                                                                                              \
	X(BUDGET, "budget_exceeded")                                                                                   \
	X(MEMORY, "memory_exceeded")
enum ctr_policy_outcome {
#define CTR_POLICY_OUTCOME_ENUM(sym, str) CTR_POLICY_##sym,
	CTR_POLICY_OUTCOME_LIST(CTR_POLICY_OUTCOME_ENUM)
#undef CTR_POLICY_OUTCOME_ENUM
	CTR_POLICY__COUNT
};

/* The phase a policy call ran in. */
#define CTR_POLICY_PHASE_LIST(X) X(ACCESS, "access") X(RESPONSE, "response") X(LOG, "log")
enum ctr_policy_phase {
#define CTR_POLICY_PHASE_ENUM(sym, str) CTR_POLICY_PHASE_##sym,
	CTR_POLICY_PHASE_LIST(CTR_POLICY_PHASE_ENUM)
#undef CTR_POLICY_PHASE_ENUM
	CTR_POLICY_PHASE__COUNT
};

/* The protocol of a client connection: HTTP/1.x on a plain socket, over TLS, HTTP/2 (TLS or h2c). */
#define CTR_PROTOCOL_LIST(X) X(HTTP1, "http1") X(HTTPS, "https") X(H2, "h2")
enum ctr_protocol {
#define CTR_PROTO_ENUM(sym, str) CTR_PROTO_##sym,
	CTR_PROTOCOL_LIST(CTR_PROTO_ENUM)
#undef CTR_PROTO_ENUM
	CTR_PROTO__COUNT
};

/* The TLS version a handshake agreed on (OpenSSL's names). */
#define CTR_TLS_VERSION_LIST(X) X(TLS1_2, "TLSv1.2") X(TLS1_3, "TLSv1.3") X(OTHER, "other")
enum ctr_tls_version {
#define CTR_TLSV_ENUM(sym, str) CTR_TLSV_##sym,
	CTR_TLS_VERSION_LIST(CTR_TLSV_ENUM)
#undef CTR_TLSV_ENUM
	CTR_TLSV__COUNT
};

/* How a config reload (ctl reload, SIGHUP) ended. */
#define CTR_RELOAD_LIST(X) X(SUCCESS, "success") X(FAILURE, "failure")
enum ctr_reload {
#define CTR_RELOAD_ENUM(sym, str) CTR_RELOAD_##sym,
	CTR_RELOAD_LIST(CTR_RELOAD_ENUM)
#undef CTR_RELOAD_ENUM
	CTR_RELOAD__COUNT
};

/* Which limit refused an HTTP/2 upload (h2.c: max_uploading_streams per connection or per client). */
#define CTR_UPLOAD_LIMIT_LIST(X) X(CONNECTION, "connection") X(CLIENT, "client")
enum ctr_upload_limit {
#define CTR_UPLOAD_ENUM(sym, str) CTR_UPLOAD_##sym,
	CTR_UPLOAD_LIMIT_LIST(CTR_UPLOAD_ENUM)
#undef CTR_UPLOAD_ENUM
	CTR_UPLOAD__COUNT
};

/* Why a client connection was closed at accept, before anything was read
 * from it (worker.c): its address held limits.max_connections_per_client. */
#define CTR_CONN_REFUSED_LIST(X) X(PER_CLIENT_LIMIT, "per_client_limit")
enum ctr_conn_refused {
#define CTR_CONN_REFUSED_ENUM(sym, str) CTR_CONN_REFUSED_##sym,
	CTR_CONN_REFUSED_LIST(CTR_CONN_REFUSED_ENUM)
#undef CTR_CONN_REFUSED_ENUM
	CTR_CONN_REFUSED__COUNT
};

/* A rollout controller's judgement of one interval (rollout.c). */
#define CTR_ROLLOUT_VERDICT_LIST(X)                                                                                    \
	X(PROMOTED, "promoted") X(COMPLETED, "completed") X(ROLLED_BACK, "rolled_back") X(HOLDING, "holding")           \
	X(WAITING, "waiting")
enum ctr_rollout_verdict {
#define CTR_VERDICT_ENUM(sym, str) CTR_VERDICT_##sym,
	CTR_ROLLOUT_VERDICT_LIST(CTR_VERDICT_ENUM)
#undef CTR_VERDICT_ENUM
	CTR_VERDICT__COUNT
};

/* Where a log line was to go (sluice_access_log_dropped_total; src/log_queue.h). */
#define CTR_LOG_OUTPUT_LIST(X) X(FILE, "file") X(STDOUT, "stdout") X(STDERR, "stderr") X(SYSLOG, "syslog")
enum ctr_log_output {
#define CTR_LOG_OUT_ENUM(sym, str) CTR_LOG_OUT_##sym,
	CTR_LOG_OUTPUT_LIST(CTR_LOG_OUT_ENUM)
#undef CTR_LOG_OUT_ENUM
	CTR_LOG_OUT__COUNT
};

/* Why the OTLP collector refused spans (sluice_tracing_spans_rejected_total;
 * modules/trace_export.c): named in a 2xx answer's partialSuccess, or the
 * whole batch refused with a 4xx other than 408 and 429 (not worth a resend). */
#define CTR_TRACE_REJECT_LIST(X) X(PARTIAL_SUCCESS, "partial_success") X(REFUSED, "refused")
enum ctr_trace_reject {
#define CTR_TRACE_REJECT_ENUM(sym, str) CTR_TRACE_REJECT_##sym,
	CTR_TRACE_REJECT_LIST(CTR_TRACE_REJECT_ENUM)
#undef CTR_TRACE_REJECT_ENUM
	CTR_TRACE_REJECT__COUNT
};

/* label set: its label name and how many values it has */
#define CTR_LSET_LIST(X)                                                                                               \
	X(NONE, NULL, 1)                                                                                               \
	X(STATUS_CLASS, "status_class", CTR_SC__COUNT)                                                                 \
	X(REASON, "reason", REASON__COUNT)                                                                             \
	X(H2_CLOSE, "reason", CTR_H2_CLOSE__COUNT)                                                                     \
	X(TLS_FAIL, "reason", CTR_TLS_FAIL__COUNT)                                                                     \
	X(RL_DECISION, "decision", CTR_RL__COUNT)                                                                      \
	X(WAF_OUTCOME, "outcome", CTR_WAF__COUNT)                                                                      \
	X(WAF_GROUP, "group", CTR_WAF_GROUP__COUNT)                                                                    \
	X(POLICY_OUTCOME, "outcome", CTR_POLICY__COUNT)                                                                \
	X(POLICY_PHASE, "phase", CTR_POLICY_PHASE__COUNT)                                                              \
	X(PROTOCOL, "protocol", CTR_PROTO__COUNT)                                                                      \
	X(TLS_VERSION, "version", CTR_TLSV__COUNT)                                                                     \
	X(RELOAD, "outcome", CTR_RELOAD__COUNT)                                                                        \
	X(UPLOAD_LIMIT, "limit", CTR_UPLOAD__COUNT)                                                                    \
	X(ROLLOUT_VERDICT, "verdict", CTR_VERDICT__COUNT)                                                              \
	X(LOG_OUTPUT, "output", CTR_LOG_OUT__COUNT)                                                                    \
	X(CONN_REFUSED, "reason", CTR_CONN_REFUSED__COUNT)                                                            \
	X(TRACE_REJECT, "reason", CTR_TRACE_REJECT__COUNT)
enum ctr_lset {
#define CTR_LSET_ENUM(sym, label, card) CTR_LSET_##sym,
	CTR_LSET_LIST(CTR_LSET_ENUM)
#undef CTR_LSET_ENUM
	CTR_LSET__COUNT
};
enum {
#define CTR_LSET_CARD(sym, label, card) CTR_CARD_##sym = (card),
	CTR_LSET_LIST(CTR_LSET_CARD)
#undef CTR_LSET_CARD
};

/* ---- histograms ---- */

/* Upper bounds of the buckets, in microseconds: the config's
 * metrics.histogram_buckets (conf_metrics.h), by default Prometheus' usual
 * 5 ms..10 s; a last bucket (+Inf) catches the rest. The registry holds
 * them (counters_set_buckets, once, before any worker counts) and every
 * set points at them. A row reserves room for the most a config may ask
 * for: slots of one histogram are the buckets (bucket n is +Inf), unused
 * room, then the sum in microseconds. */
#define CTR_HIST_DEFAULT_BOUNDS_US 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000
#define CTR_HIST_DEFAULT_BOUNDS 11
#define CTR_HIST_MAX_BOUNDS 24
#define CTR_HIST_SLOTS (CTR_HIST_MAX_BOUNDS + 2)
#define CTR_HIST_SUM (CTR_HIST_MAX_BOUNDS + 1)
struct ctr_hist_bounds {
	unsigned n;
	uint64_t us[CTR_HIST_MAX_BOUNDS];
};

/* A GAUGE goes up and down on one thread or several: each set counts its ups
 * in the first half of the family's slots and its downs in the second
 * (CTR_GAUGE_UP / CTR_GAUGE_DOWN); the value is ups - downs over all sets,
 * so a connection opened on one worker and closed on it never needs an
 * atomic. */
enum ctr_kind { CTR_KIND_COUNTER, CTR_KIND_HISTOGRAM, CTR_KIND_GAUGE };
#define CTR_WIDTH(kind, lset)                                                                                          \
	(CTR_KIND_##kind == CTR_KIND_HISTOGRAM ? CTR_HIST_SLOTS                                                        \
	 : CTR_KIND_##kind == CTR_KIND_GAUGE   ? 2 * CTR_CARD_##lset                                                  \
	                                       : CTR_CARD_##lset)

/* ---- dimensions and their families ----
 * X(symbol, exported name, kind, label set, help). Names follow Prometheus:
 * sluice_ prefix, _total counters, base units (seconds, bytes). */

#define CTR_GLOBAL_FAMILIES(X)                                                                                         \
	X(H2_SESSIONS, "sluice_h2_sessions_total", COUNTER, NONE, "HTTP/2 sessions started")                          \
	X(H2_CLOSED, "sluice_h2_sessions_closed_total", COUNTER, H2_CLOSE,                                            \
	  "HTTP/2 sessions closed by sluice, by reason (defences, protocol errors, idle timeout)")                     \
	X(TLS_HANDSHAKES, "sluice_tls_handshakes_total", COUNTER, NONE, "TLS handshakes completed")                   \
	X(TLS_FAILURES, "sluice_tls_handshake_failures_total", COUNTER, TLS_FAIL, "TLS handshakes failed, by reason") \
	X(RL_DECISIONS, "sluice_ratelimit_decisions_total", COUNTER, RL_DECISION,                                     \
	  "Requests that went through rate limits: allowed or limited")                                               \
	X(RL_FALLBACK, "sluice_ratelimit_fallback_total", COUNTER, NONE,                                              \
	  "Shared-limit decisions taken by the on_failure fallback while Redis was unavailable")                      \
	X(RL_REDIS_WAITS, "sluice_ratelimit_redis_waits_total", COUNTER, NONE,                                        \
	  "Requests that waited for a Redis round trip")                                                              \
	X(RL_REDIS_COMMANDS, "sluice_ratelimit_redis_commands_total", COUNTER, NONE, "Commands sent to Redis")        \
	X(RL_REDIS_FAILURES, "sluice_ratelimit_redis_failures_total", COUNTER, NONE,                                  \
	  "Redis failures: timeouts, lost connections, refused connects")                                             \
	X(RL_REDIS_TRANSITIONS, "sluice_ratelimit_redis_transitions_total", COUNTER, NONE,                            \
	  "Changes between Redis available and unavailable, per worker connection")                                   \
	X(RL_EVICTIONS, "sluice_ratelimit_table_evictions_total", COUNTER, NONE,                                      \
	  "Local rate-limit keys evicted (least recently used) to make room")                                         \
	X(RL_EXPIRED, "sluice_ratelimit_table_expired_total", COUNTER, NONE,                                          \
	  "Local rate-limit keys forgotten after being idle")                                                         \
	X(TRAILER_FIELDS_DROPPED, "sluice_trailer_fields_dropped_total", COUNTER, NONE,                               \
	  "Trailer fields not forwarded because RFC 9110 6.5.1 rules them out of trailers")                           \
	X(TRACE_SPANS_EXPORTED, "sluice_tracing_spans_exported_total", COUNTER, NONE,                                 \
	  "Spans the OTLP collector accepted")                                                                        \
	X(TRACE_SPANS_DROPPED, "sluice_tracing_spans_dropped_total", COUNTER, NONE,                                   \
	  "Sampled spans not delivered: a worker's queue was full, or the collector failed or was not configured")   \
	X(TRACE_EXPORT_FAILURES, "sluice_tracing_export_failures_total", COUNTER, NONE,                               \
	  "OTLP export requests that failed (connect, timeout, an answer other than 2xx)")                              \
	X(TRACE_SPANS_REJECTED, "sluice_tracing_spans_rejected_total", COUNTER, TRACE_REJECT,                         \
	  "Spans the OTLP collector refused, by reason (also counted as dropped)")                                    \
	X(ACCESS_LOG_DROPPED, "sluice_access_log_dropped_total", COUNTER, LOG_OUTPUT,                                 \
	  "Access-log lines dropped, by output: a worker's queue was full, a write failed, or the collector was unreachable") \
	X(ERROR_LOG_DROPPED, "sluice_error_log_dropped_total", COUNTER, NONE,                                         \
	  "Error/event log lines not delivered to syslog (the queue was full or the collector unreachable)")          \
	X(RUNTIME_CHANGES, "sluice_runtime_changes_total", COUNTER, NONE, "Deployer changes applied through the admin socket") \
	X(CONNECTIONS, "sluice_connections_total", COUNTER, PROTOCOL,                                                 \
	  "Client connections served, by protocol (http1, https: HTTP/1.x over TLS, h2: HTTP/2 sessions)")             \
	X(CONNECTIONS_ACTIVE, "sluice_connections_active", GAUGE, PROTOCOL, "Client connections open, by protocol")   \
	X(H2_STREAMS, "sluice_h2_streams_total", COUNTER, NONE, "HTTP/2 streams opened by clients")                   \
	X(H2_STREAMS_ACTIVE, "sluice_h2_streams_active", GAUGE, NONE, "HTTP/2 streams open")                          \
	X(H2_UPLOADS_REFUSED, "sluice_h2_uploads_refused_total", COUNTER, UPLOAD_LIMIT,                               \
	  "HTTP/2 request bodies refused (REFUSED_STREAM) by max_uploading_streams, per connection or per client")      \
	X(TLS_VERSIONS, "sluice_tls_handshakes_by_version_total", COUNTER, TLS_VERSION,                               \
	  "TLS handshakes completed, by the version agreed")                                                          \
	X(TLS_RESUMED, "sluice_tls_handshakes_resumed_total", COUNTER, TLS_VERSION,                                   \
	  "TLS handshakes that resumed an earlier session (ticket or cache), by version")                              \
	X(RL_REDIS_LATENCY, "sluice_ratelimit_redis_latency_seconds", HISTOGRAM, NONE,                                \
	  "Time from sending a command to Redis to its reply")                                                        \
	X(RELOADS, "sluice_config_reloads_total", COUNTER, RELOAD,                                                    \
	  "Config reloads (ctl reload, SIGHUP) by outcome: success (published) or failure (refused)")                  \
	X(ROUTE_REGEX_GIVE_UPS, "sluice_route_regex_give_ups_total", COUNTER, NONE,                                   \
	  "Route path_regex matches abandoned at limits.regex_match_limit (taken as no match)")

#define CTR_LISTENER_FAMILIES(X)                                                                                       \
	X(LISTENER_REQUESTS, "sluice_listener_requests_total", COUNTER, STATUS_CLASS,                                 \
	  "Requests ended, by listener and status class")                                                             \
	X(LISTENER_REASONS, "sluice_listener_request_reasons_total", COUNTER, REASON,                                 \
	  "Requests that ended for a reason other than a normal upstream response, by listener")                      \
	X(LISTENER_DURATION, "sluice_listener_request_duration_seconds", HISTOGRAM, NONE,                             \
	  "Request duration, from the complete head to the end of the response, by listener")                         \
	X(LISTENER_RECEIVED, "sluice_listener_received_bytes_total", COUNTER, NONE, "Request body bytes received")    \
	X(LISTENER_SENT, "sluice_listener_sent_bytes_total", COUNTER, NONE, "Response bytes sent (head and body)")    \
	X(LISTENER_CONNS_REFUSED, "sluice_listener_connections_refused_total", COUNTER, CONN_REFUSED,                 \
	  "Client connections closed at accept, before anything was read, by listener and reason "                    \
	  "(per_client_limit: the address held limits.max_connections_per_client)")

#define CTR_ROUTE_FAMILIES(X)                                                                                          \
	X(ROUTE_REQUESTS, "sluice_route_requests_total", COUNTER, STATUS_CLASS, "Requests ended, by route and status class") \
	X(ROUTE_REASONS, "sluice_route_request_reasons_total", COUNTER, REASON,                                       \
	  "Requests that ended for a reason other than a normal upstream response, by route")                         \
	X(ROUTE_DURATION, "sluice_route_request_duration_seconds", HISTOGRAM, NONE, "Request duration, by route")     \
	X(ROUTE_RECEIVED, "sluice_route_received_bytes_total", COUNTER, NONE, "Request body bytes received")          \
	X(ROUTE_SENT, "sluice_route_sent_bytes_total", COUNTER, NONE, "Response bytes sent (head and body)")          \
	X(ROUTE_WAF, "sluice_route_waf_total", COUNTER, WAF_OUTCOME,                                                  \
	  "Requests the WAF inspected, by route and outcome (passed, blocked, detected: matched but let through, "     \
	  "body_limit: body over waf.body_limit, budget_exceeded: a regex gave up, error)")                            \
	X(ROUTE_WAF_BLOCKS, "sluice_route_waf_blocks_total", COUNTER, WAF_GROUP,                                      \
	  "Requests the WAF blocked, by route and the rule group of the matches (one per group matched)")              \
	X(ROUTE_POLICY, "sluice_route_policy_total", COUNTER, POLICY_OUTCOME,                                         \
	  "Requests through a route's policies (access phase), by outcome (allowed, denied, responded, "              \
	  "error, budget_exceeded, memory_exceeded)")                                                                  \
	X(ROUTE_POLICY_ERRORS, "sluice_route_policy_errors_total", COUNTER, POLICY_PHASE,                             \
	  "Policy calls that failed (error, instruction budget, memory cap), by route and phase")

#define CTR_SERVICE_FAMILIES(X)                                                                                        \
	X(SERVICE_REQUESTS, "sluice_service_requests_total", COUNTER, STATUS_CLASS,                                   \
	  "Requests ended, by service and status class")                                                              \
	X(SERVICE_ROLLOUT_VERDICTS, "sluice_service_rollout_verdicts_total", COUNTER, ROLLOUT_VERDICT,                \
	  "Rollout intervals judged, by verdict (promoted, completed, rolled_back, holding, waiting)")

#define CTR_POOL_FAMILIES(X)                                                                                           \
	X(POOL_REQUESTS, "sluice_pool_requests_total", COUNTER, STATUS_CLASS, "Requests ended, by pool and status class") \
	X(POOL_REASONS, "sluice_pool_request_reasons_total", COUNTER, REASON,                                         \
	  "Requests sent to the pool that ended for a reason other than a normal upstream response "                  \
	  "(refusals: pool_overflow, retry_budget_exhausted, breaker_open, no_healthy_upstream)")                      \
	X(POOL_RETRIES, "sluice_pool_retries_total", COUNTER, NONE, "Attempts retried on another server")             \
	X(POOL_UPSTREAM_RESPONSE, "sluice_pool_upstream_response_seconds", HISTOGRAM, NONE,                           \
	  "Time from the request's head to the upstream response head, by pool")                                      \
	X(POOL_CONNS_OPENED, "sluice_pool_upstream_connections_opened_total", COUNTER, NONE,                          \
	  "Upstream connections opened for a request")                                                                \
	X(POOL_CONNS_REUSED, "sluice_pool_upstream_connections_reused_total", COUNTER, NONE,                          \
	  "Requests sent on an idle keep-alive upstream connection instead of a new one")

#define CTR_SERVER_FAMILIES(X)                                                                                         \
	X(SERVER_REQUESTS, "sluice_server_requests_total", COUNTER, STATUS_CLASS,                                     \
	  "Requests ended on the server, by status class")                                                            \
	X(SERVER_ATTEMPTS, "sluice_server_attempts_total", COUNTER, NONE,                                             \
	  "Attempts that got an outcome from the server (the breaker's requests)")                                    \
	X(SERVER_FAILURES, "sluice_server_failures_total", COUNTER, NONE,                                             \
	  "Attempts that failed (connect failure, reset, timeout, bad response)")

/* X(symbol, lower-case name, label names..., family table) */
#define CTR_DIM_LIST(X)                                                                                                \
	X(GLOBAL, "global", CTR_GLOBAL_FAMILIES)                                                                       \
	X(LISTENER, "listener", CTR_LISTENER_FAMILIES)                                                                 \
	X(ROUTE, "route", CTR_ROUTE_FAMILIES)                                                                          \
	X(SERVICE, "service", CTR_SERVICE_FAMILIES)                                                                    \
	X(POOL, "pool", CTR_POOL_FAMILIES)                                                                             \
	X(SERVER, "server", CTR_SERVER_FAMILIES)

enum ctr_dim {
#define CTR_DIM_ENUM(sym, name, fams) CTR_DIM_##sym,
	CTR_DIM_LIST(CTR_DIM_ENUM)
#undef CTR_DIM_ENUM
	CTR_DIM__COUNT
};

/* Offsets of each family in its dimension's row, and each row's width:
 * CTR_<FAMILY> is the first slot, + a label value (or bucket) selects one. */
#define CTR_OFFSET(sym, name, kind, lset, help) CTR_##sym, CTR_##sym##_LAST_ = CTR_##sym + CTR_WIDTH(kind, lset) - 1,
enum { CTR_GLOBAL_FAMILIES(CTR_OFFSET) CTR_GLOBAL_WIDTH };
enum { CTR_LISTENER_FAMILIES(CTR_OFFSET) CTR_LISTENER_WIDTH };
enum { CTR_ROUTE_FAMILIES(CTR_OFFSET) CTR_ROUTE_WIDTH };
enum { CTR_SERVICE_FAMILIES(CTR_OFFSET) CTR_SERVICE_WIDTH };
enum { CTR_POOL_FAMILIES(CTR_OFFSET) CTR_POOL_WIDTH };
enum { CTR_SERVER_FAMILIES(CTR_OFFSET) CTR_SERVER_WIDTH };
#undef CTR_OFFSET

/* The strings of the HTTP/2 close reasons and TLS failures (for log lines). */
const char *counters_h2_close_name(enum ctr_h2_close c);
const char *counters_tls_fail_name(enum ctr_tls_fail f);

/* ---- the registry, per-worker sets, per-snapshot maps ---- */

struct counters;

/* One thread's slots for one dimension: cap names x the dimension's width. */
struct ctr_rows {
	struct ctr_rows *retired_next; /* once grown out of: kept until counters_free */
	uint32_t cap;
	atomic_uint_fast64_t v[];
};

#define CTR_MAX2(a, b) ((int)(a) > (int)(b) ? (int)(a) : (int)(b))
#define CTR_MAX_WIDTH                                                                                                  \
	CTR_MAX2(CTR_MAX2(CTR_MAX2(CTR_GLOBAL_WIDTH, CTR_LISTENER_WIDTH), CTR_MAX2(CTR_ROUTE_WIDTH, CTR_SERVICE_WIDTH)), \
	         CTR_MAX2(CTR_POOL_WIDTH, CTR_SERVER_WIDTH))

struct ctr_worker {
	_Atomic(struct ctr_rows *) rows[CTR_DIM__COUNT];
	uint64_t covered; /* the registry's name version these rows have room for */
	struct counters *reg;
	const struct ctr_hist_bounds *hist; /* the registry's */
	struct ctr_rows *retired;
	struct ctr_worker *next; /* the registry's list (push only) */
	/* where increments go when rows could not grow (out of memory): dropped */
	atomic_uint_fast64_t sink[CTR_MAX_WIDTH];
};

/* A snapshot's indices -> name ids. Immutable once built. */
struct counters_map {
	struct counters *reg;
	uint64_t version;           /* the registry's name version when built */
	uint32_t *ids[CTR_DIM__COUNT]; /* [GLOBAL] unused; [SERVER] flattened, see server_base */
	size_t count[CTR_DIM__COUNT];
	size_t *server_base; /* per pool: index of its first server in ids[SERVER] */
};

extern struct counters *counters_process;

struct counters *counters_new(void);
/* The histograms' upper bounds (n: 1 to CTR_HIST_MAX_BOUNDS, increasing).
 * Main thread, before any worker set counts (a worker started later
 * already sees them). False (nothing changed) when n is out of range. */
bool counters_set_buckets(struct counters *reg, const uint64_t *us, unsigned n);
const struct ctr_hist_bounds *counters_buckets(const struct counters *reg);
/* Frees the registry, every worker set and the retired rows. No thread may
 * use it any more. */
void counters_free(struct counters *reg);

/* A new per-thread set, owned by the registry (freed by counters_free).
 * Main thread, before the worker starts. NULL when out of memory. */
struct ctr_worker *counters_worker_new(struct counters *reg);
/* The main thread's own set (admin changes). */
struct ctr_worker *counters_main(struct counters *reg);

/* Intern c's names and build its map. Main thread. NULL when out of memory
 * (or reg is NULL). */
struct counters_map *counters_map_new(struct counters *reg, const struct conf *c);
void counters_map_free(struct counters_map *m);
static inline size_t counters_server_index(const struct counters_map *m, size_t pool, size_t server)
{
	return m->server_base[pool] + server;
}

/* ---- increments (the writing thread only) ---- */

static inline void ctr_bump(atomic_uint_fast64_t *slot, uint64_t n)
{
	/* one writer per slot: a relaxed load and store, not a locked add */
	atomic_store_explicit(slot, atomic_load_explicit(slot, memory_order_relaxed) + n, memory_order_relaxed);
}

/* Grows cw's rows to cover m (under the registry's lock) and returns the
 * row of id, or the sink if memory ran out. The rare path of ctr_row. */
atomic_uint_fast64_t *counters_row_slow(struct ctr_worker *cw, const struct counters_map *m, enum ctr_dim d,
                                        uint32_t id, unsigned width);

/* The row of name `index` of snapshot map m in dimension d (not GLOBAL). */
static inline atomic_uint_fast64_t *ctr_row(struct ctr_worker *cw, const struct counters_map *m, enum ctr_dim d,
                                            size_t index, unsigned width)
{
	uint32_t id = m->ids[d][index];
	if (__builtin_expect(m->version > cw->covered, 0))
		return counters_row_slow(cw, m, d, id, width);
	struct ctr_rows *r = atomic_load_explicit(&cw->rows[d], memory_order_relaxed);
	return r->v + (size_t)id * width;
}

static inline atomic_uint_fast64_t *ctr_global_row(struct ctr_worker *cw)
{
	return atomic_load_explicit(&cw->rows[CTR_DIM_GLOBAL], memory_order_relaxed)->v;
}

/* CTR_ADD(cw, map, POOL, pool_index, POOL_RETRIES, 0, 1) */
#define CTR_ADD(cw, m, DIM, index, FAMILY, label, n)                                                               \
	ctr_bump(ctr_row((cw), (m), CTR_DIM_##DIM, (index), CTR_##DIM##_WIDTH) + CTR_##FAMILY + (label), (n))
/* CTR_GLOBAL_ADD(cw, H2_CLOSED, why, 1); a NULL set (a test's hand-made
 * worker, no registry) counts nothing */
#define CTR_GLOBAL_ADD(cw, FAMILY, label, n)                                                                       \
	do {                                                                                                           \
		struct ctr_worker *ctr_cw_ = (cw);                                                                     \
		if (ctr_cw_)                                                                                           \
			ctr_bump(ctr_global_row(ctr_cw_) + CTR_##FAMILY + (label), (n));                               \
	} while (0)

/* A GAUGE family's label value goes up or down by one (CTR_GAUGE_UP(cw, CONNECTIONS_ACTIVE, CTR_PROTO_H2)). */
#define CTR_GAUGE_UP(cw, FAMILY, label) CTR_GLOBAL_ADD(cw, FAMILY, label, 1)
#define CTR_GAUGE_DOWN(cw, FAMILY, label)                                                                           \
	CTR_GLOBAL_ADD(cw, FAMILY, (CTR_##FAMILY##_LAST_ - CTR_##FAMILY + 1) / 2 + (label), 1)

/* A GLOBAL slot of this set alone (the writing thread: its own totals). */
static inline uint64_t ctr_global_own(struct ctr_worker *cw, unsigned slot)
{
	return cw ? atomic_load_explicit(ctr_global_row(cw) + slot, memory_order_relaxed) : 0;
}

static inline unsigned ctr_hist_bucket(const struct ctr_hist_bounds *h, uint64_t us)
{
	unsigned b = 0;
	while (b < h->n && us > h->us[b])
		b++;
	return b;
}

static inline void ctr_observe(atomic_uint_fast64_t *hist, unsigned bucket, uint64_t us)
{
	ctr_bump(hist + bucket, 1);
	ctr_bump(hist + CTR_HIST_SUM, us);
}

/* One observation of a GLOBAL histogram (CTR_GLOBAL_OBSERVE(cw, RL_REDIS_LATENCY, us)). */
static inline void ctr_global_observe(struct ctr_worker *cw, unsigned family, uint64_t us)
{
	if (cw)
		ctr_observe(ctr_global_row(cw) + family, ctr_hist_bucket(cw->hist, us), us);
}
#define CTR_GLOBAL_OBSERVE(cw, FAMILY, us) ctr_global_observe((cw), CTR_##FAMILY, (us))

static inline enum ctr_status_class ctr_status_class(int status)
{
	return status >= 100 && status <= 599 ? (enum ctr_status_class)(status / 100) : CTR_SC_NONE;
}

/* The log phase: count one finished request (status class, reason, bytes,
 * durations) for its listener, route, service, pool and server. The one
 * per-request call; the request's snapshot map gives the names. */
void counters_request_done(struct ctr_worker *cw, const struct request *r);
/* An attempt on server `server` of pool `pool` (snapshot indices) got an
 * outcome (proxy.c, once per attempt; cancelled attempts are not counted). */
void counters_server_outcome(struct ctr_worker *cw, const struct counters_map *m, size_t pool, size_t server,
                             bool failed);
/* A client connection of protocol p was opened (up) or closed (!up). */
static inline void counters_connection(struct ctr_worker *cw, enum ctr_protocol p, bool up)
{
	if (up) {
		CTR_GLOBAL_ADD(cw, CONNECTIONS, p, 1);
		CTR_GAUGE_UP(cw, CONNECTIONS_ACTIVE, p);
	} else {
		CTR_GAUGE_DOWN(cw, CONNECTIONS_ACTIVE, p);
	}
}
/* An attempt on pool `pool` took an idle connection (reused) or opened one. */
void counters_pool_connection(struct ctr_worker *cw, const struct counters_map *m, size_t pool, bool reused);
/* The main thread: a rollout interval of service `service` (snapshot index) was judged. */
void counters_rollout_verdict(const struct counters_map *m, size_t service, enum ctr_rollout_verdict v);
/* An attempt was retried on another server of pool `pool`. */
void counters_pool_retry(struct ctr_worker *cw, const struct counters_map *m, size_t pool);
/* Adds n to slot (CTR_ROUTE_<FAMILY> + label) of the request's route, in its
 * worker's set and its snapshot's names; nothing without a registry or a
 * route. For modules that count per route (the WAF, policies). */
void counters_route_add(const struct request *r, unsigned slot, uint64_t n);

/* ---- reading (the main thread: it is the one that interns names) ---- */

/* The total of one slot of the name at `index` of m in dimension d (GLOBAL: m may be NULL). */
uint64_t counters_get(const struct counters *reg, const struct counters_map *m, enum ctr_dim d, size_t index,
                      unsigned slot);

/* Everything m's names have, in the text form (one `name{labels} value`
 * line per series, Prometheus-like) or as JSON. Series that are 0 are left
 * out. */
void counters_write(const struct counters *reg, const struct counters_map *m, bool json, struct evbuffer *out);

/* /metrics: every family of the tables in the Prometheus text format 0.0.4
 * or (openmetrics) the body of an OpenMetrics 1.0 exposition (the caller
 * adds "# EOF"): # HELP and # TYPE, then one sample per series of m's
 * names, 0 included, except zero series of the sparse label sets (reason,
 * WAF rule group, policy phase);
 * histograms as _bucket{le} (cumulative, seconds), _sum (seconds), _count.
 * Main thread; the workers' sets are summed as they are read. */
void counters_expose(const struct counters *reg, const struct counters_map *m, bool openmetrics,
                     struct evbuffer *out);
/* A label value in both text formats: backslash, double quote and line feed escaped. */
void counters_label_value(struct evbuffer *out, const char *s);

#endif
