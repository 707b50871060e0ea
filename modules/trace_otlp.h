/* trace_otlp.h - finished spans as an OTLP ExportTraceServiceRequest, in
 * either encoding of OTLP/HTTP: JSON (the protobuf JSON mapping, ids in
 * hex) or binary protobuf (pb_write.h). Pure functions, any thread; the
 * exporter thread calls them (trace_export.h).
 *
 * Both encodings come from one walk over the request with a writer for
 * each, and from one view of each span (its name, kind, flags, status and
 * attribute list, built once), so they carry the same content:
 * the server span with the OpenTelemetry HTTP server attributes, a client
 * span (one per upstream attempt) with the HTTP client ones. Strings that
 * are not valid UTF-8 (a path or user agent with raw bytes) have each bad
 * byte replaced by U+FFFD, since a collector refuses a whole batch with an
 * invalid string in it.
 */
#ifndef SLUICE_TRACE_OTLP_H
#define SLUICE_TRACE_OTLP_H

#include <stddef.h>
#include <stdint.h>

#include "trace_export.h"

/* The spans spans[0..n) as one request body, malloc'ed (length in *len),
 * or NULL when out of memory. JSON is NUL-terminated. */
char *trace_otlp_json(const struct trace_export_conf *ec, const struct trace_span *spans, size_t n, size_t *len);
uint8_t *trace_otlp_protobuf(const struct trace_export_conf *ec, const struct trace_span *spans, size_t n,
                             size_t *len);

/* The collector's answer to an export (an ExportTraceServiceResponse, in
 * the encoding its content_type names, lower case without parameters, or
 * the request's protocol when it names neither): how many spans its
 * partial_success says were rejected (0: none, or a body that does not
 * parse) and its error_message in msg (cut to msg_cap, NUL-terminated; ""
 * when none; JSON escapes undone, bytes as the collector sent them). */
uint64_t trace_otlp_rejected(enum conf_tracing_protocol protocol, const char *content_type, const char *body,
                             size_t len, char *msg, size_t msg_cap);

/* The reason in a collector's refusal (a non-2xx answer, whose body is a
 * google.rpc.Status in OTLP/HTTP), by its content_type (lower case, no
 * parameters): application/json -> the "message" string (escapes undone);
 * application/x-protobuf -> field 2; JSON without a message (or not JSON),
 * and any other type (text/plain, text/html from a proxy in front of the
 * collector) -> the body's first non-blank line. Written to msg (at most
 * msg_cap - 1 bytes and a NUL, cut between characters; a JSON message is
 * read up to 1 KiB), valid UTF-8: each byte that starts no valid sequence,
 * and each NUL, is U+FFFD. Returns its length (0: no message, e.g. an empty
 * body or a protobuf Status without one). */
size_t trace_otlp_status_message(const char *content_type, const char *body, size_t len, char *msg, size_t msg_cap);

/* The Content-Type of an encoding. */
const char *trace_otlp_content_type(enum conf_tracing_protocol protocol);

#endif
