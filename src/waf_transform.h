/* waf_transform.h - the WAF's value transforms (docs/waf.md, "Transforms").
 *
 * Every transform rewrites a buffer in place and returns the new length,
 * which is never more than the old one: a decoded form is always shorter
 * than or as long as its encoding, so a caller transforms a copy of a value
 * in one scratch buffer of the value's size, with no allocation. Pure
 * functions over bytes (no locale, no allocation, no global state); the
 * bytes may hold NULs. Invalid or truncated encodings are left as they are
 * (a "%zz" stays "%zz"), as browsers and servers that would receive them do.
 *
 * waf_transform_by_name() maps a rule's transform name (lua/waf/) to its
 * id; waf_transform_apply() runs one by id.
 */
#ifndef SLUICE_WAF_TRANSFORM_H
#define SLUICE_WAF_TRANSFORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum waf_transform {
	WAF_T_URL_DECODE,      /* %XX and + as space; %uXXXX as UTF-8 (IIS) */
	WAF_T_HTML_ENTITY,     /* &lt; &#60; &#x3c; (with or without ';') */
	WAF_T_LOWERCASE,       /* ASCII A-Z */
	WAF_T_COMPRESS_WS,     /* runs of whitespace (incl. \v \f NBSP) to one space */
	WAF_T_REMOVE_COMMENTS, /* C/SQL comments (slash-star, --, #) to one space; MySQL executable-comment bodies kept */
	WAF_T_NORMALIZE_PATH,  /* backslashes to '/', "//", "/./" and "/x/../" resolved */
	WAF_T_CMDLINE,         /* shell obfuscation: \ ^ ' " removed, ',' to space (';' kept: rules look for it), spaces before / and ( dropped, lower case */
	WAF_T_REMOVE_NULLS,    /* NUL bytes removed */
	WAF_T_BASE64,          /* standard or URL-safe base64, padding optional; not base64: unchanged */
	WAF_T_JS_DECODE,       /* \xHH \uHHHH \u{H..} \OOO \n and \C escapes */
	WAF_T_TRIM,            /* leading and trailing whitespace */
	WAF_T_COUNT
};

size_t waf_url_decode(char *s, size_t n);
size_t waf_html_entity_decode(char *s, size_t n);
size_t waf_lowercase(char *s, size_t n);
size_t waf_compress_ws(char *s, size_t n);
size_t waf_remove_comments(char *s, size_t n);
size_t waf_normalize_path(char *s, size_t n);
size_t waf_cmdline(char *s, size_t n);
size_t waf_remove_nulls(char *s, size_t n);
size_t waf_base64_decode(char *s, size_t n);
/* What waf_base64_decode would make of s, without writing it: the OR of
 * tab[byte] over the decoded bytes into *mask and their count into *outlen;
 * false (nothing set) when s is not base64 and the transform leaves it as
 * it is. A caller can tell from the decoded bytes' classes whether decoding
 * is worth it. */
bool waf_base64_classes(const char *s, size_t n, const uint64_t tab[256], uint64_t *mask, size_t *outlen);
size_t waf_js_decode(char *s, size_t n);
size_t waf_trim(char *s, size_t n);

/* cp as UTF-8 at s (room for 4 bytes): the bytes written, 0 for a surrogate or
 * a value above U+10FFFF. */
size_t waf_utf8_put(char *s, unsigned long cp);

size_t waf_transform_apply(enum waf_transform t, char *s, size_t n);
/* The transform's id, or -1 for an unknown name. */
int waf_transform_by_name(const char *name);
const char *waf_transform_name(enum waf_transform t);

#endif
