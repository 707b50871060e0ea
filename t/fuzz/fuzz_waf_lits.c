/* fuzz_waf_lits.c - the WAF's regex literal prefilter (src/waf_lits.c)
 * against PCRE2 itself.
 *
 * The input is a pattern, a NUL byte and a subject. The pattern is read
 * only when PCRE2 compiles it (PCRE2_DOTALL, as the rule compiler does:
 * that also bounds its nesting). Invariants: the same pattern gives the
 * same answer and set twice; a set has 1 to WAF_LITS_MAX literals of 2 to
 * WAF_LIT_MAX bytes; and whenever the pattern matches the subject, one of
 * the literals occurs in the subject, ASCII case aside (else the evaluator,
 * which gives PCRE2 only values holding a literal, would miss a match).
 *
 * FUZZ_SOURCES: waf_lits.c
 * FUZZ_LIBS: -lpcre2-8
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <string.h>

#include "fuzz_common.h"
#include "waf_lits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static bool occurs_ci(const uint8_t *s, size_t n, const char *lit, size_t len)
{
	for (size_t i = 0; i + len <= n; i++) {
		size_t k = 0;
		while (k < len && fold(s[i + k]) == fold((unsigned char)lit[k]))
			k++;
		if (k == len)
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 2048)
		return 0;
	const uint8_t *nul = memchr(data, 0, size);
	size_t plen = nul ? (size_t)(nul - data) : size;
	const uint8_t *subject = nul ? nul + 1 : data + size;
	size_t slen = nul ? size - plen - 1 : 0;
	int code;
	PCRE2_SIZE off;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)data, plen, PCRE2_DOTALL, &code, &off, NULL);
	if (!re)
		return 0;
	static struct waf_litset a, b;
	bool ok = waf_lits_of_regex((const char *)data, plen, &a);
	FUZZ_REQUIRE(waf_lits_of_regex((const char *)data, plen, &b) == ok);
	if (ok) {
		FUZZ_REQUIRE(a.n >= 1 && a.n <= WAF_LITS_MAX && a.n == b.n);
		for (size_t k = 0; k < a.n; k++) {
			FUZZ_REQUIRE(a.len[k] >= 2 && a.len[k] <= WAF_LIT_MAX && a.len[k] == b.len[k]);
			FUZZ_REQUIRE(memcmp(a.lit[k], b.lit[k], a.len[k]) == 0);
		}
		pcre2_match_data *md = pcre2_match_data_create(1, NULL);
		pcre2_match_context *mctx = pcre2_match_context_create(NULL);
		FUZZ_REQUIRE(md && mctx);
		pcre2_set_match_limit(mctx, 100000);
		pcre2_set_depth_limit(mctx, 5000);
		if (pcre2_match(re, (PCRE2_SPTR)subject, slen, 0, 0, md, mctx) >= 0) {
			bool found = false;
			for (size_t k = 0; k < a.n && !found; k++)
				found = occurs_ci(subject, slen, a.lit[k], a.len[k]);
			FUZZ_REQUIRE(found);
		}
		pcre2_match_data_free(md);
		pcre2_match_context_free(mctx);
	}
	pcre2_code_free(re);
	return 0;
}
