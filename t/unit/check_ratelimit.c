/* check_ratelimit.c - unit tests for rate limiting: the bucket arithmetic
 * (modules/rl_bucket.c), the bounded bucket table (modules/rl_table.c) and
 * the config sections (src/conf_ratelimit.c). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "counters.h"
#include "rl_bucket.h"
#include "rl_table.h"

#define SEC 1000000ull

/* ---- bucket arithmetic ---- */

START_TEST(test_bucket_starts_full_and_drains)
{
	struct rl_rate r;
	ck_assert_int_eq(rl_rate_init(&r, 100, SEC, 200), 0);
	struct rl_bucket b;
	rl_bucket_init(&b, &r, 5 * SEC);
	ck_assert_uint_eq(rl_bucket_tokens(&b, &r), 200);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 5 * SEC, 150), 150);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 5 * SEC, 100), 50); /* partial grant */
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 5 * SEC, 1), 0);
	ck_assert_uint_eq(rl_bucket_wait_us(&b, &r), 10000); /* 100/s: one token every 10 ms */
	ck_assert_uint_eq(rl_bucket_full_us(&b, &r), 2 * SEC);
}
END_TEST

START_TEST(test_bucket_refill_exact)
{
	/* 5 per minute: one token every 12 s, no drift over many steps */
	struct rl_rate r;
	ck_assert_int_eq(rl_rate_init(&r, 5, 60 * SEC, 5), 0);
	struct rl_bucket b;
	rl_bucket_init(&b, &r, 0);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 0, 5), 5);
	uint64_t t = 0, admitted = 0;
	/* one hour in 8 ms steps: exactly 300 tokens accrue */
	for (; t <= 3600 * SEC; t += 8000)
		admitted += rl_bucket_take(&b, &r, t, 1);
	ck_assert_uint_eq(admitted, 300);
	/* 1000 per second in 1 us steps for 10 ms: exactly 10 */
	struct rl_rate fast;
	ck_assert_int_eq(rl_rate_init(&fast, 1000, SEC, 1), 0);
	rl_bucket_init(&b, &fast, 0);
	ck_assert_uint_eq(rl_bucket_take(&b, &fast, 0, 1), 1);
	admitted = 0;
	for (t = 1; t <= 10000; t++)
		admitted += rl_bucket_take(&b, &fast, t, 1);
	ck_assert_uint_eq(admitted, 10);
}
END_TEST

START_TEST(test_bucket_burst_caps_refill)
{
	struct rl_rate r;
	ck_assert_int_eq(rl_rate_init(&r, 10, SEC, 3), 0);
	struct rl_bucket b;
	rl_bucket_init(&b, &r, 0);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 0, 3), 3);
	/* a long pause refills to the burst, never beyond */
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 3600 * SEC, 100), 3);
	ck_assert_uint_eq(rl_bucket_full_us(&b, &r), 300000);
}
END_TEST

START_TEST(test_bucket_clock_jumps)
{
	struct rl_rate r;
	ck_assert_int_eq(rl_rate_init(&r, 1, SEC, 2), 0);
	struct rl_bucket b;
	rl_bucket_init(&b, &r, 100 * SEC);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 100 * SEC, 2), 2);
	/* a small step back (racing readers): ignored, the newer time is kept */
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 100 * SEC - 500000, 1), 0);
	ck_assert_uint_eq(b.last_us, 100 * SEC);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 101 * SEC, 1), 1); /* exactly one second later: one token */
	/* a big step back: re-based on the new clock, no refill, no stall */
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 10 * SEC, 1), 0);
	ck_assert_uint_eq(b.last_us, 10 * SEC);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 11 * SEC, 1), 1);
	/* a huge jump forward: no overflow, at most the burst */
	ck_assert_uint_eq(rl_bucket_take(&b, &r, UINT64_MAX - 1, 10), 2);
}
END_TEST

START_TEST(test_rate_limits_checked)
{
	struct rl_rate r;
	ck_assert_int_eq(rl_rate_init(&r, 0, SEC, 1), -1);
	ck_assert_int_eq(rl_rate_init(&r, 1, 0, 1), -1);
	ck_assert_int_eq(rl_rate_init(&r, 1, SEC, 0), -1);
	ck_assert_int_eq(rl_rate_init(&r, 1, 3600 * SEC, RL_MAX_CAP / (3600 * SEC) + 1), -1);
	ck_assert_int_eq(rl_rate_init(&r, 1000000000, 3600 * SEC, RL_MAX_CAP / (3600 * SEC)), 0);
	/* extreme but valid: refill arithmetic must not overflow */
	struct rl_bucket b;
	rl_bucket_init(&b, &r, 0);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 0, UINT64_MAX), RL_MAX_CAP / (3600 * SEC));
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 1, UINT64_MAX), 0);
	ck_assert_uint_eq(rl_bucket_take(&b, &r, 3600 * SEC, 1000000000), RL_MAX_CAP / (3600 * SEC));
}
END_TEST

START_TEST(test_rate_split)
{
	/* 90 per second split over 3 instances: 30 per second, burst 30 of 90 */
	struct rl_rate r, s;
	ck_assert_int_eq(rl_rate_init(&r, 90, SEC, 90), 0);
	rl_rate_split(&s, &r, 3);
	struct rl_bucket b;
	rl_bucket_init(&b, &s, 0);
	ck_assert_uint_eq(rl_bucket_take(&b, &s, 0, 1000), 30);
	ck_assert_uint_eq(rl_bucket_take(&b, &s, SEC, 1000), 30);
	/* a share smaller than one token still admits one (never a dead bucket) */
	struct rl_rate login, ls;
	ck_assert_int_eq(rl_rate_init(&login, 5, 60 * SEC, 5), 0);
	rl_rate_split(&ls, &login, 10);
	rl_bucket_init(&b, &ls, 0);
	ck_assert_uint_eq(rl_bucket_take(&b, &ls, 0, 100), 1);
	ck_assert_uint_eq(rl_bucket_wait_us(&b, &ls), 120 * SEC); /* 0.5/min */
	/* 0 parts means 1 */
	rl_rate_split(&s, &r, 0);
	ck_assert_uint_eq(s.cost, r.cost);
}
END_TEST

/* ---- shared limits' lease policy ---- */

START_TEST(test_lease_policy)
{
	/* exact mode: a burst of at most 8 x instances (login: 5/min, burst 5) */
	ck_assert(rl_lease_exact(5, 3));
	ck_assert(rl_lease_exact(24, 3));
	ck_assert(!rl_lease_exact(25, 3));
	ck_assert(rl_lease_exact(8, 0)); /* instances unknown: 1 */
	ck_assert(!rl_lease_exact(9, 1));
	/* exact mode always asks for one token, whatever Redis holds */
	ck_assert_uint_eq(rl_lease_want(5, 5, 3, 100), 1);
	ck_assert_uint_eq(rl_lease_want(24, 24, 3, 100), 1);
	/* leasing: tokens left / (8 x instances), at least 1, at most batch */
	ck_assert_uint_eq(rl_lease_want(40, 40, 3, 100), 1);
	ck_assert_uint_eq(rl_lease_want(0, 40, 3, 100), 1);
	ck_assert_uint_eq(rl_lease_want(200, 200, 3, 100), 8);
	ck_assert_uint_eq(rl_lease_want(47, 200, 3, 100), 1);
	ck_assert_uint_eq(rl_lease_want(48, 200, 3, 100), 2);
	ck_assert_uint_eq(rl_lease_want(100000000, 100000000, 1, 100), 100);
	ck_assert_uint_eq(rl_lease_want(1000, 1000, 0, 100), 100); /* 1000 / 8 = 125, capped */
	ck_assert_uint_eq(rl_lease_want(1000, 1000, 0, 200), 125);
	/* the over-admission bound: what all instances hold at once (1.5 batches
	 * each at most, one when the batch is 1) stays within 3/16 of the burst */
	for (unsigned n = 1; n <= 16; n++) {
		for (uint64_t burst = 1; burst <= 2000; burst++) {
			uint64_t w = rl_lease_want(burst, burst, n, 100000);
			if (rl_lease_exact(burst, n))
				continue;
			ck_assert_uint_le(n * (w + w / 2), 3 * burst / 16);
		}
	}
}
END_TEST

START_TEST(test_lease_sizing)
{
	/* the consumption rate, in tokens per 1000 s: a first sample is taken whole */
	ck_assert_uint_eq(rl_use_rate(0, 70, 1000), 70000ull * RL_RATE_SCALE); /* 70 in 1 ms: 70k/s */
	ck_assert_uint_eq(rl_use_rate(0, 1, 10 * SEC), 100);                  /* 0.1/s */
	ck_assert_uint_eq(rl_use_rate(0, 1, 100000 * SEC), 1);                /* used once: never 0 */
	/* then a quarter weight per sample: 4000 -> 1000 moves a quarter of the way */
	ck_assert_uint_eq(rl_use_rate(4000, 1, SEC), 3250);
	uint64_t r = 0;
	for (int i = 0; i < 40; i++)
		r = rl_use_rate(r, 1400, 20000); /* 70k/s in 20 ms windows */
	ck_assert_uint_eq(r, 70000ull * RL_RATE_SCALE);
	/* absurd inputs stay finite */
	ck_assert_uint_gt(rl_use_rate(0, UINT64_MAX, 0), 0);

	/* nothing measured: the cap (batch, burst share) */
	ck_assert_uint_eq(rl_lease_size(100, 0, 0), 100);
	ck_assert_uint_eq(rl_lease_size(0, 0, 0), 1);
	/* a fast process: what lasts the horizon is far above the batch */
	ck_assert_uint_eq(rl_lease_size(100, 70000ull * RL_RATE_SCALE, 1000), 100);
	/* a slow key: 5 s of its use (2/s -> 10), no token the TTL would drop */
	ck_assert_uint_eq(rl_lease_size(100, 2 * RL_RATE_SCALE, 1000), 10);
	ck_assert_uint_eq(rl_lease_size(100, 100, 1000), 1); /* 0.1/s */
	/* a slow Redis (3 s round trips): two round trips' worth */
	ck_assert_uint_eq(rl_lease_size(100, 2 * RL_RATE_SCALE, 3 * SEC), 12);
	/* never above the cap, never 0 */
	for (uint64_t cap = 1; cap <= 300; cap += 7)
		for (uint64_t rate = 1; rate < 10000000000ull; rate = rate * 3 + 1)
			for (uint64_t rtt = 0; rtt < 100 * SEC; rtt = rtt * 5 + 1) {
				uint64_t w = rl_lease_size(cap, rate, rtt);
				ck_assert_uint_ge(w, 1);
				ck_assert_uint_le(w, cap);
				/* the refill point: at least half a batch, below the batch */
				uint64_t at = rl_lease_refill_at(w, rate, rtt);
				ck_assert_uint_ge(at, w / 2);
				ck_assert_uint_le(at + 1, w);
			}

	/* refill ahead: half a batch, or 1.5 round trips of use when that is more */
	ck_assert_uint_eq(rl_lease_refill_at(100, 0, 0), 50);
	ck_assert_uint_eq(rl_lease_refill_at(100, 10000ull * RL_RATE_SCALE, 1000), 50); /* 15 per 1.5 ms */
	ck_assert_uint_eq(rl_lease_refill_at(100, 40000ull * RL_RATE_SCALE, 1000), 60);
	ck_assert_uint_eq(rl_lease_refill_at(100, 70000ull * RL_RATE_SCALE, 1000), 99); /* capped: batch - 1 */
	ck_assert_uint_eq(rl_lease_refill_at(1, 70000ull * RL_RATE_SCALE, 1000), 0); /* batch 1: when used up */
	/* what a process holds at once (refill point + a batch) stays within a
	 * quarter of the burst over all instances (docs: "Accuracy bound") */
	for (unsigned n = 1; n <= 16; n++) {
		for (uint64_t burst = 1; burst <= 2000; burst++) {
			if (rl_lease_exact(burst, n))
				continue;
			uint64_t w = rl_lease_size(rl_lease_want(burst, burst, n, 100000), 1000000000ull, 5000);
			ck_assert_uint_le(n * (w + rl_lease_refill_at(w, 1000000000ull, 5000)), burst / 4);
		}
	}
}
END_TEST

/* ---- table ---- */

/* the table counts what it forgets in the caller's counter set (a real registry) */
static struct counters *table_reg;
static struct ctr_worker *table_cw;

static void table_setup(void)
{
	table_reg = counters_new();
	ck_assert_ptr_nonnull(table_reg);
	table_cw = counters_worker_new(table_reg);
	ck_assert_ptr_nonnull(table_cw);
}

static void table_teardown(void)
{
	counters_free(table_reg);
	table_reg = NULL;
	table_cw = NULL;
}

START_TEST(test_table_find_and_reuse)
{
	struct rl_table *t = rl_table_new(64, 10 * SEC);
	ck_assert_ptr_nonnull(t);
	bool fresh;
	struct rl_entry *e = rl_table_acquire(t, "1.2.3.4", 7, 1, &fresh, table_cw);
	ck_assert(fresh);
	e->lease = 42;
	rl_table_release(t, e);
	e = rl_table_acquire(t, "1.2.3.4", 7, 2, &fresh, table_cw);
	ck_assert(!fresh);
	ck_assert_uint_eq(e->lease, 42);
	rl_table_release(t, e);
	ck_assert_ptr_null(rl_table_find(t, "1.2.3.5", 7));
	e = rl_table_find(t, "1.2.3.4", 7);
	ck_assert_ptr_nonnull(e);
	rl_table_release(t, e);
	ck_assert_uint_eq(ctr_global_own(table_cw, CTR_RL_EVICTIONS), 0);
	rl_table_free(t);
}
END_TEST

START_TEST(test_table_bounded_under_flood)
{
	/* 100k distinct keys into 1024 slots: memory fixed, evictions counted */
	struct rl_table *t = rl_table_new(1024, 3600 * SEC);
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(rl_table_slots(t), 1024);
	char key[32];
	for (unsigned i = 0; i < 100000; i++) {
		int n = snprintf(key, sizeof key, "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
		bool fresh;
		struct rl_entry *e = rl_table_acquire(t, key, (size_t)n, 1000 + i, &fresh, table_cw);
		ck_assert(fresh);
		rl_table_release(t, e);
	}
	ck_assert_uint_ge(ctr_global_own(table_cw, CTR_RL_EVICTIONS), 100000 - 1024);
	ck_assert_uint_le(ctr_global_own(table_cw, CTR_RL_EVICTIONS), 100000);
	/* the most recent keys survive (least recently used go first) */
	bool fresh;
	struct rl_entry *e = rl_table_acquire(t, key, strlen(key), 200000, &fresh, table_cw);
	ck_assert(!fresh);
	rl_table_release(t, e);
	rl_table_free(t);
}
END_TEST

START_TEST(test_table_idle_expiry)
{
	struct rl_table *t = rl_table_new(8, 5 * SEC); /* one set of 8 */
	char key[8];
	bool fresh;
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof key, "k%d", i);
		rl_table_release(t, rl_table_acquire(t, key, 2, SEC, &fresh, table_cw));
	}
	/* all idle by now: reusing one is an expiry, not an eviction */
	rl_table_release(t, rl_table_acquire(t, "zz", 2, 100 * SEC, &fresh, table_cw));
	ck_assert(fresh);
	ck_assert_uint_eq(ctr_global_own(table_cw, CTR_RL_EXPIRED), 1);
	ck_assert_uint_eq(ctr_global_own(table_cw, CTR_RL_EVICTIONS), 0);
	/* none idle: the least recently used is evicted */
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof key, "n%d", i);
		rl_table_release(t, rl_table_acquire(t, key, 2, 100 * SEC + (uint64_t)i, &fresh, table_cw));
	}
	ck_assert_uint_ge(ctr_global_own(table_cw, CTR_RL_EVICTIONS), 1);
	rl_table_free(t);
}
END_TEST

/* ---- config ---- */

#define BASE                                                                                                    \
	"listeners = { { name = 'p', address = '127.0.0.1:8080' } }, pools = { web = { servers = { { address = " \
	"'127.0.0.1:9000' } } } }, "

static struct conf *load(const char *src, struct conf_errors *e)
{
	conf_errors_init(e);
	return conf_load_string("test.lua", src, e);
}

static bool has(const struct conf_errors *e, const char *part)
{
	for (size_t i = 0; i < e->count; i++)
		if (strstr(e->msgs[i], part))
			return true;
	return false;
}

static void expect(const char *src, const char *part)
{
	struct conf_errors e;
	struct conf *c = load(src, &e);
	ck_assert_msg(c == NULL, "expected an error containing: %s", part);
	if (!has(&e, part)) {
		for (size_t i = 0; i < e.count; i++)
			fprintf(stderr, "  got: %s\n", e.msgs[i]);
		ck_abort_msg("expected an error containing: %s", part);
	}
	conf_errors_free(&e);
}

START_TEST(test_conf_full)
{
	FILE *f = fopen("check_ratelimit.pw", "w");
	ck_assert_ptr_nonnull(f);
	fputs("s3cret\n", f);
	fclose(f);
	struct conf_errors e;
	struct conf *c = load(
	    "return { " BASE
	    "rate_limits = {"
	    "  per_client = { key = 'client_ip', rate = 100, per = '1s', burst = 200 },"
	    "  per_token = { key = 'header:Authorization', rate = 1000, per = '1m', burst = 100, shared = true },"
	    "  login = { key = { 'client_ip', 'path', 'cookie:sid' }, rate = 5, per = '1m', shared = true, headers = true },"
	    "},"
	    "redis = { address = '127.0.0.1:6390', password_file = 'check_ratelimit.pw', db = 2, timeout = '15ms',"
	    "          on_failure = 'deny' },"
	    "routes = { { match = { path_prefix = '/api/' }, pool = 'web', rate_limit = { 'per_client', 'per_token' } },"
	    "           { match = { path = '/login' }, pool = 'web', rate_limit = 'login' } } }",
	    &e);
	remove("check_ratelimit.pw");
	ck_assert_msg(c != NULL, "load failed: %s", e.count ? e.msgs[0] : "?");
	ck_assert_uint_eq(c->num_rate_limits, 3);
	int login = -1, token = -1, client = -1;
	for (size_t i = 0; i < c->num_rate_limits; i++) {
		if (strcmp(c->rate_limits[i].name, "login") == 0)
			login = (int)i;
		if (strcmp(c->rate_limits[i].name, "per_token") == 0)
			token = (int)i;
		if (strcmp(c->rate_limits[i].name, "per_client") == 0)
			client = (int)i;
	}
	ck_assert(login >= 0 && token >= 0 && client >= 0);
	const struct conf_rate_limit *l = &c->rate_limits[login];
	ck_assert_uint_eq(l->num_keys, 3);
	ck_assert_int_eq(l->keys[1].kind, CONF_RL_KEY_PATH);
	ck_assert_int_eq(l->keys[2].kind, CONF_RL_KEY_COOKIE);
	ck_assert_str_eq(l->keys[2].name, "sid");
	ck_assert_uint_eq(l->burst, 5); /* defaults to rate */
	ck_assert(l->shared && l->headers);
	ck_assert_str_eq(c->rate_limits[token].keys[0].name, "authorization"); /* lower-cased */
	ck_assert_uint_eq(c->rate_limits[token].per, 60000);
	ck_assert_uint_eq(c->rate_limits[client].batch, 100);
	ck_assert(c->redis.enabled);
	ck_assert_str_eq(c->redis.host, "127.0.0.1");
	ck_assert_int_eq(c->redis.port, 6390);
	ck_assert_str_eq(c->redis.password, "s3cret");
	ck_assert_uint_eq(c->redis.db, 2);
	ck_assert_uint_eq(c->redis.timeout, 15);
	ck_assert_int_eq(c->redis.on_failure, CONF_REDIS_FAIL_DENY);
	ck_assert_uint_eq(c->routes[0].num_rate_limits, 2);
	ck_assert_uint_eq(c->routes[0].rate_limits[0], (size_t)client);
	ck_assert_uint_eq(c->routes[0].rate_limits[1], (size_t)token);
	ck_assert_uint_eq(c->routes[1].num_rate_limits, 1);
	ck_assert_uint_eq(c->routes[1].rate_limits[0], (size_t)login);
	conf_free(c);
	conf_errors_free(&e);
}
END_TEST

START_TEST(test_conf_errors)
{
	expect("return { " BASE "rate_limits = { per_client = { key = 'client_ip', rate = 1, per = '1s' } },"
	       "routes = { { match = { path = '/' }, pool = 'web', rate_limit = { 'per_clinet' } } } }",
	       "routes[1].rate_limit[1]: unknown rate limit \"per_clinet\" (did you mean \"per_client\"?)");
	expect("return { " BASE "routes = { { match = { path = '/' }, pool = 'web', rate_limit = 'x' } } }",
	       "unknown rate limit \"x\" (no rate_limits are defined");
	expect("return { " BASE "rate_limits = { a = { key = 'client_ip', rate = 1, per = '1s', shared = true } } }",
	       "rate_limits.a.shared: a shared limit needs a `redis` section");
	expect("return { " BASE "rate_limits = { a = { key = 'ip', rate = 1, per = '1s' } } }",
	       "rate_limits.a.key: unknown key \"ip\" (expected client_ip, path, route, host, header:NAME, cookie:NAME or policy:NAME)");
	expect("return { " BASE "rate_limits = { a = { key = 'header:', rate = 1, per = '1s' } } }",
	       "must be a non-empty token");
	expect("return { " BASE "rate_limits = { a = { key = 'client_ip', per = '1s' } } }",
	       "rate_limits.a.rate: missing");
	expect("return { " BASE "rate_limits = { a = { key = 'client_ip', rate = 0, per = '1s' } } }",
	       "rate_limits.a.rate:");
	expect("return { " BASE "rate_limits = { a = { key = 'client_ip', rate = 1, per = '1h', burst = 1000000000 } } }",
	       "burst x per is too large");
	expect("return { " BASE "rate_limits = { a = { key = 'client_ip', rate = 1, per = '1s', sharde = true } } }",
	       "sharde");
	expect("return { " BASE "redis = { address = '127.0.0.1:6379', on_failure = 'open' } }",
	       "redis.on_failure: unknown value \"open\" (expected \"local\", \"allow\" or \"deny\")");
	expect("return { " BASE "redis = { address = '127.0.0.1:6379', password_file = '/nonexistent/pw' } }",
	       "redis.password_file: cannot read \"/nonexistent/pw\"");
	expect("return { " BASE "redis = { timeout = '20ms' } }", "redis.address: missing");
	expect("return { " BASE "rate_limits = { a = { key = 'client_ip', rate = 1, per = '1s' } },"
	       "routes = { { match = { path = '/' }, pool = 'web', rate_limit = { 'a', 'a' } } } }",
	       "rate limit \"a\" is listed twice");
}
END_TEST

static Suite *ratelimit_suite(void)
{
	Suite *s = suite_create("ratelimit");
	TCase *bucket = tcase_create("bucket");
	tcase_add_test(bucket, test_bucket_starts_full_and_drains);
	tcase_add_test(bucket, test_bucket_refill_exact);
	tcase_add_test(bucket, test_bucket_burst_caps_refill);
	tcase_add_test(bucket, test_bucket_clock_jumps);
	tcase_add_test(bucket, test_rate_limits_checked);
	tcase_add_test(bucket, test_rate_split);
	tcase_add_test(bucket, test_lease_policy);
	tcase_add_test(bucket, test_lease_sizing);
	suite_add_tcase(s, bucket);
	TCase *table = tcase_create("table");
	tcase_add_checked_fixture(table, table_setup, table_teardown);
	tcase_add_test(table, test_table_find_and_reuse);
	tcase_add_test(table, test_table_bounded_under_flood);
	tcase_add_test(table, test_table_idle_expiry);
	suite_add_tcase(s, table);
	TCase *conf = tcase_create("conf");
	tcase_add_test(conf, test_conf_full);
	tcase_add_test(conf, test_conf_errors);
	suite_add_tcase(s, conf);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ratelimit_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
