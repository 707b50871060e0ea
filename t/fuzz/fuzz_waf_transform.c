/* fuzz_waf_transform.c - every WAF transform, and the SQL and XSS detectors,
 * on any bytes.
 *
 * Invariants: a transform never grows its input and gives the same result on
 * the same bytes (run twice on two copies); lowercase, compress_whitespace,
 * remove_nulls, trim and normalize_path reach a fixed point in one pass (a
 * second pass changes nothing); the input with no '%' and no '+' is left as it
 * is by url_decode; the detectors give the same verdict twice (no state),
 * the same with their shortcuts as without (waf_*_detect_all), and never read
 * past their input (ASan); waf_base64_classes agrees with what
 * waf_base64_decode writes.
 *
 * FUZZ_SOURCES: waf_transform.c waf_sqli.c waf_xss.c
 */
#include <string.h>

#include "fuzz_common.h"
#include "waf_sqli.h"
#include "waf_transform.h"
#include "waf_xss.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool idempotent(enum waf_transform t)
{
	return t == WAF_T_LOWERCASE || t == WAF_T_COMPRESS_WS || t == WAF_T_REMOVE_NULLS || t == WAF_T_TRIM ||
	       t == WAF_T_NORMALIZE_PATH;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *a = malloc(size + 1), *b = malloc(size + 1);
	FUZZ_REQUIRE(a && b);
	for (int t = 0; t < WAF_T_COUNT; t++) {
		memcpy(a, data, size);
		memcpy(b, data, size);
		size_t na = waf_transform_apply((enum waf_transform)t, a, size);
		size_t nb = waf_transform_apply((enum waf_transform)t, b, size);
		FUZZ_REQUIRE(na <= size);
		FUZZ_REQUIRE(na == nb && memcmp(a, b, na) == 0);
		if (idempotent((enum waf_transform)t)) {
			size_t again = waf_transform_apply((enum waf_transform)t, b, nb);
			FUZZ_REQUIRE(again == na && memcmp(a, b, na) == 0);
		}
		if (t == WAF_T_URL_DECODE && !memchr(data, '%', size) && !memchr(data, '+', size))
			FUZZ_REQUIRE(na == size && memcmp(a, data, size) == 0);
	}
	struct waf_sqli_result r1, r2;
	bool s1 = waf_sqli_detect((const char *)data, size, &r1);
	bool s2 = waf_sqli_detect((const char *)data, size, &r2);
	FUZZ_REQUIRE(s1 == s2);
	if (s1)
		FUZZ_REQUIRE(r1.shape == r2.shape && strcmp(r1.fingerprint, r2.fingerprint) == 0);
	FUZZ_REQUIRE(s1 == waf_sqli_detect_all((const char *)data, size, NULL));
	const char *w1, *w2;
	bool x1 = waf_xss_detect((const char *)data, size, &w1);
	FUZZ_REQUIRE(x1 == waf_xss_detect((const char *)data, size, &w2));
	FUZZ_REQUIRE(w1 == w2);
	FUZZ_REQUIRE(x1 == waf_xss_detect_all((const char *)data, size, NULL));
	/* base64: the classes of the decoded bytes, here the bytes themselves as a 64-bit hash */
	uint64_t tab[256], mask = 0;
	for (int c = 0; c < 256; c++)
		tab[c] = 1ull << (c % 64);
	size_t blen = 0;
	memcpy(a, data, size);
	size_t dn = waf_base64_decode(a, size);
	if (waf_base64_classes((const char *)data, size, tab, &mask, &blen)) {
		uint64_t want = 0;
		for (size_t i = 0; i < dn; i++)
			want |= tab[(unsigned char)a[i]];
		FUZZ_REQUIRE(blen == dn && mask == want);
	} else {
		FUZZ_REQUIRE(dn == size && memcmp(a, data, size) == 0);
	}
	free(a);
	free(b);
	return 0;
}
