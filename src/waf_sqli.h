/* waf_sqli.h - SQL injection detection by tokenizing (docs/waf.md, "sqli").
 *
 * A value is read as SQL three times: as it is (a number or a word put in a
 * query), and as if it were the rest of a single- or a double-quoted SQL
 * string (its first such quote then closes the string, as an injection
 * must). Each reading is cut into tokens (strings, numbers, words classed as
 * keyword, statement, logic operator, UNION, function call, variable,
 * operators, punctuation; comments and MySQL's executable comments are
 * understood) and the token sequence is checked for the shapes injections
 * take: a string or number broken out of followed by a logic operator and
 * an operand, UNION SELECT, a stacked statement with its own grammar (DROP
 * TABLE, DELETE FROM, UPDATE ... SET, ...), a comment right after a quote
 * break, known time and file functions called, tautologies. The design
 * follows the public description of libinjection's approach (tokens, not
 * regexes); the code and the shapes are this project's own.
 *
 * Pure functions over bytes, no allocation; input over WAF_SQLI_MAX_INPUT
 * bytes is read only up to that. Thread-safe.
 */
#ifndef SLUICE_WAF_SQLI_H
#define SLUICE_WAF_SQLI_H

#include <stdbool.h>
#include <stddef.h>

#define WAF_SQLI_MAX_INPUT 16384
#define WAF_SQLI_FP_LEN 8

struct waf_sqli_result {
	char fingerprint[WAF_SQLI_FP_LEN + 1]; /* token types of the matching reading: s n k E U f b & o v ( ) , ; . x */
	const char *shape;                     /* which shape matched (a static string) */
	char context;                          /* 0, '\'' or '"': the reading that matched */
};

/* true if some reading of s has an injection shape; out (may be NULL) says which.
 * Most values are decided without tokenizing: no quote, no comment, no '@',
 * no "||"/"&&", no leading number, no word a shape needs (and, or, union,
 * select and the other statements, null/true/false) and no '(' after a
 * function's name leave no reading a shape can be made of. */
bool waf_sqli_detect(const char *s, size_t n, struct waf_sqli_result *out);
/* The same, tokenizing every value (tests check the shortcut against it). */
bool waf_sqli_detect_all(const char *s, size_t n, struct waf_sqli_result *out);

#endif
