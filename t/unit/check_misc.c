/* Unit tests for the small shared pieces: arena, reasons, JSON escaping,
 * time formatting, HTTP helpers, per-address counts. */
#include <check.h>
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
