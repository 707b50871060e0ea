/* Unit tests for the small shared pieces: arena, reasons, JSON escaping,
 * time formatting, HTTP helpers, per-address counts (one owner's and the
 * process-wide table, with real threads). */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addrcount.h"
#include "arena.h"
#include "http.h"
#include "log.h"
#include "reason.h"

START_TEST(arena_alignment_and_reset)
{
	struct arena a;
	arena_init(&a, 64);
	char *p1 = arena_alloc(&a, 3);
	char *p2 = arena_alloc(&a, 5);
	ck_assert_uint_eq((uintptr_t)p1 % 16, 0);
	ck_assert_uint_eq((uintptr_t)p2 % 16, 0);
	ck_assert_ptr_ne(p1, p2);
	/* larger than a block: gets its own block */
	char *big = arena_alloc(&a, 1000);
	memset(big, 'x', 1000);
	char *s = arena_strndup(&a, "hello world", 5);
	ck_assert_str_eq(s, "hello");
	arena_reset(&a);
	/* after reset the first block is reused */
	char *p3 = arena_alloc(&a, 3);
	ck_assert_ptr_nonnull(p3);
	arena_free(&a);
	ck_assert_ptr_null(a.head);
}
END_TEST

START_TEST(arena_many_allocations)
{
	struct arena a;
	arena_init(&a, 4096);
	for (int round = 0; round < 100; round++) {
		for (int i = 0; i < 1000; i++) {
			char *p = arena_alloc(&a, (size_t)(i % 97) + 1);
			p[0] = 'a';
		}
		arena_reset(&a);
	}
	arena_free(&a);
}
END_TEST

START_TEST(reason_names_are_fixed)
{
	ck_assert_str_eq(reason_name(REASON_NONE), "");
	ck_assert_str_eq(reason_name(REASON_NO_ROUTE), "no_route");
	ck_assert_str_eq(reason_name(REASON_UPSTREAM_TIMEOUT), "upstream_timeout");
	ck_assert_str_eq(reason_name(REASON_DRAINING), "draining");
	ck_assert_str_eq(reason_name(REASON__COUNT), "");
	/* every reason has a distinct snake_case name */
	for (int i = 1; i < REASON__COUNT; i++) {
		const char *n = reason_name((enum reason)i);
		ck_assert_uint_gt(strlen(n), 0);
		for (const char *c = n; *c; c++)
			ck_assert(*c == '_' || (*c >= 'a' && *c <= 'z'));
		for (int k = i + 1; k < REASON__COUNT; k++)
			ck_assert_str_ne(n, reason_name((enum reason)k));
	}
}
END_TEST

START_TEST(json_escape_escapes_everything_unsafe)
{
	char out[64];
	size_t len = 0;
	const char in[] = "a\"b\\c\n\x01\xff";
	ck_assert_int_eq(log_json_escape(out, sizeof(out), &len, in, sizeof(in) - 1), 0);
	out[len] = '\0';
	ck_assert_str_eq(out, "a\\\"b\\\\c\\n\\u0001\\u00ff");
}
END_TEST

START_TEST(json_escape_truncates_without_splitting)
{
	char out[8];
	size_t len = 0;
	ck_assert_int_eq(log_json_escape(out, sizeof(out), &len, "abc\x01\x02", 5), -1);
	ck_assert_uint_eq(len, 3); /* "\u0001" does not fit after "abc" */
}
END_TEST

START_TEST(time_format_rfc3339)
{
	char ts[32];
	log_format_time(1795000000123456ull, ts);
	ck_assert_str_eq(ts, "2026-11-18T11:06:40.123Z");
	/* the second is cached per thread: the same second, the next, one before, far away */
	log_format_time(1795000000999999ull, ts);
	ck_assert_str_eq(ts, "2026-11-18T11:06:40.999Z");
	log_format_time(1795000001000000ull, ts);
	ck_assert_str_eq(ts, "2026-11-18T11:06:41.000Z");
	log_format_time(1795000000005000ull, ts);
	ck_assert_str_eq(ts, "2026-11-18T11:06:40.005Z");
	log_format_time(0, ts);
	ck_assert_str_eq(ts, "1970-01-01T00:00:00.000Z");
}
END_TEST

START_TEST(http_helpers)
{
	struct http_header hs[2] = {
	    {"Content-Type", 12, "text/plain", 10},
	    {"X-Request-ID", 12, "abc", 3},
	};
	ck_assert(http_name_is(&hs[0], "content-type"));
	ck_assert(!http_name_is(&hs[0], "content-typ"));
	ck_assert_int_eq(http_find_header(hs, 2, "x-request-id"), 1);
	ck_assert_int_eq(http_find_header(hs, 2, "via"), -1);
	ck_assert_str_eq(http_status_text(404), "Not Found");
	ck_assert_str_eq(http_status_text(599), "Unknown");
}
END_TEST

START_TEST(addrcount_caps_each_address)
{
	struct addrcount *t = addrcount_new();
	ck_assert_ptr_nonnull(t);
	ck_assert(addrcount_acquire(t, "192.0.2.1", 2));
	ck_assert(addrcount_acquire(t, "192.0.2.1", 2));
	ck_assert(!addrcount_acquire(t, "192.0.2.1", 2)); /* at its cap */
	ck_assert(addrcount_acquire(t, "2001:db8::1", 2)); /* another address is not */
	ck_assert_uint_eq(addrcount_get(t, "192.0.2.1"), 2);
	ck_assert_uint_eq(addrcount_size(t), 2);
	addrcount_release(t, "192.0.2.1");
	ck_assert(addrcount_acquire(t, "192.0.2.1", 2)); /* room again */
	addrcount_release(t, "192.0.2.1");
	addrcount_release(t, "192.0.2.1");
	ck_assert_uint_eq(addrcount_get(t, "192.0.2.1"), 0);
	ck_assert_uint_eq(addrcount_size(t), 1); /* an address at zero leaves the table */
	addrcount_release(t, "198.51.100.9"); /* never acquired: no effect */
	ck_assert(!addrcount_acquire(t, "198.51.100.9", 0));
	ck_assert_uint_eq(addrcount_size(t), 1);
	addrcount_free(t);
}
END_TEST

/* Many addresses come and go in a mixed order (growth, probe runs, backward
 * shifts on release): every count stays exact and the table ends empty. */
START_TEST(addrcount_many_addresses_churn)
{
	struct addrcount *t = addrcount_new();
	ck_assert_ptr_nonnull(t);
	enum { N = 5000 };
	static unsigned held[N];
	memset(held, 0, sizeof(held));
	char a[64];
	uint64_t x = 88172645463325252ull;
	for (int step = 0; step < 200000; step++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned i = (unsigned)(x % N);
		snprintf(a, sizeof(a), "10.%u.%u.%u", i / 65536, (i / 256) % 256, i % 256);
		if ((x >> 32) & 1) {
			bool ok = addrcount_acquire(t, a, 3);
			ck_assert(ok == (held[i] < 3));
			held[i] += ok;
		} else {
			addrcount_release(t, a);
			held[i] -= held[i] > 0;
		}
		if (step % 9973 == 0)
			for (unsigned j = 0; j < N; j++) {
				snprintf(a, sizeof(a), "10.%u.%u.%u", j / 65536, (j / 256) % 256, j % 256);
				ck_assert_uint_eq(addrcount_get(t, a), held[j]);
			}
	}
	size_t live = 0;
	for (unsigned j = 0; j < N; j++) {
		live += held[j] > 0;
		snprintf(a, sizeof(a), "10.%u.%u.%u", j / 65536, (j / 256) % 256, j % 256);
		while (held[j]--)
			addrcount_release(t, a);
	}
	ck_assert_uint_gt(live, 0);
	ck_assert_uint_eq(addrcount_size(t), 0);
	addrcount_free(t);
}
END_TEST

/* The key a client address counts under: IPv4 as itself (also IPv4-mapped),
 * IPv6 by /64, anything else as itself. */
START_TEST(addrcount_client_keys)
{
	char buf[ADDRCOUNT_KEY_MAX];
	const char *ip = "192.0.2.1";
	ck_assert_ptr_eq(addrcount_client_key(ip, buf), ip);
	ck_assert_str_eq(addrcount_client_key("::ffff:192.0.2.7", buf), "192.0.2.7");
	ck_assert_str_eq(addrcount_client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", buf), "2001:db8:1:2::/64");
	ck_assert_str_eq(addrcount_client_key("2001:db8:1:2::1", buf), "2001:db8:1:2::/64");
	ck_assert_str_eq(addrcount_client_key("2001:db8:1:3::1", buf), "2001:db8:1:3::/64");
	ck_assert_str_eq(addrcount_client_key("::1", buf), "::/64");
	ck_assert_str_eq(addrcount_client_key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", buf), "ffff:ffff:ffff:ffff::/64");
	ck_assert_str_eq(addrcount_client_key("", buf), "");
	ck_assert_str_eq(addrcount_client_key("not:an:address", buf), "not:an:address");
}
END_TEST

/* The process-wide table: a cap per key, a /64 counted as one, "" never
 * counted, hold without a cap, release back to empty; a NULL table counts
 * nothing. */
START_TEST(addrcount_shared_caps_by_client_key)
{
	struct addrcount_shared *t = addrcount_shared_new();
	ck_assert_ptr_nonnull(t);
	ck_assert(addrcount_shared_acquire(t, "2001:db8::1", 2));
	ck_assert(addrcount_shared_acquire(t, "2001:db8::ffff:2", 2)); /* the same /64 */
	ck_assert(!addrcount_shared_acquire(t, "2001:db8::3", 2));
	ck_assert(addrcount_shared_acquire(t, "2001:db8:0:1::1", 2)); /* the next /64 */
	ck_assert_uint_eq(addrcount_shared_get(t, "2001:db8::9"), 2);
	ck_assert(addrcount_shared_acquire(t, "192.0.2.1", 1));
	ck_assert(!addrcount_shared_acquire(t, "::ffff:192.0.2.1", 1)); /* the same IPv4 client */
	ck_assert(addrcount_shared_acquire(t, "192.0.2.2", 1));
	ck_assert_uint_eq(addrcount_shared_size(t), 4);
	/* a hold while one is held: no cap */
	addrcount_shared_hold(t, "192.0.2.1");
	ck_assert_uint_eq(addrcount_shared_get(t, "192.0.2.1"), 2);
	/* no address: admitted, never counted */
	ck_assert(addrcount_shared_acquire(t, "", 1));
	ck_assert(addrcount_shared_acquire(t, "", 1));
	addrcount_shared_release(t, "");
	ck_assert_uint_eq(addrcount_shared_size(t), 4);
	addrcount_shared_release(t, "192.0.2.1");
	addrcount_shared_release(t, "::ffff:192.0.2.1");
	addrcount_shared_release(t, "192.0.2.2");
	addrcount_shared_release(t, "2001:db8::1");
	addrcount_shared_release(t, "2001:db8::abcd"); /* any address of the /64 gives back its one */
	addrcount_shared_release(t, "2001:db8:0:1::1");
	ck_assert_uint_eq(addrcount_shared_size(t), 0);
	ck_assert(addrcount_shared_acquire(t, "2001:db8::3", 2));
	addrcount_shared_release(t, "2001:db8::3");
	addrcount_shared_free(t);
	ck_assert(addrcount_shared_acquire(NULL, "192.0.2.1", 1));
	addrcount_shared_hold(NULL, "192.0.2.1");
	addrcount_shared_release(NULL, "192.0.2.1");
	ck_assert_uint_eq(addrcount_shared_get(NULL, "192.0.2.1"), 0);
}
END_TEST

/* Workers on threads of their own: each takes and gives back connections
 * of a few shared addresses under a cap, checking the cap from the table
 * (a count above it is an admission the lock let through twice), and holds
 * a second one now and then as a hand-over does. At the end every count is
 * back to 0. */
enum { SHARED_THREADS = 4, SHARED_ADDRS = 8, SHARED_CAP = 3 };
static struct addrcount_shared *shared_table;
static atomic_uint shared_over_cap;

static void *shared_worker(void *arg)
{
	uint64_t x = 0x9E3779B97F4A7C15ull * (uintptr_t)arg + 1;
	char addrs[SHARED_ADDRS][48];
	for (unsigned i = 0; i < SHARED_ADDRS; i++) {
		if (i % 2) /* any address of the /64: one key for every thread */
			snprintf(addrs[i], sizeof(addrs[i]), "2001:db8:%u::%u", i, (unsigned)(uintptr_t)arg + 1);
		else
			snprintf(addrs[i], sizeof(addrs[i]), "198.51.100.%u", i);
	}
	unsigned held[SHARED_ADDRS] = {0};
	for (int step = 0; step < 100000; step++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned i = (unsigned)(x % SHARED_ADDRS);
		if (((x >> 32) & 3) != 0 && held[i] < SHARED_CAP) {
			if (addrcount_shared_acquire(shared_table, addrs[i], SHARED_CAP)) {
				held[i]++;
				if (addrcount_shared_get(shared_table, addrs[i]) > SHARED_CAP + SHARED_THREADS)
					atomic_fetch_add(&shared_over_cap, 1);
				if ((x >> 40) & 1) { /* a hand-over: the new object holds before the old gives back */
					addrcount_shared_hold(shared_table, addrs[i]);
					addrcount_shared_release(shared_table, addrs[i]);
				}
			}
		} else if (held[i]) {
			addrcount_shared_release(shared_table, addrs[i]);
			held[i]--;
		}
	}
	for (unsigned i = 0; i < SHARED_ADDRS; i++)
		while (held[i]--)
			addrcount_shared_release(shared_table, addrs[i]);
	return NULL;
}

START_TEST(addrcount_shared_across_threads)
{
	shared_table = addrcount_shared_new();
	ck_assert_ptr_nonnull(shared_table);
	atomic_store(&shared_over_cap, 0);
	pthread_t th[SHARED_THREADS];
	for (uintptr_t i = 0; i < SHARED_THREADS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, shared_worker, (void *)i), 0);
	for (unsigned i = 0; i < SHARED_THREADS; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	ck_assert_uint_eq(atomic_load(&shared_over_cap), 0);
	ck_assert_uint_eq(addrcount_shared_size(shared_table), 0);
	addrcount_shared_free(shared_table);
}
END_TEST

static Suite *misc_suite(void)
{
	Suite *s = suite_create("misc");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, arena_alignment_and_reset);
	tcase_add_test(tc, arena_many_allocations);
	tcase_add_test(tc, reason_names_are_fixed);
	tcase_add_test(tc, json_escape_escapes_everything_unsafe);
	tcase_add_test(tc, json_escape_truncates_without_splitting);
	tcase_add_test(tc, time_format_rfc3339);
	tcase_add_test(tc, http_helpers);
	tcase_add_test(tc, addrcount_caps_each_address);
	tcase_add_test(tc, addrcount_many_addresses_churn);
	tcase_add_test(tc, addrcount_client_keys);
	tcase_add_test(tc, addrcount_shared_caps_by_client_key);
	tcase_add_test(tc, addrcount_shared_across_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(misc_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
