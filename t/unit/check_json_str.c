/* Unit tests for json_str.c, the one JSON string escaper: what is copied,
 * what is escaped and how, both forms (bounded buffer and evbuffer) agreeing,
 * and the bounded form stopping only between whole escapes and whole UTF-8
 * sequences. An independent decoder (code points, not json_str's byte-range
 * table) checks every 1- and 2-byte input and every 3- and 4-byte sequence
 * shape. */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "json_str.h"
#include "log.h"

#include "../fuzz/utf8_ref.h"

/* s[0..n) escaped by both forms, which must agree; a NUL-terminated copy in
 * a buffer the caller frees. */
static char *esc_n(const char *s, size_t n)
{
	size_t cap = n * 6 + 1;
	char *a = malloc(cap + 1);
	ck_assert_ptr_nonnull(a);
	size_t len = 0;
	ck_assert_int_eq(json_str_escape(a, cap, &len, s, n), 0);
	ck_assert_uint_lt(len, cap);
	a[len] = '\0';
	struct evbuffer *b = evbuffer_new();
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(json_str_add(b, s, n), 0);
	ck_assert_uint_eq(evbuffer_get_length(b), len);
	ck_assert(len == 0 || memcmp(evbuffer_pullup(b, -1), a, len) == 0);
	evbuffer_free(b);
	return a;
}

#define CHECK_ESC(in, want)                                     \
	do {                                                    \
		char *got_ = esc_n((in), sizeof(in) - 1);       \
		ck_assert_str_eq(got_, (want));                 \
		free(got_);                                     \
	} while (0)

START_TEST(ascii_is_copied)
{
	CHECK_ESC("", "");
	CHECK_ESC("GET /index.html?a=1&b=2 HTTP/1.1", "GET /index.html?a=1&b=2 HTTP/1.1");
	CHECK_ESC(" !#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~", " !#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~");
}
END_TEST

START_TEST(quote_and_backslash)
{
	CHECK_ESC("a\"b\\c", "a\\\"b\\\\c");
	CHECK_ESC("\"\"\\\\", "\\\"\\\"\\\\\\\\");
}
END_TEST

START_TEST(control_characters)
{
	CHECK_ESC("a\nb\rc\td", "a\\nb\\rc\\td");
	CHECK_ESC("\x01\x08\x0b\x0c\x1b\x1f", "\\u0001\\u0008\\u000b\\u000c\\u001b\\u001f");
	CHECK_ESC("x\x7fy", "x\\u007fy");
	/* NUL inside the length is a character like any other */
	CHECK_ESC("a\0b", "a\\u0000b");
	/* every C0 byte alone */
	for (unsigned c = 0; c < 0x20; c++) {
		char in[1] = {(char)c}, want[8];
		if (c == '\n' || c == '\r' || c == '\t')
			snprintf(want, sizeof want, "\\%c", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
		else
			snprintf(want, sizeof want, "\\u%04x", c);
		char *got = esc_n(in, 1);
		ck_assert_str_eq(got, want);
		free(got);
	}
}
END_TEST

START_TEST(utf8_is_kept)
{
	CHECK_ESC("/caf\xc3\xa9", "/caf\xc3\xa9");                      /* U+00E9, 2 bytes */
	CHECK_ESC("\xc2\xa0\xdf\xbf", "\xc2\xa0\xdf\xbf");               /* U+00A0 (first after C1), U+07FF */
	CHECK_ESC("\xe0\xa0\x80\xe2\x82\xac", "\xe0\xa0\x80\xe2\x82\xac"); /* U+0800, U+20AC */
	CHECK_ESC("\xed\x9f\xbf\xee\x80\x80", "\xed\x9f\xbf\xee\x80\x80"); /* U+D7FF, U+E000: around the surrogates */
	CHECK_ESC("\xef\xbf\xbd\xef\xbf\xbf", "\xef\xbf\xbd\xef\xbf\xbf"); /* U+FFFD, U+FFFF */
	CHECK_ESC("\xf0\x90\x80\x80", "\xf0\x90\x80\x80");               /* U+10000, 4 bytes */
	CHECK_ESC("ok \xf0\x9f\x98\x80!", "ok \xf0\x9f\x98\x80!");       /* U+1F600 */
	CHECK_ESC("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf");               /* U+10FFFF, the last */
	CHECK_ESC("\xe6\x9d\xb1\xe4\xba\xac \"q\"", "\xe6\x9d\xb1\xe4\xba\xac \\\"q\\\"");
}
END_TEST

START_TEST(c1_controls_escaped_as_code_points)
{
	/* U+0080..U+009F are well-formed but act on terminals: \u0080.., the same text */
	CHECK_ESC("\xc2\x80", "\\u0080");
	CHECK_ESC("w\xc2\x9b" "b", "w\\u009bb");
	CHECK_ESC("\xc2\x9f\xc2\xa0", "\\u009f\xc2\xa0");
}
END_TEST

START_TEST(overlong_forms_escaped)
{
	CHECK_ESC("\xc0\x80", "\\u00c0\\u0080");
	CHECK_ESC("\xc1\xbf", "\\u00c1\\u00bf");
	CHECK_ESC("\xe0\x80\x80", "\\u00e0\\u0080\\u0080");
	CHECK_ESC("\xe0\x9f\xbf", "\\u00e0\\u009f\\u00bf");
	CHECK_ESC("\xf0\x80\x80\x80", "\\u00f0\\u0080\\u0080\\u0080");
	CHECK_ESC("\xf0\x8f\xbf\xbf", "\\u00f0\\u008f\\u00bf\\u00bf");
	CHECK_ESC("a\xc0\xafz", "a\\u00c0\\u00afz"); /* the classic overlong '/' */
}
END_TEST

START_TEST(surrogates_escaped)
{
	CHECK_ESC("\xed\xa0\x80", "\\u00ed\\u00a0\\u0080");
	CHECK_ESC("\xed\xbf\xbf", "\\u00ed\\u00bf\\u00bf");
	/* a CESU-8 pair is two surrogates, not a character */
	CHECK_ESC("\xed\xa0\xbd\xed\xb8\x80", "\\u00ed\\u00a0\\u00bd\\u00ed\\u00b8\\u0080");
}
END_TEST

START_TEST(above_max_and_never_valid_bytes)
{
	CHECK_ESC("\xf4\x90\x80\x80", "\\u00f4\\u0090\\u0080\\u0080");
	CHECK_ESC("\xf5\x80\x80\x80", "\\u00f5\\u0080\\u0080\\u0080");
	CHECK_ESC("\xf8\x88\x80\x80\x80", "\\u00f8\\u0088\\u0080\\u0080\\u0080");
	CHECK_ESC("\xfe\xff", "\\u00fe\\u00ff");
}
END_TEST

START_TEST(truncated_sequences)
{
	/* at the end */
	CHECK_ESC("\xc3", "\\u00c3");
	CHECK_ESC("a\xe2\x82", "a\\u00e2\\u0082");
	CHECK_ESC("\xf0\x9f\x98", "\\u00f0\\u009f\\u0098");
	/* in the middle: the next character is kept as it is */
	CHECK_ESC("\xe2\x82" "A", "\\u00e2\\u0082A");
	CHECK_ESC("\xc3\xc3\xa9", "\\u00c3\xc3\xa9");
	CHECK_ESC("\xf0\x9f\x98\xe2\x82\xac", "\\u00f0\\u009f\\u0098\xe2\x82\xac");
	CHECK_ESC("\xe2\n", "\\u00e2\\n");
	CHECK_ESC("\xc3\"", "\\u00c3\\\"");
}
END_TEST

START_TEST(lone_continuation_bytes)
{
	CHECK_ESC("\x80", "\\u0080");
	CHECK_ESC("a\xbf" "b", "a\\u00bfb");
	CHECK_ESC("\x80\x80\xbf", "\\u0080\\u0080\\u00bf");
	/* a valid sequence followed by one continuation too many */
	CHECK_ESC("\xc3\xa9\xa9", "\xc3\xa9\\u00a9");
	/* Latin-1 text is not UTF-8: each byte kept as \u00XX */
	CHECK_ESC("caf\xe9", "caf\\u00e9");
}
END_TEST

/* The bytes json_str_escape wrote for s[0..n) with room cap, after a
 * prefix of pre bytes already in the buffer. */
static size_t bounded(char *out, size_t cap, size_t pre, const char *s, size_t n, int *rc)
{
	memset(out, '#', cap + 8);
	memset(out, 'p', pre);
	size_t len = pre;
	*rc = json_str_escape(out, cap, &len, s, n);
	ck_assert(out[cap] == '#'); /* nothing at or past cap */
	return len;
}

START_TEST(bounded_form_examples)
{
	char out[64];
	int rc;
	/* the old contract: "\u0001" does not fit after "abc" in 8 */
	ck_assert_uint_eq(bounded(out, 8, 0, "abc\x01\x02", 5, &rc), 3);
	ck_assert_int_eq(rc, -1);
	/* a plain run is cut anywhere, one byte kept free */
	ck_assert_uint_eq(bounded(out, 4, 0, "abcdef", 6, &rc), 3);
	ck_assert_int_eq(rc, -1);
	ck_assert(memcmp(out, "abc", 3) == 0);
	/* a 3-byte character needs 3 bytes below cap: not in 5 after "ab" ... */
	ck_assert_uint_eq(bounded(out, 5, 0, "ab\xe2\x82\xac", 5, &rc), 2);
	ck_assert_int_eq(rc, -1);
	/* ... in 6 */
	ck_assert_uint_eq(bounded(out, 6, 0, "ab\xe2\x82\xac", 5, &rc), 5);
	ck_assert_int_eq(rc, 0);
	ck_assert(memcmp(out, "ab\xe2\x82\xac", 5) == 0);
	/* a C1 control's 6-byte escape is whole or absent */
	ck_assert_uint_eq(bounded(out, 6, 0, "\xc2\x9b", 2, &rc), 0);
	ck_assert_int_eq(rc, -1);
	ck_assert_uint_eq(bounded(out, 7, 0, "\xc2\x9b", 2, &rc), 6);
	ck_assert_int_eq(rc, 0);
	/* appending after what is there; already full: nothing more */
	ck_assert_uint_eq(bounded(out, 10, 5, "xyz\xf0\x9f\x98\x80", 7, &rc), 8);
	ck_assert_int_eq(rc, -1);
	ck_assert_uint_eq(bounded(out, 10, 10, "x", 1, &rc), 10);
	ck_assert_int_eq(rc, -1);
	ck_assert_uint_eq(bounded(out, 0, 0, "x", 1, &rc), 0);
	ck_assert_int_eq(rc, -1);
	/* nothing to write always fits */
	ck_assert_uint_eq(bounded(out, 0, 0, "", 0, &rc), 0);
	ck_assert_int_eq(rc, 0);
	/* log.h's name for it is the same function */
	size_t len = 0;
	ck_assert_int_eq(log_json_escape(out, sizeof out, &len, "\xc3\xa9\xff", 3), 0);
	ck_assert_uint_eq(len, 8);
	ck_assert(memcmp(out, "\xc3\xa9\\u00ff", 8) == 0);
}
END_TEST

/* For every cap, the bounded form writes a prefix of the whole output that
 * is exactly the escape of some prefix of the input (so no escape and no
 * UTF-8 sequence is ever split), stays below cap, and says -1 iff it stopped
 * short. */
START_TEST(bounded_form_never_splits)
{
	static const char in[] = "a\"\xc3\xa9\n\xe2\x82\xac\xf0\x9f\x98\x80\xc2\x9b\xff\xe2\x82z\\\x7f\xed\xa0\x80" "end";
	const size_t n = sizeof(in) - 1;
	char *whole = esc_n(in, n);
	size_t wlen = strlen(whole);
	/* the escapes of every prefix of the input: the only places it may stop */
	char **prefix = calloc(n + 1, sizeof(*prefix));
	ck_assert_ptr_nonnull(prefix);
	for (size_t k = 0; k <= n; k++)
		prefix[k] = esc_n(in, k);
	char out[512];
	for (size_t pre = 0; pre < 3; pre++) {
		/* cap 0 once; otherwise the buffer starts below cap */
		for (size_t cap = pre ? pre + 1 : 0; cap <= pre + wlen + 2; cap++) {
			int rc;
			size_t len = bounded(out, cap, pre, in, n, &rc);
			ck_assert_uint_ge(len, pre);
			if (cap > 0)
				ck_assert_uint_lt(len, cap);
			size_t got = len - pre;
			ck_assert_int_eq(rc, pre + wlen < cap ? 0 : -1);
			ck_assert(memcmp(out + pre, whole, got) == 0);
			/* (a cut inside a run of plain bytes is the escape of a
			 * shorter prefix too) */
			bool at_boundary = false;
			for (size_t k = 0; k <= n && !at_boundary; k++)
				at_boundary = strlen(prefix[k]) == got;
			ck_assert_msg(at_boundary, "cap %zu pre %zu stopped inside a unit at %zu", cap, pre, got);
		}
	}
	for (size_t k = 0; k <= n; k++)
		free(prefix[k]);
	free(prefix);
	free(whole);
}
END_TEST

START_TEST(evbuffer_forms)
{
	/* longer than the appender's 512-byte pieces, with characters and
	 * escapes across every piece boundary */
	char in[3000];
	size_t n = 0;
	while (n + 8 < sizeof in) {
		memcpy(in + n, "ab\xe2\x82\xac\"\xc3\xa9", 8);
		n += 8;
	}
	struct evbuffer *b = evbuffer_new();
	ck_assert_ptr_nonnull(b);
	for (size_t lead = 0; lead < 8; lead++) {
		evbuffer_drain(b, evbuffer_get_length(b));
		ck_assert_int_eq(json_str_add_quoted(b, in + lead, n - lead), 0);
		size_t blen = evbuffer_get_length(b);
		const char *got = (const char *)evbuffer_pullup(b, -1);
		char *want = esc_n(in + lead, n - lead);
		ck_assert_uint_eq(blen, strlen(want) + 2);
		ck_assert(got[0] == '"' && got[blen - 1] == '"');
		ck_assert(memcmp(got + 1, want, blen - 2) == 0);
		free(want);
	}
	evbuffer_drain(b, evbuffer_get_length(b));
	ck_assert_int_eq(json_str_add_quoted(b, "", 0), 0);
	ck_assert_uint_eq(evbuffer_get_length(b), 2);
	evbuffer_free(b);
}
END_TEST

/* What the contract says s[0..n) becomes, from the reference decoder. */
static size_t ref_escape(const unsigned char *s, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		uint32_t cp = 0;
		size_t k = utf8_ref_decode(s + i, n - i, &cp);
		if (k == 0) {
			o += (size_t)sprintf(out + o, "\\u%04x", s[i]);
			i++;
		} else if (cp == '"' || cp == '\\') {
			o += (size_t)sprintf(out + o, "\\%c", (char)cp);
			i++;
		} else if (cp == '\n' || cp == '\r' || cp == '\t') {
			o += (size_t)sprintf(out + o, "\\%c", cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't');
			i++;
		} else if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) {
			o += (size_t)sprintf(out + o, "\\u%04x", (unsigned)cp);
			i += k;
		} else {
			memcpy(out + o, s + i, k);
			o += k;
			i += k;
		}
	}
	out[o] = '\0';
	return o;
}

static void check_against_reference(const unsigned char *s, size_t n)
{
	char want[64], got[64];
	size_t wl = ref_escape(s, n, want);
	size_t len = 0;
	ck_assert_int_eq(json_str_escape(got, sizeof got, &len, (const char *)s, n), 0);
	if (len != wl || memcmp(got, want, wl) != 0) {
		char hex[32] = "";
		for (size_t i = 0; i < n; i++)
			snprintf(hex + 3 * i, sizeof hex - 3 * i, "%02x ", s[i]);
		ck_abort_msg("input %sgives %.*s, want %s", hex, (int)len, got, want);
	}
}

START_TEST(every_short_input_matches_the_reference)
{
	unsigned char s[4];
	for (unsigned a = 0; a < 256; a++) {
		s[0] = (unsigned char)a;
		check_against_reference(s, 1);
		for (unsigned b = 0; b < 256; b++) {
			s[1] = (unsigned char)b;
			check_against_reference(s, 2);
		}
	}
	/* 3- and 4-byte shapes: every lead from E0, every second byte, and
	 * third/fourth bytes at the edges of the continuation range */
	static const unsigned char tail[] = {0x00, 0x41, 0x7f, 0x80, 0x81, 0xbf, 0xc0, 0xc3, 0xff};
	for (unsigned a = 0xe0; a < 256; a++)
		for (unsigned b = 0; b < 256; b++)
			for (size_t c = 0; c < sizeof tail; c++) {
				s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = tail[c];
				check_against_reference(s, 3);
				for (size_t d = 0; d < sizeof tail; d++) {
					s[3] = tail[d];
					check_against_reference(s, 4);
				}
			}
}
END_TEST

static Suite *json_str_suite(void)
{
	Suite *s = suite_create("json_str");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, ascii_is_copied);
	tcase_add_test(tc, quote_and_backslash);
	tcase_add_test(tc, control_characters);
	tcase_add_test(tc, utf8_is_kept);
	tcase_add_test(tc, c1_controls_escaped_as_code_points);
	tcase_add_test(tc, overlong_forms_escaped);
	tcase_add_test(tc, surrogates_escaped);
	tcase_add_test(tc, above_max_and_never_valid_bytes);
	tcase_add_test(tc, truncated_sequences);
	tcase_add_test(tc, lone_continuation_bytes);
	tcase_add_test(tc, bounded_form_examples);
	tcase_add_test(tc, bounded_form_never_splits);
	tcase_add_test(tc, evbuffer_forms);
	tcase_add_test(tc, every_short_input_matches_the_reference);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(json_str_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
