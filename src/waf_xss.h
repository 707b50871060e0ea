/* waf_xss.h - HTML/JavaScript injection (XSS) detection (docs/waf.md, "xss").
 *
 * A value is read the ways a page could embed it: as HTML text (a tag is
 * parsed: a script-capable tag such as script, iframe, object, embed, base,
 * meta or style, a closing </script, an event-handler attribute onX=, a URL
 * attribute whose value is a javascript:, vbscript: or data:text/html URL,
 * a style with expression() or a javascript: URL, srcdoc), as the inside of
 * an attribute (a quote or space, then an event-handler attribute), as a URL
 * (the value itself is a script URL, whitespace and control bytes inside
 * the scheme ignored as browsers do), and as the inside of a script string
 * (a quote or separator, then a call of alert, prompt or confirm, with '('
 * or a template backtick). Entity and URL decoding are the caller's
 * transforms. Own code, after the public description of libinjection's HTML
 * tokenizer approach.
 *
 * Pure, no allocation, thread-safe; input beyond WAF_XSS_MAX_INPUT is not read.
 */
#ifndef SLUICE_WAF_XSS_H
#define SLUICE_WAF_XSS_H

#include <stdbool.h>
#include <stddef.h>

#define WAF_XSS_MAX_INPUT 65536
/* Every shape needs one of these bytes (a tag, a scheme, an attribute, a
 * call): a value without any is never an injection, callers may skip it. */
#define WAF_XSS_NEEDS "<:=(`"

/* true if s holds an injection; *why (may be NULL) names the shape (static).
 * A reading is tried only when its necessary byte occurs (':' for a script
 * URL, '<' for tags, '=' for attributes, '(' or a backtick after a sink's
 * name for a call). */
bool waf_xss_detect(const char *s, size_t n, const char **why);
/* The same, trying every reading (tests check the shortcut against it). */
bool waf_xss_detect_all(const char *s, size_t n, const char **why);

#endif
