/* fuzz_otlp_answer.c - the decoders of an OTLP collector's answer on any
 * bytes: the reason in a refusal (trace_otlp_status_message: a
 * google.rpc.Status in JSON or protobuf, or a proxy's text) and a partial
 * success (trace_otlp_rejected), each under every content type it tells
 * apart. The first byte picks the bound of the message.
 *
 * Invariants: the message is NUL-terminated within its bound, its length
 * is what the call returns, it is valid UTF-8 with no NUL, and the
 * decoders never read past the body (ASan: the body is a private copy of
 * exactly its size).
 *
 * FUZZ_SOURCES: ../modules/trace_otlp.c pb_write.c trace_context.c
 * FUZZ_CFLAGS: -I/usr/include/lua5.4 -DPACKAGE_VERSION="fuzz"
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../modules/trace_otlp.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points
 * past U+10FFFF) without NUL. */
static bool valid_utf8(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = s[i];
		size_t len = c == 0 ? 0 : c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
		           : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
		if (!len || n - i < len)
			return false;
		unsigned cp = c & (0x7f >> len);
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
		if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const types[] = {"application/json", "application/x-protobuf", "text/plain", ""};
	if (size < 1)
		return 0;
	size_t cap = (size_t)data[0] % 64 + 1; /* 1..64: bounds that cut inside characters too */
	data++;
	size--;
	char *body = malloc(size ? size : 1);
	FUZZ_REQUIRE(body != NULL);
	memcpy(body, data, size);
	for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
		char msg[65];
		memset(msg, 'Z', sizeof msg);
		size_t n = trace_otlp_status_message(types[t], body, size, msg, cap);
		FUZZ_REQUIRE(n < cap);
		FUZZ_REQUIRE(msg[n] == '\0' && strlen(msg) == n);
		FUZZ_REQUIRE(msg[cap] == 'Z'); /* nothing written past the bound */
		FUZZ_REQUIRE(valid_utf8((const unsigned char *)msg, n));
		for (int proto = 0; proto < 2; proto++) {
			char pmsg[65];
			memset(pmsg, 'Z', sizeof pmsg);
			(void)trace_otlp_rejected(proto ? CONF_TRACING_HTTP_PROTOBUF : CONF_TRACING_HTTP_JSON, types[t], body,
			                          size, pmsg, cap);
			FUZZ_REQUIRE(memchr(pmsg, '\0', cap) != NULL);
			FUZZ_REQUIRE(pmsg[cap] == 'Z');
		}
	}
	free(body);
	return 0;
}
