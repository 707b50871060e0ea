/* Unit tests for the circuit breaker state machine (breaker.h), the runtime
 * table (runtime.h) and the resilience config keys (conf_resilience.h),
 * driven by explicit time. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "clock.h"
#include "conf.h"
#include "conf_resilience.h"
#include "runtime.h"

#define MS 1000ull
#define SEC (1000ull * MS)

static struct conf_breaker conf_default(void)
{
	struct conf_breaker c = {
	    .enabled = true,
	    .consecutive_failures = 5,
	    .error_rate = 0.5,
	    .slow_call = 0,
	    .slow_rate = 0.8,
	    .window = 10000,
	    .min_requests = 20,
	    .open_for = 5000,
	    .max_open_for = 60000,
	    .half_open_probes = 3,
	};
	return c;
}

/* Admit and record one request of the given outcome at time t. */
static bool one(struct breaker *b, const struct conf_breaker *c, uint64_t t, enum breaker_outcome o)
{
	uint64_t epoch;
	enum breaker_admit a = breaker_admit(b, c, t, &epoch);
	ck_assert_int_ne(a, BREAKER_DENY);
	return breaker_record(b, c, t, epoch, a == BREAKER_ADMIT_PROBE, o, 1000);
}

/* The proxy times an attempt with clock_elapsed_us() over clock_mono_us()
 * readings and passes monotonic now_us: a reading "before" the start (what a
 * wall-clock step backwards used to give: a huge unsigned duration) is 0, not
 * a slow call, while a really slow one still counts. */
START_TEST(slow_calls_measured_on_the_monotonic_clock)
{
	struct conf_breaker c = conf_default();
	c.consecutive_failures = 0;
	c.error_rate = 0;
	c.slow_call = 100; /* ms */
	c.slow_rate = 0.5;
	c.min_requests = 4;
	struct breaker b;
	breaker_init(&b);
	uint64_t now = clock_mono_us();
	for (int i = 0; i < 10; i++) {
		uint64_t epoch, start = now + 3600 * SEC; /* as if the clock had stepped back an hour */
		ck_assert_int_eq(breaker_admit(&b, &c, now, &epoch), BREAKER_ADMIT);
		ck_assert(!breaker_record(&b, &c, now, epoch, false, BREAKER_SUCCESS, clock_elapsed_us(start, now)));
	}
	struct breaker_stats st;
	breaker_window(&b, &c, now, &st);
	ck_assert_uint_eq(st.slow, 0);
	ck_assert_int_eq(b.state, BREAKER_CLOSED);
	bool tripped = false;
	for (int i = 0; i < 10 && !tripped; i++) {
		uint64_t epoch;
		ck_assert_int_eq(breaker_admit(&b, &c, now, &epoch), BREAKER_ADMIT);
		tripped = breaker_record(&b, &c, now, epoch, false, BREAKER_SUCCESS, clock_elapsed_us(now, now + 200 * MS));
	}
	ck_assert(tripped);
	ck_assert_int_eq(b.state, BREAKER_OPEN);
	ck_assert_int_eq(b.last_trigger, BREAKER_TRIGGER_SLOW_RATE);
	ck_assert_uint_eq(b.open_until_us, now + c.open_for * MS);
}
END_TEST

START_TEST(consecutive_failures_trip_exactly)
{
	struct conf_breaker c = conf_default();
	struct breaker b;
	breaker_init(&b);
	for (int i = 0; i < 4; i++)
		ck_assert(!one(&b, &c, 1 * SEC, BREAKER_FAILURE));
	ck_assert_int_eq(b.state, BREAKER_CLOSED);
	/* a success in between restarts the count */
	ck_assert(!one(&b, &c, 1 * SEC, BREAKER_SUCCESS));
	for (int i = 0; i < 4; i++)
		ck_assert(!one(&b, &c, 1 * SEC, BREAKER_FAILURE));
	ck_assert(one(&b, &c, 1 * SEC, BREAKER_FAILURE));
	ck_assert_int_eq(b.state, BREAKER_OPEN);
	ck_assert_int_eq(b.last_trigger, BREAKER_TRIGGER_CONSECUTIVE);
	ck_assert_uint_eq(b.open_until_us, 1 * SEC + 5 * SEC);
	uint64_t epoch;
	ck_assert_int_eq(breaker_admit(&b, &c, 5 * SEC, &epoch), BREAKER_DENY);
}
END_TEST

START_TEST(error_rate_needs_min_requests)
{
	struct conf_breaker c = conf_default();
	c.consecutive_failures = 0;
	struct breaker b;
	breaker_init(&b);
	/* alternate: 50% failures, but the trigger waits for 20 calls */
	for (int i = 0; i < 19; i++) {
		ck_assert(!one(&b, &c, 1 * SEC + (uint64_t)i * MS, i % 2 ? BREAKER_FAILURE : BREAKER_SUCCESS));
		ck_assert_int_eq(b.state, BREAKER_CLOSED);
	}
	ck_assert(one(&b, &c, 1 * SEC + 19 * MS, BREAKER_FAILURE));
	ck_assert_int_eq(b.state, BREAKER_OPEN);
	ck_assert_int_eq(b.last_trigger, BREAKER_TRIGGER_ERROR_RATE);
}
END_TEST

START_TEST(error_rate_below_threshold_stays_closed)
{
	struct conf_breaker c = conf_default();
	c.consecutive_failures = 0;
	struct breaker b;
	breaker_init(&b);
	for (int i = 0; i < 100; i++)
		one(&b, &c, 1 * SEC + (uint64_t)i * MS, i % 3 == 0 ? BREAKER_FAILURE : BREAKER_SUCCESS);
	ck_assert_int_eq(b.state, BREAKER_CLOSED);
}
END_TEST

START_TEST(window_forgets_old_calls)
{
	struct conf_breaker c = conf_default();
	c.consecutive_failures = 0;
	c.min_requests = 10;
	struct breaker b;
	breaker_init(&b);
	for (int i = 0; i < 9; i++)
		one(&b, &c, 1 * SEC, BREAKER_FAILURE);
	struct breaker_stats s;
	breaker_window(&b, &c, 1 * SEC, &s);
	ck_assert_uint_eq(s.total, 9);
	ck_assert_uint_eq(s.failures, 9);
	/* 11 s later the window (10 s) has rolled over: the old failures are gone */
	breaker_window(&b, &c, 12 * SEC, &s);
	ck_assert_uint_eq(s.total, 0);
	ck_assert(!one(&b, &c, 12 * SEC, BREAKER_FAILURE));
	ck_assert_int_eq(b.state, BREAKER_CLOSED);
}
END_TEST

START_TEST(slow_calls_trip_slow_rate)
{
	struct conf_breaker c = conf_default();
	c.consecutive_failures = 0;
	c.error_rate = 0;
	c.slow_call = 2000;
	c.min_requests = 5;
	struct breaker b;
	breaker_init(&b);
	uint64_t epoch;
	for (int i = 0; i < 4; i++) {
		breaker_admit(&b, &c, 1 * SEC, &epoch);
		ck_assert(!breaker_record(&b, &c, 1 * SEC, epoch, false, BREAKER_SUCCESS, 2500 * MS));
	}
	breaker_admit(&b, &c, 1 * SEC, &epoch);
	ck_assert(breaker_record(&b, &c, 1 * SEC, epoch, false, BREAKER_SUCCESS, 2500 * MS));
	ck_assert_int_eq(b.last_trigger, BREAKER_TRIGGER_SLOW_RATE);
}
END_TEST

static void trip(struct breaker *b, const struct conf_breaker *c, uint64_t t)
{
	while (b->state == BREAKER_CLOSED)
		one(b, c, t, BREAKER_FAILURE);
}

START_TEST(half_open_all_probes_succeed_closes)
{
	struct conf_breaker c = conf_default();
	struct breaker b;
	breaker_init(&b);
	trip(&b, &c, 0);
	uint64_t t = 5 * SEC, e[4];
	ck_assert_int_eq(breaker_admit(&b, &c, t, &e[0]), BREAKER_ADMIT_PROBE);
	ck_assert_int_eq(b.state, BREAKER_HALF_OPEN);
	ck_assert_int_eq(breaker_admit(&b, &c, t, &e[1]), BREAKER_ADMIT_PROBE);
	ck_assert_int_eq(breaker_admit(&b, &c, t, &e[2]), BREAKER_ADMIT_PROBE);
	/* only half_open_probes get through */
	ck_assert_int_eq(breaker_admit(&b, &c, t, &e[3]), BREAKER_DENY);
	ck_assert(!breaker_record(&b, &c, t, e[0], true, BREAKER_SUCCESS, 0));
	ck_assert(!breaker_record(&b, &c, t, e[1], true, BREAKER_SUCCESS, 0));
	ck_assert(breaker_record(&b, &c, t, e[2], true, BREAKER_SUCCESS, 0));
	ck_assert_int_eq(b.state, BREAKER_CLOSED);
	ck_assert_int_eq(breaker_admit(&b, &c, t, &e[0]), BREAKER_ADMIT);
}
END_TEST

START_TEST(half_open_failure_reopens_with_backoff)
{
	struct conf_breaker c = conf_default();
	c.max_open_for = 12000;
	struct breaker b;
	breaker_init(&b);
	trip(&b, &c, 0);
	ck_assert_uint_eq(b.open_for_us, 5 * SEC);
	uint64_t e;
	/* open 5s -> probe fails -> open 10s -> 12s (cap) -> 12s */
	uint64_t t = 5 * SEC;
	uint64_t expect[] = { 10 * SEC, 12 * SEC, 12 * SEC };
	for (size_t i = 0; i < 3; i++) {
		ck_assert_int_eq(breaker_admit(&b, &c, t - 1, &e), BREAKER_DENY);
		ck_assert_int_eq(breaker_admit(&b, &c, t, &e), BREAKER_ADMIT_PROBE);
		ck_assert(breaker_record(&b, &c, t, e, true, BREAKER_FAILURE, 0));
		ck_assert_int_eq(b.state, BREAKER_OPEN);
		ck_assert_uint_eq(b.open_for_us, expect[i]);
		t += expect[i];
	}
	/* recovery resets the backoff */
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(breaker_admit(&b, &c, t, &e), BREAKER_ADMIT_PROBE);
		breaker_record(&b, &c, t, e, true, BREAKER_SUCCESS, 0);
	}
	ck_assert_int_eq(b.state, BREAKER_CLOSED);
	trip(&b, &c, t);
	ck_assert_uint_eq(b.open_for_us, 5 * SEC);
}
END_TEST

START_TEST(stale_outcomes_do_not_move_state)
{
	struct conf_breaker c = conf_default();
	struct breaker b;
	breaker_init(&b);
	uint64_t old;
	ck_assert_int_eq(breaker_admit(&b, &c, 0, &old), BREAKER_ADMIT);
	trip(&b, &c, 0);
	uint64_t e;
	ck_assert_int_eq(breaker_admit(&b, &c, 5 * SEC, &e), BREAKER_ADMIT_PROBE);
	/* a request admitted before the trip fails late: ignored */
	ck_assert(!breaker_record(&b, &c, 5 * SEC, old, false, BREAKER_FAILURE, 0));
	ck_assert_int_eq(b.state, BREAKER_HALF_OPEN);
	/* a cancelled probe gives its slot back */
	ck_assert(!breaker_record(&b, &c, 5 * SEC, e, true, BREAKER_CANCELLED, 0));
	ck_assert_uint_eq(b.probes_issued, 0);
}
END_TEST

START_TEST(disabled_breaker_only_counts)
{
	struct conf_breaker c = conf_default();
	c.enabled = false;
	struct breaker b;
	breaker_init(&b);
	for (int i = 0; i < 50; i++)
		ck_assert(!one(&b, &c, 1 * SEC, BREAKER_FAILURE));
	ck_assert_int_eq(b.state, BREAKER_CLOSED);
	struct breaker_stats s;
	breaker_window(&b, &c, 1 * SEC, &s);
	ck_assert_uint_eq(s.failures, 50);
}
END_TEST

START_TEST(reset_closes)
{
	struct conf_breaker c = conf_default();
	struct breaker b;
	breaker_init(&b);
	trip(&b, &c, 0);
	breaker_reset(&b);
	ck_assert_int_eq(b.state, BREAKER_CLOSED);
	ck_assert_uint_eq(b.trips, 1);
	uint64_t e;
	ck_assert_int_eq(breaker_admit(&b, &c, 1, &e), BREAKER_ADMIT);
}
END_TEST

START_TEST(runtime_sync_keeps_overrides)
{
	struct conf_errors errs;
	conf_errors_init(&errs);
	const char *src = "return { listeners = { { name = 'p', address = '127.0.0.1:1' } },"
	                  " pools = { web = { servers = { '127.0.0.1:2', { address = '127.0.0.1:3', weight = 4 } } } },"
	                  " routes = { { match = { path_prefix = '/' }, pool = 'web' } } }";
	struct conf *c = conf_load_string("t.lua", src, &errs);
	ck_assert_ptr_nonnull(c);
	struct runtime *rt = runtime_new();
	ck_assert_int_eq(runtime_sync(rt, c), 0);
	struct runtime_pool *p = runtime_find_pool(rt, "web");
	ck_assert_ptr_nonnull(p);
	struct runtime_server *s = runtime_find_server(p, "127.0.0.1:3");
	ck_assert_ptr_nonnull(s);
	ck_assert_uint_eq(atomic_load(&s->weight), 4);
	runtime_set_weight(s, 9);
	ck_assert_int_eq(runtime_sync(rt, c), 0);
	ck_assert_uint_eq(atomic_load(&s->weight), 9);
	ck_assert_ptr_eq(runtime_find_server(p, "127.0.0.1:3"), s);
	runtime_clear_weight(s);
	ck_assert_uint_eq(atomic_load(&s->weight), 4);
	ck_assert(runtime_server_usable(s, 0));
	atomic_store(&s->drained, true);
	ck_assert(!runtime_server_usable(s, 0));
	ck_assert_ptr_nonnull(runtime_find_split(rt, "pool:web", "web"));
	runtime_free(rt);
	conf_free(c);
	conf_errors_free(&errs);
}
END_TEST

static struct conf *load(const char *pool_extra, const char *root_extra, struct conf_errors *errs)
{
	char src[4096];
	snprintf(src, sizeof src,
	         "return { listeners = { { name = 'p', address = '127.0.0.1:1' } },"
	         " pools = { web = { servers = { '127.0.0.1:2' }, %s } },"
	         " routes = { { match = { path_prefix = '/' }, pool = 'web' } }, %s }",
	         pool_extra, root_extra);
	conf_errors_init(errs);
	return conf_load_string("t.lua", src, errs);
}

START_TEST(conf_resilience_keys)
{
	struct conf_errors errs;
	struct conf *c = load("health_check = { type = 'http', path = '/hc', expect = '200-299', interval = '1s',"
	                      " timeout = '500ms', rise = 1, fall = 2, host = 'h.test' },"
	                      " breaker = { consecutive_failures = 3, error_rate = 0.25, open_for = '2s' },"
	                      " limits = { max_requests = 7, max_connections = 9 },"
	                      " retry = { attempts = 3, on = { 'connect-failure', 'reset', '503' }, budget = 0.5 },"
	                      " failure_statuses = { 500, '502' }",
	                      "admin = { socket = '/tmp/x.sock', mode = '0660' }, state_file = '/tmp/state'", &errs);
	ck_assert_msg(c != NULL, "%s", errs.count ? errs.msgs[0] : "");
	const struct conf_pool *p = &c->pools[0];
	ck_assert_int_eq(p->health_check.type, CONF_HEALTH_HTTP);
	ck_assert_str_eq(p->health_check.path, "/hc");
	ck_assert_int_eq(p->health_check.expect_hi, 299);
	ck_assert_uint_eq(p->health_check.fall, 2);
	ck_assert(p->breaker.enabled);
	ck_assert_uint_eq(p->breaker.consecutive_failures, 3);
	ck_assert_uint_eq(p->breaker.max_open_for, 60000);
	ck_assert_uint_eq(p->pool_limits.max_requests, 7);
	ck_assert_uint_eq(p->retry.attempts, 3);
	ck_assert_uint_eq(p->retry.on, CONF_RETRY_CONNECT_FAILURE | CONF_RETRY_RESET);
	ck_assert(conf_retry_on_status(&p->retry, 503));
	ck_assert(!conf_retry_on_status(&p->retry, 500));
	ck_assert(conf_pool_failure_status(p, 500));
	ck_assert(!conf_pool_failure_status(p, 503));
	ck_assert_uint_eq(c->admin.mode, 0660);
	ck_assert_str_eq(c->state_file, "/tmp/state");
	conf_free(c);
	conf_errors_free(&errs);

	c = load("", "", &errs);
	ck_assert_ptr_nonnull(c);
	ck_assert(!c->pools[0].breaker.enabled);
	ck_assert_uint_eq(c->pools[0].retry.attempts, 1);
	ck_assert(conf_pool_failure_status(&c->pools[0], 503));
	ck_assert_ptr_null(c->admin.socket);
	conf_free(c);
	conf_errors_free(&errs);
}
END_TEST

START_TEST(conf_resilience_errors_name_the_path)
{
	struct conf_errors errs;
	struct conf *c = load("health_check = { type = 'udp', expect = '600' }, breaker = { error_rate = 2,"
	                      " open_for = '10s', max_open_for = '1s' }, retry = { on = { 'sometimes' } }",
	                      "admin = { mode = '0444' }", &errs);
	ck_assert_ptr_null(c);
	const char *want[] = { "pools.web.health_check.type: unknown value \"udp\"",
		               "pools.web.health_check.expect: invalid status range \"600\"",
		               "pools.web.breaker.error_rate: 2 is out of range",
		               "pools.web.breaker.max_open_for: must not be shorter than open_for",
		               "pools.web.retry.on[1]: unknown retry condition \"sometimes\"",
		               "admin.socket: missing", "admin.mode: invalid mode \"0444\"" };
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		bool found = false;
		for (size_t j = 0; j < errs.count && !found; j++)
			found = strstr(errs.msgs[j], want[i]) != NULL;
		ck_assert_msg(found, "missing error: %s (got %zu errors, first: %s)", want[i], errs.count,
		              errs.count ? errs.msgs[0] : "");
	}
	conf_errors_free(&errs);
}
END_TEST

static Suite *breaker_suite(void)
{
	Suite *s = suite_create("breaker");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, consecutive_failures_trip_exactly);
	tcase_add_test(tc, slow_calls_measured_on_the_monotonic_clock);
	tcase_add_test(tc, error_rate_needs_min_requests);
	tcase_add_test(tc, error_rate_below_threshold_stays_closed);
	tcase_add_test(tc, window_forgets_old_calls);
	tcase_add_test(tc, slow_calls_trip_slow_rate);
	tcase_add_test(tc, half_open_all_probes_succeed_closes);
	tcase_add_test(tc, half_open_failure_reopens_with_backoff);
	tcase_add_test(tc, stale_outcomes_do_not_move_state);
	tcase_add_test(tc, disabled_breaker_only_counts);
	tcase_add_test(tc, reset_closes);
	tcase_add_test(tc, runtime_sync_keeps_overrides);
	tcase_add_test(tc, conf_resilience_keys);
	tcase_add_test(tc, conf_resilience_errors_name_the_path);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(breaker_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
