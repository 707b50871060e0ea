/* tracing.h - the tracing module: W3C Trace Context propagation and the
 * gateway's server span (docs/tracing.md).
 *
 * With a `tracing` section, every request gets a trace: a valid incoming
 * traceparent is continued (its trace id kept, its span the parent of the
 * gateway's, its sampled flag decides when parent_based), and tracestate is
 * checked and bounded (trace_context.h); otherwise, or when the incoming one
 * is invalid, a new trace starts, sampled at the configured ratio. Each
 * request is a span of kind SERVER covering the whole exchange, and each
 * upstream attempt (a retry, a fail-over to a fresh connection) a span of
 * kind CLIENT, its child: the proxy tells the module where an attempt
 * begins and how it ended through the hooks set in the request
 * (request_trace_hooks, request.h), and the traceparent that goes with the
 * attempt names the attempt's span, so the upstream's own server span hangs
 * under the attempt that reached it. The ids are set in the request
 * (request.h) in the access phase, or when the response head goes out for a
 * request that never reached it (no route, a local answer), so the access
 * log can carry them (span_id: the server span). Sampled spans go to the
 * exporter in the log phase (trace_export.h): the server span, then one
 * client span per attempt (a failed one ends where the proxy said, the last
 * one with the request).
 *
 * Ids come from a per-worker xoshiro256** generator seeded from getrandom():
 * fast, unpredictable enough for ids (not for secrets), never shared.
 * Must be first in the module list: a policy that denies in its access
 * phase still gets a traced response.
 */
#ifndef SLUICE_TRACING_H
#define SLUICE_TRACING_H

#include "module.h"

extern const struct module tracing_module;

#endif
