/* trace_context.h - the W3C Trace Context header fields (traceparent,
 * tracestate): pure functions over bytes, no state, no allocation.
 *
 * traceparent: "VV-TTTT...(32)-PPPP...(16)-FF", lower-case hex. Version 00 is
 * exactly 55 characters; a later version (not ff) may be longer, and only
 * its first four parts are read (the rules of a version this code does not
 * know). An all-zero trace id or parent id is invalid. An invalid value is
 * treated as absent by the caller (a new trace starts).
 *
 * tracestate: a list of key=value members. trace_state_bound() checks it and
 * returns what may go on: nothing when a member is malformed, a key repeats
 * or there are more than 32 members (the header is dropped whole rather than
 * half-trusted); members are re-joined with "," and, over 512 characters,
 * members longer than 128 characters go first, then members from the end,
 * until it fits (the truncation order the specification recommends).
 */
#ifndef SLUICE_TRACE_CONTEXT_H
#define SLUICE_TRACE_CONTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_LEN 16
#define TRACE_SPAN_ID_LEN 8
#define TRACE_FLAG_SAMPLED 0x01
/* "00-" 32 "-" 16 "-" 2 */
#define TRACE_PARENT_LEN 55
#define TRACE_STATE_MAX 512
#define TRACE_STATE_MAX_MEMBERS 32

struct trace_parent {
	uint8_t trace_id[TRACE_ID_LEN];
	uint8_t parent_id[TRACE_SPAN_ID_LEN];
	uint8_t flags;
};

/* Parses s[0..n); false when it is not a valid traceparent (out undefined). */
bool trace_parent_parse(const char *s, size_t n, struct trace_parent *out);

/* Writes the version-00 traceparent for (trace_id, span_id, flags) and a NUL
 * into out (TRACE_PARENT_LEN + 1 bytes). */
void trace_parent_format(const uint8_t trace_id[TRACE_ID_LEN], const uint8_t span_id[TRACE_SPAN_ID_LEN],
                         uint8_t flags, char *out);

/* Lower-case hex of b[0..n) and a NUL into out (2n + 1 bytes). */
void trace_hex(const uint8_t *b, size_t n, char *out);

/* Whether b[0..n) is all zero (an invalid id). */
bool trace_id_is_zero(const uint8_t *b, size_t n);

/* The tracestate that may be forwarded, from s[0..n) (several header lines
 * joined with ","), into out (cap >= TRACE_STATE_MAX + 1, NUL-terminated);
 * returns its length, 0 when nothing is kept. */
size_t trace_state_bound(const char *s, size_t n, char *out, size_t cap);

#endif
