/* waf_ac.h - Aho-Corasick multi-pattern matching, ASCII case-insensitive.
 *
 * The WAF's phrase rules (operator `phrases`) of one matcher group share one
 * automaton: a value is scanned once whatever the number of phrases and
 * rules. Build: waf_ac_new(), waf_ac_add() per phrase (an id of the caller's,
 * e.g. a rule index; the same phrase may be added with several ids),
 * waf_ac_compile(). The compiled automaton is a DFA over byte classes (the
 * bytes that occur in some phrase, A-Z folded onto a-z; every other byte is
 * one class), immutable and safe to search from any number of threads.
 *
 * waf_ac_search() calls found(id, end, arg) for every occurrence (end: the
 * offset just past it) in order of end; found returns true to stop early.
 */
#ifndef SLUICE_WAF_AC_H
#define SLUICE_WAF_AC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct waf_ac;

struct waf_ac *waf_ac_new(void);
/* false: out of memory, or an empty phrase (never added). Not after compile. */
bool waf_ac_add(struct waf_ac *ac, const char *phrase, size_t len, uint32_t id);
/* false: out of memory (the automaton is then unusable: free it). */
bool waf_ac_compile(struct waf_ac *ac);
void waf_ac_search(const struct waf_ac *ac, const char *s, size_t n, bool (*found)(uint32_t id, size_t end, void *arg),
                   void *arg);
size_t waf_ac_states(const struct waf_ac *ac);
void waf_ac_free(struct waf_ac *ac);

#endif
