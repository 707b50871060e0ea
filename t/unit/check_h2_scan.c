/* Unit tests for the HTTP/2 frame scanner (src/h2_scan.c): the preface,
 * frames cut anywhere, each flood limit and its one-second window, the
 * second SETTINGS ACK kept from nghttp2, glitches, and read turns cut before
 * the HEADERS frame past H2_STREAMS_PER_TURN. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "h2_scan.h"

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static struct conf_http2 limits(void)
{
	return (struct conf_http2){.max_resets_per_s = 3,
	                           .max_pings_per_s = 2,
	                           .max_settings_per_s = 2,
	                           .max_empty_frames_per_s = 2,
	                           .max_continuation_frames = 2,
	                           .max_glitches_per_s = 2};
}

/* One frame (header and len payload bytes of 'x') appended at buf+n; returns the new length. */
static size_t put(uint8_t *buf, size_t n, uint8_t type, uint8_t flags, uint32_t id, uint32_t len)
{
	uint8_t *f = buf + n;
	f[0] = (uint8_t)(len >> 16);
	f[1] = (uint8_t)(len >> 8);
	f[2] = (uint8_t)len;
	f[3] = type;
	f[4] = flags;
	f[5] = (uint8_t)(id >> 24);
	f[6] = (uint8_t)(id >> 16);
	f[7] = (uint8_t)(id >> 8);
	f[8] = (uint8_t)id;
	memset(f + 9, 'x', len);
	return n + 9 + len;
}

static struct h2_scan fresh(void)
{
	struct h2_scan sc;
	h2_scan_init(&sc, 1000);
	h2_scan_turn(&sc);
	return sc;
}

/* A scanner that has passed the client preface. */
static struct h2_scan past_preface(const struct conf_http2 *cfg)
{
	struct h2_scan sc = fresh();
	size_t drop;
	enum h2_close why;
	ck_assert_uint_eq(h2_scan_frames(&sc, cfg, (const uint8_t *)PREFACE, sizeof PREFACE - 1, 2000, &drop, &why),
	                  sizeof PREFACE - 1);
	return sc;
}

/* Scans buf in pieces of `step` bytes, as reads would bring it; returns the bytes passed. */
static size_t scan_in_steps(struct h2_scan *sc, const struct conf_http2 *cfg, const uint8_t *buf, size_t n,
                            size_t step, enum h2_close *why)
{
	size_t done = 0, pending = 0; /* bytes scanned but cut (a partial frame header) */
	*why = H2_CLOSE__COUNT;
	while (done < n) {
		size_t avail = done + pending + step < n ? pending + step : n - done;
		size_t drop;
		size_t ok = h2_scan_frames(sc, cfg, buf + done, avail, 2000, &drop, why);
		if (*why != H2_CLOSE__COUNT || sc->turn_full)
			return done + ok;
		ck_assert_uint_eq(drop, 0);
		done += ok;
		pending = avail - ok;
		if (ok == 0 && done + avail >= n)
			break;
	}
	return done;
}

START_TEST(preface_and_frames_pass_in_any_pieces)
{
	struct conf_http2 cfg = limits();
	uint8_t buf[4096];
	size_t n = sizeof PREFACE - 1;
	memcpy(buf, PREFACE, n);
	n = put(buf, n, NGHTTP2_SETTINGS, 0, 0, 6);
	n = put(buf, n, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, 40);
	n = put(buf, n, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, 300);
	n = put(buf, n, NGHTTP2_WINDOW_UPDATE, 0, 0, 4);
	for (size_t step = 1; step <= n; step += step < 16 ? 1 : 37) {
		struct h2_scan sc = fresh();
		enum h2_close why;
		ck_assert_uint_eq(scan_in_steps(&sc, &cfg, buf, n, step, &why), n);
		ck_assert_int_eq(why, H2_CLOSE__COUNT);
		ck_assert_uint_eq(sc.frame_left, 0);
		ck_assert_uint_eq(sc.preface_left, 0);
	}
}
END_TEST

/* Frames of one type, one after another, until the scanner says a limit broke. */
static unsigned frames_until_closed(uint8_t type, uint8_t flags, uint32_t len, enum h2_close *why)
{
	struct conf_http2 cfg = limits();
	struct h2_scan sc = past_preface(&cfg);
	uint8_t buf[64];
	size_t n, drop;
	for (unsigned i = 1; i < 100; i++) {
		n = put(buf, 0, type, flags, type == NGHTTP2_DATA || type == NGHTTP2_RST_STREAM ? 1 : 0, len);
		size_t ok = h2_scan_frames(&sc, &cfg, buf, n, 2000, &drop, why);
		if (*why != H2_CLOSE__COUNT) {
			ck_assert_uint_eq(ok, 9); /* stops right after the header that broke it */
			return i;
		}
		ck_assert_uint_eq(ok, n);
	}
	return 0;
}

START_TEST(each_flood_is_named_past_its_limit)
{
	enum h2_close why;
	ck_assert_uint_eq(frames_until_closed(NGHTTP2_PING, 0, 8, &why), 3);
	ck_assert_int_eq(why, H2_CLOSE_PING_FLOOD);
	ck_assert_uint_eq(frames_until_closed(NGHTTP2_PING, NGHTTP2_FLAG_ACK, 8, &why), 0); /* answers are not */
	ck_assert_uint_eq(frames_until_closed(NGHTTP2_SETTINGS, 0, 0, &why), 3);
	ck_assert_int_eq(why, H2_CLOSE_SETTINGS_FLOOD);
	ck_assert_uint_eq(frames_until_closed(NGHTTP2_RST_STREAM, 0, 4, &why), 4);
	ck_assert_int_eq(why, H2_CLOSE_RAPID_RESET);
	ck_assert_uint_eq(frames_until_closed(NGHTTP2_DATA, 0, 0, &why), 3);
	ck_assert_int_eq(why, H2_CLOSE_EMPTY_FRAME_FLOOD);
	ck_assert_uint_eq(frames_until_closed(NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 0, &why), 0);
	ck_assert_uint_eq(frames_until_closed(NGHTTP2_PRIORITY, 0, 5, &why), 9); /* at 4x */
	ck_assert_int_eq(why, H2_CLOSE_EMPTY_FRAME_FLOOD);
	ck_assert_uint_eq(frames_until_closed(NGHTTP2_WINDOW_UPDATE, 0, 4, &why), 0); /* with a payload */
}
END_TEST

START_TEST(continuation_frames_per_header_block)
{
	struct conf_http2 cfg = limits();
	struct h2_scan sc = past_preface(&cfg);
	uint8_t buf[256];
	size_t n, drop;
	enum h2_close why;
	n = put(buf, 0, NGHTTP2_HEADERS, 0, 1, 10);
	n = put(buf, n, NGHTTP2_CONTINUATION, 0, 1, 10);
	n = put(buf, n, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1, 10);
	/* a new block starts its count again */
	n = put(buf, n, NGHTTP2_HEADERS, 0, 3, 10);
	n = put(buf, n, NGHTTP2_CONTINUATION, 0, 3, 10);
	n = put(buf, n, NGHTTP2_CONTINUATION, 0, 3, 10);
	ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, 2000, &drop, &why), n);
	ck_assert_int_eq(why, H2_CLOSE__COUNT);
	n = put(buf, 0, NGHTTP2_CONTINUATION, 0, 3, 10);
	ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, 2000, &drop, &why), 9);
	ck_assert_int_eq(why, H2_CLOSE_CONTINUATION_FLOOD);
}
END_TEST

START_TEST(counts_start_again_each_second)
{
	struct conf_http2 cfg = limits();
	struct h2_scan sc = past_preface(&cfg);
	uint8_t buf[64];
	size_t drop, n;
	enum h2_close why;
	n = put(buf, 0, NGHTTP2_PING, 0, 0, 8);
	uint64_t t = 2000;
	for (int i = 0; i < 10; i++, t += 1000000) { /* two pings a second, the limit: never three in a window */
		ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, t, &drop, &why), n);
		ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, t + 500000, &drop, &why), n);
		ck_assert_int_eq(why, H2_CLOSE__COUNT);
	}
	/* a third within the same second is the flood */
	ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, t, &drop, &why), n);
	ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, t, &drop, &why), n);
	ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, t, &drop, &why), 9);
	ck_assert_int_eq(why, H2_CLOSE_PING_FLOOD);
	t += 1000000;
	/* glitches share the window */
	ck_assert(!h2_scan_glitch(&sc, &cfg, t));
	ck_assert(!h2_scan_glitch(&sc, &cfg, t));
	ck_assert(h2_scan_glitch(&sc, &cfg, t));
	ck_assert(!h2_scan_glitch(&sc, &cfg, t + 1000000));
}
END_TEST

START_TEST(the_second_settings_ack_is_kept_from_nghttp2)
{
	struct conf_http2 cfg = limits();
	struct h2_scan sc = fresh();
	uint8_t buf[128];
	size_t drop, n = sizeof PREFACE - 1;
	enum h2_close why;
	memcpy(buf, PREFACE, n);
	n = put(buf, n, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, 0);
	size_t first_end = n;
	n = put(buf, n, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, 0);
	n = put(buf, n, NGHTTP2_PING, 0, 0, 8);
	ck_assert(!h2_scan_limit_known(&sc));
	/* the first ACK is nghttp2's; the scan stops before the second, which is to be dropped */
	ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, 2000, &drop, &why), first_end);
	ck_assert_uint_eq(drop, 9);
	ck_assert(h2_scan_limit_known(&sc));
	ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf + first_end + 9, n - first_end - 9, 2000, &drop, &why),
	                  n - first_end - 9);
	ck_assert_uint_eq(drop, 0);
	/* a third ACK (of a later SETTINGS) is nghttp2's again */
	n = put(buf, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, 0);
	ck_assert_uint_eq(h2_scan_frames(&sc, &cfg, buf, n, 2000, &drop, &why), n);
	ck_assert_uint_eq(drop, 0);
}
END_TEST

START_TEST(a_turn_ends_before_one_headers_frame_too_many)
{
	struct conf_http2 cfg = limits();
	struct h2_scan sc = fresh();
	enum { STREAMS = H2_STREAMS_PER_TURN * 2 + (H2_STREAMS_PER_TURN + 1) / 2 }; /* 3 turns, the last part-full */
	uint8_t *buf = malloc(64 + STREAMS * (9 + 20 + 9 + 4));
	size_t drop, n = sizeof PREFACE - 1;
	enum h2_close why;
	memcpy(buf, PREFACE, n);
	size_t cut[STREAMS + 1];
	for (int i = 0; i < STREAMS; i++) {
		cut[i] = n;
		n = put(buf, n, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 2u * (unsigned)i + 1, 20);
		n = put(buf, n, NGHTTP2_WINDOW_UPDATE, 0, 0, 4); /* other frames do not count */
	}
	cut[STREAMS] = n;
	size_t off = 0;
	int turns = 0;
	while (off < n) {
		h2_scan_turn(&sc);
		size_t ok = h2_scan_frames(&sc, &cfg, buf + off, n - off, 2000, &drop, &why);
		ck_assert_int_eq(why, H2_CLOSE__COUNT);
		off += ok;
		turns++;
		int took = turns * H2_STREAMS_PER_TURN < STREAMS ? turns * H2_STREAMS_PER_TURN : STREAMS;
		ck_assert_uint_eq(off, cut[took]); /* right before the next turn's first HEADERS frame */
		ck_assert(sc.turn_full == (took < STREAMS));
	}
	ck_assert_int_eq(turns, 3);
	free(buf);
}
END_TEST

static Suite *h2_scan_suite(void)
{
	Suite *s = suite_create("h2_scan");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, preface_and_frames_pass_in_any_pieces);
	tcase_add_test(tc, each_flood_is_named_past_its_limit);
	tcase_add_test(tc, continuation_frames_per_header_block);
	tcase_add_test(tc, counts_start_again_each_second);
	tcase_add_test(tc, the_second_settings_ack_is_kept_from_nghttp2);
	tcase_add_test(tc, a_turn_ends_before_one_headers_frame_too_many);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(h2_scan_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
