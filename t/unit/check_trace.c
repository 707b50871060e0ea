/* Unit tests for tracing's pure pieces: the W3C traceparent/tracestate
 * parsers (src/trace_context.c), the OTLP JSON encoder and the span ring
 * (modules/trace_export.c). The gateway around them: t/test_tracing.py. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace_context.h"
#include "trace_export.h"

#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define SPAN "00f067aa0ba902b7"

static bool parse(const char *s, struct trace_parent *p)
{
	return trace_parent_parse(s, strlen(s), p);
}

START_TEST(traceparent_valid_and_round_trip)
{
	struct trace_parent p;
	ck_assert(parse("00-" TRACE "-" SPAN "-01", &p));
	ck_assert_uint_eq(p.trace_id[0], 0x4b);
	ck_assert_uint_eq(p.trace_id[15], 0x36);
	ck_assert_uint_eq(p.parent_id[7], 0xb7);
	ck_assert_uint_eq(p.flags, 1);
	char out[TRACE_PARENT_LEN + 1];
	trace_parent_format(p.trace_id, p.parent_id, p.flags, out);
	ck_assert_str_eq(out, "00-" TRACE "-" SPAN "-01");
	/* a later version: the first four parts, flags beyond "sampled" dropped */
	ck_assert(parse("cc-" TRACE "-" SPAN "-ff-more", &p));
	ck_assert_uint_eq(p.flags, 1);
	ck_assert(parse("01-" TRACE "-" SPAN "-00", &p));
	ck_assert_uint_eq(p.flags, 0);
}
END_TEST

START_TEST(traceparent_invalid)
{
	static const char *const bad[] = {
	    "",
	    "00-" TRACE "-" SPAN "-0",
	    "00-" TRACE "-" SPAN "-01-",
	    "00-" TRACE "-" SPAN "-01x",
	    "ff-" TRACE "-" SPAN "-01",
	    "00-4BF92F3577B34DA6A3CE929D0E0E4736-" SPAN "-01",
	    "00-00000000000000000000000000000000-" SPAN "-01",
	    "00-" TRACE "-0000000000000000-01",
	    "00_" TRACE "-" SPAN "-01",
	    "00-" TRACE "_" SPAN "-01",
	    "0g-" TRACE "-" SPAN "-01",
	    "cc-" TRACE "-" SPAN "-01x",
	    NULL,
	};
	for (const char *const *b = bad; *b; b++) {
		struct trace_parent p;
		ck_assert_msg(!parse(*b, &p), "accepted %s", *b);
	}
}
END_TEST

static const char *bound(const char *in, char *out)
{
	trace_state_bound(in, strlen(in), out, TRACE_STATE_MAX + 1);
	return out;
}

START_TEST(tracestate_bounds)
{
	char out[TRACE_STATE_MAX + 1];
	ck_assert_str_eq(bound("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", out), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
	/* optional whitespace and empty members go */
	ck_assert_str_eq(bound(" a=1 ,\t, b@sys=x y ,", out), "a=1,b@sys=x y");
	ck_assert_str_eq(bound("", out), "");
	/* anything malformed drops the whole header */
	ck_assert_str_eq(bound("a=1,B=2", out), "");
	ck_assert_str_eq(bound("a=1,a=2", out), "");
	ck_assert_str_eq(bound("a=1,novalue", out), "");
	ck_assert_str_eq(bound("a=x,b=y=z", out), "");
	ck_assert_str_eq(bound("1a=x", out), "");
	ck_assert_str_eq(bound("t@=x", out), "");
	ck_assert_str_eq(bound("a=x\x01", out), "");
	char many[400] = "";
	for (int i = 0; i < 33; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), "%sk%d=v", i ? "," : "", i);
	ck_assert_str_eq(bound(many, out), "");
	many[strlen(many) - strlen(",k32=v")] = '\0';
	ck_assert_str_eq(bound(many, out), many); /* 32 members are allowed */
	/* over 512 (718 here): members over 128 characters go first, from the end, until it fits */
	char big[1200];
	char v200[201], v250[251];
	memset(v200, 'x', 200);
	v200[200] = '\0';
	memset(v250, 'y', 250);
	v250[250] = '\0';
	snprintf(big, sizeof big, "a=%s,s1=1,b=%s,s2=2,c=%s", v200, v250, v250);
	char want[800];
	snprintf(want, sizeof want, "a=%s,s1=1,b=%s,s2=2", v200, v250);
	ck_assert_str_eq(bound(big, out), want);
	ck_assert_uint_le(strlen(out), TRACE_STATE_MAX);
}
END_TEST

START_TEST(otlp_json_shape)
{
	struct trace_export_conf ec = {.service_name = "edge \"gw\""};
	struct trace_span sp[2];
	memset(sp, 0, sizeof sp);
	for (int i = 0; i < 2; i++) {
		memset(sp[i].trace_id, 0xab, sizeof sp[i].trace_id);
		memset(sp[i].span_id, 0x01 + i, sizeof sp[i].span_id);
		sp[i].start_ns = 1700000000000000000ull;
		sp[i].end_ns = 1700000000001000000ull;
		strcpy(sp[i].scheme, "http");
		strcpy(sp[i].protocol, "1.1");
	}
	memset(sp[0].parent_id, 0xcd, sizeof sp[0].parent_id);
	sp[0].flags = 1;
	sp[0].status = 200;
	strcpy(sp[0].method, "GET");
	strcpy(sp[0].route, "api");
	strcpy(sp[0].path, "/a\"b\\c\n");
	strcpy(sp[0].trace_state, "k=v");
	sp[1].status = 502;
	strcpy(sp[1].method, "BREW");
	strcpy(sp[1].error_type, "upstream_connect_failed");
	size_t len;
	char *j = trace_otlp_json(&ec, sp, 2, &len);
	ck_assert_ptr_nonnull(j);
	ck_assert_uint_eq(strlen(j), len);
	static const char head[] = "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
	                           "\"value\":{\"stringValue\":\"edge \\\"gw\\\"\"}}";
	ck_assert(strncmp(j, head, sizeof head - 1) == 0);
	ck_assert_ptr_nonnull(strstr(j, "\"traceId\":\"abababababababababababababababab\",\"spanId\":\"0101010101010101\","
	                                "\"parentSpanId\":\"cdcdcdcdcdcdcdcd\",\"traceState\":\"k=v\",\"flags\":769,"
	                                "\"name\":\"GET api\",\"kind\":2,\"startTimeUnixNano\":\"1700000000000000000\","
	                                "\"endTimeUnixNano\":\"1700000000001000000\""));
	ck_assert_ptr_nonnull(strstr(j, "{\"key\":\"url.path\",\"value\":{\"stringValue\":\"/a\\\"b\\\\c\\n\"}}"));
	ck_assert_ptr_nonnull(strstr(j, "{\"key\":\"http.response.status_code\",\"value\":{\"intValue\":\"200\"}}"));
	/* the second: a root, an unknown method, an error */
	const char *second = strstr(j, "\"spanId\":\"0202020202020202\"");
	ck_assert_ptr_nonnull(second);
	ck_assert_ptr_null(strstr(second, "parentSpanId"));
	ck_assert_ptr_nonnull(strstr(second, "\"flags\":256,\"name\":\"_OTHER\""));
	ck_assert_ptr_nonnull(strstr(second, "{\"key\":\"http.request.method_original\",\"value\":{\"stringValue\":\"BREW\"}}"));
	ck_assert_ptr_nonnull(strstr(second, "{\"key\":\"error.type\",\"value\":{\"stringValue\":\"upstream_connect_failed\"}}"));
	ck_assert_ptr_nonnull(strstr(second, "\"status\":{\"code\":2}}"));
	ck_assert(strcmp(j + len - 6, "]}]}]}") == 0);
	free(j);
}
END_TEST

START_TEST(ring_is_bounded)
{
	struct trace_exporter *ex = trace_exporter_get();
	ck_assert_ptr_nonnull(ex);
	struct trace_ring *r = trace_ring_new(ex, 20, NULL);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(trace_ring_capacity(r), 32); /* a power of two */
	/* nothing configured: the exporter drops what it drains, so only fill
	 * while it sleeps; what does not fit is refused */
	unsigned got = 0;
	for (int i = 0; i < 40; i++) {
		struct trace_span *sp = trace_ring_reserve(r);
		if (!sp)
			break;
		memset(sp, 0, sizeof *sp);
		trace_ring_commit(r);
		got++;
	}
	ck_assert_uint_ge(got, 32);
	trace_ring_retire(ex, r);
	trace_exporter_put(ex);
}
END_TEST

static Suite *trace_suite(void)
{
	Suite *s = suite_create("trace");
	TCase *tc = tcase_create("trace");
	tcase_add_test(tc, traceparent_valid_and_round_trip);
	tcase_add_test(tc, traceparent_invalid);
	tcase_add_test(tc, tracestate_bounds);
	tcase_add_test(tc, otlp_json_shape);
	tcase_add_test(tc, ring_is_bounded);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(trace_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
