/* check_conf.c - unit tests for the config loader (src/conf.c). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "conf.h"
#include "conf_control.h"
#include "conf_redis.h"
#include "runtime.h"

#ifndef SLUICE_SRCDIR
#define SLUICE_SRCDIR "."
#endif

/* Pieces of a valid config that the error tests build on. */
#define LISTENERS "listeners = { { address = \"127.0.0.1:8080\" } },\n"
#define POOLS "pools = { web = { servers = { \"127.0.0.1:9001\" } } },\n"
#define SERVICES "services = { web = { pools = { web = 100 } } },\n"
#define BASE LISTENERS POOLS SERVICES

/* The example from the design brief, exactly as a user would write it. */
static const char example_config[] =
	"return {\n"
	"  workers = 2,\n"
	"  listeners = { { name = \"public\", address = \"127.0.0.1:8080\" } },\n"
	"  pools = {\n"
	"    web = {\n"
	"      servers = { { address = \"127.0.0.1:9001\", weight = 3 }, { address = \"127.0.0.1:9002\", weight = 1 } },\n"
	"      balance = \"round_robin\",            -- also \"least_conn\", \"hash\" (with hash_key = \"header:x-user-id\" / \"client_ip\" / \"path\")\n"
	"      keepalive = { idle = 64, idle_timeout = \"60s\" },\n"
	"      timeouts = { connect = \"1s\", response = \"30s\" },\n"
	"    },\n"
	"  },\n"
	"  services = { web = { pools = { web = 100 } } },   -- a service splits traffic over pools by weight\n"
	"  routes = {\n"
	"    { match = { path = \"/healthz\" }, respond = { status = 200, body = \"ok\\n\" } },\n"
	"    { match = { host = \"*.example.com\", path_prefix = \"/static/\" }, pool = \"web\" },  -- pool = shorthand for a one-pool service\n"
	"    { match = { path_regex = \"^/api/v[0-9]+/\", methods = { \"GET\", \"POST\" }, headers = { [\"x-env\"] = \"prod\" } }, service = \"web\" },\n"
	"    { match = { path_prefix = \"/\" }, service = \"web\" },\n"
	"  },\n"
	"  limits = { header_bytes = 16384, body_bytes = \"10m\", client_header_timeout = \"10s\", keepalive_timeout = \"75s\" },\n"
	"  access_log = { path = \"stdout\" },     -- one JSON object a line\n"
	"}\n";

static const char *srcdir(void)
{
	const char *d = getenv("SLUICE_SRCDIR");
	return d && *d ? d : SLUICE_SRCDIR;
}

/* All messages, one a line, for failure output. */
static char *joined(const struct conf_errors *e)
{
	size_t len = 1;
	for (size_t i = 0; i < e->count; i++)
		len += strlen(e->msgs[i]) + 3;
	char *out = malloc(len);
	ck_assert_ptr_nonnull(out);
	out[0] = '\0';
	for (size_t i = 0; i < e->count; i++) {
		strcat(out, "  ");
		strcat(out, e->msgs[i]);
		strcat(out, "\n");
	}
	return out;
}

static struct conf *load_ok(const char *src)
{
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load_string("test.lua", src, &e);
	if (!c || e.count) {
		char *all = joined(&e);
		ck_abort_msg("expected no errors, got:\n%s", all);
	}
	conf_errors_free(&e);
	return c;
}

static bool has_message(const struct conf_errors *e, const char *msg, bool exact)
{
	for (size_t i = 0; i < e->count; i++)
		if (exact ? strcmp(e->msgs[i], msg) == 0 : strstr(e->msgs[i], msg) != NULL)
			return true;
	return false;
}

/* Loading src must fail, with msg among the messages (exactly, or as a part). */
static void expect_error_in(const char *name, const char *src, const char *msg, bool exact)
{
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load_string(name, src, &e);
	ck_assert_msg(c == NULL, "expected the load to fail with: %s", msg);
	ck_assert_uint_ge(e.count, 1);
	if (!has_message(&e, msg, exact)) {
		char *all = joined(&e);
		ck_abort_msg("expected error%s\n  %s\ngot:\n%s", exact ? "" : " containing", msg, all);
	}
	conf_errors_free(&e);
}

static void expect_error(const char *src, const char *msg)
{
	expect_error_in("test.lua", src, msg, true);
}

static void expect_error_part(const char *src, const char *part)
{
	expect_error_in("test.lua", src, part, false);
}

static void assert_inet(const struct sockaddr_storage *ss, socklen_t len, const char *ip, unsigned port)
{
	ck_assert_int_eq(ss->ss_family, AF_INET);
	ck_assert_uint_eq(len, sizeof(struct sockaddr_in));
	const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
	char buf[INET_ADDRSTRLEN];
	ck_assert_ptr_nonnull(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf));
	ck_assert_str_eq(buf, ip);
	ck_assert_uint_eq(ntohs(sin->sin_port), port);
}

/* ---- scalar parsers ---- */

START_TEST(test_duration_valid)
{
	static const struct {
		const char *in;
		conf_msec ms;
	} cases[] = {
		{ "1500ms", 1500 }, { "2s", 2000 }, { "1m", 60000 }, { "1h", 3600000 }, { "0s", 0 },
		{ "1.5s", 1500 }, { "0.25s", 250 }, { "1m30s", 90000 }, { "1h1m1s1ms", 3661001 },
		{ "0.5m", 30000 }, { "86400s", 86400000 }, { "007s", 7000 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		conf_msec ms = 12345;
		ck_assert_msg(conf_parse_duration(cases[i].in, &ms), "\"%s\" should parse", cases[i].in);
		ck_assert_uint_eq(ms, cases[i].ms);
	}
}
END_TEST

START_TEST(test_duration_invalid)
{
	static const char *const cases[] = {
		"", "2", "s", "ms", "2 s", " 2s", "2s ", "-1s", "+1s", "1.s", ".5s", "1.5ms", "0.0001s", "1d",
		"2S", "1sec", "30s1m", "1s1s", "1e3ms", "1.1234567s", "99999999999999999999s", "18446744073709551615h",
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		conf_msec ms = 777;
		ck_assert_msg(!conf_parse_duration(cases[i], &ms), "\"%s\" should be refused", cases[i]);
		ck_assert_uint_eq(ms, 777);
	}
	ck_assert(!conf_parse_duration(NULL, NULL));
}
END_TEST

START_TEST(test_size_valid)
{
	static const struct {
		const char *in;
		uint64_t bytes;
	} cases[] = {
		{ "0", 0 }, { "16384", 16384 }, { "16k", 16384 }, { "16K", 16384 }, { "10m", 10485760 },
		{ "10M", 10485760 }, { "1g", 1073741824 }, { "1G", 1073741824 }, { "18446744073709551615", UINT64_MAX },
		{ "17179869183g", (uint64_t)17179869183 << 30 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t v = 1;
		ck_assert_msg(conf_parse_size(cases[i].in, &v), "\"%s\" should parse", cases[i].in);
		ck_assert_uint_eq(v, cases[i].bytes);
	}
}
END_TEST

START_TEST(test_msec_timeval)
{
	struct timeval tv = conf_msec_timeval(1500);
	ck_assert_int_eq(tv.tv_sec, 1);
	ck_assert_int_eq(tv.tv_usec, 500000);
	tv = conf_msec_timeval(999);
	ck_assert_int_eq(tv.tv_sec, 0);
	ck_assert_int_eq(tv.tv_usec, 999000);
	tv = conf_msec_timeval(86400000);
	ck_assert_int_eq(tv.tv_sec, 86400);
	ck_assert_int_eq(tv.tv_usec, 0);
}
END_TEST

START_TEST(test_size_invalid)
{
	static const char *const cases[] = {
		"", "k", "1.5k", "10mb", "10MiB", "-1", "1 k", " 1", "1t", "0x10", "18446744073709551616", "17179869184g",
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t v = 5;
		ck_assert_msg(!conf_parse_size(cases[i], &v), "\"%s\" should be refused", cases[i]);
		ck_assert_uint_eq(v, 5);
	}
}
END_TEST

START_TEST(test_address_valid)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	ck_assert(conf_parse_address("127.0.0.1:8080", &ss, &len));
	assert_inet(&ss, len, "127.0.0.1", 8080);
	ck_assert(conf_parse_address("0.0.0.0:1", &ss, &len));
	assert_inet(&ss, len, "0.0.0.0", 1);
	ck_assert(conf_parse_address("10.1.2.3:65535", &ss, &len));
	assert_inet(&ss, len, "10.1.2.3", 65535);

	ck_assert(conf_parse_address("[::1]:8443", &ss, &len));
	ck_assert_int_eq(ss.ss_family, AF_INET6);
	ck_assert_uint_eq(len, sizeof(struct sockaddr_in6));
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	ck_assert_uint_eq(ntohs(sin6->sin6_port), 8443);
	ck_assert(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

	/* Host names are resolved (from /etc/hosts here, no network needed). */
	ck_assert(conf_parse_address("localhost:80", &ss, &len));
	ck_assert(ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
	if (ss.ss_family == AF_INET)
		ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 80);
	else
		ck_assert_uint_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 80);
}
END_TEST

START_TEST(test_address_invalid)
{
	static const struct {
		const char *in;
		const char *why;
	} cases[] = {
		{ "", "empty address (write \"host:port\")" },
		{ "127.0.0.1", "missing port (write \"127.0.0.1:PORT\")" },
		{ "127.0.0.1:99999", "port out of range (1 to 65535)" },
		{ "127.0.0.1:0", "port out of range (1 to 65535)" },
		{ "127.0.0.1:123456789012345678901234567890", "port out of range (1 to 65535)" },
		{ "127.0.0.1:http", "port \"http\" is not a number" },
		{ "127.0.0.1:", "missing port after \":\"" },
		{ ":8080", "missing host (write \"0.0.0.0:PORT\" for every IPv4 address)" },
		{ "::1:80", "an IPv6 address needs brackets (write \"[::1]:8080\")" },
		{ "[::1", "missing \"]\" after the IPv6 address" },
		{ "[::1]", "missing port (write \"[::1]:8080\")" },
		{ "[::1]8080", "expected \":PORT\" after \"]\"" },
		{ "[127.0.0.1]:80", "\"127.0.0.1\" is not an IPv6 address" },
		/* issue 17: digits and dots are never a host name, and only the dotted quad is an IPv4 address */
		{ "999.1.1.1:80", "\"999.1.1.1\" is not an IPv4 address (write four numbers from 0 to 255 like "
		                  "\"10.0.0.1\", or \"0.0.0.0\" for every address)" },
		{ "0:80", "\"0\" is not an IPv4 address (write four numbers from 0 to 255 like \"10.0.0.1\", or "
		          "\"0.0.0.0\" for every address)" },
		{ "127.1:80", "\"127.1\" is not an IPv4 address (write four numbers from 0 to 255 like \"10.0.0.1\", "
		              "or \"0.0.0.0\" for every address)" },
		{ "1.2.3.4.5:80", "\"1.2.3.4.5\" is not an IPv4 address (write four numbers from 0 to 255 like "
		                  "\"10.0.0.1\", or \"0.0.0.0\" for every address)" },
		{ "0x7f.1:80", "\"0x7f.1\" is not a dotted IPv4 address (write four numbers from 0 to 255 like "
		               "\"127.0.0.1\")" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		char why[256] = "";
		ck_assert_msg(!conf_parse_address_why(cases[i].in, &ss, &len, why, sizeof why), "\"%s\" should be refused",
		              cases[i].in);
		ck_assert_str_eq(why, cases[i].why);
		ck_assert(!conf_parse_address(cases[i].in, &ss, &len));
	}
	struct sockaddr_storage ss;
	socklen_t len;
	char why[256] = "";
	ck_assert(!conf_parse_address_why("no-such-host.invalid:80", &ss, &len, why, sizeof why));
	ck_assert_msg(strncmp(why, "cannot resolve host \"no-such-host.invalid\": ", 44) == 0, "got: %s", why);
}
END_TEST

START_TEST(test_errors_list)
{
	struct conf_errors e;
	conf_errors_init(&e);
	for (int i = 0; i < 20; i++)
		conf_errors_add(&e, "error %d of %s", i, "many");
	ck_assert_uint_eq(e.count, 20);
	ck_assert_str_eq(e.msgs[0], "error 0 of many");
	ck_assert_str_eq(e.msgs[19], "error 19 of many");
	conf_errors_free(&e);
	ck_assert_uint_eq(e.count, 0);
	ck_assert_ptr_null(e.msgs);
}
END_TEST

/* ---- the example and the shipped files ---- */

static void check_example(const struct conf *c)
{
	ck_assert_uint_eq(c->workers, 2);
	ck_assert_uint_eq(c->drain_timeout, 30000);

	ck_assert_uint_eq(c->num_listeners, 1);
	ck_assert_str_eq(c->listeners[0].name, "public");
	ck_assert_str_eq(c->listeners[0].address, "127.0.0.1:8080");
	assert_inet(&c->listeners[0].addr, c->listeners[0].addr_len, "127.0.0.1", 8080);

	ck_assert_uint_eq(c->num_pools, 1);
	ck_assert_int_eq(conf_find_pool(c, "web"), 0);
	ck_assert_int_eq(conf_find_pool(c, "api"), -1);
	const struct conf_pool *p = &c->pools[0];
	ck_assert_str_eq(p->name, "web");
	ck_assert_uint_eq(p->num_servers, 2);
	ck_assert_str_eq(p->servers[0].address, "127.0.0.1:9001");
	assert_inet(&p->servers[0].addr, p->servers[0].addr_len, "127.0.0.1", 9001);
	ck_assert_uint_eq(p->servers[0].weight, 3);
	ck_assert_str_eq(p->servers[1].address, "127.0.0.1:9002");
	assert_inet(&p->servers[1].addr, p->servers[1].addr_len, "127.0.0.1", 9002);
	ck_assert_uint_eq(p->servers[1].weight, 1);
	ck_assert_int_eq(p->balance, CONF_BALANCE_ROUND_ROBIN);
	ck_assert_int_eq(p->hash_key.kind, CONF_KEY_CLIENT_IP);
	ck_assert_ptr_null(p->hash_key.name);
	ck_assert_uint_eq(p->keepalive_idle, 64);
	ck_assert_uint_eq(p->keepalive_idle_timeout, 60000);
	ck_assert_uint_eq(p->connect_timeout, 1000);
	ck_assert_uint_eq(p->response_timeout, 30000);

	/* The explicit service, then the implicit one made for routes[2]'s pool = "web". */
	ck_assert_uint_eq(c->num_services, 2);
	ck_assert_str_eq(c->services[0].name, "web");
	ck_assert(!c->services[0].implicit);
	ck_assert_uint_eq(c->services[0].num_pools, 1);
	ck_assert_uint_eq(c->services[0].pools[0].pool, 0);
	ck_assert_uint_eq(c->services[0].pools[0].weight, 100);
	ck_assert_str_eq(c->services[1].name, "pool:web");
	ck_assert(c->services[1].implicit);
	ck_assert_uint_eq(c->services[1].num_pools, 1);
	ck_assert_uint_eq(c->services[1].pools[0].pool, 0);
	ck_assert_uint_eq(c->services[1].pools[0].weight, 100);
	ck_assert_int_eq(conf_find_service(c, "web"), 0);
	ck_assert_int_eq(conf_find_service(c, "pool:web"), 1);
	ck_assert_int_eq(conf_find_service(c, "nope"), -1);

	ck_assert_uint_eq(c->num_routes, 4);
	const struct conf_route *r = &c->routes[0];
	ck_assert_str_eq(r->name, "routes[1]");
	ck_assert_ptr_null(r->host);
	ck_assert_str_eq(r->path, "/healthz");
	ck_assert_ptr_null(r->path_prefix);
	ck_assert_ptr_null(r->path_regex);
	ck_assert_uint_eq(r->num_methods, 0);
	ck_assert_uint_eq(r->num_headers, 0);
	ck_assert_int_eq(r->action, CONF_ROUTE_RESPOND);
	ck_assert_int_eq(r->respond_status, 200);
	ck_assert_uint_eq(r->respond_body_len, 3);
	ck_assert_mem_eq(r->respond_body, "ok\n", 3);
	ck_assert_str_eq(r->respond_content_type, "text/plain");

	r = &c->routes[1];
	ck_assert_str_eq(r->name, "routes[2]");
	ck_assert_str_eq(r->host, "*.example.com");
	ck_assert_ptr_null(r->path);
	ck_assert_str_eq(r->path_prefix, "/static/");
	ck_assert_ptr_null(r->path_regex);
	ck_assert_int_eq(r->action, CONF_ROUTE_PROXY);
	ck_assert_uint_eq(r->service, 1);

	r = &c->routes[2];
	ck_assert_str_eq(r->name, "routes[3]");
	ck_assert_ptr_null(r->host);
	ck_assert_ptr_null(r->path);
	ck_assert_ptr_null(r->path_prefix);
	ck_assert_str_eq(r->path_regex, "^/api/v[0-9]+/");
	ck_assert_uint_eq(r->num_methods, 2);
	ck_assert_str_eq(r->methods[0], "GET");
	ck_assert_str_eq(r->methods[1], "POST");
	ck_assert_uint_eq(r->num_headers, 1);
	ck_assert_str_eq(r->headers[0].name, "x-env");
	ck_assert_str_eq(r->headers[0].value, "prod");
	ck_assert_int_eq(r->action, CONF_ROUTE_PROXY);
	ck_assert_uint_eq(r->service, 0);

	r = &c->routes[3];
	ck_assert_str_eq(r->name, "routes[4]");
	ck_assert_str_eq(r->path_prefix, "/");
	ck_assert_int_eq(r->action, CONF_ROUTE_PROXY);
	ck_assert_uint_eq(r->service, 0);

	ck_assert_uint_eq(c->limits.header_bytes, 16384);
	ck_assert_uint_eq(c->limits.request_line_bytes, 8192);
	ck_assert_uint_eq(c->limits.max_headers, 100);
	ck_assert_uint_eq(c->limits.body_bytes, 10485760);
	ck_assert_uint_eq(c->limits.client_header_timeout, 10000);
	ck_assert_uint_eq(c->limits.client_body_timeout, 60000);
	ck_assert_uint_eq(c->limits.send_timeout, 60000);
	ck_assert_uint_eq(c->limits.keepalive_timeout, 75000);
	ck_assert_uint_eq(c->limits.max_connections, 0);

	ck_assert(c->access_log.enabled);
	ck_assert_str_eq(c->access_log.path, "stdout");
}

START_TEST(test_example_string)
{
	struct conf *c = load_ok(example_config);
	ck_assert_str_eq(c->source, "test.lua");
	check_example(c);
	conf_free(c);
}
END_TEST

START_TEST(test_example_file)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/conf/examples/basic.lua", srcdir());
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load(path, &e);
	if (!c) {
		char *all = joined(&e);
		ck_abort_msg("%s did not load:\n%s", path, all);
	}
	ck_assert_uint_eq(e.count, 0);
	ck_assert_str_eq(c->source, path);
	check_example(c);
	conf_free(c);
	conf_errors_free(&e);
}
END_TEST

START_TEST(test_default_config_file)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/conf/sluice.lua", srcdir());
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load(path, &e);
	if (!c) {
		char *all = joined(&e);
		ck_abort_msg("%s did not load:\n%s", path, all);
	}
	ck_assert_uint_eq(e.count, 0);
	/* What the quickstart relies on: port 8080 in front of 9001 and 9002, split 90/10. */
	ck_assert_uint_eq(c->num_listeners, 1);
	assert_inet(&c->listeners[0].addr, c->listeners[0].addr_len, "127.0.0.1", 8080);
	int web = conf_find_pool(c, "web"), canary = conf_find_pool(c, "canary");
	ck_assert_int_ge(web, 0);
	ck_assert_int_ge(canary, 0);
	assert_inet(&c->pools[web].servers[0].addr, c->pools[web].servers[0].addr_len, "127.0.0.1", 9001);
	assert_inet(&c->pools[canary].servers[0].addr, c->pools[canary].servers[0].addr_len, "127.0.0.1", 9002);
	int svc = conf_find_service(c, "web");
	ck_assert_int_ge(svc, 0);
	ck_assert_uint_eq(c->services[svc].num_pools, 2);
	for (size_t i = 0; i < 2; i++) {
		const struct conf_service_pool *sp = &c->services[svc].pools[i];
		ck_assert_uint_eq(sp->weight, (int)sp->pool == web ? 90 : 10);
	}
	ck_assert_int_eq(c->routes[0].action, CONF_ROUTE_RESPOND);
	ck_assert_str_eq(c->routes[0].path, "/healthz");
	ck_assert_str_eq(c->routes[c->num_routes - 1].path_prefix, "/");
	ck_assert(c->access_log.enabled);
	conf_free(c);
	conf_errors_free(&e);
}
END_TEST

START_TEST(test_defaults)
{
	struct conf *c = load_ok("return { " LISTENERS POOLS "}");
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	ck_assert_uint_eq(c->workers, cpus < 1 ? 1 : (unsigned)cpus);
	ck_assert_uint_eq(c->drain_timeout, 30000);
	ck_assert_uint_eq(c->heap_keep_free, 64u << 20);
	ck_assert_str_eq(c->listeners[0].name, "listener[1]");
	const struct conf_pool *p = &c->pools[0];
	ck_assert_uint_eq(p->servers[0].weight, 1);
	ck_assert_int_eq(p->balance, CONF_BALANCE_ROUND_ROBIN);
	ck_assert_int_eq(p->hash_key.kind, CONF_KEY_CLIENT_IP);
	ck_assert_uint_eq(p->keepalive_idle, 32);
	ck_assert_uint_eq(p->keepalive_idle_timeout, 60000);
	ck_assert_uint_eq(p->connect_timeout, 5000);
	ck_assert_uint_eq(p->response_timeout, 30000);
	ck_assert_uint_eq(c->num_services, 0);
	ck_assert_uint_eq(c->num_routes, 0);
	ck_assert_uint_eq(c->limits.header_bytes, 16384);
	ck_assert_uint_eq(c->limits.request_line_bytes, 8192);
	ck_assert_uint_eq(c->limits.max_headers, 100);
	ck_assert_uint_eq(c->limits.body_bytes, 10485760);
	ck_assert_uint_eq(c->limits.client_header_timeout, 10000);
	ck_assert_uint_eq(c->limits.client_body_timeout, 60000);
	ck_assert_uint_eq(c->limits.client_body_min_rate, 1024);
	ck_assert_uint_eq(c->limits.client_body_deadline, 300000);
	ck_assert_uint_eq(c->limits.send_timeout, 60000);
	ck_assert_uint_eq(c->limits.keepalive_timeout, 75000);
	ck_assert_uint_eq(c->limits.max_connections, 0);
	ck_assert(!c->access_log.enabled);
	ck_assert_ptr_null(c->access_log.path);
	conf_free(c);
}
END_TEST

START_TEST(test_all_keys_set)
{
	struct conf *c = load_ok("return { workers = 8, drain_timeout = \"0s\", heap_keep_free = \"16m\",\n"
	                         "listeners = { { name = \"a\", address = \"127.0.0.1:8080\" },\n"
	                         "              { address = \"[::1]:8080\" } },\n"
	                         "pools = { web = { servers = { \"127.0.0.1:9001\", { address = \"127.0.0.1:9002\", weight = 0 } },\n"
	                         "                  balance = \"least_conn\", keepalive = { idle = 0, idle_timeout = \"1m30s\" },\n"
	                         "                  timeouts = { connect = \"250ms\", response = \"1.5s\" } } },\n"
	                         "limits = { header_bytes = \"32k\", request_line_bytes = 4096, max_headers = 50,\n"
	                         "           body_bytes = 0, client_header_timeout = \"5s\", client_body_timeout = \"20s\",\n"
	                         "           client_body_min_rate = \"4k\", client_body_deadline = \"0s\",\n"
	                         "           send_timeout = \"30s\", keepalive_timeout = \"0s\", max_connections = 5000 },\n"
	                         "access_log = { path = \"stderr\" } }");
	ck_assert_uint_eq(c->workers, 8);
	ck_assert_uint_eq(c->drain_timeout, 0);
	ck_assert_uint_eq(c->heap_keep_free, 16u << 20);
	ck_assert_str_eq(c->listeners[1].name, "listener[2]");
	ck_assert_int_eq(c->listeners[1].addr.ss_family, AF_INET6);
	const struct conf_pool *p = &c->pools[0];
	ck_assert_uint_eq(p->servers[0].weight, 1);
	ck_assert_uint_eq(p->servers[1].weight, 0);
	ck_assert_int_eq(p->balance, CONF_BALANCE_LEAST_CONN);
	ck_assert_uint_eq(p->keepalive_idle, 0);
	ck_assert_uint_eq(p->keepalive_idle_timeout, 90000);
	ck_assert_uint_eq(p->connect_timeout, 250);
	ck_assert_uint_eq(p->response_timeout, 1500);
	ck_assert_uint_eq(c->limits.header_bytes, 32768);
	ck_assert_uint_eq(c->limits.request_line_bytes, 4096);
	ck_assert_uint_eq(c->limits.max_headers, 50);
	ck_assert_uint_eq(c->limits.body_bytes, 0);
	ck_assert_uint_eq(c->limits.client_header_timeout, 5000);
	ck_assert_uint_eq(c->limits.client_body_timeout, 20000);
	ck_assert_uint_eq(c->limits.client_body_min_rate, 4096);
	ck_assert_uint_eq(c->limits.client_body_deadline, 0);
	ck_assert_uint_eq(c->limits.send_timeout, 30000);
	ck_assert_uint_eq(c->limits.keepalive_timeout, 0);
	ck_assert_uint_eq(c->limits.max_connections, 5000);
	ck_assert(c->access_log.enabled);
	ck_assert_str_eq(c->access_log.path, "stderr");
	conf_free(c);
}
END_TEST

START_TEST(test_request_line_capped)
{
	struct conf *c = load_ok("return { " LISTENERS "limits = { header_bytes = \"4k\" } }");
	ck_assert_uint_eq(c->limits.header_bytes, 4096);
	ck_assert_uint_eq(c->limits.request_line_bytes, 4096);
	conf_free(c);
	expect_error("return { " LISTENERS "limits = { header_bytes = \"4k\", request_line_bytes = \"8k\" } }",
	             "test.lua: limits.request_line_bytes: 8192 is larger than limits.header_bytes (4096)");
}
END_TEST

START_TEST(test_access_log_paths)
{
	struct conf *c = load_ok("return { " LISTENERS "access_log = { path = \"off\" } }");
	ck_assert(!c->access_log.enabled);
	conf_free(c);

	struct conf_errors e;
	conf_errors_init(&e);
	c = conf_load_string("/etc/sluice/sluice.lua", "return { " LISTENERS "access_log = { path = \"logs/access.log\" } }",
	                     &e);
	ck_assert_ptr_nonnull(c);
	ck_assert(c->access_log.enabled);
	ck_assert_str_eq(c->access_log.path, "/etc/sluice/logs/access.log");
	conf_free(c);
	c = conf_load_string("/etc/sluice/sluice.lua", "return { " LISTENERS "access_log = { path = \"/var/log/a.log\" } }",
	                     &e);
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->access_log.path, "/var/log/a.log");
	conf_free(c);
	ck_assert_uint_eq(e.count, 0);
	conf_errors_free(&e);

	expect_error("return { " LISTENERS "access_log = {} }",
	             "test.lua: access_log.path: missing (write \"stdout\", \"stderr\", \"off\" or a file path)");
	expect_error("return { " LISTENERS "access_log = \"stdout\" }",
	             "test.lua: access_log: expected a table like { path = \"stdout\" }, got string");
}
END_TEST

START_TEST(test_servers_and_hash_keys)
{
	struct conf *c = load_ok("return { " LISTENERS "pools = {\n"
	                         " a = { servers = { \"127.0.0.1:1\" }, balance = \"hash\", hash_key = \"header:X-User-Id\" },\n"
	                         " b = { servers = { \"127.0.0.1:1\" }, balance = \"hash\", hash_key = \"cookie:Session\" },\n"
	                         " c = { servers = { \"127.0.0.1:1\" }, balance = \"hash\", hash_key = \"client_ip\" },\n"
	                         " d = { servers = { \"127.0.0.1:1\" }, balance = \"hash\", hash_key = \"path\" },\n"
	                         " e = { servers = { \"127.0.0.1:1\" }, balance = \"hash\", hash_key = \"host\" },\n"
	                         " f = { servers = { \"127.0.0.1:1\" }, balance = \"hash\" } } }");
	ck_assert_uint_eq(c->num_pools, 6);
	/* Pools are kept in name order. */
	ck_assert_str_eq(c->pools[0].name, "a");
	ck_assert_int_eq(c->pools[0].balance, CONF_BALANCE_HASH);
	ck_assert_int_eq(c->pools[0].hash_key.kind, CONF_KEY_HEADER);
	ck_assert_str_eq(c->pools[0].hash_key.name, "x-user-id");
	ck_assert_int_eq(c->pools[1].hash_key.kind, CONF_KEY_COOKIE);
	ck_assert_str_eq(c->pools[1].hash_key.name, "Session");
	ck_assert_int_eq(c->pools[2].hash_key.kind, CONF_KEY_CLIENT_IP);
	ck_assert_ptr_null(c->pools[2].hash_key.name);
	ck_assert_int_eq(c->pools[3].hash_key.kind, CONF_KEY_PATH);
	ck_assert_int_eq(c->pools[4].hash_key.kind, CONF_KEY_HOST);
	ck_assert_int_eq(c->pools[5].hash_key.kind, CONF_KEY_CLIENT_IP);
	conf_free(c);

	expect_error("return { " LISTENERS "pools = { web = { servers = { \"127.0.0.1:1\" }, balance = \"hash\", hash_key = \"ip\" } } }",
	             "test.lua: pools.web.hash_key: unknown value \"ip\" (expected client_ip, path, host, tls_subject, header:NAME, cookie:NAME or query:NAME)");
	expect_error("return { " LISTENERS "pools = { web = { servers = { \"127.0.0.1:1\" }, balance = \"hash\", hash_key = \"header:\" } } }",
	             "test.lua: pools.web.hash_key: missing the header name (write \"header:NAME\")");
	expect_error("return { " LISTENERS "pools = { web = { servers = { \"127.0.0.1:1\" }, balance = \"hash\", hash_key = \"cookie:a b\" } } }",
	             "test.lua: pools.web.hash_key: \"a b\" is not a valid cookie name");
	expect_error("return { " LISTENERS "pools = { web = { servers = { \"127.0.0.1:1\" }, hash_key = \"path\" } } }",
	             "test.lua: pools.web.hash_key: only used with balance = \"hash\"");
	expect_error("return { " LISTENERS "pools = { web = { servers = { { address = \"127.0.0.1:1\", weight = 1001 } } } } }",
	             "test.lua: pools.web.servers[1].weight: 1001 is out of range (0 to 1000)");
	expect_error("return { " LISTENERS "pools = { web = { servers = { { weight = 1 } } } } }",
	             "test.lua: pools.web.servers[1].address: missing (write address = \"10.0.0.1:80\")");
	expect_error("return { " LISTENERS "pools = { web = { servers = { 9001 } } } }",
	             "test.lua: pools.web.servers[1]: expected a server address string or a table like { address = \"10.0.0.1:80\", weight = 1 }, got number");
}
END_TEST

START_TEST(test_implicit_services)
{
	struct conf *c = load_ok("return { " LISTENERS
	                         "pools = { web = { servers = { \"127.0.0.1:1\" } }, api = { servers = { \"127.0.0.1:2\" } } },\n"
	                         SERVICES
	                         "routes = { { match = { path = \"/a\" }, pool = \"web\" },\n"
	                         "           { match = { path = \"/b\" }, pool = \"api\" },\n"
	                         "           { match = { path = \"/c\" }, pool = \"web\" },\n"
	                         "           { name = \"rest\", service = \"web\" } } }");
	ck_assert_uint_eq(c->num_services, 3);
	ck_assert_str_eq(c->services[0].name, "web");
	ck_assert_str_eq(c->services[1].name, "pool:web");
	ck_assert(c->services[1].implicit);
	ck_assert_str_eq(c->services[2].name, "pool:api");
	ck_assert(c->services[2].implicit);
	ck_assert_uint_eq(c->services[2].pools[0].pool, (size_t)conf_find_pool(c, "api"));
	ck_assert_uint_eq(c->routes[0].service, 1);
	ck_assert_uint_eq(c->routes[1].service, 2);
	ck_assert_uint_eq(c->routes[2].service, 1);
	ck_assert_uint_eq(c->routes[3].service, 0);
	ck_assert_str_eq(c->routes[3].name, "rest");
	/* A route without match matches everything. */
	ck_assert_ptr_null(c->routes[3].path_prefix);
	conf_free(c);

	/* The implicit names are not something a route can refer to. */
	expect_error("return { " BASE "routes = { { pool = \"web\" }, { service = \"pool:web\" } } }",
	             "test.lua: routes[2].service: unknown service \"pool:web\"");
}
END_TEST

START_TEST(test_route_matches_normalised)
{
	struct conf *c = load_ok("return { " BASE "routes = { { match = { host = \"*.Example.COM\", methods = { \"get\", \"Post\" },\n"
	                         "  headers = { [\"X-Env\"] = \"Prod\", accept = \"\" } }, service = \"web\" },\n"
	                         "  { match = { host = \"API.example.com\" }, respond = { status = 204 } },\n"
	                         "  { respond = { body = \"a\\0b\", content_type = \"application/json\" } } } }");
	const struct conf_route *r = &c->routes[0];
	ck_assert_str_eq(r->host, "*.example.com");
	ck_assert_uint_eq(r->num_methods, 2);
	ck_assert_str_eq(r->methods[0], "GET");
	ck_assert_str_eq(r->methods[1], "POST");
	ck_assert_uint_eq(r->num_headers, 2);
	/* Header matches are in name order; values keep their case. */
	ck_assert_str_eq(r->headers[0].name, "x-env");
	ck_assert_str_eq(r->headers[0].value, "Prod");
	ck_assert_str_eq(r->headers[1].name, "accept");
	ck_assert_str_eq(r->headers[1].value, "");
	r = &c->routes[1];
	ck_assert_str_eq(r->host, "api.example.com");
	ck_assert_int_eq(r->respond_status, 204);
	ck_assert_ptr_null(r->respond_body);
	ck_assert_uint_eq(r->respond_body_len, 0);
	r = &c->routes[2];
	ck_assert_int_eq(r->action, CONF_ROUTE_RESPOND);
	ck_assert_int_eq(r->respond_status, 200);
	ck_assert_uint_eq(r->respond_body_len, 3);
	ck_assert_mem_eq(r->respond_body, "a\0b", 3);
	ck_assert_str_eq(r->respond_content_type, "application/json");
	conf_free(c);
}
END_TEST

/* ---- error messages ---- */

START_TEST(test_error_unknown_service)
{
	expect_error("return { " BASE "routes = { { match = { path = \"/\" }, service = \"web\" }, { service = \"api\" } } }",
	             "test.lua: routes[2].service: unknown service \"api\"");
	expect_error("return { " BASE "routes = { { service = \"wbe\" } } }",
	             "test.lua: routes[1].service: unknown service \"wbe\" (did you mean \"web\"?)");
	expect_error("return { " BASE "routes = { { pool = \"nope\" } } }",
	             "test.lua: routes[1].pool: unknown pool \"nope\"");
}
END_TEST

START_TEST(test_error_enum_value)
{
	expect_error("return { " LISTENERS "pools = { web = { servers = { \"127.0.0.1:9001\" }, balance = \"roundrobin\" } } }",
	             "test.lua: pools.web.balance: unknown value \"roundrobin\" (expected round_robin, least_conn or hash)");
}
END_TEST

START_TEST(test_error_unknown_keys)
{
	expect_error("return { " BASE "routes = { { mtach = { path = \"/\" }, service = \"web\" } } }",
	             "test.lua: routes[1].mtach: unknown key (did you mean \"match\"?)");
	expect_error("return { worker = 2, " BASE "}", "test.lua: worker: unknown key (did you mean \"workers\"?)");
	expect_error("return { Workers = 2, " BASE "}", "test.lua: Workers: unknown key (did you mean \"workers\"?)");
	expect_error("return { colour = \"blue\", " BASE "}", "test.lua: colour: unknown key");
	expect_error("return { " LISTENERS "pools = { web = { servers = { { adress = \"127.0.0.1:1\" } } } } }",
	             "test.lua: pools.web.servers[1].adress: unknown key (did you mean \"address\"?)");
	expect_error("return { " LISTENERS "limits = { max_header = 10 } }",
	             "test.lua: limits.max_header: unknown key (did you mean \"max_headers\"?)");
	expect_error("return { " LISTENERS "[\"odd key\"] = 1 }", "test.lua: [\"odd key\"]: unknown key");
	expect_error("return { " BASE "routes = { { match = { \"/api\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match[1]: unexpected list item (this table takes named keys: host, path, path_prefix, path_regex, methods, headers, client_cert_subject)");
}
END_TEST

START_TEST(test_error_types)
{
	expect_error("return { listeners = { { name = 5, address = \"127.0.0.1:8080\" } } }",
	             "test.lua: listeners[1].name: expected a string, got number");
	expect_error("return { workers = \"2\", " LISTENERS "}", "test.lua: workers: expected an integer, got string");
	expect_error("return { workers = 2.5, " LISTENERS "}", "test.lua: workers: expected an integer, got 2.5");
	expect_error("return { pools = \"web\", " LISTENERS "}", "test.lua: pools: expected a table of named pools, got string");
	expect_error("return { " LISTENERS "pools = { { servers = { \"127.0.0.1:1\" } } } }",
	             "test.lua: pools[1]: unexpected list item (write named entries: pools = { web = { servers = { ... } } })");
	expect_error("return { listeners = { address = \"127.0.0.1:8080\" } }",
	             "test.lua: listeners: expected a list like { { address = \"0.0.0.0:8080\" } }, got a table with key \"address\"");
	expect_error("return { listeners = { \"127.0.0.1:8080\" } }",
	             "test.lua: listeners[1]: expected a table like { name = \"public\", address = \"0.0.0.0:8080\" }, got string");
	expect_error("return { " BASE "routes = { { service = \"web\", respond = { body = 5 } } } }",
	             "test.lua: routes[1].respond.body: expected a string, got number");
}
END_TEST

START_TEST(test_error_ranges)
{
	expect_error("return { workers = 0, " LISTENERS "}", "test.lua: workers: 0 is out of range (1 to 1024)");
	expect_error("return { " BASE "routes = { { respond = { status = 700 } } } }",
	             "test.lua: routes[1].respond.status: 700 is out of range (100 to 599)");
	expect_error("return { " BASE "routes = { { respond = { status = 99 } } } }",
	             "test.lua: routes[1].respond.status: 99 is out of range (100 to 599)");
	expect_error("return { " BASE "routes = { { respond = { status = 204, body = \"x\" } } } }",
	             "test.lua: routes[1].respond.body: a 204 response cannot have a body");
	expect_error("return { " LISTENERS "limits = { header_bytes = 10 } }",
	             "test.lua: limits.header_bytes: 10 is out of range (1k to 1m)");
	expect_error("return { " LISTENERS "limits = { header_bytes = \"2m\" } }",
	             "test.lua: limits.header_bytes: \"2m\" is out of range (1k to 1m)");
	expect_error("return { " LISTENERS "limits = { max_headers = 0 } }",
	             "test.lua: limits.max_headers: 0 is out of range (1 to 10000)");
}
END_TEST

START_TEST(test_error_durations_and_sizes)
{
	expect_error("return { " LISTENERS "pools = { web = { servers = { \"127.0.0.1:1\" }, timeouts = { connect = 2 } } } }",
	             "test.lua: pools.web.timeouts.connect: expected a duration string with a unit, got the number 2 (write \"2s\")");
	expect_error("return { " LISTENERS "limits = { keepalive_timeout = 1.5 } }",
	             "test.lua: limits.keepalive_timeout: expected a duration string with a unit, got the number 1.5 (write \"1.5s\")");
	expect_error("return { drain_timeout = \"2 s\", " LISTENERS "}",
	             "test.lua: drain_timeout: invalid duration \"2 s\" (write a number and a unit: \"500ms\", \"2s\", \"1.5s\", \"5m\", \"1h\")");
	expect_error("return { " LISTENERS "pools = { web = { servers = { \"127.0.0.1:1\" }, timeouts = { response = \"0s\" } } } }",
	             "test.lua: pools.web.timeouts.response: \"0s\": must be greater than 0");
	expect_error("return { drain_timeout = \"25h\", " LISTENERS "}", "test.lua: drain_timeout: \"25h\" is too long (at most \"24h\")");
	expect_error("return { drain_timeout = true, " LISTENERS "}",
	             "test.lua: drain_timeout: expected a duration string like \"2s\", got boolean");
	expect_error("return { " LISTENERS "limits = { body_bytes = \"10 MB\" } }",
	             "test.lua: limits.body_bytes: invalid size \"10 MB\" (write a number of bytes or use a k, m or g suffix: \"16k\", \"10m\", \"1g\")");
	expect_error("return { " LISTENERS "limits = { body_bytes = -1 } }",
	             "test.lua: limits.body_bytes: expected a size in bytes (a whole number from 0), got -1");
}
END_TEST

START_TEST(test_error_addresses)
{
	expect_error("return { listeners = { { address = \"127.0.0.1:99999\" } } }",
	             "test.lua: listeners[1].address: 127.0.0.1:99999: port out of range (1 to 65535)");
	expect_error_part("return { listeners = { { address = \"no-such-host.invalid:80\" } } }",
	                  "test.lua: listeners[1].address: no-such-host.invalid:80: cannot resolve host \"no-such-host.invalid\": ");
	expect_error("return { listeners = { { name = \"public\" } } }",
	             "test.lua: listeners[1].address: missing (write address = \"0.0.0.0:8080\")");
	expect_error("return { listeners = { { address = \"a\\nb:1\" } } }",
	             "test.lua: listeners[1].address: \"a\\x0ab:1\": the host contains a space or control character");
	expect_error("return { }",
	             "test.lua: listeners: missing (at least one is needed: listeners = { { address = \"0.0.0.0:8080\" } })");
	expect_error("return { listeners = { } }", "test.lua: listeners: empty (at least one listener is needed)");
}
END_TEST

START_TEST(test_error_duplicates)
{
	expect_error("return { listeners = { { name = \"public\", address = \"127.0.0.1:8080\" },\n"
	             "                      { name = \"public\", address = \"127.0.0.1:8081\" } } }",
	             "test.lua: listeners[2].name: duplicate listener name \"public\" (also listeners[1])");
	expect_error("return { listeners = { { address = \"127.0.0.1:8080\" }, { address = \"127.0.0.1:8081\" },\n"
	             "                      { address = \"127.0.0.1:8080\" } } }",
	             "test.lua: listeners[3].address: duplicate listener address 127.0.0.1:8080 (also listeners[1])");
	expect_error("return { " LISTENERS "pools = { web = { servers = { \"127.0.0.1:9001\", { address = \"127.0.0.1:9001\" } } } } }",
	             "test.lua: pools.web.servers[2].address: duplicate server 127.0.0.1:9001 in pool \"web\" (also servers[1])");
	expect_error("return { " BASE "routes = { { name = \"x\", service = \"web\" }, { name = \"x\", service = \"web\" } } }",
	             "test.lua: routes[2].name: duplicate route name \"x\" (also routes[1])");
	expect_error("return { " BASE "routes = { { match = { methods = { \"GET\", \"get\" } }, service = \"web\" } } }",
	             "test.lua: routes[1].match.methods[2]: duplicate method \"GET\"");
	expect_error("return { " BASE "routes = { { match = { headers = { [\"X-A\"] = \"1\", [\"x-a\"] = \"2\" } }, service = \"web\" } } }",
	             "test.lua: routes[1].match.headers[\"x-a\"]: duplicate header \"x-a\" (header names are case-insensitive)");
}
END_TEST

START_TEST(test_error_route_actions)
{
	expect_error("return { " BASE "routes = { { match = { path = \"/\" } } } }",
	             "test.lua: routes[1]: no action: set one of pool, service or respond");
	expect_error("return { " BASE "routes = { { pool = \"web\", service = \"web\" } } }",
	             "test.lua: routes[1]: several actions (pool and service): set only one of pool, service or respond");
	expect_error("return { " BASE "routes = { { pool = \"web\", service = \"web\", respond = {} } } }",
	             "test.lua: routes[1]: several actions (pool and service and respond): set only one of pool, service or respond");
	expect_error("return { " BASE "routes = { 5 } }",
	             "test.lua: routes[1]: expected a table like { match = { path_prefix = \"/\" }, service = \"web\" }, got number");
}
END_TEST


#define BLUE_GREEN "pools = { blue = { servers = { \"127.0.0.1:9001\" } }, green = { servers = { \"127.0.0.1:9002\" } } },\n"

START_TEST(test_service_sticky_and_overrides)
{
	struct conf *c = load_ok("return { " LISTENERS BLUE_GREEN
	                         "services = { web = { pools = { blue = 90, green = 10 }, sticky = \"cookie:uid\",\n"
	                         "  overrides = { { header = \"X-Canary\", value = \"1\", pool = \"green\" },\n"
	                         "                { cookie = \"version\", value = \"green\", pool = \"green\" },\n"
	                         "                { query = \"v\", value = \"blue\", pool = \"blue\" } } } } }");
	int web = conf_find_service(c, "web");
	ck_assert_int_ge(web, 0);
	const struct conf_service *s = &c->services[web];
	ck_assert(s->sticky_set);
	ck_assert_int_eq(s->sticky.kind, CONF_KEY_COOKIE);
	ck_assert_str_eq(s->sticky.name, "uid");
	ck_assert_uint_eq(s->num_overrides, 3);
	ck_assert_int_eq(s->overrides[0].key.kind, CONF_KEY_HEADER);
	ck_assert_str_eq(s->overrides[0].key.name, "x-canary");
	ck_assert_str_eq(s->overrides[0].value, "1");
	ck_assert_int_eq(s->overrides[0].pool, conf_find_pool(c, "green"));
	ck_assert_int_eq(s->overrides[1].key.kind, CONF_KEY_COOKIE);
	ck_assert_int_eq(s->overrides[2].key.kind, CONF_KEY_QUERY);
	ck_assert_int_eq(s->overrides[2].pool, conf_find_pool(c, "blue"));
	/* the seeds are the pool names' hashes: distinct, and the same in every service */
	ck_assert(s->pools[0].sticky_seed != s->pools[1].sticky_seed);
	conf_free(c);

	static const char *const keys[] = { "client_ip", "path", "host", "tls_subject", "header:x-user", "query:user" };
	static const enum conf_key_kind kinds[] = { CONF_KEY_CLIENT_IP, CONF_KEY_PATH, CONF_KEY_HOST,
		                                    CONF_KEY_TLS_SUBJECT, CONF_KEY_HEADER, CONF_KEY_QUERY };
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		char src[512];
		snprintf(src, sizeof src, "return { " LISTENERS BLUE_GREEN
		         "services = { web = { pools = { blue = 1 }, sticky = \"%s\" } } }", keys[i]);
		c = load_ok(src);
		ck_assert_int_eq(c->services[conf_find_service(c, "web")].sticky.kind, kinds[i]);
		conf_free(c);
	}
}
END_TEST

START_TEST(test_error_service_sticky_and_overrides)
{
	expect_error("return { " LISTENERS BLUE_GREEN "services = { web = { pools = { blue = 1 }, sticky = \"cookie\" } } }",
	             "test.lua: services.web.sticky: unknown value \"cookie\" (expected client_ip, path, host, tls_subject, "
	             "header:NAME, cookie:NAME or query:NAME)");
	expect_error("return { " LISTENERS BLUE_GREEN "services = { web = { pools = { blue = 1 }, sticky = \"query:\" } } }",
	             "test.lua: services.web.sticky: missing the query argument name (write \"query:NAME\")");
	expect_error("return { " LISTENERS BLUE_GREEN "services = { web = { pools = { blue = 1 },\n"
	             "  overrides = { { header = \"x-canary\", value = \"1\", pool = \"gren\" } } } } }",
	             "test.lua: services.web.overrides[1].pool: unknown pool \"gren\" (did you mean \"green\"?)");
	expect_error("return { " LISTENERS BLUE_GREEN "services = { web = { pools = { blue = 1 },\n"
	             "  overrides = { { value = \"1\", pool = \"green\" } } } } }",
	             "test.lua: services.web.overrides[1]: missing what to match (write { header = \"x-canary\", "
	             "value = \"1\", pool = \"green\" })");
	expect_error("return { " LISTENERS BLUE_GREEN "services = { web = { pools = { blue = 1 },\n"
	             "  overrides = { { header = \"a\", cookie = \"b\", value = \"1\", pool = \"green\" } } } } }",
	             "test.lua: services.web.overrides[1]: give only one of header, cookie or query");
	expect_error("return { " LISTENERS BLUE_GREEN "services = { web = { pools = { blue = 1 },\n"
	             "  overrides = { { header = \"a\", pool = \"green\" } } } } }",
	             "test.lua: services.web.overrides[1].value: missing (the exact value that selects the pool)");
	expect_error_part("return { " LISTENERS BLUE_GREEN "services = { web = { pools = { blue = 1 }, overides = { } } } }",
	                  "services.web.overides: unknown key (did you mean \"overrides\"?)");
}
END_TEST

START_TEST(test_error_pools_and_services)
{
	expect_error("return { " LISTENERS "pools = { web = { servers = { } } } }",
	             "test.lua: pools.web.servers: empty (a pool needs at least one server)");
	expect_error("return { " LISTENERS "pools = { web = { } } }",
	             "test.lua: pools.web.servers: missing (a pool needs at least one server: servers = { \"10.0.0.1:80\" })");
	expect_error("return { " LISTENERS POOLS "services = { web = { pools = { } } } }",
	             "test.lua: services.web.pools: empty (a service needs at least one pool)");
	expect_error("return { " LISTENERS POOLS "services = { web = { pools = { web = 0 } } } }",
	             "test.lua: services.web.pools: weights add up to 0 (give at least one pool a weight above 0)");
	expect_error("return { " LISTENERS POOLS "services = { web = { pools = { web = 100, wbe = 10 } } } }",
	             "test.lua: services.web.pools.wbe: unknown pool \"wbe\" (did you mean \"web\"?)");
	expect_error("return { " LISTENERS POOLS "services = { web = { pools = { web = -1 } } } }",
	             "test.lua: services.web.pools.web: -1 is out of range (0 to 10000)");
	expect_error("return { " LISTENERS "pools = { [\"my pool\"] = { servers = { \"127.0.0.1:1\" } } } }",
	             "test.lua: pools[\"my pool\"]: invalid pool name \"my pool\" (use 1 to 64 letters, digits, \"_\", \"-\" or \".\")");
	expect_error("return { " LISTENERS POOLS "services = { [\"a:b\"] = { pools = { web = 1 } } } }",
	             "test.lua: services[\"a:b\"]: invalid service name \"a:b\" (use 1 to 64 letters, digits, \"_\", \"-\" or \".\")");
}
END_TEST

START_TEST(test_error_match_syntax)
{
	expect_error("return { " BASE "routes = { { match = { methods = { \"GET\", \"GE T\" } }, service = \"web\" } } }",
	             "test.lua: routes[1].match.methods[2]: \"GE T\" is not a valid method name");
	expect_error("return { " BASE "routes = { { match = { methods = {} }, service = \"web\" } } }",
	             "test.lua: routes[1].match.methods: empty (leave methods out to match any method)");
	expect_error("return { " BASE "routes = { { match = { headers = { [\"x env\"] = \"1\" } }, service = \"web\" } } }",
	             "test.lua: routes[1].match.headers[\"x env\"]: \"x env\" is not a valid header name");
	expect_error("return { " BASE "routes = { { match = { headers = { a = \"x\\r\\nb: y\" } }, service = \"web\" } } }",
	             "test.lua: routes[1].match.headers.a: the value must not contain control characters (CR, LF, ...)");
	expect_error("return { " BASE "routes = { { match = { host = \"a.*.com\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.host: \"a.*.com\": only a leading \"*.\" wildcard is allowed (e.g. \"*.example.com\")");
	expect_error("return { " BASE "routes = { { match = { host = \"*example.com\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.host: \"*example.com\": only a leading \"*.\" wildcard is allowed (e.g. \"*.example.com\")");
	expect_error("return { " BASE "routes = { { match = { host = \"example.com:8080\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.host: \"example.com:8080\": must not include a port");
	expect_error("return { " BASE "routes = { { match = { host = \"a..b\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.host: \"a..b\": is not a valid host name (empty label)");
	expect_error("return { " BASE "routes = { { match = { host = \"*\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.host: \"*\": \"*\" is not needed: leave host out to match any host");
	expect_error("return { " BASE "routes = { { match = { path = \"healthz\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.path: \"healthz\": must start with \"/\"");
	expect_error("return { " BASE "routes = { { match = { path_prefix = \"api/\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.path_prefix: \"api/\": must start with \"/\"");
	expect_error("return { " BASE "routes = { { match = { path = \"/a?b=1\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.path: \"/a?b=1\": must not contain \"?\" or \"#\" (only the path is matched, not the query)");
	expect_error("return { " BASE "routes = { { match = { path_regex = \"\" }, service = \"web\" } } }",
	             "test.lua: routes[1].match.path_regex: must not be empty");
	expect_error("return { " BASE "routes = { { name = \"a \\\"quoted\\\" name\", service = \"web\" } } }",
	             "test.lua: routes[1].name: invalid name \"a \\\"quoted\\\" name\" (use 1 to 128 printable ASCII characters, no quotes or backslashes)");
}
END_TEST

START_TEST(test_errors_all_reported)
{
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load_string("test.lua",
	                                  "return {\n"
	                                  "  workers = 0,\n"
	                                  "  listeners = { { address = \"127.0.0.1:99999\" } },\n"
	                                  "  pools = { web = { servers = { \"127.0.0.1:1\" }, balance = \"roundrobin\" } },\n"
	                                  "  routes = { { mtach = {}, service = \"api\" }, { pool = \"web\" } },\n"
	                                  "  limits = { body_bytes = \"lots\" },\n"
	                                  "}\n",
	                                  &e);
	ck_assert_ptr_null(c);
	static const char *const expected[] = {
		"test.lua: workers: 0 is out of range (1 to 1024)",
		"test.lua: listeners[1].address: 127.0.0.1:99999: port out of range (1 to 65535)",
		"test.lua: pools.web.balance: unknown value \"roundrobin\" (expected round_robin, least_conn or hash)",
		"test.lua: routes[1].mtach: unknown key (did you mean \"match\"?)",
		"test.lua: routes[1].service: unknown service \"api\"",
		"test.lua: limits.body_bytes: invalid size \"lots\" (write a number of bytes or use a k, m or g suffix: \"16k\", \"10m\", \"1g\")",
	};
	char *all = joined(&e);
	ck_assert_msg(e.count == sizeof expected / sizeof expected[0], "got %zu errors:\n%s", e.count, all);
	/* In the order of the file's structure, so the output is stable. */
	for (size_t i = 0; i < e.count; i++)
		ck_assert_str_eq(e.msgs[i], expected[i]);
	free(all);
	conf_errors_free(&e);

	/* Unknown keys come out sorted, whatever Lua's hash order. */
	conf_errors_init(&e);
	c = conf_load_string("test.lua", "return { zz = 1, aa = 2, mm = 3, " LISTENERS "}", &e);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(e.count, 3);
	ck_assert_str_eq(e.msgs[0], "test.lua: aa: unknown key");
	ck_assert_str_eq(e.msgs[1], "test.lua: mm: unknown key");
	ck_assert_str_eq(e.msgs[2], "test.lua: zz: unknown key");
	conf_errors_free(&e);
}
END_TEST

/* ---- evaluation and the sandbox ---- */

START_TEST(test_sandbox_globals)
{
	struct conf *c = load_ok(
		"for _, name in ipairs({ 'io', 'os', 'debug', 'load', 'loadstring', 'dofile', 'loadfile', 'require',\n"
		"                        'collectgarbage', 'print', 'package', 'coroutine', '_G', 'xpcall' }) do\n"
		"  if _ENV[name] ~= nil then error('sandbox offers ' .. name) end\n"
		"end\n"
		"if string.dump ~= nil or getmetatable('').__index.dump ~= nil then error('string.dump is there') end\n"
		"for _, name in ipairs({ 'env', 'file', 'string', 'table', 'math', 'utf8', 'pairs', 'ipairs', 'next',\n"
		"                        'select', 'type', 'tostring', 'tonumber', 'error', 'assert', 'pcall',\n"
		"                        'setmetatable', 'getmetatable', 'rawget', 'rawequal', 'rawlen', 'rawset' }) do\n"
		"  if _ENV[name] == nil then error('sandbox lacks ' .. name) end\n"
		"end\n"
		"local ports = {}\n"
		"for i = 1, 3 do ports[#ports + 1] = string.format('%d', 9000 + i) end\n"
		"return { workers = math.max(1, #table.concat(ports, ',') // 14), " LISTENERS "}");
	ck_assert_uint_eq(c->workers, 1);
	conf_free(c);
}
END_TEST

START_TEST(test_sandbox_env)
{
	ck_assert_int_eq(setenv("SLUICE_TEST_CONF_PORT", "9005", 1), 0);
	ck_assert_int_eq(unsetenv("SLUICE_TEST_CONF_UNSET"), 0);
	struct conf *c = load_ok("assert(env('SLUICE_TEST_CONF_UNSET') == nil)\n"
	                         "return { listeners = { { address = '127.0.0.1:' .. env('SLUICE_TEST_CONF_PORT') } },\n"
	                         "         workers = tonumber(env('SLUICE_TEST_CONF_UNSET') or '3') }");
	assert_inet(&c->listeners[0].addr, c->listeners[0].addr_len, "127.0.0.1", 9005);
	ck_assert_uint_eq(c->workers, 3);
	conf_free(c);
	expect_error("return { listeners = { { address = env() } } }",
	             "test.lua:1: bad argument #1 to 'env' (string expected, got no value)");
}
END_TEST

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_sandbox_file)
{
	char dir[] = "/tmp/check_conf_XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char body[64], config[64], sub[64], missing[512];
	snprintf(body, sizeof body, "%s/body.bin", dir);
	snprintf(sub, sizeof sub, "%s/sub", dir);
	snprintf(config, sizeof config, "%s/sub/sluice.lua", dir);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	write_file(body, "hi\0there", 8);
	char src[1024];
	snprintf(src, sizeof src,
	         "local rel = file('../body.bin')\n"
	         "local abs = file('%s')\n"
	         "assert(rel == abs and #rel == 8)\n"
	         "return { " LISTENERS " pools = { web = { servers = { '127.0.0.1:1' } } },\n"
	         "  routes = { { respond = { body = rel } } } }\n",
	         body);
	write_file(config, src, strlen(src));

	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load(config, &e);
	if (!c) {
		char *all = joined(&e);
		ck_abort_msg("did not load:\n%s", all);
	}
	ck_assert_uint_eq(c->routes[0].respond_body_len, 8);
	ck_assert_mem_eq(c->routes[0].respond_body, "hi\0there", 8);
	conf_free(c);

	/* A missing file is a Lua error naming the path it tried. */
	const char *bad = "return { body = file('secret.pem') }\n";
	write_file(config, bad, strlen(bad));
	c = conf_load(config, &e);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(e.count, 1);
	snprintf(missing, sizeof missing,
	         "%s:1: file(\"secret.pem\"): cannot read %s/sub/secret.pem: No such file or directory", config, dir);
	ck_assert_str_eq(e.msgs[0], missing);
	conf_errors_free(&e);

	const char *directory = "return { body = file('.') }\n";
	write_file(config, directory, strlen(directory));
	c = conf_load(config, &e);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(e.count, 1);
	ck_assert_msg(strstr(e.msgs[0], "is a directory, not a regular file") != NULL, "got: %s", e.msgs[0]);
	conf_errors_free(&e);

	/* issue 17: a FIFO is refused at once (opening it would wait for a writer) */
	char fifo[128];
	snprintf(fifo, sizeof fifo, "%s/pipe", sub);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	const char *from_fifo = "return { body = file('pipe') }\n";
	write_file(config, from_fifo, strlen(from_fifo));
	c = conf_load(config, &e);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(e.count, 1);
	ck_assert_msg(strstr(e.msgs[0], "file(\"pipe\"): cannot read ") && strstr(e.msgs[0], "is a FIFO (named pipe)"),
	              "got: %s", e.msgs[0]);
	conf_errors_free(&e);
	ck_assert_int_eq(unlink(fifo), 0);

	/* issue 17: a /proc file says it is empty and is not: an error, not "" */
	const char *from_proc = "return { body = file('/proc/self/status') }\n";
	write_file(config, from_proc, strlen(from_proc));
	c = conf_load(config, &e);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(e.count, 1);
	ck_assert_msg(strstr(e.msgs[0], "file(\"/proc/self/status\"): /proc/self/status has more bytes than its size "
	                                "says (0): a /proc or /sys file"),
	              "got: %s", e.msgs[0]);
	conf_errors_free(&e);

	/* and a device: refused by kind, never read */
	const char *from_dev = "return { body = file('/dev/zero') }\n";
	write_file(config, from_dev, strlen(from_dev));
	c = conf_load(config, &e);
	ck_assert_ptr_null(c);
	ck_assert_msg(e.count == 1 && strstr(e.msgs[0], "is a character device"), "got: %s", e.count ? e.msgs[0] : "");
	conf_errors_free(&e);

	ck_assert_int_eq(unlink(config), 0);
	ck_assert_int_eq(unlink(body), 0);
	ck_assert_int_eq(rmdir(sub), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

struct dump_buffer {
	char data[4096];
	size_t len;
};

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
	(void)L;
	struct dump_buffer *b = ud;
	if (b->len + sz > sizeof b->data)
		return 1;
	memcpy(b->data + b->len, p, sz);
	b->len += sz;
	return 0;
}

START_TEST(test_sandbox_bytecode_refused)
{
	lua_State *L = luaL_newstate();
	ck_assert_ptr_nonnull(L);
	ck_assert_int_eq(luaL_loadstring(L, "return { listeners = { { address = '127.0.0.1:8080' } } }"), LUA_OK);
	struct dump_buffer b = { .len = 0 };
	ck_assert_int_eq(lua_dump(L, dump_writer, &b, 1), 0);
	lua_close(L);
	ck_assert_uint_gt(b.len, 4);

	char dir[] = "/tmp/check_conf_XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char path[256], expected[512];
	snprintf(path, sizeof path, "%s/compiled.lua", dir);
	write_file(path, b.data, b.len);
	struct conf_errors e;
	conf_errors_init(&e);
	ck_assert_ptr_null(conf_load(path, &e));
	ck_assert_uint_eq(e.count, 1);
	snprintf(expected, sizeof expected,
	         "%s: precompiled (bytecode) chunks are refused; the config must be Lua source text", path);
	ck_assert_str_eq(e.msgs[0], expected);
	conf_errors_free(&e);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(test_sandbox_instruction_budget)
{
	expect_error("while true do end",
	             "test.lua:1: config took too long (stopped after 50 million Lua instructions)");
	/* A pcall in the config must not be able to swallow the budget error and go on. */
	expect_error_part("local n = 0\n"
	                  "while true do pcall(function() while true do n = n + 1 end end) end",
	                  "config took too long");
	/* Lua runs finalizers with hooks off, so the config may not have any. */
	expect_error("setmetatable({}, { __gc = function() while true do end end })",
	             "test.lua:1: setmetatable: __gc metamethods are not allowed in the config");
	/* Adding __gc later does not mark the object, so that stays harmless. */
	struct conf *c = load_ok("local mt = {}\n"
	                         "local t = setmetatable({}, mt)\n"
	                         "mt.__gc = function() while true do end end\n"
	                         "assert(getmetatable(t) == mt)\n"
	                         "return setmetatable({ " LISTENERS "}, { __index = function() error('not called') end })");
	conf_free(c);
}
END_TEST

START_TEST(test_sandbox_memory_cap)
{
	expect_error("local s = 'x'\nwhile true do s = s .. s end",
	             "test.lua: config used too much memory (limit 256 MiB)");
	/* many live strings (~400 KiB each): few enough steps that a slow
	 * sanitizer build meets the memory cap well before the 5 s deadline */
	expect_error("local t = {}\nfor i = 1, 1e9 do t[i] = string.rep('x', 65536, tostring(i)) end",
	             "test.lua: config used too much memory (limit 256 MiB)");
	/* A memory error caught inside the config leaves a usable state behind. */
	struct conf *c = load_ok("local ok = pcall(function() local s = 'x' while true do s = s .. s end end)\n"
	                         "assert(not ok)\n"
	                         "return { " LISTENERS "}");
	conf_free(c);
}
END_TEST

START_TEST(test_lua_errors)
{
	expect_error("return { listeners = ", "test.lua:1: unexpected symbol near <eof>");
	expect_error("local x = 1\nerror('boom')", "test.lua:2: boom");
	expect_error("error('no position', 0)", "test.lua: no position");
	expect_error("error({})", "test.lua: error raised with a table value instead of a message");
	expect_error("local t = nil\nreturn t.x", "test.lua:2: attempt to index a nil value (local 't')");
	expect_error("return io.open('/etc/passwd')", "test.lua:1: attempt to index a nil value (global 'io')");
	expect_error("return 42", "test.lua: the config must return a table (return { ... }), got number");
	expect_error("local t = {}", "test.lua: the config must return a table (return { ... }), got nil");

	/* Lua shortens long chunk names; messages still start with the whole name. */
	char name[200], expected[300];
	memset(name, 'd', sizeof name);
	memcpy(name, "/very/long/", 11);
	memcpy(name + sizeof name - 11, "/config.lua", 11);
	name[sizeof name - 1] = '\0';
	snprintf(expected, sizeof expected, "%s:2: boom", name);
	expect_error_in(name, "\nerror('boom')", expected, true);
	snprintf(expected, sizeof expected, "%s: workers: 0 is out of range (1 to 1024)", name);
	expect_error_in(name, "return { workers = 0, " LISTENERS "}", expected, true);

	/* A Lua error stops there: exactly one message. */
	struct conf_errors e;
	conf_errors_init(&e);
	ck_assert_ptr_null(conf_load_string("test.lua", "return {", &e));
	ck_assert_uint_eq(e.count, 1);
	conf_errors_free(&e);
}
END_TEST

START_TEST(test_load_missing_file)
{
	struct conf_errors e;
	conf_errors_init(&e);
	ck_assert_ptr_null(conf_load("/nonexistent/sluice.lua", &e));
	ck_assert_uint_eq(e.count, 1);
	ck_assert_str_eq(e.msgs[0], "/nonexistent/sluice.lua: cannot read: No such file or directory");
	conf_errors_free(&e);
	ck_assert_ptr_null(conf_load("/tmp", &e));
	ck_assert_uint_eq(e.count, 1);
	ck_assert_str_eq(e.msgs[0], "/tmp: cannot read: is a directory, not a regular file");
	conf_errors_free(&e);
}
END_TEST

/* issue 17: a pattern match runs inside one C call, where the instruction
 * budget cannot stop it; the sandbox's pattern functions are bounded and the
 * error names the file and line. */
START_TEST(test_sandbox_pattern_bounded)
{
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load_string("slow.lua",
	                                  "local x = string.find(string.rep('a', 3000), string.rep('a*', 8) .. 'b')\n"
	                                  "return {}",
	                                  &e);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(e.count, 1);
	ck_assert_msg(strncmp(e.msgs[0], "slow.lua:1: string.find: ", 25) == 0, "got: %s", e.msgs[0]);
	conf_errors_free(&e);
	/* as a method too (the string metatable's __index is the same table) */
	c = conf_load_string("slow.lua", "local s = string.rep('a', 3000)\n"
	                                 "local n = select(2, s:gsub(string.rep('a-', 8) .. 'b', ''))\n"
	                                 "return {}",
	                     &e);
	ck_assert_ptr_null(c);
	ck_assert_msg(e.count == 1 && strncmp(e.msgs[0], "slow.lua:2: string.gsub: ", 25) == 0, "got: %s",
	              e.count ? e.msgs[0] : "");
	conf_errors_free(&e);
	/* string.rep is capped at the memory limit with its own message */
	c = conf_load_string("big.lua", "local s = string.rep('x', 1 << 40)\nreturn {}", &e);
	ck_assert_ptr_null(c);
	ck_assert_msg(e.count == 1 && strstr(e.msgs[0], "big.lua:1: string.rep: the result would be larger than "),
	              "got: %s", e.count ? e.msgs[0] : "");
	conf_errors_free(&e);
	/* ordinary patterns work as in Lua */
	c = load_ok("local host, port = string.match('127.0.0.1:8080', '^(.-):(%d+)$')\n"
	            "local name = ('web-1'):gsub('%-', '_')\n"
	            "return { listeners = { { name = name, address = host .. ':' .. port } } }");
	ck_assert_str_eq(c->listeners[0].name, "web_1");
	ck_assert_str_eq(c->listeners[0].address, "127.0.0.1:8080");
	conf_free(c);
}
END_TEST

/* A loop whose instructions are few but slow (each builds a large string) is
 * stopped by the wall-clock deadline the hook checks. */
START_TEST(test_sandbox_wall_clock_deadline)
{
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load_string("loop.lua",
	                                  "for i = 1, 1000000 do local s = string.rep('x', 100000) end\n"
	                                  "return {}",
	                                  &e);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(e.count, 1);
	ck_assert_msg(strstr(e.msgs[0], "loop.lua:1: config took too long (stopped after 5 seconds)") == e.msgs[0],
	              "got: %s", e.msgs[0]);
	conf_errors_free(&e);
}
END_TEST

/* Lookups by name in a config of thousands of pools, services and routes: the
 * conf's binary searches and the runtime's hash indexes find every entry
 * (issue 17: linear lookups made start-up quadratic). */
START_TEST(test_lookups_by_name_at_scale)
{
	enum { N = 3000 };
	struct conf *c = load_ok("local pools, services, routes = {}, {}, {}\n"
	                         "for i = 1, 3000 do\n"
	                         "  pools['p' .. i] = { servers = { '127.0.0.1:' .. (10000 + i) } }\n"
	                         "  services['s' .. i] = { pools = { ['p' .. i] = 100 } }\n"
	                         "  routes[#routes + 1] = { match = { path_prefix = '/s' .. i }, service = 's' .. i }\n"
	                         "  routes[#routes + 1] = { match = { path_prefix = '/p' .. i }, pool = 'p' .. i }\n"
	                         "end\n"
	                         "return { " LISTENERS " pools = pools, services = services, routes = routes }");
	ck_assert_uint_eq(c->num_pools, N);
	ck_assert_uint_eq(c->num_services, 2 * N);
	struct runtime *rt = runtime_new();
	ck_assert_ptr_nonnull(rt);
	ck_assert_int_eq(runtime_sync(rt, c), 0);
	for (size_t i = 1; i <= N; i++) {
		char name[32], implicit[40];
		snprintf(name, sizeof name, "p%zu", i);
		int p = conf_find_pool(c, name);
		ck_assert_int_ge(p, 0);
		ck_assert_str_eq(c->pools[p].name, name);
		struct runtime_pool *rp = runtime_find_pool(rt, name);
		ck_assert_ptr_nonnull(rp);
		ck_assert_str_eq(rp->name, name);
		snprintf(implicit, sizeof implicit, "pool:%s", name);
		int si = conf_find_service(c, implicit);
		ck_assert_int_ge(si, 0);
		ck_assert_str_eq(c->services[si].name, implicit);
		ck_assert_ptr_nonnull(runtime_find_split(rt, implicit, name));
		/* route 2i is the `pool =` route of pool i */
		ck_assert_uint_eq(c->routes[2 * i - 1].service, (size_t)si);
		snprintf(name, sizeof name, "s%zu", i);
		si = conf_find_service(c, name);
		ck_assert_int_ge(si, 0);
		ck_assert_str_eq(c->services[si].name, name);
		ck_assert_uint_eq(c->routes[2 * i - 2].service, (size_t)si);
	}
	ck_assert_int_eq(conf_find_pool(c, "p0"), -1);
	ck_assert_int_eq(conf_find_pool(c, "q1"), -1);
	ck_assert_int_eq(conf_find_service(c, "s0"), -1);
	ck_assert_int_eq(conf_find_service(c, "pool:p0"), -1);
	ck_assert_ptr_null(runtime_find_pool(rt, "p0"));
	ck_assert_ptr_null(runtime_find_split(rt, "s1", "p2"));
	runtime_free(rt);
	conf_free(c);
}
END_TEST

/* Duplicates among thousands of servers and route names are found by sorting:
 * each is reported once, in order, naming the first one. */
START_TEST(test_duplicates_at_scale)
{
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load_string("test.lua",
	                                  "local servers, routes = {}, {}\n"
	                                  "for i = 1, 3000 do\n"
	                                  "  servers[i] = '10.0.' .. (i // 256) .. '.' .. (i % 256) .. ':80'\n"
	                                  "  routes[i] = { name = 'r' .. i, match = { path_prefix = '/' .. i }, pool = 'web' }\n"
	                                  "end\n"
	                                  "servers[2500] = '10.0.0.7:80'\n"
	                                  "servers[2999] = '10.0.0.7:80'\n"
	                                  "servers[3000] = '[::1]:80'\n"
	                                  "servers[1] = '[0:0::1]:80'\n"
	                                  "routes[2000].name = 'r17'\n"
	                                  "return { " LISTENERS " pools = { web = { servers = servers } }, routes = routes }",
	                                  &e);
	ck_assert_ptr_null(c);
	const char *want[] = {
		"test.lua: pools.web.servers[2500].address: duplicate server 10.0.0.7:80 in pool \"web\" (also servers[7])",
		"test.lua: pools.web.servers[2999].address: duplicate server 10.0.0.7:80 in pool \"web\" (also servers[7])",
		"test.lua: pools.web.servers[3000].address: duplicate server [::1]:80 in pool \"web\" (also servers[1])",
		"test.lua: routes[2000].name: duplicate route name \"r17\" (also routes[17])",
	};
	if (e.count != 4) {
		char *all = joined(&e);
		ck_abort_msg("expected 4 errors, got:\n%s", all);
	}
	for (size_t i = 0; i < 4; i++)
		ck_assert_str_eq(e.msgs[i], want[i]);
	conf_errors_free(&e);

	/* the runtime finds every server of a large pool by address */
	c = load_ok("local servers = {}\n"
	            "for i = 1, 3000 do servers[i] = '10.0.' .. (i // 256) .. '.' .. (i % 256) .. ':80' end\n"
	            "return { " LISTENERS " pools = { web = { servers = servers } } }");
	struct runtime *rt = runtime_new();
	ck_assert_ptr_nonnull(rt);
	ck_assert_int_eq(runtime_sync(rt, c), 0);
	struct runtime_pool *p = runtime_find_pool(rt, "web");
	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < c->pools[0].num_servers; i++) {
		struct runtime_server *s = runtime_find_server(p, c->pools[0].servers[i].address);
		ck_assert_ptr_nonnull(s);
		ck_assert_str_eq(s->address, c->pools[0].servers[i].address);
	}
	ck_assert_ptr_null(runtime_find_server(p, "10.0.99.1:80"));
	runtime_free(rt);
	conf_free(c);
}
END_TEST

/* admin.max_connections (issue 17): the admin connection cap, 32 unless set. */
START_TEST(test_admin_max_connections)
{
	struct conf *c = load_ok("return { " LISTENERS " }");
	ck_assert_uint_eq(c->admin.max_connections, 32);
	conf_free(c);
	c = load_ok("return { " LISTENERS "admin = { socket = \"/tmp/a.sock\" } }");
	ck_assert_uint_eq(c->admin.max_connections, 32);
	conf_free(c);
	c = load_ok("return { " LISTENERS "admin = { socket = \"/tmp/a.sock\", max_connections = 200 } }");
	ck_assert_uint_eq(c->admin.max_connections, 200);
	conf_free(c);
	expect_error("return { " LISTENERS "admin = { socket = \"/tmp/a.sock\", max_connections = 0 } }",
	             "test.lua: admin.max_connections: 0 is out of range (1 to 1024)");
	expect_error("return { " LISTENERS "admin = { socket = \"/tmp/a.sock\", max_connections = \"64\" } }",
	             "test.lua: admin.max_connections: expected an integer, got string");
}
END_TEST


/* ---- Redis endpoints: the top-level `redis` block and `control.redis` share one walker (conf_redis.h) ---- */

#define SENTINELS "sentinels = { \"127.0.0.1:26379\", \"127.0.0.1:26380\", \"[::1]:26381\" }, master = \"edge\""

/* A file holding text in a fresh directory; its path is returned (caller frees and unlinks). */
static char *temp_file(const char *text)
{
	char dir[] = "/tmp/check_conf_redis.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char *path = malloc(strlen(dir) + 8);
	ck_assert_ptr_nonnull(path);
	sprintf(path, "%s/secret", dir);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
	return path;
}

static void temp_file_remove(char *path)
{
	unlink(path);
	*strrchr(path, '/') = '\0';
	rmdir(path);
	free(path);
}

static struct conf *load_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct conf *load_fmt(const char *fmt, ...)
{
	char src[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(src, sizeof src, fmt, ap);
	va_end(ap);
	ck_assert(n > 0 && (size_t)n < sizeof src);
	return load_ok(src);
}

START_TEST(test_control_redis_own_sentinels)
{
	char *pw = temp_file("sentinel-pw\n");
	struct conf *c = load_fmt("return { " BASE "control = { redis = { " SENTINELS ", sentinel_password_file = \"%s\", "
	                          "db = 3, connect_timeout = \"300ms\" }, prefix = \"eu\" } }",
	                          pw);
	temp_file_remove(pw);
	const struct conf_control *cc = c->control;
	ck_assert_ptr_nonnull(cc);
	ck_assert(!cc->uses_main && cc->redis.enabled);
	ck_assert(!c->redis.enabled); /* control's own block is not the top-level one */
	ck_assert_uint_eq(cc->redis.num_sentinels, 3);
	ck_assert_str_eq(cc->redis.sentinels[0].host, "127.0.0.1");
	ck_assert_int_eq(cc->redis.sentinels[1].port, 26380);
	ck_assert_str_eq(cc->redis.sentinels[2].host, "::1");
	ck_assert_str_eq(cc->redis.master, "edge");
	ck_assert_str_eq(cc->redis.sentinel_password, "sentinel-pw");
	ck_assert_ptr_null(cc->redis.host);
	ck_assert_str_eq(cc->redis.address,
	                 "sentinel master edge via 127.0.0.1:26379,127.0.0.1:26380,[::1]:26381");
	ck_assert_uint_eq(cc->redis.db, 3);
	ck_assert_uint_eq(cc->redis.timeout, 2000); /* control's default, not the request path's 20ms */
	ck_assert_uint_eq(cc->redis.connect_timeout, 300);
	conf_free(c);
}
END_TEST

START_TEST(test_control_redis_main_sentinels)
{
	struct conf *c = load_ok("return { " BASE "redis = { " SENTINELS ", connect_timeout = \"250ms\", db = 1 },\n"
	                         "control = { redis = \"main\" } }");
	const struct conf_control *cc = c->control;
	ck_assert(cc->uses_main);
	ck_assert_uint_eq(cc->redis.num_sentinels, 3);
	/* a deep copy: the control connection outlives nothing of the main block */
	ck_assert_ptr_ne(cc->redis.sentinels, c->redis.sentinels);
	ck_assert_ptr_ne(cc->redis.master, c->redis.master);
	ck_assert_str_eq(cc->redis.master, "edge");
	ck_assert_str_eq(cc->redis.sentinels[2].address, "[::1]:26381");
	ck_assert_str_eq(cc->redis.address, c->redis.address);
	ck_assert_uint_eq(cc->redis.connect_timeout, 250);
	ck_assert_uint_eq(cc->redis.db, 1);
	ck_assert_uint_eq(cc->redis.timeout, 2000);
	ck_assert_uint_eq(c->redis.timeout, 20);
	conf_free(c);
}
END_TEST

/* The same mistake gets the same message in both places, each at its own path. */
START_TEST(test_error_redis_endpoints)
{
	static const struct {
		const char *block; /* the text of a redis block */
		const char *msg;   /* after "test.lua: PATH." */
	} cases[] = {
	    {"{ address = \"127.0.0.1:6379\", " SENTINELS " }",
	     "sentinels: `address` and `sentinels` exclude each other: give `address` for one Redis, or `sentinels` "
	     "and `master` to find the master through Redis Sentinel"},
	    {"{ sentinels = { \"127.0.0.1:26379\" } }",
	     "master: missing (the name the sentinels monitor, e.g. master = \"edge\": `sentinel monitor edge "
	     "127.0.0.1 6379 2` in sentinel.conf)"},
	    {"{ address = \"127.0.0.1:6379\", master = \"edge\" }",
	     "master: only with `sentinels` (the name the sentinels monitor); remove it, or replace `address` with "
	     "sentinels = { \"HOST:PORT\", ... }"},
	    {"{ address = \"127.0.0.1:6379\", sentinel_password_file = \"x\" }",
	     "sentinel_password_file: only with `sentinels`; remove it"},
	    {"{ sentinels = { }, master = \"edge\" }",
	     "sentinels: empty (list the sentinels, e.g. { \"127.0.0.1:26379\", \"127.0.0.1:26380\" })"},
	    {"{ sentinels = { \"127.0.0.1:26379\", \"127.0.0.1:26379\" }, master = \"edge\" }",
	     "sentinels[2]: 127.0.0.1:26379 is listed twice"},
	    {"{ sentinels = { \"127.0.0.1:26379\" }, master = \"ed ge\" }",
	     "master: must be the master's name as the sentinels know it (printable, no spaces, at most 200 bytes; "
	     "e.g. master = \"edge\")"},
	    {"{ db = 1 }",
	     "address: missing (write address = \"127.0.0.1:6379\", or sentinels = { \"127.0.0.1:26379\", ... } "
	     "with master = \"NAME\" for Redis Sentinel)"},
	    {"{ address = \"127.0.0.1:6379\", password_file = \"\" }",
	     "password_file: must not be empty (a path to a file holding the Redis password)"},
	    {"{ address = \"127.0.0.1:6379\", password_file = \"/nonexistent/pw\" }",
	     "password_file: cannot read \"/nonexistent/pw\": No such file or directory (give a readable file holding "
	     "the Redis password)"},
	    {"{ address = \"127.0.0.1:6379\", db = -1 }", "db: -1 is out of range (0 to 1000000)"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char src[1024], msg[600];
		snprintf(src, sizeof src, "return { " BASE "redis = %s }", cases[i].block);
		snprintf(msg, sizeof msg, "test.lua: redis.%s", cases[i].msg);
		expect_error(src, msg);
		snprintf(src, sizeof src, "return { " BASE "control = { redis = %s } }", cases[i].block);
		snprintf(msg, sizeof msg, "test.lua: control.redis.%s", cases[i].msg);
		expect_error(src, msg);
	}
	/* on_failure decides requests: only the top-level block has it */
	expect_error_part("return { " BASE "control = { redis = { address = \"127.0.0.1:6379\", on_failure = \"deny\" } } }",
	                  "test.lua: control.redis.on_failure: unknown key");
	expect_error_part("return { " BASE "redis = { address = \"127.0.0.1:6379\", sentinel = \"x\" } }",
	                  "test.lua: redis.sentinel: unknown key");
	expect_error_part("return { " BASE "control = { redis = 5 } }",
	                  "test.lua: control.redis: expected \"main\" (the top-level redis block) or a table");
	expect_error_part("return { " BASE "redis = \"127.0.0.1:6379\" }",
	                  "test.lua: redis: expected a table like { address = \"127.0.0.1:6379\" }");
}
END_TEST

/* Secrets: one line, not empty, a regular file (a FIFO would block the loader). */
START_TEST(test_error_redis_secret_files)
{
	static const struct {
		const char *text;
		const char *msg;
	} cases[] = {
	    {"", "is empty (write the Redis password into it, or remove the key)"},
	    {"\n", "is empty (write the Redis password into it, or remove the key)"},
	    {"one\ntwo\n", "holds more than one line (it must hold only the Redis password, on one line)"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *pw = temp_file(cases[i].text);
		char src[1024];
		snprintf(src, sizeof src, "return { " BASE "control = { redis = { address = \"127.0.0.1:6379\", "
		                          "password_file = \"%s\" } } }", pw);
		expect_error_part(src, cases[i].msg);
		snprintf(src, sizeof src, "return { " BASE "redis = { " SENTINELS ", sentinel_password_file = \"%s\" } }", pw);
		expect_error_part(src, "test.lua: redis.sentinel_password_file: \"");
		temp_file_remove(pw);
	}
	char big[1100];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	char *pw = temp_file(big);
	char src[1024];
	snprintf(src, sizeof src, "return { " BASE "redis = { address = \"127.0.0.1:6379\", password_file = \"%s\" } }", pw);
	expect_error_part(src, "is larger than 1023 bytes (it must hold only the Redis password)");
	temp_file_remove(pw);
	/* exactly 1023 bytes and a newline is fine */
	big[1023] = '\n';
	big[1024] = '\0';
	pw = temp_file(big);
	struct conf *c = load_fmt("return { " BASE "control = { redis = { address = \"127.0.0.1:6379\", password_file = "
	                          "\"%s\" } } }", pw);
	ck_assert_uint_eq(strlen(c->control->redis.password), 1023);
	conf_free(c);
	/* a FIFO is refused at once, never opened */
	unlink(pw);
	ck_assert_int_eq(mkfifo(pw, 0600), 0);
	snprintf(src, sizeof src, "return { " BASE "control = { redis = { address = \"127.0.0.1:6379\", password_file = "
	                          "\"%s\" } } }", pw);
	expect_error_part(src, "(give a readable file holding the Redis password)");
	temp_file_remove(pw);
}
END_TEST

/* Reload compares control's Redis settings (a change needs a restart): every setting counts. */
START_TEST(test_control_redis_same)
{
	static const char *const variants[] = {
	    "redis = { " SENTINELS " }",
	    "redis = { sentinels = { \"127.0.0.1:26379\", \"127.0.0.1:26380\" }, master = \"edge\" }",
	    "redis = { sentinels = { \"127.0.0.1:26380\", \"127.0.0.1:26379\", \"[::1]:26381\" }, master = \"edge\" }",
	    "redis = { " SENTINELS ", db = 2 }",
	    "redis = { sentinels = { \"127.0.0.1:26379\", \"127.0.0.1:26380\", \"[::1]:26381\" }, master = \"edge2\" }",
	    "redis = { address = \"127.0.0.1:6379\" }",
	    "redis = { address = \"127.0.0.1:6380\" }",
	    "redis = { address = \"127.0.0.1:6379\", connect_timeout = \"1s\" }",
	    "redis = { address = \"127.0.0.1:6379\", timeout = \"1s\" }",
	};
	size_t n = sizeof variants / sizeof variants[0];
	struct conf *a[sizeof variants / sizeof variants[0]], *b[sizeof variants / sizeof variants[0]];
	for (size_t i = 0; i < n; i++) {
		a[i] = load_fmt("return { " BASE "control = { %s } }", variants[i]);
		b[i] = load_fmt("return { " BASE "control = { %s } }", variants[i]);
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			ck_assert_msg(conf_control_same(a[i]->control, b[j]->control) == (i == j), "%s vs %s", variants[i],
			              variants[j]);
	for (size_t i = 0; i < n; i++) {
		conf_free(a[i]);
		conf_free(b[i]);
	}
	/* "main" follows the top-level block: another sentinel there is another control connection */
	struct conf *m1 = load_ok("return { " BASE "redis = { " SENTINELS " }, control = { redis = \"main\" } }");
	struct conf *m2 = load_ok("return { " BASE "redis = { " SENTINELS ", on_failure = \"deny\" }, control = { redis = "
	                          "\"main\" } }");
	struct conf *m3 = load_ok("return { " BASE "redis = { sentinels = { \"127.0.0.1:26379\" }, master = \"edge\" }, "
	                          "control = { redis = \"main\" } }");
	ck_assert(conf_control_same(m1->control, m2->control)); /* on_failure is not a connection setting */
	ck_assert(!conf_control_same(m1->control, m3->control));
	ck_assert(conf_redis_same(&m1->redis, &m1->redis));
	ck_assert(!conf_redis_same(&m1->redis, &m3->redis));
	conf_free(m1);
	conf_free(m2);
	conf_free(m3);
}
END_TEST

static Suite *conf_suite(void)
{
	Suite *s = suite_create("conf");

	/* Generous timeouts: these resolve host names, and a slow resolver must not fail them. */
	TCase *parse = tcase_create("parse");
	tcase_set_timeout(parse, 60);
	tcase_add_test(parse, test_duration_valid);
	tcase_add_test(parse, test_duration_invalid);
	tcase_add_test(parse, test_size_valid);
	tcase_add_test(parse, test_msec_timeval);
	tcase_add_test(parse, test_size_invalid);
	tcase_add_test(parse, test_address_valid);
	tcase_add_test(parse, test_address_invalid);
	tcase_add_test(parse, test_errors_list);
	suite_add_tcase(s, parse);

	TCase *load = tcase_create("load");
	tcase_add_test(load, test_example_string);
	tcase_add_test(load, test_example_file);
	tcase_add_test(load, test_default_config_file);
	tcase_add_test(load, test_defaults);
	tcase_add_test(load, test_all_keys_set);
	tcase_add_test(load, test_request_line_capped);
	tcase_add_test(load, test_access_log_paths);
	tcase_add_test(load, test_servers_and_hash_keys);
	tcase_add_test(load, test_implicit_services);
	tcase_add_test(load, test_route_matches_normalised);
	tcase_add_test(load, test_admin_max_connections);
	tcase_add_test(load, test_lookups_by_name_at_scale);
	tcase_add_test(load, test_duplicates_at_scale);
	suite_add_tcase(s, load);

	TCase *errors = tcase_create("errors");
	tcase_set_timeout(errors, 60);
	tcase_add_test(errors, test_error_unknown_service);
	tcase_add_test(errors, test_error_enum_value);
	tcase_add_test(errors, test_error_unknown_keys);
	tcase_add_test(errors, test_error_types);
	tcase_add_test(errors, test_error_ranges);
	tcase_add_test(errors, test_error_durations_and_sizes);
	tcase_add_test(errors, test_error_addresses);
	tcase_add_test(errors, test_error_duplicates);
	tcase_add_test(errors, test_error_route_actions);
	tcase_add_test(errors, test_error_pools_and_services);
	tcase_add_test(errors, test_service_sticky_and_overrides);
	tcase_add_test(errors, test_error_service_sticky_and_overrides);
	tcase_add_test(errors, test_error_match_syntax);
	tcase_add_test(errors, test_errors_all_reported);
	tcase_add_test(errors, test_control_redis_own_sentinels);
	tcase_add_test(errors, test_control_redis_main_sentinels);
	tcase_add_test(errors, test_error_redis_endpoints);
	tcase_add_test(errors, test_error_redis_secret_files);
	tcase_add_test(errors, test_control_redis_same);
	suite_add_tcase(s, errors);

	TCase *sandbox = tcase_create("sandbox");
	/* The budget and memory tests run Lua hard on purpose; leave room under sanitizers. */
	tcase_set_timeout(sandbox, 60);
	tcase_add_test(sandbox, test_sandbox_globals);
	tcase_add_test(sandbox, test_sandbox_env);
	tcase_add_test(sandbox, test_sandbox_file);
	tcase_add_test(sandbox, test_sandbox_bytecode_refused);
	tcase_add_test(sandbox, test_sandbox_instruction_budget);
	tcase_add_test(sandbox, test_sandbox_memory_cap);
	tcase_add_test(sandbox, test_sandbox_pattern_bounded);
	tcase_add_test(sandbox, test_sandbox_wall_clock_deadline);
	tcase_add_test(sandbox, test_lua_errors);
	tcase_add_test(sandbox, test_load_missing_file);
	suite_add_tcase(s, sandbox);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(conf_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
