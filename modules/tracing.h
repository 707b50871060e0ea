/* tracing.h - the tracing module: W3C Trace Context propagation and the
 * gateway's server span (docs/tracing.md).
 *
 * With a `tracing` section, every request gets a trace: a valid incoming
 * traceparent is continued (its trace id kept, its span the parent of the
 * gateway's, its sampled flag decides when parent_based), and tracestate is
 * checked and bounded (trace_context.h); otherwise, or when the incoming one
 * is invalid, a new trace starts, sampled at the configured ratio. The
 * request that goes upstream carries a traceparent whose parent id is the
 * gateway's span: sluice emits one span per request, of kind SERVER,
 * covering the whole exchange (retries included), as nginx's and Envoy's
 * gateways do; the upstream's own server span is its child. The ids are set
 * in the request (request.h) in the access phase, or when the response head
 * goes out for a request that never reached it (no route, a local answer),
 * so the access log can carry them. Sampled spans go to the exporter in the
 * log phase (trace_export.h).
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
