/* Unit tests for the counter registry (counters.h): the tables, per-worker
 * sets summed on demand, histogram buckets, names bound across snapshots,
 * and the text and JSON output; and the clock helpers (clock.h). */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "clock.h"
#include "conf.h"
#include "counters.h"
#include "request.h"
#include "snapshot.h"

#define MS 1000ull

static struct conf *load(const char *src)
{
	struct conf_errors e;
	conf_errors_init(&e);
	struct conf *c = conf_load_string("test", src, &e);
	if (!c)
		for (size_t i = 0; i < e.count; i++)
			fprintf(stderr, "%s\n", e.msgs[i]);
	conf_errors_free(&e);
	ck_assert_ptr_nonnull(c);
	return c;
}

/* two routes (a, b) over one pool (web, two servers); the second config drops
 * a, adds c, and reorders so that every index differs */
#define CONF_A                                                                                                        \
	"return { listeners = { { name = 'pub', address = '127.0.0.1:8080' } },"                                    \
	" pools = { web = { servers = { { address = '127.0.0.1:9001' }, { address = '127.0.0.1:9002' } } } },"       \
	" routes = { { name = 'a', match = { path_prefix = '/a' }, pool = 'web' },"                                  \
	"            { name = 'b', match = { path_prefix = '/b' }, pool = 'web' } } }"
#define CONF_B                                                                                                        \
	"return { listeners = { { name = 'admin', address = '127.0.0.1:8081' }, { name = 'pub', address = "         \
	"'127.0.0.1:8080' } },"                                                                                       \
	" pools = { other = { servers = { { address = '127.0.0.1:9003' } } },"                                       \
	"           web = { servers = { { address = '127.0.0.1:9002' }, { address = '127.0.0.1:9001' } } } },"      \
	" routes = { { name = 'b', match = { path_prefix = '/b' }, pool = 'web' },"                                  \
	"            { name = 'c', match = { path_prefix = '/c' }, pool = 'other' } } }"

static int route_index(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->num_routes; i++)
		if (strcmp(c->routes[i].name, name) == 0)
			return (int)i;
	ck_abort_msg("no route %s", name);
	return -1;
}

/* What a writer puts in a fresh buffer, as a string (the caller frees it). */
static char *drain_to_string(struct evbuffer *out)
{
	size_t n = evbuffer_get_length(out);
	char *s = malloc(n + 1);
	evbuffer_remove(out, s, n);
	s[n] = '\0';
	evbuffer_free(out);
	return s;
}

static char *text_of(struct counters *reg, const struct counters_map *m, bool json)
{
	struct evbuffer *out = evbuffer_new();
	counters_write(reg, m, json, out);
	return drain_to_string(out);
}

static char *expo_of(struct counters *reg, const struct counters_map *m, bool om)
{
	struct evbuffer *out = evbuffer_new();
	counters_expose(reg, m, om, out);
	return drain_to_string(out);
}

/* A finished request on snapshot s (with its map), as the log phase sees it. */
static struct request req(struct snapshot *s, int route, int status, enum reason reason, uint64_t us)
{
	struct request r;
	memset(&r, 0, sizeof r);
	r.snap = s;
	r.listener_index = 0;
	r.route = route;
	r.service = (int)s->conf->routes[route].service;
	r.pool = -1;
	r.server = -1;
	r.status = status;
	r.reason = reason;
	r.start_mono_us = 1000 * MS;
	r.end_mono_us = r.start_mono_us + us;
	r.bytes_in = 10;
	r.bytes_out = 100;
	return r;
}

START_TEST(test_tables_are_consistent)
{
	/* every family's slots lie inside its row; widths come from kind and label set */
	ck_assert_int_eq(CTR_ROUTE_REQUESTS, 0);
	ck_assert_int_eq(CTR_ROUTE_REASONS, CTR_SC__COUNT);
	ck_assert_int_eq(CTR_ROUTE_DURATION, CTR_SC__COUNT + REASON__COUNT);
	ck_assert_int_eq(CTR_ROUTE_RECEIVED, CTR_ROUTE_DURATION + CTR_HIST_SLOTS);
	ck_assert_int_eq(CTR_ROUTE_WAF, CTR_ROUTE_SENT + 1);
	ck_assert_int_eq(CTR_ROUTE_WIDTH, CTR_ROUTE_POLICY_ERRORS + CTR_POLICY_PHASE__COUNT);
		ck_assert_int_eq(CTR_GLOBAL_WIDTH, CTR_ROUTE_REGEX_GIVE_UPS + 1);
	ck_assert_int_eq(CTR_CONNECTIONS_ACTIVE_LAST_ - CTR_CONNECTIONS_ACTIVE + 1, 2 * CTR_PROTO__COUNT); /* a gauge: ups, downs */
	ck_assert_int_ge(CTR_MAX_WIDTH, CTR_ROUTE_WIDTH);
	ck_assert_int_eq(ctr_status_class(204), CTR_SC_2XX);
	ck_assert_int_eq(ctr_status_class(599), CTR_SC_5XX);
	ck_assert_int_eq(ctr_status_class(0), CTR_SC_NONE);
	ck_assert_int_eq(ctr_status_class(600), CTR_SC_NONE);
	ck_assert_str_eq(counters_h2_close_name(CTR_H2_CLOSE_RAPID_RESET), "rapid_reset");
	ck_assert_str_eq(counters_tls_fail_name(CTR_TLS_FAIL_NOT_TLS), "not_tls");
}
END_TEST

START_TEST(test_two_workers_sum)
{
	struct counters *reg = counters_new();
	ck_assert_ptr_nonnull(reg);
	struct ctr_worker *w1 = counters_worker_new(reg), *w2 = counters_worker_new(reg);
	ck_assert_ptr_nonnull(w1);
	ck_assert_ptr_nonnull(w2);
	CTR_GLOBAL_ADD(w1, H2_CLOSED, CTR_H2_CLOSE_PING_FLOOD, 2);
	CTR_GLOBAL_ADD(w2, H2_CLOSED, CTR_H2_CLOSE_PING_FLOOD, 3);
	CTR_GLOBAL_ADD(w2, TLS_HANDSHAKES, 0, 1);
	CTR_GLOBAL_ADD(counters_main(reg), RUNTIME_CHANGES, 0, 4);
	/* a gauge: up on one set, down on another, summed */
	CTR_GAUGE_UP(w1, CONNECTIONS_ACTIVE, CTR_PROTO_H2);
	CTR_GAUGE_UP(w1, CONNECTIONS_ACTIVE, CTR_PROTO_H2);
	CTR_GAUGE_UP(w2, CONNECTIONS_ACTIVE, CTR_PROTO_H2);
	CTR_GAUGE_DOWN(w2, CONNECTIONS_ACTIVE, CTR_PROTO_H2);
	CTR_GAUGE_DOWN(w1, CONNECTIONS_ACTIVE, CTR_PROTO_H2);
	CTR_GAUGE_UP(w1, CONNECTIONS_ACTIVE, CTR_PROTO_HTTP1);
	ck_assert_uint_eq(counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_H2_CLOSED + CTR_H2_CLOSE_PING_FLOOD), 5);
	ck_assert_uint_eq(counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_H2_CLOSED + CTR_H2_CLOSE_RAPID_RESET), 0);
	ck_assert_uint_eq(counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_TLS_HANDSHAKES), 1);
	ck_assert_uint_eq(counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_RUNTIME_CHANGES), 4);
	/* each set still knows its own share */
	ck_assert_uint_eq(ctr_global_own(w1, CTR_H2_CLOSED + CTR_H2_CLOSE_PING_FLOOD), 2);
	ck_assert_uint_eq(ctr_global_own(w2, CTR_H2_CLOSED + CTR_H2_CLOSE_PING_FLOOD), 3);
	char *t = text_of(reg, NULL, false);
	ck_assert_ptr_nonnull(strstr(t, "sluice_h2_sessions_closed_total{reason=\"ping_flood\"} 5\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_runtime_changes_total 4\n"));
	ck_assert_ptr_null(strstr(t, "rapid_reset")); /* zero series are left out */
	ck_assert_ptr_nonnull(strstr(t, "sluice_connections_active{protocol=\"h2\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_connections_active{protocol=\"http1\"} 1\n"));
	free(t);
	t = expo_of(reg, NULL, false);
	ck_assert_ptr_nonnull(strstr(t, "# TYPE sluice_connections_active gauge\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_connections_active{protocol=\"h2\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_connections_active{protocol=\"https\"} 0\n"));
	free(t);
	counters_free(reg);
}
END_TEST

START_TEST(test_histogram_buckets)
{
	const struct ctr_hist_bounds b11 = {CTR_HIST_DEFAULT_BOUNDS, {CTR_HIST_DEFAULT_BOUNDS_US}};
	/* upper bounds are inclusive (Prometheus "le") */
	ck_assert_uint_eq(ctr_hist_bucket(&b11, 0), 0);
	ck_assert_uint_eq(ctr_hist_bucket(&b11, 5 * MS), 0);
	ck_assert_uint_eq(ctr_hist_bucket(&b11, 5 * MS + 1), 1);
	ck_assert_uint_eq(ctr_hist_bucket(&b11, 10 * MS), 1);
	ck_assert_uint_eq(ctr_hist_bucket(&b11, 999 * MS), 7);
	ck_assert_uint_eq(ctr_hist_bucket(&b11, 1000 * MS), 7);
	ck_assert_uint_eq(ctr_hist_bucket(&b11, 10000 * MS), CTR_HIST_DEFAULT_BOUNDS - 1);
	ck_assert_uint_eq(ctr_hist_bucket(&b11, 10000 * MS + 1), CTR_HIST_DEFAULT_BOUNDS); /* +Inf */
	ck_assert_uint_eq(ctr_hist_bucket(&b11, UINT64_MAX), CTR_HIST_DEFAULT_BOUNDS);

	struct counters *reg = counters_new();
	struct ctr_worker *w = counters_worker_new(reg);
	struct snapshot s = {0};
	s.conf = load(CONF_A);
	s.counters = counters_map_new(reg, s.conf);
	ck_assert_ptr_nonnull(s.counters);
	int a = route_index(s.conf, "a");
	uint64_t times[] = {1 * MS, 3 * MS, 7 * MS, 200 * MS, 30000 * MS};
	for (size_t i = 0; i < 5; i++) {
		struct request r = req(&s, a, 200, REASON_NONE, times[i]);
		counters_request_done(w, &r);
	}
	ck_assert_uint_eq(counters_get(reg, s.counters, CTR_DIM_ROUTE, (size_t)a, CTR_ROUTE_DURATION + 0), 2);
	ck_assert_uint_eq(counters_get(reg, s.counters, CTR_DIM_ROUTE, (size_t)a, CTR_ROUTE_DURATION + 1), 1);
	ck_assert_uint_eq(counters_get(reg, s.counters, CTR_DIM_ROUTE, (size_t)a, CTR_ROUTE_DURATION + 5), 1);
	ck_assert_uint_eq(counters_get(reg, s.counters, CTR_DIM_ROUTE, (size_t)a, CTR_ROUTE_DURATION + CTR_HIST_DEFAULT_BOUNDS),
	                  1);
	ck_assert_uint_eq(counters_get(reg, s.counters, CTR_DIM_ROUTE, (size_t)a, CTR_ROUTE_DURATION + CTR_HIST_SUM),
	                  30211 * MS);
	char *t = text_of(reg, s.counters, false);
	/* cumulative buckets, sum in seconds, count */
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_request_duration_seconds_bucket{route=\"a\",le=\"0.005\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_request_duration_seconds_bucket{route=\"a\",le=\"0.01\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_request_duration_seconds_bucket{route=\"a\",le=\"10\"} 4\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 5\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_request_duration_seconds_sum{route=\"a\"} 30.211000\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_request_duration_seconds_count{route=\"a\"} 5\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_requests_total{route=\"a\",status_class=\"2xx\"} 5\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_listener_requests_total{listener=\"pub\",status_class=\"2xx\"} 5\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_sent_bytes_total{route=\"a\"} 500\n"));
	free(t);
	t = text_of(reg, s.counters, true);
	ck_assert_ptr_nonnull(strstr(t, "{\"labels\":{\"route\":\"a\"},\"count\":5,\"sum\":30.211000,"
	                                "\"buckets\":[2,3,3,3,3,4,4,4,4,4,4,5]}"));
	ck_assert_ptr_nonnull(strstr(t, "\"buckets\":[0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10]"));
	free(t);
	counters_map_free(s.counters);
	conf_free(s.conf);
	counters_free(reg);
}
END_TEST

START_TEST(test_exposition)
{
	struct counters *reg = counters_new();
	struct ctr_worker *w = counters_worker_new(reg);
	struct snapshot s = {0};
	s.conf = load(CONF_A);
	s.counters = counters_map_new(reg, s.conf);
	int a = route_index(s.conf, "a");
	struct request r = req(&s, a, 200, REASON_NONE, 7 * MS);
	counters_request_done(w, &r);
	r = req(&s, a, 429, REASON_RATE_LIMITED, 1 * MS);
	counters_request_done(w, &r);
	char *t = expo_of(reg, s.counters, false);
	ck_assert_ptr_nonnull(strstr(t, "# TYPE sluice_route_requests_total counter\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_requests_total{route=\"a\",status_class=\"2xx\"} 1\n"));
	/* zero series are shown for the status classes and the configured names ... */
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_requests_total{route=\"b\",status_class=\"5xx\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_h2_sessions_total 0\n"));
	/* ... not for the reasons */
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_reasons_total{route=\"a\",reason=\"rate_limited\"} 1\n"));
	ck_assert_ptr_null(strstr(t, "reason=\"waf_denied\""));
	ck_assert_ptr_nonnull(strstr(t, "# TYPE sluice_route_request_duration_seconds histogram\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_bucket{route=\"a\",le=\"0.005\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_bucket{route=\"a\",le=\"0.01\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_sum{route=\"a\"} 0.008000\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_count{route=\"a\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_server_attempts_total{pool=\"web\",server=\"127.0.0.1:9002\"} 0\n"));
	free(t);
	t = expo_of(reg, s.counters, true);
	/* OpenMetrics: a counter family is named without _total, its samples with it */
	ck_assert_ptr_nonnull(strstr(t, "# TYPE sluice_route_requests counter\n"));
	ck_assert_ptr_null(strstr(t, "# TYPE sluice_route_requests_total"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_requests_total{route=\"a\",status_class=\"2xx\"} 1\n"));
	free(t);
	t = expo_of(reg, NULL, false); /* no map: the global families alone */
	ck_assert_ptr_nonnull(strstr(t, "sluice_h2_sessions_total 0\n"));
	ck_assert_ptr_null(strstr(t, "route=\""));
	free(t);
	counters_map_free(s.counters);
	conf_free(s.conf);
	counters_free(reg);
}
END_TEST

START_TEST(test_configured_buckets)
{
	struct counters *reg = counters_new();
	static const uint64_t us[] = {1 * MS, 2 * MS, 1500 * MS};
	ck_assert(!counters_set_buckets(reg, us, 0));
	ck_assert(!counters_set_buckets(reg, us, CTR_HIST_MAX_BOUNDS + 1));
	ck_assert(counters_set_buckets(reg, us, 3));
	struct ctr_worker *w = counters_worker_new(reg);
	ck_assert_ptr_eq(w->hist, counters_buckets(reg));
	ck_assert_uint_eq(ctr_hist_bucket(w->hist, 2 * MS), 1);
	ck_assert_uint_eq(ctr_hist_bucket(w->hist, 1501 * MS), 3); /* +Inf */
	struct snapshot s = {0};
	s.conf = load(CONF_A);
	s.counters = counters_map_new(reg, s.conf);
	int a = route_index(s.conf, "a");
	uint64_t times[] = {1 * MS, 2 * MS, 3 * MS, 1500 * MS, 20000 * MS};
	for (size_t i = 0; i < 5; i++) {
		struct request r = req(&s, a, 200, REASON_NONE, times[i]);
		counters_request_done(w, &r);
	}
	char *t = expo_of(reg, s.counters, false);
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_bucket{route=\"a\",le=\"0.001\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_bucket{route=\"a\",le=\"0.002\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_bucket{route=\"a\",le=\"1.5\"} 4\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 5\n"));
	ck_assert_ptr_null(strstr(t, "le=\"0.005\""));
	ck_assert_ptr_nonnull(strstr(t, "\nsluice_route_request_duration_seconds_sum{route=\"a\"} 21.506000\n"));
	free(t);
	t = text_of(reg, s.counters, true);
	ck_assert_ptr_nonnull(strstr(t, "\"buckets\":[0.001,0.002,1.5]"));
	ck_assert_ptr_nonnull(strstr(t, "\"buckets\":[1,2,4,5]}"));
	free(t);
	counters_map_free(s.counters);
	conf_free(s.conf);
	counters_free(reg);
}
END_TEST

START_TEST(test_names_bound_across_snapshots)
{
	struct counters *reg = counters_new();
	struct ctr_worker *w = counters_worker_new(reg);
	struct snapshot s1 = {0}, s2 = {0};
	s1.conf = load(CONF_A);
	s1.counters = counters_map_new(reg, s1.conf);
	struct request r = req(&s1, route_index(s1.conf, "b"), 503, REASON_BREAKER_OPEN, 2 * MS);
	r.pool = 0;
	r.server = 1; /* web's 127.0.0.1:9002 in the first config */
	counters_request_done(w, &r);
	counters_server_outcome(w, s1.counters, 0, 1, true);
	r = req(&s1, route_index(s1.conf, "a"), 200, REASON_NONE, 2 * MS);
	counters_request_done(w, &r);

	/* the reload: the worker has no rows for the new names yet (it grows on first use) */
	s2.conf = load(CONF_B);
	s2.counters = counters_map_new(reg, s2.conf);
	ck_assert_uint_gt(s2.counters->version, s1.counters->version);
	int b2 = route_index(s2.conf, "b"), c2 = route_index(s2.conf, "c");
	int web2 = conf_find_pool(s2.conf, "web");
	ck_assert_int_ne(b2, route_index(s1.conf, "b"));
	r = req(&s2, b2, 204, REASON_NONE, 2 * MS);
	r.pool = web2;
	r.server = 0; /* the same server, now first in its pool */
	r.listener_index = 1;
	counters_request_done(w, &r);
	r = req(&s2, c2, 200, REASON_NONE, 2 * MS);
	counters_request_done(w, &r);
	/* a request that started on the old snapshot ends after the reload */
	r = req(&s1, route_index(s1.conf, "b"), 200, REASON_NONE, 2 * MS);
	counters_request_done(w, &r);

	/* route b kept its totals through the reload, c starts from 0 */
	ck_assert_uint_eq(counters_get(reg, s2.counters, CTR_DIM_ROUTE, (size_t)b2, CTR_ROUTE_REQUESTS + CTR_SC_5XX), 1);
	ck_assert_uint_eq(counters_get(reg, s2.counters, CTR_DIM_ROUTE, (size_t)b2, CTR_ROUTE_REQUESTS + CTR_SC_2XX), 2);
	ck_assert_uint_eq(counters_get(reg, s2.counters, CTR_DIM_ROUTE, (size_t)c2, CTR_ROUTE_REQUESTS + CTR_SC_2XX), 1);
	ck_assert_uint_eq(
	    counters_get(reg, s2.counters, CTR_DIM_ROUTE, (size_t)b2, CTR_ROUTE_REASONS + REASON_BREAKER_OPEN), 1);
	/* the server is the same by (pool, address) whatever its index */
	size_t srv2 = counters_server_index(s2.counters, (size_t)web2, 0);
	ck_assert_uint_eq(counters_get(reg, s2.counters, CTR_DIM_SERVER, srv2, CTR_SERVER_FAILURES), 1);
	ck_assert_uint_eq(counters_get(reg, s2.counters, CTR_DIM_SERVER, srv2, CTR_SERVER_REQUESTS + CTR_SC_5XX), 1);
	ck_assert_uint_eq(counters_get(reg, s2.counters, CTR_DIM_SERVER, srv2, CTR_SERVER_REQUESTS + CTR_SC_2XX), 1);
	/* listener pub moved from index 0 to 1 and kept its totals; admin (index 0 now) is new */
	ck_assert_uint_eq(counters_get(reg, s2.counters, CTR_DIM_LISTENER, 1, CTR_LISTENER_REQUESTS + CTR_SC_2XX), 3);
	ck_assert_uint_eq(counters_get(reg, s2.counters, CTR_DIM_LISTENER, 0, CTR_LISTENER_REQUESTS + CTR_SC_2XX), 1);

	/* shown: the current snapshot's names; route a is gone from the output but
	 * keeps its value in the old map */
	char *t = text_of(reg, s2.counters, false);
	ck_assert_ptr_null(strstr(t, "route=\"a\""));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_requests_total{route=\"c\",status_class=\"2xx\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_server_failures_total{pool=\"web\",server=\"127.0.0.1:9002\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "sluice_route_request_reasons_total{route=\"b\",reason=\"breaker_open\"} 1\n"));
	free(t);
	ck_assert_uint_eq(counters_get(reg, s1.counters, CTR_DIM_ROUTE, (size_t)route_index(s1.conf, "a"),
	                               CTR_ROUTE_REQUESTS + CTR_SC_2XX),
	                  1);

	/* a worker that starts after the reload covers every name from the start */
	struct ctr_worker *late = counters_worker_new(reg);
	ck_assert_uint_eq(late->covered, s2.counters->version);
	counters_map_free(s1.counters);
	counters_map_free(s2.counters);
	conf_free(s1.conf);
	conf_free(s2.conf);
	counters_free(reg);
}
END_TEST

START_TEST(test_many_names_grow_rows)
{
	/* more names than a worker's first rows hold: the rows grow and keep their values */
	struct counters *reg = counters_new();
	struct ctr_worker *w = counters_worker_new(reg);
	struct snapshot s = {0};
	s.conf = load(CONF_A);
	s.counters = counters_map_new(reg, s.conf);
	struct request r = req(&s, 0, 200, REASON_NONE, MS);
	counters_request_done(w, &r);
	struct snapshot big = {0};
	size_t cap = 65536;
	char *src = malloc(cap);
	ck_assert_ptr_nonnull(src);
	size_t n = (size_t)snprintf(src, cap,
	                            "return { listeners = { { name = 'pub', address = '127.0.0.1:8080' } },"
	                            " pools = { web = { servers = { { address = '127.0.0.1:9001' } } } }, routes = {");
	for (int i = 0; i < 300; i++)
		n += (size_t)snprintf(src + n, cap - n,
		                      "{ name = 'r%d', match = { path_prefix = '/r%d' }, pool = 'web' },", i, i);
	snprintf(src + n, cap - n, "{ name = 'a', match = { path_prefix = '/a' }, pool = 'web' } } }");
	big.conf = load(src);
	free(src);
	big.counters = counters_map_new(reg, big.conf);
	for (int i = 0; i < 300; i += 7) {
		r = req(&big, i, 404, REASON_NONE, MS);
		counters_request_done(w, &r);
	}
	r = req(&big, 300, 200, REASON_NONE, MS); /* route a, now last */
	counters_request_done(w, &r);
	ck_assert_uint_eq(counters_get(reg, big.counters, CTR_DIM_ROUTE, 300, CTR_ROUTE_REQUESTS + CTR_SC_2XX), 2);
	ck_assert_uint_eq(counters_get(reg, big.counters, CTR_DIM_ROUTE, 294, CTR_ROUTE_REQUESTS + CTR_SC_4XX), 1);
	ck_assert_uint_eq(counters_get(reg, big.counters, CTR_DIM_ROUTE, 295, CTR_ROUTE_REQUESTS + CTR_SC_4XX), 0);
	counters_map_free(s.counters);
	counters_map_free(big.counters);
	conf_free(s.conf);
	conf_free(big.conf);
	counters_free(reg);
}
END_TEST

START_TEST(test_no_registry_counts_nothing)
{
	/* sluice check and tests build snapshots without a registry: no map, no count, no crash */
	struct snapshot s = {0};
	s.conf = load(CONF_A);
	ck_assert_ptr_null(counters_map_new(NULL, s.conf));
	struct request r = req(&s, 0, 200, REASON_NONE, MS);
	counters_request_done(NULL, &r);
	ck_assert_uint_eq(counters_get(NULL, NULL, CTR_DIM_GLOBAL, 0, CTR_RUNTIME_CHANGES), 0);
	conf_free(s.conf);
}
END_TEST

START_TEST(test_clock)
{
	uint64_t m1 = clock_mono_us(), w1 = clock_wall_us();
	uint64_t m2 = clock_mono_us();
	ck_assert_uint_ge(m2, m1);
	ck_assert_uint_gt(w1, 1600000000ull * 1000000u); /* after 2020: the epoch clock */
	ck_assert_uint_eq(clock_elapsed_us(m1, m2), m2 - m1);
	/* an earlier "now" (a wall step backwards, or readings of two clocks) is 0, never huge */
	ck_assert_uint_eq(clock_elapsed_us(m2 + 5, m2), 0);
}
END_TEST

static Suite *counters_suite(void)
{
	Suite *s = suite_create("counters");
	TCase *t = tcase_create("registry");
	tcase_add_test(t, test_tables_are_consistent);
	tcase_add_test(t, test_two_workers_sum);
	tcase_add_test(t, test_histogram_buckets);
	tcase_add_test(t, test_exposition);
	tcase_add_test(t, test_configured_buckets);
	tcase_add_test(t, test_names_bound_across_snapshots);
	tcase_add_test(t, test_many_names_grow_rows);
	tcase_add_test(t, test_no_registry_counts_nothing);
	suite_add_tcase(s, t);
	TCase *c = tcase_create("clock");
	tcase_add_test(c, test_clock);
	suite_add_tcase(s, c);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(counters_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
