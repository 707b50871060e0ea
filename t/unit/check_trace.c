/* Unit tests for tracing's pure pieces: the W3C traceparent/tracestate
 * parsers (src/trace_context.c), the protobuf wire-format writer
 * (src/pb_write.c), the OTLP JSON and protobuf encoders
 * (modules/trace_otlp.c) and the span ring (modules/trace_export.c). The
 * gateway around them, and the protobuf decoded against the OTLP schema:
 * t/test_tracing.py. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pb_write.h"
#include "trace_client.h"
#include "trace_context.h"
#include "trace_export.h"
#include "trace_otlp.h"

#ifndef SLUICE_SRCDIR
#define SLUICE_SRCDIR "."
#endif

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

/* n spans of one trace (ids ab.., span i: 0i0i..), all else zero */
static void test_spans(struct trace_span *sp, int n)
{
	memset(sp, 0, (size_t)n * sizeof *sp);
	for (int i = 0; i < n; i++) {
		memset(sp[i].trace_id, 0xab, sizeof sp[i].trace_id);
		memset(sp[i].span_id, 0x01 + i, sizeof sp[i].span_id);
		sp[i].start_ns = 1700000000000000000ull;
		sp[i].end_ns = 1700000000001000000ull;
	}
}

START_TEST(otlp_json_shape)
{
	struct trace_export_conf ec = {.service_name = "edge \"gw\""};
	struct trace_span sp[2];
	test_spans(sp, 2);
	for (int i = 0; i < 2; i++) {
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

/* A varied batch (a server span continued with tracestate, escapes, bad
 * UTF-8 and an IPv6 client; a retried client span with an unknown method;
 * a failed root span with a path long enough for two-byte lengths), whose
 * two encodings must stay byte for byte what the files in t/unit/data hold
 * (made by the encoders before they shared one walk). With
 * SLUICE_WRITE_GOLDEN set, the files are written instead: only for an
 * intended change of the output. */
static void golden_spans(struct trace_span *sp)
{
	test_spans(sp, 3);
	struct trace_span *s = &sp[0];
	memset(s->parent_id, 0xcd, sizeof s->parent_id);
	s->flags = 1;
	s->status = 200;
	s->upstream_status = 200;
	s->client_port = 40000;
	s->bytes_in = 5;
	s->bytes_out = 1234;
	strcpy(s->method, "GET");
	strcpy(s->scheme, "https");
	strcpy(s->protocol, "2");
	strcpy(s->route, "api");
	strcpy(s->listener, "pub");
	strcpy(s->client_ip, "2001:db8::1");
	strcpy(s->upstream, "10.0.0.2:8080");
	strcpy(s->request_id, "rid-1");
	strcpy(s->host, "example.test");
	strcpy(s->path, "/a\"b\\c\n\x01\x7f/caf\xc3\xa9");
	strcpy(s->user_agent, "ua \xff\xc3 \xe2\x98\x83");
	strcpy(s->trace_state, "k=v,x@sys=a b");
	s = &sp[1];
	memcpy(s->parent_id, sp[0].span_id, sizeof s->parent_id);
	s->client = true;
	s->flags = 1;
	s->resend_count = 1;
	s->status = 503;
	strcpy(s->error_type, "503");
	strcpy(s->method, "BREW");
	strcpy(s->scheme, "http");
	strcpy(s->upstream, "[::1]:9000");
	strcpy(s->path, "/p");
	strcpy(s->pool, "web");
	strcpy(s->request_id, "rid-1");
	strcpy(s->trace_state, "k=v,x@sys=a b");
	s = &sp[2];
	strcpy(s->error_type, "upstream_timeout");
	strcpy(s->method, "POST");
	strcpy(s->scheme, "http");
	strcpy(s->protocol, "1.1");
	memset(s->path, 'p', 300);
	s->path[0] = '/';
	s->path[300] = '\0';
}

static void golden(const char *name, const void *got, size_t len)
{
	char path[512];
	snprintf(path, sizeof path, "%s/t/unit/data/%s", SLUICE_SRCDIR, name);
	if (getenv("SLUICE_WRITE_GOLDEN")) {
		FILE *f = fopen(path, "wb");
		ck_assert_ptr_nonnull(f);
		ck_assert_uint_eq(fwrite(got, 1, len, f), len);
		ck_assert_int_eq(fclose(f), 0);
		return;
	}
	static char want[16384];
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot read %s", path);
	size_t n = fread(want, 1, sizeof want, f);
	fclose(f);
	ck_assert_uint_eq(len, n);
	ck_assert_msg(memcmp(got, want, n) == 0,
	              "%s: the encoding changed (a new PACKAGE_VERSION is in it too: then rewrite the files with "
	              "SLUICE_WRITE_GOLDEN=1 t/unit/check_trace)",
	              name);
}

START_TEST(otlp_encodings_unchanged)
{
	struct trace_export_conf ec = {.service_name = "edge \"gw\" \xff"};
	struct trace_span sp[3];
	golden_spans(sp);
	size_t len;
	char *j = trace_otlp_json(&ec, sp, 3, &len);
	ck_assert_ptr_nonnull(j);
	golden("otlp_golden.json", j, len);
	free(j);
	uint8_t *p = trace_otlp_protobuf(&ec, sp, 3, &len);
	ck_assert_ptr_nonnull(p);
	golden("otlp_golden.pb", p, len);
	free(p);
	/* an empty batch */
	j = trace_otlp_json(&ec, sp, 0, &len);
	ck_assert_ptr_nonnull(j);
	golden("otlp_golden_empty.json", j, len);
	free(j);
	p = trace_otlp_protobuf(&ec, sp, 0, &len);
	ck_assert_ptr_nonnull(p);
	golden("otlp_golden_empty.pb", p, len);
	free(p);
}
END_TEST

/* ---- the protobuf writer ---- */

static void ck_bytes(const uint8_t *got, size_t got_len, const char *want_hex)
{
	char hex[4096];
	size_t n = 0;
	for (size_t i = 0; i < got_len && n + 3 < sizeof hex; i++)
		n += (size_t)snprintf(hex + n, sizeof hex - n, "%02x", got[i]);
	hex[n] = '\0';
	ck_assert_str_eq(hex, want_hex);
}

START_TEST(pb_varint_edges)
{
	static const struct {
		uint64_t v;
		const char *hex;
	} cases[] = {
	    {0, "00"},
	    {1, "01"},
	    {127, "7f"},
	    {128, "8001"},
	    {150, "9601"},
	    {300, "ac02"},
	    {16383, "ff7f"},
	    {16384, "808001"},
	    {2097151, "ffff7f"},
	    {2097152, "80808001"},
	    {UINT32_MAX, "ffffffff0f"},
	    {(uint64_t)1 << 63, "80808080808080808001"},
	    {UINT64_MAX, "ffffffffffffffffff01"}, /* also int64 -1: ten bytes */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint8_t out[PB_VARINT_MAX];
		size_t n = pb_varint_encode(out, cases[i].v);
		ck_assert_uint_le(n, PB_VARINT_MAX);
		ck_bytes(out, n, cases[i].hex);
	}
}
END_TEST

START_TEST(pb_fields)
{
	struct pb_buf b;
	pb_init(&b);
	pb_varint(&b, 1, 150);              /* 08 96 01 */
	pb_string(&b, 2, "testing");        /* 12 07 ... */
	pb_begin(&b, 3);                    /* 1a 03 08 96 01 */
	pb_varint(&b, 1, 150);
	pb_end(&b);
	pb_fixed64(&b, 7, 0x0102030405060708ull); /* 39, little-endian */
	pb_fixed32(&b, 16, 0x301);          /* field 16: a two-byte tag, 85 01 */
	pb_bytes(&b, 4, "", 0);             /* 22 00 */
	pb_varint(&b, 536870911, 0);        /* the largest field number: f8 ff ff ff 0f 00 */
	size_t len;
	uint8_t *p = pb_take(&b, &len);
	ck_assert_ptr_nonnull(p);
	ck_bytes(p, len,
	         "089601"
	         "120774657374696e67"
	         "1a03089601"
	         "390807060504030201"
	         "850101030000"
	         "2200"
	         "f8ffffff0f00");
	free(p);
	/* an empty message is one */
	pb_init(&b);
	p = pb_take(&b, &len);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq(len, 0);
	free(p);
}
END_TEST

/* Reads a length-delimited field's header at p[*at]: its field number and
 * content length; the test's own reader, to check what the writer nested. */
static uint64_t rd_varint(const uint8_t *p, size_t len, size_t *at)
{
	uint64_t v = 0;
	for (unsigned shift = 0; *at < len && shift < 64; shift += 7) {
		uint8_t c = p[(*at)++];
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return v;
	}
	ck_abort_msg("truncated varint");
	return 0;
}

static size_t rd_message(const uint8_t *p, size_t len, size_t *at, uint32_t want_field)
{
	uint64_t tag = rd_varint(p, len, at);
	ck_assert_uint_eq(tag, ((uint64_t)want_field << 3) | 2);
	uint64_t n = rd_varint(p, len, at);
	ck_assert_uint_le(*at + n, len);
	return (size_t)n;
}

START_TEST(pb_nested_lengths)
{
	/* contents around each varint length boundary, two levels deep: the
	 * inner length grows from one byte to two and three, which moves the
	 * inner content, and with it the outer length */
	static const size_t sizes[] = {0, 1, 125, 126, 127, 128, 129, 16381, 16382, 16383, 16384, 70000};
	char *fill = malloc(70000);
	ck_assert_ptr_nonnull(fill);
	for (size_t i = 0; i < 70000; i++)
		fill[i] = (char)('a' + i % 26);
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		size_t sz = sizes[k];
		struct pb_buf b;
		pb_init(&b);
		pb_begin(&b, 1);
		pb_begin(&b, 2);
		pb_bytes(&b, 3, fill, sz);
		pb_end(&b);
		pb_varint(&b, 4, 1); /* after the inner message: must follow it exactly */
		pb_end(&b);
		pb_varint(&b, 5, 2);
		size_t len;
		uint8_t *p = pb_take(&b, &len);
		ck_assert_ptr_nonnull(p);
		size_t at = 0;
		size_t outer = rd_message(p, len, &at, 1);
		size_t outer_end = at + outer;
		size_t inner = rd_message(p, len, &at, 2);
		size_t inner_end = at + inner;
		size_t data = rd_message(p, len, &at, 3);
		ck_assert_uint_eq(data, sz);
		ck_assert(memcmp(p + at, fill, sz) == 0);
		ck_assert_uint_eq(at + data, inner_end);
		at = inner_end;
		ck_assert_uint_eq(rd_varint(p, len, &at), (4 << 3) | 0);
		ck_assert_uint_eq(rd_varint(p, len, &at), 1);
		ck_assert_uint_eq(at, outer_end);
		ck_assert_uint_eq(rd_varint(p, len, &at), (5 << 3) | 0);
		ck_assert_uint_eq(rd_varint(p, len, &at), 2);
		ck_assert_uint_eq(at, len);
		/* canonical: each length in as few bytes as it needs */
		uint8_t tmp[PB_VARINT_MAX];
		ck_assert_uint_eq(len, 1 + pb_varint_encode(tmp, outer) + outer + 2);
		free(p);
	}
	free(fill);
}
END_TEST

START_TEST(pb_misuse_fails)
{
	struct pb_buf b;
	size_t len;
	pb_init(&b);
	pb_end(&b); /* no message open */
	ck_assert(b.failed);
	ck_assert_ptr_null(pb_take(&b, &len));
	pb_init(&b);
	pb_begin(&b, 1); /* still open */
	ck_assert_ptr_null(pb_take(&b, &len));
	pb_init(&b);
	for (int i = 0; i <= PB_MAX_DEPTH; i++)
		pb_begin(&b, 1);
	ck_assert(b.failed);
	pb_varint(&b, 1, 1); /* a no-op now */
	ck_assert_ptr_null(pb_take(&b, &len));
	ck_assert_ptr_null(b.p);
}
END_TEST

/* ---- OTLP protobuf ---- */

/* Where the bytes `needle` (n) are in hay, or NULL. */
static const uint8_t *find(const uint8_t *hay, size_t hay_len, const void *needle, size_t n)
{
	for (size_t i = 0; i + n <= hay_len; i++)
		if (memcmp(hay + i, needle, n) == 0)
			return hay + i;
	return NULL;
}

/* A KeyValue with a string value, as the writer lays it out (all short). */
static size_t kv_str(uint8_t *out, const char *key, const char *value)
{
	size_t kl = strlen(key), vl = strlen(value), o = 0;
	out[o++] = 0x0a; /* key */
	out[o++] = (uint8_t)kl;
	memcpy(out + o, key, kl);
	o += kl;
	out[o++] = 0x12; /* value: AnyValue */
	out[o++] = (uint8_t)(vl + 2);
	out[o++] = 0x0a; /* string_value */
	out[o++] = (uint8_t)vl;
	memcpy(out + o, value, vl);
	return o + vl;
}

START_TEST(otlp_protobuf_layout)
{
	struct trace_export_conf ec = {.service_name = "edge", .protocol = CONF_TRACING_HTTP_PROTOBUF};
	struct trace_span sp[2];
	test_spans(sp, 2);
	for (int i = 0; i < 2; i++)
		strcpy(sp[i].method, "GET");
	strcpy(sp[0].path, "/caf\xc3\xa9\xff"); /* valid UTF-8, then a byte that is not */
	sp[0].status = 200;
	sp[1].client = true;
	memcpy(sp[1].parent_id, sp[0].span_id, sizeof sp[1].parent_id);
	strcpy(sp[1].scheme, "https");
	strcpy(sp[1].upstream, "[::1]:8443");
	strcpy(sp[1].path, "/x");
	sp[1].status = 503;
	sp[1].resend_count = 2;
	size_t len;
	uint8_t *p = trace_otlp_protobuf(&ec, sp, 2, &len);
	ck_assert_ptr_nonnull(p);
	/* ExportTraceServiceRequest { resource_spans (1) { resource (1) { attributes (1) { "service.name" ... */
	size_t at = 0;
	size_t rs = rd_message(p, len, &at, 1);
	ck_assert_uint_eq(at + rs, len);
	size_t res = rd_message(p, len, &at, 1);
	uint8_t kv[64];
	size_t kvn = kv_str(kv, "service.name", "edge");
	ck_assert_uint_eq(rd_message(p, len, &at, 1), kvn);
	ck_assert(memcmp(p + at, kv, kvn) == 0);
	at += res - 2 - kvn; /* past the resource's other attribute */
	at += kvn;
	/* scope_spans (2) { scope (1) { name "sluice" ... } spans (2) ... } */
	size_t ss = rd_message(p, len, &at, 2);
	ck_assert_uint_eq(at + ss, len);
	size_t scope = rd_message(p, len, &at, 1);
	ck_assert(memcmp(p + at, "\x0a\x06sluice", 8) == 0);
	at += scope;
	size_t span0 = rd_message(p, len, &at, 2);
	const uint8_t *s0 = p + at;
	/* trace_id (1): 16 bytes; span_id (2): 8 bytes; no parent; kind SERVER; times fixed64 */
	ck_assert(memcmp(s0, "\x0a\x10\xab\xab\xab\xab\xab\xab\xab\xab\xab\xab\xab\xab\xab\xab\xab\xab"
	                     "\x12\x08\x01\x01\x01\x01\x01\x01\x01\x01", 28) == 0);
	ck_assert_ptr_null(find(s0, span0, "\x22\x08", 2)); /* no parent_span_id */
	ck_assert_ptr_nonnull(find(s0, span0, "\x2a\x03GET\x30\x02", 7)); /* name, kind 2 */
	ck_assert_ptr_nonnull(find(s0, span0, "\x39\x00\x00\x2a\x36\xfe\x9c\x97\x17", 9)); /* start, LE */
	/* url.path: é kept, the stray byte replaced by U+FFFD */
	kvn = kv_str(kv, "url.path", "/caf\xc3\xa9\xef\xbf\xbd");
	ck_assert_ptr_nonnull(find(s0, span0, kv, kvn));
	/* http.response.status_code: an int_value (3) varint */
	ck_assert_ptr_nonnull(find(s0, span0, "http.response.status_code\x12\x03\x18\xc8\x01", 30));
	ck_assert_ptr_null(find(s0, span0, "\x7a\x02\x18\x02", 4)); /* no ERROR status for a 200 */
	ck_assert(memcmp(s0 + span0 - 6, "\x85\x01\x00\x01\x00\x00", 6) == 0); /* flags, last: 0x100 */
	at += span0;
	size_t span1 = rd_message(p, len, &at, 2);
	const uint8_t *s1 = p + at;
	ck_assert_uint_eq(at + span1, len);
	ck_assert_ptr_nonnull(find(s1, span1, "\x22\x08\x01\x01\x01\x01\x01\x01\x01\x01", 10)); /* parent */
	ck_assert_ptr_nonnull(find(s1, span1, "\x2a\x03GET\x30\x03", 7)); /* kind CLIENT */
	kvn = kv_str(kv, "server.address", "::1");
	ck_assert_ptr_nonnull(find(s1, span1, kv, kvn));
	ck_assert_ptr_nonnull(find(s1, span1, "server.port\x12\x03\x18\xfb\x41", 16)); /* 8443 */
	kvn = kv_str(kv, "url.full", "https://[::1]:8443/x");
	ck_assert_ptr_nonnull(find(s1, span1, kv, kvn));
	ck_assert_ptr_nonnull(find(s1, span1, "http.request.resend_count\x12\x02\x18\x02", 29));
	ck_assert_ptr_nonnull(find(s1, span1, "\x7a\x02\x18\x02", 4)); /* status ERROR for a 503 */
	free(p);
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

/* The collector's partial success, in both encodings, and answers that
 * carry none or do not parse. */
START_TEST(otlp_partial_success)
{
	char msg[32];
	const char *j = "{ \"partialSuccess\" : {\"rejectedSpans\":\"3\",\"errorMessage\":\"span \\\"x\\\" too old \\u00e9\"},"
	                "\"other\":[1,{\"a\":null},true]}";
	ck_assert_uint_eq(trace_otlp_rejected(CONF_TRACING_HTTP_JSON, "application/json", j, strlen(j), msg, sizeof msg),
	                  3);
	ck_assert_str_eq(msg, "span \"x\" too old \xc3\xa9");
	/* a number instead of the mapping's string; the proto field names; a message cut to fit */
	j = "{\"partial_success\":{\"error_message\":\"0123456789012345678901234567890123456789\",\"rejected_spans\":7}}";
	ck_assert_uint_eq(trace_otlp_rejected(CONF_TRACING_HTTP_JSON, "", j, strlen(j), msg, sizeof msg), 7);
	ck_assert_uint_eq(strlen(msg), sizeof msg - 1);
	/* none: an empty answer, {}, a partial success with only a message (a warning), garbage, negative */
	const char *none[] = {"", "{}", "{\"partialSuccess\":{}}", "{\"partialSuccess\":{\"errorMessage\":\"warn\"}}",
	                      "{\"partialSuccess\":{\"rejectedSpans\":\"5\"", "not json",
	                      "{\"partialSuccess\":{\"rejectedSpans\":-2}}", "{\"partialSuccess\":{\"rejectedSpans\":\"1x\"}}"};
	for (size_t i = 0; i < sizeof none / sizeof *none; i++)
		ck_assert_uint_eq(trace_otlp_rejected(CONF_TRACING_HTTP_JSON, "application/json", none[i], strlen(none[i]),
		                                      msg, sizeof msg),
		                  0);
	/* protobuf: partial_success (1) { rejected_spans (1) = 300, error_message (2) = "full" }, an unknown field after */
	const char pb[] = "\x0a\x09\x08\xac\x02\x12\x04" "full" "\x18\x01";
	ck_assert_uint_eq(trace_otlp_rejected(CONF_TRACING_HTTP_PROTOBUF, "application/x-protobuf", pb, sizeof pb - 1, msg,
	                                      sizeof msg),
	                  300);
	ck_assert_str_eq(msg, "full");
	/* by the request's protocol when the answer names no type; a truncated one tells nothing */
	ck_assert_uint_eq(trace_otlp_rejected(CONF_TRACING_HTTP_PROTOBUF, "", pb, sizeof pb - 1, msg, sizeof msg), 300);
	ck_assert_uint_eq(trace_otlp_rejected(CONF_TRACING_HTTP_PROTOBUF, "application/x-protobuf", pb, 4, msg, sizeof msg),
	                  0);
	ck_assert_uint_eq(trace_otlp_rejected(CONF_TRACING_HTTP_PROTOBUF, "application/x-protobuf", "", 0, msg, sizeof msg),
	                  0);
}
END_TEST

/* The reason in a collector's refusal (a google.rpc.Status, or a proxy's
 * text), whatever bytes it comes as. */
static const char *status_msg(const char *type, const char *body, size_t len, char *msg, size_t cap)
{
	size_t n = trace_otlp_status_message(type, body, len, msg, cap);
	ck_assert_uint_eq(n, strlen(msg));
	ck_assert_uint_lt(n, cap);
	return msg;
}

#define JS(body, msg) status_msg("application/json", body, strlen(body), msg, sizeof msg)
#define PB(lit, msg) status_msg("application/x-protobuf", lit, sizeof lit - 1, msg, sizeof msg)

START_TEST(otlp_status_json)
{
	char msg[64];
	/* the message among the other members, escapes undone (\u00e9 is UTF-8 after) */
	ck_assert_str_eq(JS("{\"code\":3,\"message\":\"invalid \\\"resource\\\" attribute\\n\\u00e9\\/\","
	                    "\"details\":[{\"@type\":\"x\",\"message\":\"nested\"}]}", msg),
	                 "invalid \"resource\" attribute\n\xc3\xa9/");
	ck_assert_str_eq(JS("  {\"details\":[],\"message\":\"late\"}", msg), "late");
	/* a surrogate escape, an escaped NUL: U+FFFD, the NUL ends the unescaped text */
	ck_assert_str_eq(JS("{\"message\":\"a\\ud800b\"}", msg), "a\xef\xbf\xbd" "b");
	ck_assert_str_eq(JS("{\"message\":\"a\\u0000b\"}", msg), "a");
	/* raw bytes that are not UTF-8 inside the string */
	ck_assert_str_eq(JS("{\"message\":\"x\xff\xc3(y\"}", msg), "x\xef\xbf\xbd\xef\xbf\xbd(y");
	/* a message read whole counts though the body is cut after it */
	ck_assert_str_eq(JS("{\"message\":\"cut after\",\"details\":[{\"@ty", msg), "cut after");
	/* no message (or not a string, or cut inside it): the body's first line, as text */
	ck_assert_str_eq(JS("{\"code\":3}", msg), "{\"code\":3}");
	ck_assert_str_eq(JS("{\"message\":42}\nsecond", msg), "{\"message\":42}");
	ck_assert_str_eq(JS("{\"message\":\"never ends", msg), "{\"message\":\"never ends");
	ck_assert_str_eq(JS("{\"message\":\"bad \\q escape\"}", msg), "{\"message\":\"bad \\q escape\"}");
	ck_assert_str_eq(JS("{\"message\":\"\"}", msg), "{\"message\":\"\"}");
	ck_assert_str_eq(JS("", msg), "");
	/* a long message is cut to the bound, between characters */
	char big[300];
	memset(big, 0, sizeof big);
	strcpy(big, "{\"message\":\"");
	for (size_t i = strlen(big); i < 12 + 2 * 100; i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	strcat(big, "\"}");
	char small[8];
	ck_assert_str_eq(JS(big, small), "\xc3\xa9\xc3\xa9\xc3\xa9");
}
END_TEST

START_TEST(otlp_status_protobuf)
{
	char msg[64];
	/* code (1) = 3, message (2) = "bad span", details (3) = {...} */
	ck_assert_str_eq(PB("\x08\x03\x12\x08" "bad span" "\x1a\x02\x0a\x00", msg), "bad span");
	/* no code; the last message wins (protobuf merging); an unknown fixed64 field is skipped */
	ck_assert_str_eq(PB("\x12\x01" "a" "\x21" "12345678" "\x12\x01" "b", msg), "b");
	/* a message field of the wrong wire type is not the message */
	ck_assert_str_eq(PB("\x10\x05", msg), "");
	ck_assert_str_eq(PB("\x15" "abcd" "\x12\x02" "ok", msg), "ok");
	/* malformed: a varint that never ends, one too long, a length past the end, a bad wire type */
	ck_assert_str_eq(PB("\x08\xff\xff", msg), "");
	ck_assert_str_eq(PB("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x12\x01x", msg), "");
	ck_assert_str_eq(PB("\x12\x09" "short", msg), "");
	ck_assert_str_eq(PB("\x12\x02" "ok" "\x0f", msg), "ok"); /* fields before the bad one count */
	ck_assert_str_eq(PB("\x0b\x12\x02" "ok", msg), "");
	/* no message at all; an empty body */
	ck_assert_str_eq(PB("\x08\x07", msg), "");
	ck_assert_str_eq(PB("", msg), "");
	/* bytes that are not UTF-8, and a NUL: U+FFFD each */
	ck_assert_str_eq(PB("\x12\x05" "a\x00\xfe\xe2\x82", msg), "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	/* a 4-byte character that does not fit is left out whole */
	char small[6];
	ck_assert_str_eq(PB("\x12\x08" "ab\xf0\x9f\x98\x80" "cd", small), "ab");
}
END_TEST

START_TEST(otlp_status_text)
{
	char msg[16];
	/* anything else (text/plain, text/html, no type): the first non-blank line, trimmed, cut to fit */
	ck_assert_str_eq(status_msg("text/plain", "\r\n  upstream busy  \r\nmore", 24, msg, sizeof msg), "upstream busy");
	ck_assert_str_eq(status_msg("text/html", "<html><body>502 Bad Gateway", 27, msg, sizeof msg), "<html><body>502");
	ck_assert_str_eq(status_msg("", "\x08\x03\x12\x01x", 5, msg, sizeof msg), "\b\x03\x12\x01x");
	ck_assert_str_eq(status_msg("text/plain", "a\0b", 3, msg, sizeof msg), "a\xef\xbf\xbd" "b");
	ck_assert_str_eq(status_msg("text/plain", " \n\t\r\n", 5, msg, sizeof msg), "");
	/* a protobuf body named application/json is no JSON: its text */
	ck_assert_str_eq(status_msg("application/json", "\x12\x02ok", 4, msg, sizeof msg), "\x12\x02ok");
	/* a bound of one byte holds nothing, a bound of none is left alone */
	char one[1];
	ck_assert_uint_eq(trace_otlp_status_message("text/plain", "x", 1, one, sizeof one), 0);
	ck_assert_uint_eq(trace_otlp_status_message("text/plain", "x", 1, one, 0), 0);
}
END_TEST

START_TEST(retry_after_values)
{
	ck_assert_int_eq(trace_client_retry_after("30", 2, 0), 30);
	ck_assert_int_eq(trace_client_retry_after(" 0 ", 3, 0), 0);
	ck_assert_int_eq(trace_client_retry_after("99999999999999999999", 20, 0), 86400);
	const char *bad[] = {"", "-1", "3.5", "30s", "soon", "Sun, 06 Nov 1994 08:49:37 UTC",
	                     "Sun, 06 Xyz 1994 08:49:37 GMT", "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_int_eq(trace_client_retry_after(bad[i], strlen(bad[i]), 0), -1);
	/* an HTTP-date: 784111777 is Sun, 06 Nov 1994 08:49:37 GMT */
	const char *d = "Sun, 06 Nov 1994 08:49:37 GMT";
	ck_assert_int_eq(trace_client_retry_after(d, strlen(d), 784111777 - 120), 120);
	ck_assert_int_eq(trace_client_retry_after(d, strlen(d), 784111777 + 5), 0);
	ck_assert_int_eq(trace_client_retry_after(d, strlen(d), 0), 86400);
	d = "Tue, 29 Feb 2028 00:00:00 GMT"; /* 1835395200 */
	ck_assert_int_eq(trace_client_retry_after(d, strlen(d), 1835395200 - 1), 1);
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
	tcase_add_test(tc, pb_varint_edges);
	tcase_add_test(tc, pb_fields);
	tcase_add_test(tc, pb_nested_lengths);
	tcase_add_test(tc, pb_misuse_fails);
	tcase_add_test(tc, otlp_protobuf_layout);
	tcase_add_test(tc, ring_is_bounded);
	tcase_add_test(tc, otlp_partial_success);
	tcase_add_test(tc, otlp_status_json);
	tcase_add_test(tc, otlp_status_protobuf);
	tcase_add_test(tc, otlp_status_text);
	tcase_add_test(tc, retry_after_values);
	tcase_add_test(tc, otlp_encodings_unchanged);
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
