/* utf8_ref.h - a UTF-8 decoder by code point, the reference that
 * fuzz_json_str.c and t/unit/check_json_str.c check src/json_str.c against
 * (json_str works from RFC 3629's byte ranges instead, so the two do not
 * share a mistake). */
#ifndef SLUICE_UTF8_REF_H
#define SLUICE_UTF8_REF_H

#include <stddef.h>
#include <stdint.h>

/* The well-formed UTF-8 sequence at s[0..n) (n > 0): its length, with its
 * code point in *cp; 0 if s starts no well-formed sequence. */
static inline size_t utf8_ref_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
	size_t k;
	uint32_t v, min;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		k = 2;
		v = s[0] & 0x1fu;
		min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		k = 3;
		v = s[0] & 0x0fu;
		min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		k = 4;
		v = s[0] & 0x07u;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < k)
		return 0;
	for (size_t i = 1; i < k; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3fu);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return k;
}

#endif
