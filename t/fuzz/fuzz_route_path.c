/* fuzz_route_path.c - route_path_normalize on any bytes.
 *
 * Invariants: the result is never longer than the input and is the same twice;
 * a path starting with '/' gives one that starts with '/' and has no "//" and
 * no "." or ".." segment (a route prefix cannot be walked around); any other
 * input is copied as it is.
 *
 * FUZZ_SOURCES: route_path.c
 */
#include <string.h>

#include "fuzz_common.h"
#include "route_path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool has_dot_segment(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '/')
			continue;
		size_t j = i + 1, k = j;
		while (k < n && s[k] != '/')
			k++;
		if ((k - j == 1 && s[j] == '.') || (k - j == 2 && s[j] == '.' && s[j + 1] == '.'))
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		return 0;
	const char *in = (const char *)data;
	char *a = malloc(size + 1), *b = malloc(size + 1);
	FUZZ_REQUIRE(a && b);
	size_t na = route_path_normalize(in, size, a);
	size_t nb = route_path_normalize(in, size, b);
	FUZZ_REQUIRE(na <= size);
	FUZZ_REQUIRE(na == nb && memcmp(a, b, na) == 0);
	if (size > 0 && in[0] == '/') {
		FUZZ_REQUIRE(na >= 1 && a[0] == '/');
		for (size_t i = 0; i + 1 < na; i++)
			FUZZ_REQUIRE(!(a[i] == '/' && a[i + 1] == '/'));
		FUZZ_REQUIRE(!has_dot_segment(a, na));
	} else {
		FUZZ_REQUIRE(na == size && memcmp(a, in, size) == 0);
	}
	free(a);
	free(b);
	return 0;
}
