/* route.h - the compiled route table of a snapshot and the matcher.
 *
 * route_table_build() compiles a conf's routes once (PCRE2 patterns
 * JIT-compiled); the table is immutable afterwards and may be read by every
 * worker at once. Matching needs per-thread scratch (PCRE2 match data), which
 * each worker owns as a struct route_scratch. First match wins.
 */
#ifndef SLUICE_ROUTE_H
#define SLUICE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "http.h"

struct route_table;
struct route_scratch;
struct ctr_worker;

/* What the matcher looks at. host: lower-case or not (compared case-insensitively),
 * without port; may be NULL. path: without query string, normalized by route_path_normalize()
 * (route_path.h; the caller does it: route_match() does not allocate). */
struct route_input {
	const char *host;
	size_t host_len;
	const char *path;
	size_t path_len;
	const char *method;
	size_t method_len;
	const struct http_header *headers;
	size_t num_headers;
	/* RFC 2253 subject of the client certificate verified on this connection (the exchange's tls_info),
	 * NULL or "" without one. Only read by routes with match.client_cert_subject, so callers fill
	 * it only when route_table_uses_client_subject() says a route looks at it. */
	const char *client_subject;
};

/* Compile c->routes. On a bad regex, adds "FILE: routes[N].match.path_regex: ..." to errs and
 * returns NULL. The table keeps a pointer to c, which must outlive it. */
struct route_table *route_table_build(const struct conf *c, struct conf_errors *errs);
void route_table_free(struct route_table *t);

struct route_scratch *route_scratch_new(void);
void route_scratch_free(struct route_scratch *s);
/* The counter set (counters.h) give-ups are also counted in (the worker's; NULL: none). */
void route_scratch_count_into(struct route_scratch *s, struct ctr_worker *cw);

/* Index into conf.routes of the first matching route, or -1 (404). Does not allocate. A path_regex
 * that exceeds limits.regex_match_limit (catastrophic backtracking on a hostile path) or another
 * PCRE2 limit counts as not matching, so the next routes are tried; it is counted in the scratch
 * and logged (a warning naming the route, at most one line per second per scratch). */
int route_match(const struct route_table *t, struct route_scratch *s, const struct route_input *in);
/* Path regex matches this scratch (its worker) abandoned at a limit so far. */
uint64_t route_scratch_regex_gave_up(const struct route_scratch *s);

/* Whether some route matches on client_cert_subject: callers that do not fill
 * route_input.client_subject otherwise (it costs a TLS lookup per request) must then fill it. */
bool route_table_uses_client_subject(const struct route_table *t);

/* Whether route route_index's path_regex runs JIT-compiled (false: no regex, or PCRE2 without
 * JIT, where the interpreter is used instead); for `sluice check` and diagnostics. */
bool route_regex_uses_jit(const struct route_table *t, size_t route_index);

/* Host matching rule shared with TLS SNI selection: pattern "*.example.com" matches
 * "a.example.com" and "a.b.example.com" but not "example.com"; otherwise case-insensitive equality.
 * A NULL pattern matches any host; a NULL host matches only that. One trailing dot (the DNS root,
 * "example.com.") is ignored on either side. */
int route_host_matches(const char *pattern, const char *host, size_t host_len);

#endif
