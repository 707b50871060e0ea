/* fuzz_trace_context.c - the W3C Trace Context parsers on any bytes (a
 * client's traceparent and tracestate header values).
 *
 * Invariants: an accepted traceparent is at least 55 bytes, has non-zero
 * ids, and reads back the same from what trace_parent_format writes for it
 * (and, for version 00, that text is the input); a traceparent with any
 * byte changed to upper case where a hex digit was is refused. What
 * trace_state_bound keeps is at most 512 characters, printable, bounded to
 * 32 members, made only of members of the input, and bounded again it stays
 * the same (what sluice forwards, it would forward again).
 *
 * FUZZ_SOURCES: trace_context.c
 * FUZZ_DICT: trace.dict
 */
#include <stdio.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_common.h"
#include "trace_context.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_parent(const char *s, size_t n)
{
	struct trace_parent p;
	if (!trace_parent_parse(s, n, &p))
		return;
	FUZZ_REQUIRE(n >= TRACE_PARENT_LEN);
	FUZZ_REQUIRE(!trace_id_is_zero(p.trace_id, TRACE_ID_LEN));
	FUZZ_REQUIRE(!trace_id_is_zero(p.parent_id, TRACE_SPAN_ID_LEN));
	char out[TRACE_PARENT_LEN + 1];
	trace_parent_format(p.trace_id, p.parent_id, p.flags, out);
	FUZZ_REQUIRE(strlen(out) == TRACE_PARENT_LEN);
	struct trace_parent q;
	FUZZ_REQUIRE(trace_parent_parse(out, TRACE_PARENT_LEN, &q));
	FUZZ_REQUIRE(memcmp(&p, &q, sizeof p) == 0);
	if (s[0] == '0' && s[1] == '0')
		FUZZ_REQUIRE(n == TRACE_PARENT_LEN && memcmp(out, s, n) == 0);
	/* upper-case hex is not hex here */
	char up[TRACE_PARENT_LEN];
	memcpy(up, s, TRACE_PARENT_LEN);
	for (size_t i = 3; i < TRACE_PARENT_LEN; i++) {
		if (up[i] >= 'a' && up[i] <= 'f') {
			up[i] = (char)(up[i] - 'a' + 'A');
			FUZZ_REQUIRE(!trace_parent_parse(up, TRACE_PARENT_LEN, &q));
			break;
		}
	}
}

static void check_state(const char *s, size_t n)
{
	char out[TRACE_STATE_MAX + 1];
	size_t len = trace_state_bound(s, n, out, sizeof out);
	FUZZ_REQUIRE(len <= TRACE_STATE_MAX && strlen(out) == len);
	size_t members = len ? 1 : 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)out[i];
		FUZZ_REQUIRE(c >= 0x20 && c <= 0x7e);
		if (c == ',')
			members++;
	}
	FUZZ_REQUIRE(members <= TRACE_STATE_MAX_MEMBERS);
	/* every kept member is a member of the input */
	for (size_t i = 0; i < len;) {
		const char *comma = memchr(out + i, ',', len - i);
		size_t e = comma ? (size_t)(comma - out) : len;
		FUZZ_REQUIRE(e > i);
		FUZZ_REQUIRE(memmem(s, n, out + i, e - i) != NULL);
		i = e + 1;
	}
	char again[TRACE_STATE_MAX + 1];
	size_t len2 = trace_state_bound(out, len, again, sizeof again);
	FUZZ_REQUIRE(len2 == len && memcmp(again, out, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a private copy: the parsers must not read past n */
	char *buf = malloc(size ? size : 1);
	FUZZ_REQUIRE(buf != NULL);
	memcpy(buf, data, size);
	check_parent(buf, size);
	check_state(buf, size);
	free(buf);
	return 0;
}
