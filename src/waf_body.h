/* waf_body.h - the request-body and query parsers the WAF reads arguments
 * with: application/x-www-form-urlencoded (and query strings), JSON, and
 * multipart/form-data.
 *
 * Each parser calls visit() once per argument, in order, with the name and
 * value decoded (percent-decoding and '+'; JSON string escapes incl.
 * surrogate pairs; a multipart part's field name from Content-Disposition).
 * JSON values that are not strings (numbers, true, false, null) are given as
 * their text; an argument's name in JSON is the key of the member that holds
 * it (array elements take their array's key). A multipart part with a
 * filename is visited as WAF_ARG_FILE (value: the file name), its content
 * not at all. visit() returns false to stop.
 *
 * Memory: decoded bytes go to `scratch`, which the caller provides with at
 * least `n` bytes (decoding never grows). No allocation, no globals.
 * Malformed input returns false with *err set to a static message (what is
 * wrong); arguments visited before the error stay visited.
 */
#ifndef SLUICE_WAF_BODY_H
#define SLUICE_WAF_BODY_H

#include <stdbool.h>
#include <stddef.h>

enum waf_body_kind { WAF_BODY_OTHER, WAF_BODY_URLENCODED, WAF_BODY_JSON, WAF_BODY_MULTIPART };
enum waf_arg_kind { WAF_ARG_VALUE, WAF_ARG_FILE };

#define WAF_JSON_MAX_DEPTH 64

typedef bool (*waf_visit_fn)(void *arg, enum waf_arg_kind kind, const char *name, size_t nlen, const char *value,
                             size_t vlen);

/* The parser for a Content-Type value (media type compared without case,
 * parameters ignored; application/...+json is JSON). */
enum waf_body_kind waf_body_kind_of(const char *ct, size_t n);

bool waf_parse_urlencoded(const char *s, size_t n, char *scratch, waf_visit_fn visit, void *arg, const char **err);
bool waf_parse_json(const char *s, size_t n, char *scratch, waf_visit_fn visit, void *arg, const char **err);
/* The same JSON parser with the nesting depth of each value (0: the top
 * value, 1: a member of the top object, ...): `sluice waf test` reads its
 * JSON-lines requests with it. */
typedef bool (*waf_json_visit_fn)(void *arg, int depth, const char *name, size_t nlen, const char *value, size_t vlen);
bool waf_parse_json_depth(const char *s, size_t n, char *scratch, waf_json_visit_fn visit, void *arg, const char **err);
/* ct: the Content-Type value (its boundary parameter is required) */
bool waf_parse_multipart(const char *ct, size_t ctlen, const char *s, size_t n, char *scratch, waf_visit_fn visit,
                         void *arg, const char **err);

#endif
