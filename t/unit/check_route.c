#define PCRE2_CODE_UNIT_WIDTH 8

#include <check.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "http.h"
#include "route.h"
#include "route_path.h"

#define SOURCE "conf/test.lua"

/* One table, its conf and a scratch, as a worker would hold them. */
struct fixture {
	struct conf conf;
	struct route_table *table;
	struct route_scratch *scratch;
};

static void fixture_build(struct fixture *f, struct conf_route *routes, size_t n)
{
	memset(f, 0, sizeof(*f));
	f->conf.source = SOURCE;
	f->conf.routes = routes;
	f->conf.num_routes = n;
	struct conf_errors errs;
	conf_errors_init(&errs);
	f->table = route_table_build(&f->conf, &errs);
	ck_assert_msg(f->table != NULL, "build failed: %s", errs.count > 0 ? errs.msgs[0] : "(no message)");
	ck_assert_uint_eq(errs.count, 0);
	conf_errors_free(&errs);
	f->scratch = route_scratch_new();
	ck_assert_ptr_nonnull(f->scratch);
}

static void fixture_release(struct fixture *f)
{
	route_scratch_free(f->scratch);
	route_table_free(f->table);
}

static struct route_input request(const char *host, const char *method, const char *path)
{
	struct route_input in = {
		.host = host,
		.host_len = host != NULL ? strlen(host) : 0,
		.path = path,
		.path_len = path != NULL ? strlen(path) : 0,
		.method = method,
		.method_len = method != NULL ? strlen(method) : 0,
	};
	return in;
}

static int match(const struct fixture *f, const char *host, const char *method, const char *path)
{
	struct route_input in = request(host, method, path);
	return route_match(f->table, f->scratch, &in);
}

static bool jit_available(void)
{
	uint32_t jit = 0;
	return pcre2_config(PCRE2_CONFIG_JIT, &jit) >= 0 && jit != 0;
}

static int match_subject(const struct fixture *f, const char *path, const char *subject)
{
	struct route_input in = request("example.com", "GET", path);
	in.client_subject = subject;
	return route_match(f->table, f->scratch, &in);
}

/* ---- single criteria -------------------------------------------------- */

START_TEST(test_client_cert_subject)
{
	struct conf_route routes[] = {
		{ .name = "ops", .client_cert_subject = "CN=ops,O=Example" },
		{ .name = "rest" },
	};
	struct fixture f;
	fixture_build(&f, routes, 2);
	ck_assert(route_table_uses_client_subject(f.table));
	ck_assert_int_eq(match_subject(&f, "/", "CN=ops,O=Example"), 0);
	/* exact: no prefix, no suffix, no case folding, no certificate at all */
	ck_assert_int_eq(match_subject(&f, "/", "CN=ops,O=Example,C=DE"), 1);
	ck_assert_int_eq(match_subject(&f, "/", "CN=ops"), 1);
	ck_assert_int_eq(match_subject(&f, "/", "cn=ops,o=example"), 1);
	ck_assert_int_eq(match_subject(&f, "/", "CN=alice,O=Example"), 1);
	ck_assert_int_eq(match_subject(&f, "/", ""), 1);
	ck_assert_int_eq(match_subject(&f, "/", NULL), 1);
	fixture_release(&f);

	/* a table without such a route does not ask for the subject */
	struct conf_route plain[] = { { .name = "rest", .path_prefix = "/" } };
	fixture_build(&f, plain, 1);
	ck_assert(!route_table_uses_client_subject(f.table));
	ck_assert_int_eq(match_subject(&f, "/", "CN=ops,O=Example"), 0);
	ck_assert_int_eq(match_subject(&f, "/", NULL), 0);
	fixture_release(&f);
}
END_TEST

START_TEST(test_client_cert_subject_with_other_criteria)
{
	struct conf_route routes[] = {
		{ .name = "ops-admin", .path_prefix = "/admin/", .client_cert_subject = "CN=ops,O=Example" },
		{ .name = "admin-denied", .path_prefix = "/admin/" },
		{ .name = "rest" },
	};
	struct fixture f;
	fixture_build(&f, routes, 3);
	ck_assert_int_eq(match_subject(&f, "/admin/x", "CN=ops,O=Example"), 0);
	ck_assert_int_eq(match_subject(&f, "/admin/x", "CN=dev,O=Example"), 1);
	ck_assert_int_eq(match_subject(&f, "/admin/x", NULL), 1);
	ck_assert_int_eq(match_subject(&f, "/other", "CN=ops,O=Example"), 2);
	fixture_release(&f);
}
END_TEST

START_TEST(test_route_without_criteria_matches_everything)
{
	struct conf_route routes[] = { { .name = "all" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, "example.com", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, NULL, "DELETE", "/x/y"), 0);
	ck_assert_int_eq(match(&f, "", "GET", ""), 0);
	fixture_release(&f);
}
END_TEST

START_TEST(test_exact_host)
{
	struct conf_route routes[] = { { .name = "api", .host = "api.example.com" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, "api.example.com", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, "API.Example.COM", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, "api.example.com.", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, "example.com", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, "xapi.example.com", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, "api.example.co", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, "www.api.example.com", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, "", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/"), -1);
	fixture_release(&f);
}
END_TEST

START_TEST(test_host_pattern_is_lowercased_at_build)
{
	struct conf_route routes[] = { { .name = "upper", .host = "Shop.Example.COM" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, "shop.example.com", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, "SHOP.EXAMPLE.COM", "GET", "/"), 0);
	fixture_release(&f);
}
END_TEST

START_TEST(test_wildcard_host)
{
	struct conf_route routes[] = { { .name = "wild", .host = "*.example.com" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, "a.example.com", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, "a.b.c.example.com", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, "WWW.Example.Com", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, "a.example.com.", "GET", "/"), 0);
	ck_assert_int_eq(match(&f, "example.com", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, "EXAMPLE.COM", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, ".example.com", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, "badexample.com", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, "a.example.com.evil.net", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, "a.example.org", "GET", "/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/"), -1);
	fixture_release(&f);
}
END_TEST

START_TEST(test_route_host_matches)
{
	ck_assert_int_ne(route_host_matches("*.example.com", "a.example.com", 13), 0);
	ck_assert_int_ne(route_host_matches("*.example.com", "x.y.z.example.com", 17), 0);
	ck_assert_int_ne(route_host_matches("*.example.com", "A.EXAMPLE.COM", 13), 0);
	ck_assert_int_eq(route_host_matches("*.example.com", "example.com", 11), 0);
	ck_assert_int_eq(route_host_matches("*.example.com", "notexample.com", 14), 0);
	ck_assert_int_ne(route_host_matches("example.com", "Example.Com", 11), 0);
	ck_assert_int_eq(route_host_matches("example.com", "a.example.com", 13), 0);
	ck_assert_int_eq(route_host_matches("example.com", NULL, 0), 0);
	ck_assert_int_ne(route_host_matches(NULL, "anything", 8), 0);
	/* only host_len bytes count: the host need not be NUL-terminated */
	ck_assert_int_ne(route_host_matches("example.com", "example.com:8443", 11), 0);
	ck_assert_int_eq(route_host_matches("example.com", "example.co", 10), 0);
	/* the DNS root dot, on either side */
	ck_assert_int_ne(route_host_matches("example.com", "example.com.", 12), 0);
	ck_assert_int_ne(route_host_matches("Example.COM.", "example.com", 11), 0);
	ck_assert_int_ne(route_host_matches("*.Example.com", "a.example.COM.", 14), 0);
	ck_assert_int_eq(route_host_matches("*.example.com", "example.com.", 12), 0);
}
END_TEST

START_TEST(test_exact_path)
{
	struct conf_route routes[] = { { .name = "health", .path = "/health" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/health"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", "/health/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/healthz"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/healt"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/HEALTH"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", ""), -1);
	/* the matcher honours path_len, not a terminator */
	struct route_input in = request(NULL, "GET", "/healthz");
	in.path_len = 7;
	ck_assert_int_eq(route_match(f.table, f.scratch, &in), 0);
	fixture_release(&f);
}
END_TEST

START_TEST(test_path_prefix)
{
	struct conf_route routes[] = { { .name = "api", .path_prefix = "/api/" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/api/"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", "/api/v1/users"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", "/api"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/apix/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/API/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/v1/api/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", ""), -1);
	fixture_release(&f);
}
END_TEST

/* route_path_normalize: what a deny of a prefix must also catch (scripts/drill pentest found them) */
static void ck_norm(const char *raw, const char *want)
{
	char out[256];
	size_t n = route_path_normalize(raw, strlen(raw), out);
	ck_assert_uint_le(n, strlen(raw));
	out[n] = '\0';
	ck_assert_msg(strcmp(out, want) == 0, "%s normalized to %s, want %s", raw, out, want);
}

START_TEST(test_normalize_path)
{
	ck_norm("/internal/x", "/internal/x");
	ck_norm("/a/../internal/x", "/internal/x");
	ck_norm("/a/%2e%2e/internal/x", "/internal/x");
	ck_norm("/a/%2E%2E%2Finternal/x", "/internal/x");
	ck_norm("//internal//x", "/internal/x");
	ck_norm("/./internal/x", "/internal/x");
	ck_norm("/%69nternal/x", "/internal/x");
	ck_norm("/internal%2fx", "/internal/x");
	ck_norm("/../../internal/x", "/internal/x");
	ck_norm("/a/b/..", "/a/");
	ck_norm("/a/.", "/a/");
	ck_norm("/a/", "/a/");
	ck_norm("/..", "/");
	ck_norm("/", "/");
	ck_norm("/a/..%2f..%2fb", "/b");
	ck_norm("/a..b/.c/..d", "/a..b/.c/..d");
	/* escapes of reserved or non-ASCII bytes stay as sent; a broken escape is kept */
	ck_norm("/a%3Fb/%C3%A9/%25/%2", "/a%3Fb/%C3%A9/%25/%2");
	ck_norm("/%zz", "/%zz");
	ck_norm("*", "*");
	ck_norm("", "");
}
END_TEST

START_TEST(test_empty_prefix_matches_every_path)
{
	struct conf_route routes[] = { { .name = "root", .path_prefix = "" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/anything"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", ""), 0);
	fixture_release(&f);
}
END_TEST

START_TEST(test_path_regex)
{
	struct conf_route routes[] = {
		{ .name = "user", .path_regex = "^/users/[0-9]+$" },
		{ .name = "php", .path_regex = "\\.php" },
	};
	struct fixture f;
	fixture_build(&f, routes, 2);
	if (jit_available()) {
		ck_assert(route_regex_uses_jit(f.table, 0));
		ck_assert(route_regex_uses_jit(f.table, 1));
	}
	ck_assert_int_eq(match(&f, NULL, "GET", "/users/42"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", "/users/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/users/abc"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/users/42/posts"), -1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/v2/users/42"), -1);
	/* unanchored patterns match anywhere in the path */
	ck_assert_int_eq(match(&f, NULL, "GET", "/wp/index.php"), 1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/a.php/b"), 1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/index.html"), -1);
	/* the subject ends at path_len: "$" must see the end there */
	struct route_input in = request(NULL, "GET", "/users/42junk");
	in.path_len = strlen("/users/42");
	ck_assert_int_eq(route_match(f.table, f.scratch, &in), 0);
	fixture_release(&f);
}
END_TEST

START_TEST(test_regex_with_more_groups_than_scratch_pairs)
{
	struct conf_route routes[] = { { .name = "groups", .path_regex = "^/(a)/(b)/(c)/([0-9]+)$" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/a/b/c/7"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", "/a/b/c/x"), -1);
	fixture_release(&f);
}
END_TEST

START_TEST(test_regex_matches_raw_bytes)
{
	struct conf_route routes[] = { { .name = "bytes", .path_regex = "^/x/.$" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	/* not valid UTF-8: must still be matched, byte by byte */
	ck_assert_int_eq(match(&f, NULL, "GET", "/x/\xff"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", "/x/\xc3\xa9"), -1);
	fixture_release(&f);
}
END_TEST

START_TEST(test_catastrophic_regex_is_bounded)
{
	struct conf_route routes[] = {
		{ .name = "evil", .path_regex = "^/(a+)+$" },
		{ .name = "fallback" },
	};
	struct fixture f;
	fixture_build(&f, routes, 2);
	char path[64] = "/";
	memset(path + 1, 'a', 40);
	path[41] = '!';
	path[42] = '\0';
	/* exponential backtracking would run for hours; the match limit stops it
	 * and the route simply does not match (the suite's timeout catches a hang) */
	ck_assert_int_eq(match(&f, NULL, "GET", path), 1);
	path[41] = '\0';
	ck_assert_int_eq(match(&f, NULL, "GET", path), 0);
	fixture_release(&f);
}
END_TEST

/* issue 17: a match abandoned at the limit is counted, and limits.regex_match_limit sets the limit. */
START_TEST(test_regex_limit_counted_and_configurable)
{
	struct conf_route routes[] = {
		{ .name = "evil", .path_regex = "^/(a+)+$" },
		{ .name = "fallback" },
	};
	char path[64] = "/";
	memset(path + 1, 'a', 12);
	path[13] = '!';
	path[14] = '\0';

	/* the default limit: 12 letters backtrack a few thousand steps, well within it */
	struct fixture f;
	fixture_build(&f, routes, 2);
	ck_assert_int_eq(match(&f, NULL, "GET", path), 1);
	ck_assert_uint_eq(route_scratch_regex_gave_up(f.scratch), 0);
	route_table_free(f.table);

	/* a lower limit gives up on the same path: still "no match", now counted */
	struct conf_errors errs;
	conf_errors_init(&errs);
	f.conf.limits.regex_match_limit = 1000;
	f.table = route_table_build(&f.conf, &errs);
	ck_assert_ptr_nonnull(f.table);
	ck_assert_int_eq(match(&f, NULL, "GET", path), 1);
	ck_assert_uint_eq(route_scratch_regex_gave_up(f.scratch), 1);
	ck_assert_int_eq(match(&f, NULL, "GET", path), 1);
	ck_assert_uint_eq(route_scratch_regex_gave_up(f.scratch), 2);
	/* a path that matches is not affected, and a plain miss is not counted */
	ck_assert_int_eq(match(&f, NULL, "GET", "/aaa"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", "/b"), 1);
	ck_assert_uint_eq(route_scratch_regex_gave_up(f.scratch), 2);
	conf_errors_free(&errs);
	fixture_release(&f);
}
END_TEST

START_TEST(test_methods)
{
	char *methods[] = { "GET", "HEAD" };
	struct conf_route routes[] = { { .name = "read", .methods = methods, .num_methods = 2 } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/"), 0);
	ck_assert_int_eq(match(&f, NULL, "HEAD", "/"), 0);
	ck_assert_int_eq(match(&f, NULL, "POST", "/"), -1);
	ck_assert_int_eq(match(&f, NULL, "get", "/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GE", "/"), -1);
	ck_assert_int_eq(match(&f, NULL, "GETS", "/"), -1);
	ck_assert_int_eq(match(&f, NULL, NULL, "/"), -1);
	struct route_input in = request(NULL, "HEADER", "/");
	in.method_len = 4;
	ck_assert_int_eq(route_match(f.table, f.scratch, &in), 0);
	fixture_release(&f);
}
END_TEST

static struct http_header header(const char *name, const char *value)
{
	struct http_header h = { name, strlen(name), value, strlen(value) };
	return h;
}

static int match_headers(const struct fixture *f, const struct http_header *hs, size_t n)
{
	struct route_input in = request("example.com", "GET", "/");
	in.headers = hs;
	in.num_headers = n;
	return route_match(f->table, f->scratch, &in);
}

START_TEST(test_headers)
{
	struct conf_header_match want[] = { { "x-canary", "1" }, { "x-env", "prod" } };
	struct conf_route routes[] = { { .name = "canary", .headers = want, .num_headers = 2 } };
	struct fixture f;
	fixture_build(&f, routes, 1);

	struct http_header both[] = { header("X-Env", "prod"), header("X-Canary", "1") };
	ck_assert_int_eq(match_headers(&f, both, 2), 0);

	struct http_header only_one[] = { header("x-canary", "1") };
	ck_assert_int_eq(match_headers(&f, only_one, 1), -1);

	struct http_header value_case[] = { header("x-canary", "1"), header("x-env", "PROD") };
	ck_assert_int_eq(match_headers(&f, value_case, 2), -1);

	struct http_header value_longer[] = { header("x-canary", "10"), header("x-env", "prod") };
	ck_assert_int_eq(match_headers(&f, value_longer, 2), -1);

	struct http_header name_longer[] = { header("x-canary-x", "1"), header("x-env", "prod") };
	ck_assert_int_eq(match_headers(&f, name_longer, 2), -1);

	/* a repeated header matches if any of its occurrences has the value */
	struct http_header repeated[] = { header("x-canary", "0"), header("X-ENV", "prod"), header("X-Canary", "1") };
	ck_assert_int_eq(match_headers(&f, repeated, 3), 0);
	struct http_header repeated_wrong[] = { header("x-canary", "0"), header("x-env", "prod"),
		                                header("x-canary", "2") };
	ck_assert_int_eq(match_headers(&f, repeated_wrong, 3), -1);

	ck_assert_int_eq(match_headers(&f, NULL, 0), -1);
	fixture_release(&f);
}
END_TEST

START_TEST(test_header_with_empty_value)
{
	struct conf_header_match want[] = { { "x-debug", "" } };
	struct conf_route routes[] = { { .name = "debug", .headers = want, .num_headers = 1 } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	struct http_header empty[] = { header("x-debug", "") };
	struct http_header set[] = { header("x-debug", "1") };
	ck_assert_int_eq(match_headers(&f, empty, 1), 0);
	ck_assert_int_eq(match_headers(&f, set, 1), -1);
	fixture_release(&f);
}
END_TEST

/* ---- combinations and order --------------------------------------------- */

static struct conf_route combined_route(char **methods, struct conf_header_match *headers)
{
	struct conf_route r = {
		.name = "combined",
		.host = "*.shop.example",
		.path_prefix = "/cart/",
		.path_regex = "/items/[0-9]+$",
		.methods = methods,
		.num_methods = 1,
		.headers = headers,
		.num_headers = 1,
	};
	return r;
}

START_TEST(test_all_criteria_must_hold)
{
	char *methods[] = { "POST" };
	struct conf_header_match want[] = { { "x-tenant", "blue" } };
	struct conf_route routes[] = { combined_route(methods, want) };
	struct fixture f;
	fixture_build(&f, routes, 1);

	struct http_header tenant[] = { header("X-Tenant", "blue") };
	struct http_header other_tenant[] = { header("X-Tenant", "green") };
	struct route_input ok = request("eu.shop.example", "POST", "/cart/items/17");
	ok.headers = tenant;
	ok.num_headers = 1;
	ck_assert_int_eq(route_match(f.table, f.scratch, &ok), 0);

	struct route_input in = ok;
	in.host = "shop.example";
	in.host_len = strlen(in.host);
	ck_assert_int_eq(route_match(f.table, f.scratch, &in), -1);

	in = ok;
	in.method = "GET";
	in.method_len = 3;
	ck_assert_int_eq(route_match(f.table, f.scratch, &in), -1);

	in = ok;
	in.path = "/basket/items/17";
	in.path_len = strlen(in.path);
	ck_assert_int_eq(route_match(f.table, f.scratch, &in), -1);

	in = ok;
	in.path = "/cart/items/x";
	in.path_len = strlen(in.path);
	ck_assert_int_eq(route_match(f.table, f.scratch, &in), -1);

	in = ok;
	in.headers = other_tenant;
	ck_assert_int_eq(route_match(f.table, f.scratch, &in), -1);

	fixture_release(&f);
}
END_TEST

START_TEST(test_exact_path_and_prefix_together)
{
	struct conf_route routes[] = { { .name = "both", .path = "/api/v1", .path_prefix = "/api" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, NULL, "GET", "/api/v1"), 0);
	ck_assert_int_eq(match(&f, NULL, "GET", "/api/v2"), -1);
	fixture_release(&f);
}
END_TEST

START_TEST(test_first_match_wins)
{
	char *post[] = { "POST" };
	struct conf_route routes[] = {
		{ .name = "admin", .host = "admin.example.com", .path_prefix = "/" },
		{ .name = "writes", .path_prefix = "/api/", .methods = post, .num_methods = 1 },
		{ .name = "api", .path_prefix = "/api/" },
		{ .name = "api-shadowed", .path_prefix = "/api/v1/" },
		{ .name = "catch-all" },
	};
	struct fixture f;
	fixture_build(&f, routes, 5);
	ck_assert_int_eq(match(&f, "admin.example.com", "POST", "/api/v1/x"), 0);
	ck_assert_int_eq(match(&f, "example.com", "POST", "/api/v1/x"), 1);
	ck_assert_int_eq(match(&f, "example.com", "GET", "/api/v1/x"), 2);
	ck_assert_int_eq(match(&f, "example.com", "GET", "/other"), 4);
	fixture_release(&f);
}
END_TEST

START_TEST(test_no_match_and_empty_table)
{
	struct conf_route routes[] = { { .name = "only", .path = "/only" } };
	struct fixture f;
	fixture_build(&f, routes, 1);
	ck_assert_int_eq(match(&f, "example.com", "GET", "/elsewhere"), -1);
	fixture_release(&f);

	fixture_build(&f, NULL, 0);
	ck_assert_int_eq(match(&f, "example.com", "GET", "/"), -1);
	fixture_release(&f);
}
END_TEST

START_TEST(test_scratch_serves_tables_of_any_shape)
{
	/* a worker keeps its scratch across reloads, whatever the new patterns */
	struct conf_route first[] = { { .name = "a", .path_regex = "^/a$" } };
	struct conf_route second[] = { { .name = "b", .path_regex = "^/(b)(c)(d)(e)(f)(g)(h)(i)(j)$" } };
	struct fixture f1, f2;
	fixture_build(&f1, first, 1);
	fixture_build(&f2, second, 1);
	struct route_input in = request(NULL, "GET", "/bcdefghij");
	ck_assert_int_eq(route_match(f2.table, f1.scratch, &in), 0);
	in = request(NULL, "GET", "/a");
	ck_assert_int_eq(route_match(f1.table, f2.scratch, &in), 0);
	fixture_release(&f1);
	fixture_release(&f2);
}
END_TEST

/* ---- build errors ------------------------------------------------------ */

START_TEST(test_bad_regex_reports_every_route)
{
	struct conf_route routes[] = {
		{ .name = "r1", .path_regex = "^/(unclosed" },
		{ .name = "r2", .path_regex = "^/fine$" },
		{ .name = "r3", .path_regex = "*leading" },
		{ .name = "r4", .path = "/plain" },
		{ .name = "r5", .path_regex = "[z-a]" },
	};
	struct conf c = { .source = SOURCE, .routes = routes, .num_routes = 5 };
	struct conf_errors errs;
	conf_errors_init(&errs);
	ck_assert_ptr_null(route_table_build(&c, &errs));
	ck_assert_uint_eq(errs.count, 3);
	ck_assert_str_eq(errs.msgs[0],
	                 SOURCE ": routes[1].match.path_regex: missing closing parenthesis at offset 11");
	ck_assert_str_eq(errs.msgs[1],
	                 SOURCE ": routes[3].match.path_regex: quantifier does not follow a repeatable item at offset 0");
	ck_assert_str_eq(errs.msgs[2],
	                 SOURCE ": routes[5].match.path_regex: range out of order in character class at offset 3");
	conf_errors_free(&errs);
}
END_TEST

START_TEST(test_good_build_adds_no_errors)
{
	struct conf_route routes[] = { { .name = "r1", .path_regex = "^/ok" } };
	struct conf c = { .source = SOURCE, .routes = routes, .num_routes = 1 };
	struct conf_errors errs;
	conf_errors_init(&errs);
	struct route_table *t = route_table_build(&c, &errs);
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(errs.count, 0);
	ck_assert(!route_regex_uses_jit(t, 1)); /* out of range */
	route_table_free(t);
	conf_errors_free(&errs);
	route_table_free(NULL);
	route_scratch_free(NULL);
}
END_TEST

/* ---- steady state ------------------------------------------------------ */

START_TEST(test_repeated_matching)
{
	char *methods[] = { "GET", "POST" };
	struct conf_header_match want[] = { { "x-canary", "1" } };
	struct conf_route routes[] = {
		{ .name = "canary", .host = "*.example.com", .headers = want, .num_headers = 1 },
		{ .name = "users", .path_regex = "^/users/[0-9]+(/posts)?$", .methods = methods, .num_methods = 2 },
		{ .name = "static", .path_prefix = "/static/" },
	};
	struct fixture f;
	fixture_build(&f, routes, 3);
	struct http_header canary[] = { header("X-Canary", "1") };
	static const char *const paths[] = { "/users/1", "/users/22/posts", "/static/app.js", "/nope" };
	static const int expected[] = { 1, 1, 2, -1 };
	for (int i = 0; i < 10000; i++) {
		int which = i % 4;
		struct route_input in = request("www.example.com", "GET", paths[which]);
		in.headers = canary;
		in.num_headers = (i % 8 == 7) ? 1 : 0;
		int want_route = in.num_headers > 0 ? 0 : expected[which];
		ck_assert_int_eq(route_match(f.table, f.scratch, &in), want_route);
	}
	fixture_release(&f);
}
END_TEST

static Suite *route_suite(void)
{
	Suite *s = suite_create("route");
	TCase *criteria = tcase_create("criteria");
	tcase_add_test(criteria, test_route_without_criteria_matches_everything);
	tcase_add_test(criteria, test_exact_host);
	tcase_add_test(criteria, test_host_pattern_is_lowercased_at_build);
	tcase_add_test(criteria, test_wildcard_host);
	tcase_add_test(criteria, test_route_host_matches);
	tcase_add_test(criteria, test_exact_path);
	tcase_add_test(criteria, test_path_prefix);
	tcase_add_test(criteria, test_normalize_path);
	tcase_add_test(criteria, test_empty_prefix_matches_every_path);
	tcase_add_test(criteria, test_path_regex);
	tcase_add_test(criteria, test_regex_with_more_groups_than_scratch_pairs);
	tcase_add_test(criteria, test_regex_matches_raw_bytes);
	tcase_add_test(criteria, test_catastrophic_regex_is_bounded);
	tcase_add_test(criteria, test_regex_limit_counted_and_configurable);
	tcase_add_test(criteria, test_methods);
	tcase_add_test(criteria, test_headers);
	tcase_add_test(criteria, test_header_with_empty_value);
	tcase_add_test(criteria, test_client_cert_subject);
	tcase_add_test(criteria, test_client_cert_subject_with_other_criteria);
	suite_add_tcase(s, criteria);

	TCase *table = tcase_create("table");
	tcase_add_test(table, test_all_criteria_must_hold);
	tcase_add_test(table, test_exact_path_and_prefix_together);
	tcase_add_test(table, test_first_match_wins);
	tcase_add_test(table, test_no_match_and_empty_table);
	tcase_add_test(table, test_scratch_serves_tables_of_any_shape);
	tcase_add_test(table, test_bad_regex_reports_every_route);
	tcase_add_test(table, test_good_build_adds_no_errors);
	tcase_add_test(table, test_repeated_matching);
	tcase_set_timeout(table, 30);
	suite_add_tcase(s, table);
	return s;
}

int main(void)
{
	SRunner *runner = srunner_create(route_suite());
	srunner_run_all(runner, CK_NORMAL);
	int failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
