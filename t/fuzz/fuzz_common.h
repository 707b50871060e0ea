/* fuzz_common.h - helpers shared by the HTTP/1 fuzz targets. */
#ifndef SLUICE_FUZZ_COMMON_H
#define SLUICE_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Invariant failures abort so libFuzzer records the input as a crash. */
#define FUZZ_REQUIRE(cond)                                                                       \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

/* p[0..n) lies inside base[0..len); compared as integers because comparing
 * pointers into different objects is undefined. */
static inline bool fuzz_inside(const void *base, size_t len, const void *p, size_t n)
{
	uintptr_t b = (uintptr_t)base, q = (uintptr_t)p;
	return p != NULL && q >= b && q - b <= len && n <= len - (q - b);
}

/* A field value as the parser hands it out: no CR, LF, NUL or other CTL
 * (HTAB aside), and no whitespace at either end. */
static inline bool fuzz_clean_value(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return n == 0 || (v[0] != ' ' && v[0] != '\t' && v[n - 1] != ' ' && v[n - 1] != '\t');
}

/* Deterministic prefix lengths below limit, derived from the input so a
 * crash reproduces from the saved file alone. */
static inline size_t fuzz_prefix(const uint8_t *data, size_t size, size_t i, size_t limit)
{
	if (limit == 0)
		return 0;
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)i;
	for (size_t k = 0; k < size && k < 64; k++)
		h = (h ^ data[k]) * 1099511628211ULL;
	return (size_t)(h % limit);
}

#endif
