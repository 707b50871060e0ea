/* The request-key extractor (reqkey.h): each kind of key, absent keys, the
 * one cookie parser and query arguments, and the config spellings. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "exchange.h"
#include "fields.h"
#include "reqkey.h"

#define H(n, v) { n, sizeof(n) - 1, v, sizeof(v) - 1 }

static struct http_header headers[] = {
	H("Host", "a.test"),
	H("X-User", "alice"),
	H("Cookie", "theme=dark; uid=42"),
	H("X-User", "second"),
	H("cookie", " session = s1 ;uid=shadowed"),
};

/* A request as the pipeline has it: inside an exchange, here one without a
 * protocol (so no TLS). */
static struct exchange ex;

static struct request *request(void)
{
	memset(&ex, 0, sizeof(ex));
	struct request *r = &ex.req;
	strcpy(r->client_ip, "192.0.2.7");
	r->target = "/cart/items?id=9&empty=&flag&id=10#frag";
	r->path = "/cart/items";
	r->host = "a.test";
	r->route_name = "cart";
	size_t n = sizeof(headers) / sizeof(headers[0]);
	fields_view(&r->headers, &r->arena, headers, NULL, n, n);
	return r;
}

static void expect(const struct request *r, enum reqkey_kind k, const char *name, const char *want)
{
	const char *v = NULL;
	size_t n = 0;
	bool got = reqkey_get(r, k, name, &v, &n);
	if (!want) {
		ck_assert_msg(!got, "kind %d %s: want absent, got \"%.*s\"", (int)k, name ? name : "", (int)n, v);
		return;
	}
	ck_assert_msg(got, "kind %d %s: absent, want \"%s\"", (int)k, name ? name : "", want);
	ck_assert_uint_eq(n, strlen(want));
	ck_assert_msg(memcmp(v, want, n) == 0, "got \"%.*s\", want \"%s\"", (int)n, v, want);
}

START_TEST(every_kind)
{
	struct request *r = request();
	expect(r, REQKEY_CLIENT_IP, NULL, "192.0.2.7");
	expect(r, REQKEY_PATH, NULL, "/cart/items");
	expect(r, REQKEY_HOST, NULL, "a.test");
	expect(r, REQKEY_ROUTE, NULL, "cart");
	expect(r, REQKEY_HEADER, "x-user", "alice"); /* the first field */
	expect(r, REQKEY_HEADER, "x-none", NULL);
	expect(r, REQKEY_COOKIE, "uid", "42");       /* the first Cookie field that has it */
	expect(r, REQKEY_COOKIE, "session", "s1");   /* whitespace around name and value */
	expect(r, REQKEY_COOKIE, "UID", NULL);       /* cookie names are case-sensitive */
	expect(r, REQKEY_COOKIE, "ui", NULL);
	expect(r, REQKEY_QUERY, "id", "9");          /* the first one */
	expect(r, REQKEY_QUERY, "empty", "");
	expect(r, REQKEY_QUERY, "flag", "");
	expect(r, REQKEY_QUERY, "frag", NULL);
	expect(r, REQKEY_QUERY, "i", NULL);
	/* no connection: no TLS, no subject */
	expect(r, REQKEY_TLS_SUBJECT, NULL, NULL);
	r->host = "";
	expect(r, REQKEY_HOST, NULL, NULL);
	r->route_name = NULL;
	expect(r, REQKEY_ROUTE, NULL, NULL);
	r->target = "/no-query";
	expect(r, REQKEY_QUERY, "id", NULL);
}
END_TEST

static const char *cookie(const char *header, const char *name)
{
	static char out[64];
	const char *v;
	size_t n;
	if (!reqkey_cookie(header, strlen(header), name, strlen(name), &v, &n))
		return NULL;
	ck_assert_uint_lt(n, sizeof(out));
	memcpy(out, v, n);
	out[n] = '\0';
	return out;
}

START_TEST(cookie_parser)
{
	ck_assert_str_eq(cookie("a=1", "a"), "1");
	ck_assert_str_eq(cookie("a=1;b=2", "b"), "2");
	ck_assert_str_eq(cookie("  a=1 ;\tb = 2\t", "b"), "2");
	ck_assert_str_eq(cookie("a=; b=2", "a"), "");
	ck_assert_str_eq(cookie("a=x=y", "a"), "x=y");      /* only the first '=' splits */
	ck_assert_str_eq(cookie("a=\"q\"", "a"), "\"q\"");  /* quotes are part of the value */
	ck_assert_str_eq(cookie("a=1; a=2", "a"), "1");     /* the first wins */
	ck_assert_str_eq(cookie("junk; a=1", "a"), "1");    /* a pair without '=' is skipped */
	ck_assert_ptr_null(cookie("", "a"));
	ck_assert_ptr_null(cookie(";;;", "a"));
	ck_assert_ptr_null(cookie("ab=1", "a"));
	ck_assert_ptr_null(cookie("a", "a"));
	ck_assert_ptr_null(cookie("xa=1", "a"));
}
END_TEST

START_TEST(config_spellings)
{
	ck_assert_int_eq(reqkey_of_hash_key(CONF_KEY_CLIENT_IP), REQKEY_CLIENT_IP);
	ck_assert_int_eq(reqkey_of_hash_key(CONF_KEY_HEADER), REQKEY_HEADER);
	ck_assert_int_eq(reqkey_of_hash_key(CONF_KEY_COOKIE), REQKEY_COOKIE);
	ck_assert_int_eq(reqkey_of_hash_key(CONF_KEY_PATH), REQKEY_PATH);
	ck_assert_int_eq(reqkey_of_hash_key(CONF_KEY_HOST), REQKEY_HOST);
	ck_assert_int_eq(reqkey_of_rate_key(CONF_RL_KEY_CLIENT_IP), REQKEY_CLIENT_IP);
	ck_assert_int_eq(reqkey_of_rate_key(CONF_RL_KEY_HEADER), REQKEY_HEADER);
	ck_assert_int_eq(reqkey_of_rate_key(CONF_RL_KEY_COOKIE), REQKEY_COOKIE);
	ck_assert_int_eq(reqkey_of_rate_key(CONF_RL_KEY_PATH), REQKEY_PATH);
	ck_assert_int_eq(reqkey_of_rate_key(CONF_RL_KEY_ROUTE), REQKEY_ROUTE);
	ck_assert_int_eq(reqkey_of_rate_key(CONF_RL_KEY_HOST), REQKEY_HOST);
}
END_TEST

static Suite *reqkey_suite(void)
{
	Suite *s = suite_create("reqkey");
	TCase *tc = tcase_create("extract");
	tcase_add_test(tc, every_kind);
	tcase_add_test(tc, cookie_parser);
	tcase_add_test(tc, config_spellings);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(reqkey_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
