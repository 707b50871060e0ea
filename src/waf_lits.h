/* waf_lits.h - literal prefilters for the WAF's regex rules.
 *
 * A set of literal strings at least one of which occurs (ASCII case aside)
 * in every match, read from the pattern: for a sequence, the best of its
 * literal runs and of its required groups; for an alternation, the union of
 * its branches' sets (every branch must have one). Quantified items, classes,
 * escapes other than single bytes, anchors and lookarounds end a run; a
 * construct not understood gives no set, and the rule then runs on every
 * value its byte classes allow (still correct, only slower). The rule
 * compiler (waf_rules.c, main thread) puts the literals into the rule set's
 * union automaton: a value none of them occurs in is not given to PCRE2 at
 * all.
 *
 * Pure: no allocation, no globals; the set is the caller's.
 */
#ifndef SLUICE_WAF_LITS_H
#define SLUICE_WAF_LITS_H

#include <stdbool.h>
#include <stddef.h>

#define WAF_LIT_MAX 24  /* bytes of one literal */
#define WAF_LITS_MAX 96 /* literals in a set */

struct waf_litset {
	bool ok;
	size_t n;
	char lit[WAF_LITS_MAX][WAF_LIT_MAX];
	size_t len[WAF_LITS_MAX];
};

/* The literal set of the pattern pat (len bytes, compiled with
 * PCRE2_DOTALL) into *out, or false: no prefilter (a construct not
 * understood, or a literal shorter than 2 bytes, left to the byte classes). */
bool waf_lits_of_regex(const char *pat, size_t len, struct waf_litset *out);

#endif
