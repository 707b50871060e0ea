/* json_str.h - the one JSON string escaper. Every JSON string sluice writes
 * (error log and access log lines, /?json, counters, dump-state, admin
 * answers, fleet status) is escaped here, so they all read the same way.
 *
 * Contract: the output is the content of a JSON string (no quotes), valid
 * UTF-8, and holds no raw control character:
 * - '"' and '\\' are escaped; LF, CR and TAB as \n, \r, \t; every other C0
 *   control, DEL and the C1 controls (U+0080-U+009F, which terminals act on)
 *   as \u00XX: the code point, so a reader gets the same text back;
 * - well-formed UTF-8 (RFC 3629: shortest form, no surrogates U+D800-U+DFFF,
 *   nothing above U+10FFFF, no sequence cut short) is copied as it is;
 * - each byte of an ill-formed sequence is written as \u00XX, XX its value:
 *   nothing is lost and strict parsers accept the output, though a reader
 *   decodes such a byte as the character U+00XX.
 * Stateless, no allocation of its own; any thread. */
#ifndef SLUICE_JSON_STR_H
#define SLUICE_JSON_STR_H

#include <stddef.h>

struct evbuffer;

/* Append s[0..n) escaped to dst[*len..cap) and advance *len. The output
 * stays below cap (dst[cap - 1] is never written, room for a NUL) and stops
 * before an escape or a UTF-8 sequence that would not fit whole. Returns 0,
 * or -1 if it had to stop before the end of s. */
int json_str_escape(char *dst, size_t cap, size_t *len, const char *s, size_t n);

/* Append s[0..n) escaped to out, whole. Returns 0, or -1 if out could not
 * grow (what was appended before stays). */
int json_str_add(struct evbuffer *out, const char *s, size_t n);

/* The same between double quotes: a whole JSON string. */
int json_str_add_quoted(struct evbuffer *out, const char *s, size_t n);

#endif
