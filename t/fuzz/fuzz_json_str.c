/* fuzz_json_str.c - json_str_escape and json_str_add (src/json_str.c) on any
 * bytes.
 *
 * Invariants: the output is valid UTF-8 with no raw control character (C0,
 * DEL, C1), no raw '"', and only whole escapes (\" \\ \n \r \t \u00XX); the
 * bounded form with room for everything says 0 and writes what the evbuffer
 * form writes; with less room (a cap taken from the input) it says -1, stays
 * below cap and writes a prefix of the whole output that obeys the same rules
 * (so it never splits an escape or a UTF-8 sequence); and when the input is
 * well-formed UTF-8, the output decoded as a JSON string is the input.
 * UTF-8 is judged by utf8_ref.h, which decodes by code point, apart from
 * json_str's byte table.
 *
 * FUZZ_SOURCES: json_str.c
 * FUZZ_LIBS: -levent_core
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "fuzz_common.h"
#include "json_str.h"
#include "utf8_ref.h"

static bool well_formed(const uint8_t *s, size_t n)
{
	uint32_t cp;
	for (size_t i = 0, k; i < n; i += k)
		if ((k = utf8_ref_decode(s + i, n - i, &cp)) == 0)
			return false;
	return true;
}

static int hexval(uint8_t c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t put_utf8(uint8_t *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	o[0] = (uint8_t)(0xc0 | cp >> 6); /* escapes are \u00XX: below U+0100 */
	o[1] = (uint8_t)(0x80 | (cp & 0x3f));
	return 2;
}

/* Checks out[0..n) as JSON string content and decodes it into dec (room for
 * n bytes); returns the decoded length. */
static size_t check_and_decode(const uint8_t *out, size_t n, uint8_t *dec)
{
	size_t d = 0;
	for (size_t i = 0; i < n;) {
		uint32_t cp = 0;
		if (out[i] == '\\') {
			FUZZ_REQUIRE(i + 1 < n);
			uint8_t e = out[i + 1];
			if (e == 'u') {
				FUZZ_REQUIRE(i + 6 <= n && out[i + 2] == '0' && out[i + 3] == '0');
				int hi = hexval(out[i + 4]), lo = hexval(out[i + 5]);
				FUZZ_REQUIRE(hi >= 0 && lo >= 0);
				cp = (uint32_t)(hi * 16 + lo);
				/* only what must not be raw is escaped this way: controls,
				 * or (not decidable here) a byte of ill-formed input */
				i += 6;
			} else {
				FUZZ_REQUIRE(e == '"' || e == '\\' || e == 'n' || e == 'r' || e == 't');
				cp = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
				i += 2;
			}
			d += put_utf8(dec + d, cp);
			continue;
		}
		size_t k = utf8_ref_decode(out + i, n - i, &cp);
		FUZZ_REQUIRE(k > 0);                          /* valid UTF-8 */
		FUZZ_REQUIRE(cp >= 0x20 && cp != '"');        /* no raw C0 or quote */
		FUZZ_REQUIRE(cp < 0x7f || cp >= 0xa0);        /* no raw DEL or C1 */
		memcpy(dec + d, out + i, k);
		d += k;
		i += k;
	}
	return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t cap = size * 6 + 1;
	uint8_t *out = malloc(cap), *dec = malloc(cap);
	struct evbuffer *b = evbuffer_new();
	FUZZ_REQUIRE(out != NULL && dec != NULL && b != NULL);

	size_t len = 0;
	FUZZ_REQUIRE(json_str_escape((char *)out, cap, &len, (const char *)data, size) == 0);
	FUZZ_REQUIRE(len < cap);
	size_t dlen = check_and_decode(out, len, dec);
	if (well_formed(data, size))
		FUZZ_REQUIRE(dlen == size && memcmp(dec, data, size) == 0);

	FUZZ_REQUIRE(json_str_add(b, (const char *)data, size) == 0);
	FUZZ_REQUIRE(evbuffer_get_length(b) == len);
	FUZZ_REQUIRE(len == 0 || memcmp(evbuffer_pullup(b, -1), out, len) == 0);

	/* less room: a whole-unit prefix, below cap */
	size_t small = fuzz_prefix(data, size, 1, len + 1);
	uint8_t *cut = malloc(small + 1);
	FUZZ_REQUIRE(cut != NULL);
	size_t clen = 0;
	int rc = json_str_escape((char *)cut, small, &clen, (const char *)data, size);
	FUZZ_REQUIRE(rc == (size == 0 || len < small ? 0 : -1));
	FUZZ_REQUIRE(clen <= len && (small == 0 ? clen == 0 : clen < small));
	FUZZ_REQUIRE(clen == 0 || memcmp(cut, out, clen) == 0);
	check_and_decode(cut, clen, dec);

	free(cut);
	evbuffer_free(b);
	free(dec);
	free(out);
	return 0;
}
