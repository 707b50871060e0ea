/* http.h - protocol-neutral pieces shared by the HTTP/1 codec, HTTP/2 sessions,
 * routing and policies.
 *
 * A header is a view into bytes owned by someone else (the connection's input
 * buffer or the request arena); it is valid as long as that owner says so. */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct http_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* Case-insensitive comparison of a header name with a NUL-terminated lower-case
 * literal. Inline so that the literal's length is a constant and most headers
 * are rejected by the length check alone (this runs for every header of every
 * request and response). */
static inline bool http_name_is(const struct http_header *h, const char *lower_name)
{
	size_t n = strlen(lower_name);
	return h->name_len == n && strncasecmp(h->name, lower_name, n) == 0;
}

/* Index of the first header named lower_name (case-insensitive), or -1. */
int http_find_header(const struct http_header *hs, size_t n, const char *lower_name);

/* Standard reason phrase for a status code ("OK", "Not Found", ...); "Unknown" when none. */
const char *http_status_text(int status);

#endif
