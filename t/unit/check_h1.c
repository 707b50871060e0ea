/* check_h1.c - unit tests for the HTTP/1 parser and chunked decoder (src/h1.c). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h1.h"

/* A literal and its length, embedded NULs included. */
#define LIT(s) (s), (sizeof(s) - 1)

static const struct h1_limits roomy = {8192, 65536, 100};

struct req_outcome {
	int rc;
	int status;
	const char *why;
};

static struct req_outcome parse_req_lim(const char *buf, size_t len, const struct h1_limits *lim,
                                        struct h1_request *req)
{
	struct req_outcome o = {0, 0, NULL};
	o.rc = h1_parse_request(buf, len, lim, req, &o.status, &o.why);
	return o;
}

static struct req_outcome parse_req(const char *buf, size_t len, struct h1_request *req)
{
	return parse_req_lim(buf, len, &roomy, req);
}

static void expect_request_error(const char *buf, size_t len, const struct h1_limits *lim, int status, int line)
{
	struct h1_request req;
	struct req_outcome o = parse_req_lim(buf, len, lim, &req);
	ck_assert_msg(o.rc == H1_ERROR && o.status == status,
	              "line %d: expected error %d, got rc=%d status=%d why=%s for [%.*s]", line, status, o.rc,
	              o.status, o.why ? o.why : "-", (int)len, buf);
	ck_assert_msg(o.why != NULL && o.why[0] != '\0', "line %d: no reason given", line);
}

#define REQ_ERROR(lit, status) expect_request_error(LIT(lit), &roomy, status, __LINE__)
#define REQ_ERROR_LIM(lit, lim, status) expect_request_error(LIT(lit), lim, status, __LINE__)

static void expect_request_ok(const char *buf, size_t len, struct h1_request *req, int line)
{
	struct req_outcome o = parse_req(buf, len, req);
	ck_assert_msg(o.rc == (int)len, "line %d: expected %zu, got rc=%d status=%d why=%s for [%.*s]", line, len,
	              o.rc, o.status, o.why ? o.why : "-", (int)len, buf);
}

#define REQ_OK(lit, req) expect_request_ok(LIT(lit), req, __LINE__)

static bool view_is(const char *p, size_t n, const char *lit)
{
	return p != NULL && n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static int header_index(const struct h1_request *req, const char *lower_name)
{
	return http_find_header(req->headers, req->num_headers, lower_name);
}

/* ---- valid requests ---- */

START_TEST(test_get)
{
	static const char raw[] = "GET /index.html?x=1&y HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  t/1 \t\r\n"
	                          "X-Empty:\r\nX-Obs: caf\xc3\xa9\r\n\r\n";
	struct h1_request req;
	REQ_OK(raw, &req);
	ck_assert(view_is(req.method, req.method_len, "GET"));
	ck_assert(view_is(req.target, req.target_len, "/index.html?x=1&y"));
	ck_assert(view_is(req.path, req.path_len, "/index.html"));
	ck_assert(view_is(req.authority, req.authority_len, "example.com"));
	ck_assert_int_eq(req.minor_version, 1);
	ck_assert_uint_eq(req.num_headers, 4);
	ck_assert(view_is(req.headers[1].name, req.headers[1].name_len, "User-Agent"));
	ck_assert(view_is(req.headers[1].value, req.headers[1].value_len, "t/1"));
	ck_assert_uint_eq(req.headers[2].value_len, 0);
	ck_assert(view_is(req.headers[3].value, req.headers[3].value_len, "caf\xc3\xa9"));
	for (size_t i = 0; i < req.num_headers; i++)
		ck_assert_uint_eq(req.header_flags[i], 0);
	ck_assert_int_eq(req.body, H1_BODY_NONE);
	ck_assert(req.keep_alive);
	ck_assert(!req.expect_continue);
	ck_assert(!req.upgrade);
}
END_TEST

START_TEST(test_post_length)
{
	struct h1_request req;
	REQ_OK("POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", &req);
	ck_assert_int_eq(req.body, H1_BODY_LENGTH);
	ck_assert_uint_eq(req.content_length, 11);
	ck_assert_uint_eq(req.header_flags[1], H1_HDR_HOP);
	ck_assert_uint_eq(req.header_flags[0], 0);

	REQ_OK("POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &req);
	ck_assert_int_eq(req.body, H1_BODY_LENGTH);
	ck_assert_uint_eq(req.content_length, 0);

	REQ_OK("POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740991\r\n\r\n", &req);
	ck_assert_uint_eq(req.content_length, 9007199254740991ULL);

	REQ_OK("POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n", &req);
	ck_assert_uint_eq(req.content_length, 7);
}
END_TEST

START_TEST(test_post_chunked)
{
	struct h1_request req;
	REQ_OK("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a\r\n\r\n", &req);
	ck_assert_int_eq(req.body, H1_BODY_CHUNKED);
	ck_assert_uint_eq(req.header_flags[0], H1_HDR_HOP);
	REQ_OK("POST / HTTP/1.1\r\nTransfer-Encoding: \t CHUNKED \r\nHost: a\r\n\r\n", &req);
	ck_assert_int_eq(req.body, H1_BODY_CHUNKED);
}
END_TEST

START_TEST(test_http10)
{
	struct h1_request req;
	REQ_OK("GET / HTTP/1.0\r\n\r\n", &req);
	ck_assert_int_eq(req.minor_version, 0);
	ck_assert_ptr_null(req.authority);
	ck_assert(!req.keep_alive);
	ck_assert(view_is(req.path, req.path_len, "/"));

	REQ_OK("GET / HTTP/1.0\r\nHost: h:81\r\nConnection: Keep-Alive\r\n\r\n", &req);
	ck_assert(req.keep_alive);
	ck_assert(view_is(req.authority, req.authority_len, "h:81"));

	REQ_OK("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &req);
	ck_assert(!req.keep_alive);

	/* RFC 9110 10.1.1: a 1.0 100-continue is ignored */
	REQ_OK("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", &req);
	ck_assert(!req.expect_continue);
}
END_TEST

START_TEST(test_absolute_form)
{
	struct h1_request req;
	REQ_OK("GET http://Example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n", &req);
	ck_assert(view_is(req.authority, req.authority_len, "Example.com:8080"));
	ck_assert(view_is(req.path, req.path_len, "/a/b"));
	ck_assert(view_is(req.target, req.target_len, "http://Example.com:8080/a/b?q=1"));

	REQ_OK("GET HTTPS://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	ck_assert(view_is(req.authority, req.authority_len, "h"));
	ck_assert(view_is(req.path, req.path_len, "/"));

	REQ_OK("GET http://[2001:db8::1]:443 HTTP/1.0\r\n\r\n", &req);
	ck_assert(view_is(req.authority, req.authority_len, "[2001:db8::1]:443"));
	ck_assert(view_is(req.path, req.path_len, "/"));

	REQ_ERROR("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	REQ_ERROR("GET http://user@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	REQ_ERROR("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	REQ_ERROR("GET http://h:x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	REQ_ERROR("GET example.com:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	/* the target wins over Host, but Host is still required and checked */
	REQ_ERROR("GET http://h/ HTTP/1.1\r\n\r\n", 400);
	REQ_ERROR("GET http://h/ HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
}
END_TEST

START_TEST(test_asterisk)
{
	struct h1_request req;
	REQ_OK("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &req);
	ck_assert(view_is(req.target, req.target_len, "*"));
	ck_assert(view_is(req.path, req.path_len, "*"));
	REQ_ERROR("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}
END_TEST

START_TEST(test_leading_empty_lines)
{
	struct h1_request req;
	REQ_OK("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &req);
	ck_assert(view_is(req.method, req.method_len, "GET"));
	REQ_OK("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &req);
	REQ_ERROR("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	ck_assert_int_eq(parse_req(LIT("\r\n\r"), &req).rc, H1_INCOMPLETE);
}
END_TEST

START_TEST(test_pipelined)
{
	static const char raw[] = "GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: b\r\n"
	                          "Content-Length: 2\r\n\r\nhi";
	struct h1_request req;
	struct req_outcome o = parse_req(LIT(raw), &req);
	size_t first_len = strlen("GET /one HTTP/1.1\r\nHost: a\r\n\r\n");
	ck_assert_int_eq(o.rc, (int)first_len);
	ck_assert(view_is(req.path, req.path_len, "/one"));
	o = parse_req(raw + first_len, sizeof(raw) - 1 - first_len, &req);
	ck_assert_int_eq(o.rc, (int)(sizeof(raw) - 1 - first_len - 2));
	ck_assert(view_is(req.path, req.path_len, "/two"));
	ck_assert(view_is(req.authority, req.authority_len, "b"));
	ck_assert_uint_eq(req.content_length, 2);
}
END_TEST

START_TEST(test_request_every_split)
{
	static const char *const raws[] = {
		("POST http://h.example/p?q HTTP/1.1\r\nHost: h.example\r\nContent-Length: 5, 5\r\n"
		 "Connection: keep-alive, X-A\r\nX-A: 1\r\nExpect: 100-continue\r\n\r\n"),
		"\r\nOPTIONS * HTTP/1.0\r\nTransfer-Encoding-X: \t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]:8\r\nTransfer-Encoding: chunked\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof(raws) / sizeof(raws[0]); k++) {
		const char *raw = raws[k];
		size_t len = strlen(raw);
		struct h1_request req;
		for (size_t i = 0; i < len; i++) {
			struct req_outcome o = parse_req(raw, i, &req);
			ck_assert_msg(o.rc == H1_INCOMPLETE, "raw %zu prefix %zu: rc=%d why=%s", k, i, o.rc,
			              o.why ? o.why : "-");
		}
		ck_assert_int_eq(parse_req(raw, len, &req).rc, (int)len);
	}
	struct h1_request req;
	ck_assert_int_eq(parse_req(raws[0], strlen(raws[0]), &req).rc, (int)strlen(raws[0]));
	ck_assert(req.expect_continue);
	ck_assert_uint_eq(req.content_length, 5);
}
END_TEST

/* ---- malformed requests ---- */

START_TEST(test_framing_errors)
{
	struct h1_request req;
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400);
	REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", &req);
	ck_assert_uint_eq(req.content_length, 5);
	ck_assert_int_eq(req.body, H1_BODY_LENGTH);
	REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 ,5,\t5\r\n\r\n", &req);
	ck_assert_uint_eq(req.content_length, 5);

	static const char *const bad_lengths[] = {"+5", "-1", "5 5", "0x5", "", "5a", "1e3", "5,", ",5", "5,,5",
	                                          "9007199254740992", "18446744073709551616",
	                                          "99999999999999999999999999", "\"5\"", "5;x"};
	for (size_t i = 0; i < sizeof(bad_lengths) / sizeof(bad_lengths[0]); i++) {
		char buf[256];
		int n = snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
		                 bad_lengths[i]);
		ck_assert(n > 0 && (size_t)n < sizeof(buf));
		expect_request_error(buf, (size_t)n, &roomy, 400, __LINE__);
	}
}
END_TEST

START_TEST(test_transfer_encoding_errors)
{
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	          400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;foo\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;level\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;level, chunked\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;level=, chunked\r\n\r\n", 400);
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;level=\"9, chunked\r\n\r\n", 400);
	/* well-formed parameters on an unknown coding: unsupported, not malformed */
	REQ_ERROR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;level=\"9\", chunked\r\n\r\n", 501);
	REQ_ERROR("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}
END_TEST

START_TEST(test_line_syntax_errors)
{
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX: a\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\n\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\n\rX", 400);
	REQ_ERROR("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nX y: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400);
	REQ_ERROR("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET /\r\n\r\n", 400);
	REQ_ERROR("GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	struct h1_request req;
	REQ_OK("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX:\ta\tb\t\r\n\r\n", &req);
	ck_assert(view_is(req.headers[1].value, req.headers[1].value_len, "a\tb"));
}
END_TEST

START_TEST(test_version_errors)
{
	REQ_ERROR("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
	REQ_ERROR("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
	REQ_ERROR("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
	REQ_ERROR("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET / http/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/11\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501);
	REQ_ERROR("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 501);
}
END_TEST

START_TEST(test_limits)
{
	const struct h1_limits tight = {32, 128, 3};
	struct h1_request req;

	/* request line of exactly 32 bytes is fine, 33 is not */
	static const char line32[] = "GET /234567890123456789 HTTP/1.1\r\nHost: a\r\n\r\n";
	ck_assert_int_eq(strchr(line32, '\r') - line32, 32);
	ck_assert_int_eq(parse_req_lim(LIT(line32), &tight, &req).rc, (int)sizeof(line32) - 1);
	REQ_ERROR_LIM("GET /2345678901234567890 HTTP/1.1\r\nHost: a\r\n\r\n", &tight, 414);
	/* an endless request line is refused once it passes the limit, not buffered */
	REQ_ERROR_LIM("GET /23456789012345678901234567890123", &tight, 414);
	ck_assert_int_eq(parse_req_lim(LIT("GET /234567890123456789 HTTP/1.1\r"), &tight, &req).rc, H1_INCOMPLETE);
	ck_assert_int_eq(parse_req_lim(LIT("GET /234567890123456789 HTTP/1.1"), &tight, &req).rc, H1_INCOMPLETE);
	ck_assert_int_eq(parse_req_lim(LIT("GET /234567890123456789012345678"), &tight, &req).rc, H1_INCOMPLETE);
	REQ_ERROR_LIM("GET /2345678901234567890123456789", &tight, 414);
	REQ_ERROR_LIM("\r\nGET /2345678901234567890123456789", &tight, 414);
	/* past the limit, a later bad byte does not change the verdict: it must not
	 * depend on how much of the line had arrived */
	REQ_ERROR_LIM("GET /2345678901234567890123456789\x01 HTTP/1.1\r\nHost: a\r\n\r\n", &tight, 414);
	ck_assert_int_eq(parse_req_lim(LIT("\r\nGET /234567890123456789 HTTP/1.1\r"), &tight, &req).rc,
	                 H1_INCOMPLETE);

	/* the whole head: exactly 128 bytes passes */
	char head[256];
	int n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n", 128 - 32, 0);
	ck_assert_int_eq(n, 128);
	ck_assert_int_eq(parse_req_lim(head, (size_t)n, &tight, &req).rc, 128);
	n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n", 128 - 31, 0);
	expect_request_error(head, (size_t)n, &tight, 431, __LINE__);
	/* an unfinished head over the limit is an error as soon as the bytes pass it */
	n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d", 200, 0);
	ck_assert_int_eq(parse_req_lim(head, 127, &tight, &req).rc, H1_INCOMPLETE);
	expect_request_error(head, 128, &tight, 431, __LINE__);
	expect_request_error(head, (size_t)n, &tight, 431, __LINE__);

	REQ_ERROR_LIM("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &tight, 431);
	ck_assert_int_gt(parse_req_lim(LIT("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"), &tight, &req).rc, 0);

	/* max_headers above H1_MAX_HEADERS is clamped */
	const struct h1_limits huge = {8192, 65536, 1000};
	char many[8192];
	size_t len = (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; i < H1_MAX_HEADERS; i++)
		len += (size_t)snprintf(many + len, sizeof(many) - len, "X%d: v\r\n", i);
	len += (size_t)snprintf(many + len, sizeof(many) - len, "\r\n");
	expect_request_error(many, len, &huge, 431, __LINE__);
}
END_TEST

START_TEST(test_host)
{
	struct h1_request req;
	REQ_ERROR("GET / HTTP/1.1\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400);
	static const char *const bad[] = {"",           "a b",        "a:",        "a:99999",   "a:123456",
	                                  "user@a",     "a:80:80",    "[::1",      "[::1]x",    "[1:2]",
	                                  "[::1::2]",   "[:::]",      "[1:2:3:4:5:6:7:8:9]",   "%4",
	                                  "a/b",        "[g::1]",     "[::1.2.3]", "[::01.2.3.4]", "a?",
	                                  "[1:2:3:4:5:6:7::8]",       "[12345::]", ":80",       "[]"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char buf[256];
		int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
		ck_assert(n > 0 && (size_t)n < sizeof(buf));
		expect_request_error(buf, (size_t)n, &roomy, 400, __LINE__);
	}
	static const char *const good[] = {"a",           "example.com:8080", "1.2.3.4",        "[::1]",
	                                   "[::1]:443",   "[2001:db8::]",     "[::ffff:1.2.3.4]", "%41b.c",
	                                   "a-b_c~d!$&'()*+,;=", "[1:2:3:4:5:6:7:8]", "[1::]",     "h:0",
	                                   "[1:2:3:4:5:6:1.2.3.4]"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char buf[256];
		int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
		struct req_outcome o = parse_req(buf, (size_t)n, &req);
		ck_assert_msg(o.rc == n, "Host %s: rc=%d why=%s", good[i], o.rc, o.why ? o.why : "-");
		ck_assert(view_is(req.authority, req.authority_len, good[i]));
	}
}
END_TEST

START_TEST(test_hop_by_hop)
{
	static const char raw[] = "GET / HTTP/1.1\r\n"
	                          "x-foo: before\r\n"        /* 0: named by Connection below */
	                          "Host: a\r\n"              /* 1 */
	                          "Connection: close, X-Foo,, x-bar\r\n" /* 2 */
	                          "Keep-Alive: timeout=5\r\n" /* 3 */
	                          "TE: trailers\r\n"         /* 4 */
	                          "Upgrade: h2c\r\n"         /* 5 */
	                          "Proxy-Connection: x\r\n"  /* 6 */
	                          "Trailer: X-T\r\n"         /* 7 */
	                          "HTTP2-Settings: AAA\r\n"  /* 8 */
	                          "X-Other: 1\r\n"           /* 9 */
	                          "X-BAR: 2\r\n"             /* 10 */
	                          "Content-Length: 0\r\n"    /* 11 */
	                          "X-Foo-Not: 3\r\n"         /* 12 */
	                          "\r\n";
	static const uint8_t expected[] = {1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0};
	struct h1_request req;
	REQ_OK(raw, &req);
	ck_assert_uint_eq(req.num_headers, sizeof(expected));
	for (size_t i = 0; i < sizeof(expected); i++)
		ck_assert_msg(req.header_flags[i] == (expected[i] ? H1_HDR_HOP : 0), "header %zu flag %u", i,
		              req.header_flags[i]);
	ck_assert(req.upgrade);
	ck_assert(!req.keep_alive);
	ck_assert_int_ge(header_index(&req, "x-other"), 0);

	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n", 400);
	REQ_ERROR("GET / HTTP/1.1\r\nHost: a\r\nConnection: a;b\r\n\r\n", 400);
}
END_TEST

START_TEST(test_keep_alive_and_expect)
{
	struct h1_request req;
	REQ_OK("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &req);
	ck_assert(req.keep_alive);
	REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", &req);
	ck_assert(!req.keep_alive);
	REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: Close\r\n\r\n", &req);
	ck_assert(!req.keep_alive);
	REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", &req);
	ck_assert(req.keep_alive);
	REQ_OK("GET / HTTP/1.0\r\n\r\n", &req);
	ck_assert(!req.keep_alive);

	REQ_OK("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", &req);
	ck_assert(req.expect_continue);
	REQ_ERROR("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417);
	REQ_ERROR("PUT / HTTP/1.0\r\nExpect: something\r\n\r\n", 417);
}
END_TEST

static void append(char *buf, size_t *len, const char *bytes, size_t n)
{
	memcpy(buf + *len, bytes, n);
	*len += n;
}

/* Every byte value at every position of a value and of a target, so both the
 * eight-byte fast path and the byte-wise path see it. */
START_TEST(test_every_byte_in_value_and_target)
{
	struct h1_request req;
	for (int c = 0; c < 256; c++) {
		for (size_t pos = 0; pos < 20; pos++) {
			char value[20];
			memset(value, 'v', sizeof(value));
			value[pos] = (char)c;
			char buf[128];
			size_t len = 0;
			append(buf, &len, LIT("GET / HTTP/1.1\r\nHost: a\r\nX: "));
			append(buf, &len, value, sizeof(value));
			append(buf, &len, LIT("\r\n\r\n"));
			bool ok = c == '\t' || (c >= 0x20 && c != 0x7f);
			struct req_outcome o = parse_req(buf, len, &req);
			ck_assert_msg((o.rc == (int)len) == ok, "value byte 0x%02x at %zu: rc=%d", c, pos, o.rc);

			len = 0;
			append(buf, &len, LIT("GET /"));
			append(buf, &len, value, sizeof(value));
			append(buf, &len, LIT(" HTTP/1.1\r\nHost: a\r\n\r\n"));
			ok = (c > 0x20 && c < 0x7f && c != '#') || c >= 0x80;
			o = parse_req(buf, len, &req);
			ck_assert_msg((o.rc == (int)len) == ok, "target byte 0x%02x at %zu: rc=%d", c, pos, o.rc);
		}
	}
}
END_TEST

START_TEST(test_is_token)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	for (int c = 0; c < 256; c++) {
		char s[3] = {'a', (char)c, 'b'};
		bool expected = c != 0 && strchr(tchar, c) != NULL;
		ck_assert_msg(h1_is_token(s, 3) == expected, "byte 0x%02x", c);
	}
	ck_assert(!h1_is_token("", 0));
	ck_assert(h1_is_token("GET", 3));
	ck_assert(!h1_is_token("GET ", 4));
}
END_TEST

/* ---- responses ---- */

struct res_outcome {
	int rc;
	const char *why;
};

static struct res_outcome parse_res_lim(const char *buf, size_t len, const struct h1_limits *lim, bool head,
                                        struct h1_response *res)
{
	struct res_outcome o = {0, NULL};
	o.rc = h1_parse_response(buf, len, lim, head, res, &o.why);
	return o;
}

static void expect_response(const char *buf, size_t len, bool head, int body, bool keep_alive, int line)
{
	struct h1_response res;
	struct res_outcome o = parse_res_lim(buf, len, &roomy, head, &res);
	ck_assert_msg(o.rc == (int)len, "line %d: rc=%d why=%s", line, o.rc, o.why ? o.why : "-");
	ck_assert_msg((int)res.body == body, "line %d: body %d", line, res.body);
	ck_assert_msg(res.keep_alive == keep_alive, "line %d: keep_alive %d", line, res.keep_alive);
}

#define RES(lit, head, body, ka) expect_response(LIT(lit), head, body, ka, __LINE__)

static void expect_response_error(const char *buf, size_t len, const struct h1_limits *lim, int line)
{
	struct h1_response res;
	struct res_outcome o = parse_res_lim(buf, len, lim, false, &res);
	ck_assert_msg(o.rc == H1_ERROR && o.why != NULL, "line %d: expected error, got %d for [%.*s]", line, o.rc,
	              (int)len, buf);
}

#define RES_ERROR(lit) expect_response_error(LIT(lit), &roomy, __LINE__)

START_TEST(test_response_basic)
{
	struct h1_response res;
	static const char raw[] = "HTTP/1.1 200 OK fine\r\nContent-Length: 12\r\nServer: x\r\n\r\nhello world!";
	struct res_outcome o = parse_res_lim(LIT(raw), &roomy, false, &res);
	ck_assert_int_eq(o.rc, (int)(sizeof(raw) - 1 - 12));
	ck_assert_int_eq(res.status, 200);
	ck_assert_int_eq(res.minor_version, 1);
	ck_assert(view_is(res.reason, res.reason_len, "OK fine"));
	ck_assert_int_eq(res.body, H1_BODY_LENGTH);
	ck_assert_uint_eq(res.content_length, 12);
	ck_assert_uint_eq(res.header_flags[0], H1_HDR_HOP);
	ck_assert_uint_eq(res.header_flags[1], 0);
	ck_assert(res.keep_alive);

	o = parse_res_lim(LIT("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"), &roomy, false, &res);
	ck_assert_int_gt(o.rc, 0);
	ck_assert_int_eq(res.status, 404);
	ck_assert_uint_eq(res.reason_len, 0);
	o = parse_res_lim(LIT("HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n"), &roomy, false, &res);
	ck_assert_int_gt(o.rc, 0);
	ck_assert_int_eq(res.status, 503);
	ck_assert_uint_eq(res.reason_len, 0);
	o = parse_res_lim(LIT("HTTP/1.1 599 Caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n"), &roomy, false, &res);
	ck_assert_int_gt(o.rc, 0);
}
END_TEST

START_TEST(test_response_bodies)
{
	RES("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, H1_BODY_CHUNKED, true);
	RES("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, H1_BODY_LENGTH, true);
	RES("HTTP/1.1 200 OK\r\n\r\n", false, H1_BODY_CLOSE, false);
	RES("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false, H1_BODY_NONE, true);
	RES("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false, H1_BODY_NONE, true);
	RES("HTTP/1.1 304 Not Modified\r\n\r\n", false, H1_BODY_NONE, true);
	RES("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, H1_BODY_NONE, true);
	RES("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, H1_BODY_NONE, true);
	RES("HTTP/1.1 200 OK\r\n\r\n", true, H1_BODY_NONE, true);
	RES("HTTP/1.1 100 Continue\r\n\r\n", false, H1_BODY_NONE, true);
	RES("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", false, H1_BODY_NONE,
	    true);
	RES("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", false, H1_BODY_LENGTH, false);
	RES("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", false, H1_BODY_LENGTH, false);
	RES("HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", false, H1_BODY_LENGTH, true);
	RES("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false, H1_BODY_CLOSE, false);
	RES("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", false, H1_BODY_LENGTH, true);
}
END_TEST

START_TEST(test_response_errors)
{
	RES_ERROR("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
	RES_ERROR("HTTP/1.1 204 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
	RES_ERROR("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n");
	RES_ERROR("HTTP/1.1 099 Low\r\n\r\n");
	RES_ERROR("HTTP/1.1 600 High\r\n\r\n");
	RES_ERROR("HTTP/1.1 20 OK\r\n\r\n");
	RES_ERROR("HTTP/1.1 2000 OK\r\n\r\n");
	RES_ERROR("HTTP/1.1 2x0 OK\r\n\r\n");
	RES_ERROR("HTTP/1.1  200 OK\r\n\r\n");
	RES_ERROR("HTTP/2 200 OK\r\n\r\n");
	RES_ERROR("HTTP/2.0 200 OK\r\n\r\n");
	RES_ERROR("http/1.1 200 OK\r\n\r\n");
	RES_ERROR("\r\nHTTP/1.1 200 OK\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\n\r\n");
	RES_ERROR("HTTP/1.1 200 O\rK\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 O\x01K\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nX : a\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n");
	RES_ERROR("HTTP/1.1 200 OK\r\nConnection: a b\r\n\r\n");

	const struct h1_limits tight = {20, 64, 2};
	struct h1_response res;
	expect_response_error(LIT("HTTP/1.1 200 OK 34567890\r\n\r\n"), &tight, __LINE__);
	expect_response_error(LIT("HTTP/1.1 200 OK 345678901234567890"), &tight, __LINE__);
	expect_response_error(LIT("HTTP/1.1 200 OK 34567"), &tight, __LINE__);
	const char *why = NULL;
	ck_assert_int_eq(h1_parse_response(LIT("HTTP/1.1 200 OK 34567\x01\r\n\r\n"), &tight, false, &res, &why), H1_ERROR);
	ck_assert_str_eq(why, "status line too long");
	ck_assert_int_eq(parse_res_lim(LIT("HTTP/1.1 200 OK 3456\r"), &tight, false, &res).rc, H1_INCOMPLETE);
	expect_response_error(LIT("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), &tight, __LINE__);
	expect_response_error(LIT("HTTP/1.1 200 OK\r\nA: 12345678901234567890123456789012345678901234567890"), &tight,
	                      __LINE__);
	ck_assert_int_gt(parse_res_lim(LIT("HTTP/1.1 200 OK 3456\r\nA: 1\r\nB: 2\r\n\r\n"), &tight, false, &res).rc,
	                 0);
}
END_TEST

START_TEST(test_response_every_split)
{
	static const char raw[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
	                          "Connection: X-A\r\nX-A: 1\r\n\r\n";
	struct h1_response res;
	for (size_t i = 0; i < sizeof(raw) - 1; i++) {
		struct res_outcome o = parse_res_lim(raw, i, &roomy, false, &res);
		ck_assert_msg(o.rc == H1_INCOMPLETE, "prefix %zu: %d %s", i, o.rc, o.why ? o.why : "-");
	}
	ck_assert_int_eq(parse_res_lim(LIT(raw), &roomy, false, &res).rc, (int)sizeof(raw) - 1);
	ck_assert_int_eq(res.body, H1_BODY_CHUNKED);
	ck_assert_uint_eq(res.header_flags[0], 0);
	ck_assert_uint_eq(res.header_flags[1], H1_HDR_HOP);
	ck_assert_uint_eq(res.header_flags[2], H1_HDR_HOP);
	ck_assert_uint_eq(res.header_flags[3], H1_HDR_HOP);
}
END_TEST

/* ---- chunked decoder ---- */

struct decoded {
	ssize_t rc; /* H1_ERROR, or 1 when DONE was reached, 0 when input ran out */
	char data[512];
	size_t data_len;
	char trailers[512]; /* trailer lines joined with '|' */
	size_t trailers_len;
	uint64_t total;
	size_t consumed;
	const char *why;
};

/* Drives the decoder the way a connection would: it offers the bytes received
 * so far (first `first` bytes, then `step` more each time the decoder needs
 * more), keeping unconsumed bytes. */
static void decode(const char *in, size_t len, size_t max_line, size_t max_trailers, size_t first, size_t step,
                   struct decoded *out)
{
	struct h1_chunked c;
	h1_chunked_init(&c, max_line, max_trailers);
	memset(out, 0, sizeof(*out));
	size_t off = 0;
	size_t avail = first < len ? first : len;
	for (;;) {
		enum h1_chunk_event ev;
		const char *line = NULL;
		size_t line_len = 0;
		ssize_t r = h1_chunked_feed(&c, in + off, avail - off, &ev, &line, &line_len);
		if (r == H1_ERROR) {
			out->rc = H1_ERROR;
			out->why = c.why;
			ck_assert_ptr_nonnull(c.why);
			break;
		}
		ck_assert_int_ge(r, 0);
		ck_assert_uint_le((size_t)r, avail - off);
		if (ev == H1_CHUNK_NEED_MORE) {
			ck_assert_int_eq(r, 0);
			if (avail == len)
				break;
			avail = len - avail > step ? avail + step : len;
			continue;
		}
		if (ev == H1_CHUNK_DONE) {
			ck_assert_int_eq(r, 2);
			ck_assert(h1_chunked_done(&c));
			out->rc = 1;
			off += (size_t)r;
			ck_assert_int_eq(h1_chunked_feed(&c, in + off, avail - off, &ev, NULL, NULL), 0);
			ck_assert_int_eq(ev, H1_CHUNK_DONE);
			break;
		}
		ck_assert_int_gt(r, 0);
		if (ev == H1_CHUNK_DATA) {
			ck_assert_uint_le(out->data_len + (size_t)r, sizeof(out->data));
			memcpy(out->data + out->data_len, in + off, (size_t)r);
			out->data_len += (size_t)r;
		} else if (ev == H1_CHUNK_TRAILER) {
			ck_assert_ptr_eq(line, in + off);
			ck_assert_uint_eq(line_len + 2, (size_t)r);
			ck_assert_uint_le(out->trailers_len + line_len + 1, sizeof(out->trailers));
			memcpy(out->trailers + out->trailers_len, line, line_len);
			out->trailers_len += line_len;
			out->trailers[out->trailers_len++] = '|';
		} else {
			ck_assert_int_eq(ev, H1_CHUNK_NONE);
		}
		off += (size_t)r;
	}
	out->total = c.total;
	out->consumed = off;
}

static void expect_decoded(const char *in, size_t len, const char *data, const char *trailers, int line)
{
	struct decoded whole;
	decode(in, len, 64, 256, len, len, &whole);
	ck_assert_msg(whole.rc == 1, "line %d: rc=%zd why=%s", line, whole.rc, whole.why ? whole.why : "-");
	ck_assert_msg(whole.data_len == strlen(data) && memcmp(whole.data, data, whole.data_len) == 0,
	              "line %d: data [%.*s]", line, (int)whole.data_len, whole.data);
	ck_assert_msg(whole.trailers_len == strlen(trailers) && memcmp(whole.trailers, trailers, whole.trailers_len) == 0,
	              "line %d: trailers [%.*s]", line, (int)whole.trailers_len, whole.trailers);
	ck_assert_uint_eq(whole.total, strlen(data));
	ck_assert_uint_eq(whole.consumed, len);
}

#define DECODES(lit, data, trailers) expect_decoded(LIT(lit), data, trailers, __LINE__)

static void expect_chunk_error(const char *in, size_t len, size_t max_line, size_t max_trailers, int line)
{
	struct decoded d;
	decode(in, len, max_line, max_trailers, len, len, &d);
	ck_assert_msg(d.rc == H1_ERROR, "line %d: expected error, got %zd for [%.*s]", line, d.rc, (int)len, in);
	decode(in, len, max_line, max_trailers, 1, 1, &d);
	ck_assert_msg(d.rc == H1_ERROR, "line %d: byte-wise: expected error, got %zd", line, d.rc);
}

#define CHUNK_ERROR(lit) expect_chunk_error(LIT(lit), 64, 256, __LINE__)

START_TEST(test_chunked_simple)
{
	DECODES("5\r\nhello\r\n0\r\n\r\n", "hello", "");
	DECODES("5\r\nhello\r\n6\r\n world\r\nA\r\n0123456789\r\n0\r\n\r\n", "hello world0123456789", "");
	DECODES("0\r\n\r\n", "", "");
	DECODES("00000\r\n\r\n", "", "");
	DECODES("a\r\n\r\n\r\n\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n\r\n\r\n\r\n", "");
}
END_TEST

START_TEST(test_chunked_extensions)
{
	DECODES("5;name=val;flag;q=\"a\\\"b;c\"\r\nhello\r\n0;last\r\n\r\n", "hello", "");
	DECODES("5 ; a = b\t;\tc\r\nhello\r\n0\r\n\r\n", "hello", "");
	CHUNK_ERROR("5;\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5;a=\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5;=b\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5;a b\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5 \r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5;a \r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5;a=\"b\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5;a=b\"c\"\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5;a\0\r\nhello\r\n0\r\n\r\n");
}
END_TEST

START_TEST(test_chunked_trailers)
{
	DECODES("5\r\nhello\r\n0\r\nX-A: 1\r\nX-B:  two words \r\n\r\n", "hello", "X-A: 1|X-B:  two words |");
	CHUNK_ERROR("0\r\nX-A: 1\r\n folded\r\n\r\n");
	CHUNK_ERROR("0\r\n X-A: 1\r\n\r\n");
	CHUNK_ERROR("0\r\nX-A: 1\n\r\n");
	CHUNK_ERROR("0\r\nX-A: 1\r\r\n\r\n");
	CHUNK_ERROR("0\r\nX-A : 1\r\n\r\n");
	CHUNK_ERROR("0\r\nX-A: \0\r\n\r\n");
	CHUNK_ERROR("0\r\nno colon\r\n\r\n");
	CHUNK_ERROR("0\r\n\n");
	CHUNK_ERROR("0\r\n\rX");

	/* the trailer budget counts field lines with their CRLF: 10 bytes fit, 11 do not */
	static const char fits[] = "0\r\nX-L: 123\r\n\r\n";
	struct decoded d;
	decode(LIT(fits), 64, 10, sizeof(fits) - 1, sizeof(fits) - 1, &d);
	ck_assert_int_eq(d.rc, 1);
	expect_chunk_error(LIT("0\r\nX-L: 1234\r\n\r\n"), 64, 10, __LINE__);
	expect_chunk_error(LIT("0\r\nX: 1\r\nY: 2\r\n\r\n"), 64, 10, __LINE__);
	/* an endless trailer is refused once it cannot fit the budget */
	decode(LIT("0\r\nX-L: 123456789012345"), 64, 10, 1, 1, &d);
	ck_assert_int_eq(d.rc, H1_ERROR);
	decode(LIT("0\r\nX-L: 12345"), 64, 10, 100, 100, &d);
	ck_assert_int_eq(d.rc, H1_ERROR);
	decode(LIT("0\r\nX-L: 123\r"), 64, 10, 100, 100, &d);
	ck_assert_int_eq(d.rc, 0);
}
END_TEST

START_TEST(test_chunked_every_split)
{
	static const char raw[] = "4;x=\"y\"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: v\r\n\r\n";
	struct decoded whole;
	decode(LIT(raw), 64, 256, sizeof(raw) - 1, sizeof(raw) - 1, &whole);
	ck_assert_int_eq(whole.rc, 1);
	ck_assert_uint_eq(whole.data_len, 23);
	ck_assert(memcmp(whole.data, "Wikipedia in\r\n\r\nchunks.", 23) == 0);
	ck_assert_uint_eq(whole.total, 23);
	for (size_t first = 0; first <= sizeof(raw) - 1; first++) {
		for (size_t step = 1; step <= 3; step++) {
			struct decoded d;
			decode(LIT(raw), 64, 256, first, step, &d);
			ck_assert_msg(d.rc == 1, "first %zu step %zu: rc=%zd", first, step, d.rc);
			ck_assert_uint_eq(d.data_len, whole.data_len);
			ck_assert(memcmp(d.data, whole.data, d.data_len) == 0);
			ck_assert_uint_eq(d.trailers_len, whole.trailers_len);
			ck_assert(memcmp(d.trailers, whole.trailers, d.trailers_len) == 0);
			ck_assert_uint_eq(d.total, 23);
		}
	}
}
END_TEST

START_TEST(test_chunked_bad_size)
{
	CHUNK_ERROR("g\r\n");
	CHUNK_ERROR("-5\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("+5\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR(" 5\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("0x5\r\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("\r\n");
	CHUNK_ERROR("5\nhello\r\n0\r\n\r\n");
	CHUNK_ERROR("5\rhello\r\n0\r\n\r\n");
	CHUNK_ERROR("10000000000000000\r\n");
	CHUNK_ERROR("5\r\nhelloX\r\n0\r\n\r\n");
	CHUNK_ERROR("5\r\nhello\n0\r\n\r\n");
	CHUNK_ERROR("5\r\nhello\rX0\r\n\r\n");
	CHUNK_ERROR("5\r\nhell\r\n0\r\n\r\n");

	/* the largest size parses; the decoder then waits for the data */
	struct decoded d;
	decode(LIT("ffffffffffffffff\r\nabc"), 64, 256, 100, 1, &d);
	ck_assert_int_eq(d.rc, 0);
	ck_assert_uint_eq(d.total, 3);
	ck_assert_uint_eq(d.consumed, 21);
}
END_TEST

START_TEST(test_chunked_line_limit)
{
	struct decoded d;
	decode(LIT("00000005\r\nhello\r\n0\r\n\r\n"), 8, 0, 100, 100, &d);
	ck_assert_int_eq(d.rc, 1);
	expect_chunk_error(LIT("000000005\r\nhello\r\n0\r\n\r\n"), 8, 0, __LINE__);
	expect_chunk_error(LIT("5;a=bcdef\r\nhello\r\n0\r\n\r\n"), 8, 0, __LINE__);
	/* refused as soon as the line cannot fit, without waiting for its end */
	decode(LIT("0000000000"), 8, 0, 1, 1, &d);
	ck_assert_int_eq(d.rc, H1_ERROR);
	decode(LIT("000000000"), 8, 0, 100, 100, &d);
	ck_assert_int_eq(d.rc, H1_ERROR);
	decode(LIT("000000000\n"), 8, 0, 100, 100, &d);
	ck_assert_int_eq(d.rc, H1_ERROR);
	ck_assert_str_eq(d.why, "chunk size line too long");
	decode(LIT("00000000\r"), 8, 0, 100, 100, &d);
	ck_assert_int_eq(d.rc, 0);
	decode(LIT("00000000"), 8, 0, 100, 100, &d);
	ck_assert_int_eq(d.rc, 0);
}
END_TEST

START_TEST(test_chunked_states)
{
	struct h1_chunked c;
	enum h1_chunk_event ev;
	h1_chunked_init(&c, 16, 16);
	ck_assert(!h1_chunked_done(&c));
	ck_assert_int_eq(h1_chunked_feed(&c, "", 0, &ev, NULL, NULL), 0);
	ck_assert_int_eq(ev, H1_CHUNK_NEED_MORE);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("3\r\nabc\r\n"), &ev, NULL, NULL), 3);
	ck_assert_int_eq(ev, H1_CHUNK_NONE);
	ck_assert_uint_eq(c.remaining, 3);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("ab"), &ev, NULL, NULL), 2);
	ck_assert_int_eq(ev, H1_CHUNK_DATA);
	ck_assert_uint_eq(c.total, 2);
	ck_assert_int_eq(h1_chunked_feed(&c, "", 0, &ev, NULL, NULL), 0);
	ck_assert_int_eq(ev, H1_CHUNK_NEED_MORE);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("c\r\n0\r\n"), &ev, NULL, NULL), 1);
	ck_assert_int_eq(ev, H1_CHUNK_DATA);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("\r"), &ev, NULL, NULL), 0);
	ck_assert_int_eq(ev, H1_CHUNK_NEED_MORE);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("\r\n0\r\n"), &ev, NULL, NULL), 2);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("0\r\n"), &ev, NULL, NULL), 3);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("\r\nGET / HTTP/1.1"), &ev, NULL, NULL), 2);
	ck_assert_int_eq(ev, H1_CHUNK_DONE);
	ck_assert(h1_chunked_done(&c));
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("GET / HTTP/1.1"), &ev, NULL, NULL), 0);
	ck_assert_int_eq(ev, H1_CHUNK_DONE);
	ck_assert_uint_eq(c.total, 3);

	h1_chunked_init(&c, 16, 16);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("z\r\n"), &ev, NULL, NULL), H1_ERROR);
	ck_assert_ptr_nonnull(c.why);
	ck_assert_int_eq(h1_chunked_feed(&c, LIT("0\r\n\r\n"), &ev, NULL, NULL), H1_ERROR);
	ck_assert(!h1_chunked_done(&c));
}
END_TEST

START_TEST(test_chunked_total)
{
	static const char raw[] = "1\r\na\r\n2\r\nbb\r\n3\r\nccc\r\n4\r\ndddd\r\n5\r\neeeee\r\n0\r\n\r\n";
	struct decoded d;
	decode(LIT(raw), 64, 0, 1, 1, &d);
	ck_assert_int_eq(d.rc, 1);
	ck_assert_uint_eq(d.total, 15);
	ck_assert_uint_eq(d.data_len, 15);
	ck_assert(memcmp(d.data, "abbcccddddeeeee", 15) == 0);
}
END_TEST

START_TEST(test_trailer_field_allowed)
{
	static const char *const refused[] = {
	    "Content-Length", "transfer-encoding", "TRAILER", "Host", "Connection", "TE", "Keep-Alive", "Upgrade",
	    "Cache-Control", "Max-Forwards", "Expect", "Range", "If-Match", "If-None-Match", "If-Modified-Since",
	    "Authorization", "Proxy-Authorization", "WWW-Authenticate", "Cookie", "Set-Cookie", "Age", "Date",
	    "Expires", "Location", "Retry-After", "Vary", "Content-Type", "Content-Encoding", "Content-Range",
	    "Forwarded", "Via", "X-Forwarded-For"};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		ck_assert_msg(!h1_trailer_field_allowed(refused[i], strlen(refused[i])), "%s allowed", refused[i]);
	static const char *const allowed[] = {"X-Checksum", "grpc-status", "Server-Timing", "Digest", "hosts", "t",
	                                      "content-lengthx", "ETag-Hash"};
	for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
		ck_assert_msg(h1_trailer_field_allowed(allowed[i], strlen(allowed[i])), "%s refused", allowed[i]);
	/* by length, not by C string: a prefix of a refused name is another name */
	ck_assert(h1_trailer_field_allowed("Hostname", 4) == false);
	ck_assert(h1_trailer_field_allowed("Host", 3));
}
END_TEST

static Suite *h1_suite(void)
{
	Suite *s = suite_create("h1");
	TCase *req = tcase_create("request");
	tcase_add_test(req, test_get);
	tcase_add_test(req, test_post_length);
	tcase_add_test(req, test_post_chunked);
	tcase_add_test(req, test_http10);
	tcase_add_test(req, test_absolute_form);
	tcase_add_test(req, test_asterisk);
	tcase_add_test(req, test_leading_empty_lines);
	tcase_add_test(req, test_pipelined);
	tcase_add_test(req, test_request_every_split);
	tcase_add_test(req, test_framing_errors);
	tcase_add_test(req, test_transfer_encoding_errors);
	tcase_add_test(req, test_line_syntax_errors);
	tcase_add_test(req, test_version_errors);
	tcase_add_test(req, test_limits);
	tcase_add_test(req, test_host);
	tcase_add_test(req, test_hop_by_hop);
	tcase_add_test(req, test_keep_alive_and_expect);
	tcase_add_test(req, test_every_byte_in_value_and_target);
	tcase_add_test(req, test_is_token);
	suite_add_tcase(s, req);

	TCase *res = tcase_create("response");
	tcase_add_test(res, test_response_basic);
	tcase_add_test(res, test_response_bodies);
	tcase_add_test(res, test_response_errors);
	tcase_add_test(res, test_response_every_split);
	suite_add_tcase(s, res);

	TCase *chunked = tcase_create("chunked");
	tcase_add_test(chunked, test_chunked_simple);
	tcase_add_test(chunked, test_chunked_extensions);
	tcase_add_test(chunked, test_chunked_trailers);
	tcase_add_test(chunked, test_chunked_every_split);
	tcase_add_test(chunked, test_chunked_bad_size);
	tcase_add_test(chunked, test_chunked_line_limit);
	tcase_add_test(chunked, test_chunked_states);
	tcase_add_test(chunked, test_chunked_total);
	tcase_add_test(chunked, test_trailer_field_allowed);
	suite_add_tcase(s, chunked);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(h1_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
