#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Deterministic pseudo-random numbers (splitmix64) so that every run sees
 * the same inputs and a failure can be reproduced. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void expect_sequence(int64_t *current, const unsigned *weights, const bool *eligible, size_t n,
                            const int *expected, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		int got = balance_swrr_next(current, weights, eligible, n);
		ck_assert_msg(got == expected[i], "pick %zu: got %d, want %d", i, got, expected[i]);
	}
}

/* ---- smooth weighted round robin --------------------------------------- */

START_TEST(test_swrr_three_one)
{
	const unsigned weights[] = { 3, 1 };
	const bool eligible[] = { true, true };
	int64_t current[2] = { 0 };
	/* the same interleaved cycle, not aaab, every time round */
	const int cycle[] = { 0, 0, 1, 0 };
	for (int round = 0; round < 50; round++)
		expect_sequence(current, weights, eligible, 2, cycle, COUNT_OF(cycle));
}
END_TEST

START_TEST(test_swrr_five_one_one)
{
	const unsigned weights[] = { 5, 1, 1 };
	const bool eligible[] = { true, true, true };
	int64_t current[3] = { 0 };
	const int cycle[] = { 0, 0, 1, 0, 2, 0, 0 };
	for (int round = 0; round < 50; round++)
		expect_sequence(current, weights, eligible, 3, cycle, COUNT_OF(cycle));
}
END_TEST

START_TEST(test_swrr_exact_per_cycle)
{
	const unsigned weights[] = { 7, 0, 2, 4, 1 };
	const bool eligible[] = { true, true, true, true, true };
	int64_t current[5] = { 0 };
	const unsigned total = 14;
	for (int round = 0; round < 20; round++) {
		unsigned counts[5] = { 0 };
		for (unsigned i = 0; i < total; i++) {
			int got = balance_swrr_next(current, weights, eligible, 5);
			ck_assert_int_ge(got, 0);
			counts[got]++;
		}
		for (size_t s = 0; s < 5; s++)
			ck_assert_uint_eq(counts[s], weights[s]);
	}
}
END_TEST

START_TEST(test_swrr_skips_ineligible)
{
	const unsigned weights[] = { 3, 2, 1 };
	bool eligible[] = { true, false, true };
	int64_t current[3] = { 0 };
	unsigned counts[3] = { 0 };
	for (int i = 0; i < 400; i++)
		counts[balance_swrr_next(current, weights, eligible, 3)]++;
	ck_assert_uint_eq(counts[0], 300);
	ck_assert_uint_eq(counts[1], 0);
	ck_assert_uint_eq(counts[2], 100);

	/* back in service: it gets its share again */
	eligible[1] = true;
	unsigned after[3] = { 0 };
	for (int i = 0; i < 600; i++)
		after[balance_swrr_next(current, weights, eligible, 3)]++;
	ck_assert_uint_eq(after[0], 300);
	ck_assert_uint_eq(after[1], 200);
	ck_assert_uint_eq(after[2], 100);
}
END_TEST

START_TEST(test_swrr_none_eligible)
{
	const unsigned weights[] = { 3, 1, 0 };
	const bool none[] = { false, false, true };
	int64_t current[3] = { 0 };
	ck_assert_int_eq(balance_swrr_next(current, weights, none, 3), -1);
	ck_assert_int_eq(current[0], 0);
	ck_assert_int_eq(current[1], 0);
	ck_assert_int_eq(current[2], 0);

	const unsigned zero[] = { 0, 0 };
	const bool all[] = { true, true };
	ck_assert_int_eq(balance_swrr_next(current, zero, all, 2), -1);
	ck_assert_int_eq(balance_swrr_next(current, weights, all, 0), -1);
}
END_TEST

/* ---- least connections ------------------------------------------------- */

START_TEST(test_least_conn_fewest_active)
{
	const unsigned active[] = { 10, 3, 7 };
	const unsigned weights[] = { 1, 1, 1 };
	const bool eligible[] = { true, true, true };
	size_t cursor = 0;
	ck_assert_int_eq(balance_least_conn(active, weights, eligible, 3, &cursor), 1);
	ck_assert_uint_eq(cursor, 1);
}
END_TEST

START_TEST(test_least_conn_weights)
{
	const bool eligible[] = { true, true };
	size_t cursor = 0;
	/* 4/1 against 6/2: the heavier server is less loaded */
	const unsigned active_a[] = { 4, 6 }, weights_a[] = { 1, 2 };
	ck_assert_int_eq(balance_least_conn(active_a, weights_a, eligible, 2, &cursor), 1);
	/* 5/1 against 12/2 */
	const unsigned active_b[] = { 5, 12 }, weights_b[] = { 1, 2 };
	ck_assert_int_eq(balance_least_conn(active_b, weights_b, eligible, 2, &cursor), 0);
	/* large counts and weights: cross-multiplication must not overflow */
	const unsigned active_c[] = { 4000000000u, 3999999999u }, weights_c[] = { 1000, 999 };
	ck_assert_int_eq(balance_least_conn(active_c, weights_c, eligible, 2, &cursor), 0);
}
END_TEST

START_TEST(test_least_conn_ties_rotate)
{
	const unsigned active[] = { 0, 0, 0 };
	const unsigned weights[] = { 1, 1, 1 };
	const bool eligible[] = { true, true, true };
	size_t cursor = 0;
	const int expected[] = { 1, 2, 0, 1, 2, 0 };
	for (size_t i = 0; i < COUNT_OF(expected); i++)
		ck_assert_int_eq(balance_least_conn(active, weights, eligible, 3, &cursor), expected[i]);

	/* equal ratios with different weights are ties too: 2/1 == 4/2 */
	const unsigned active_w[] = { 2, 4, 9 };
	const unsigned weights_w[] = { 1, 2, 1 };
	cursor = 0;
	ck_assert_int_eq(balance_least_conn(active_w, weights_w, eligible, 3, &cursor), 1);
	ck_assert_int_eq(balance_least_conn(active_w, weights_w, eligible, 3, &cursor), 0);
	ck_assert_int_eq(balance_least_conn(active_w, weights_w, eligible, 3, &cursor), 1);
}
END_TEST

START_TEST(test_least_conn_skips_ineligible_and_zero_weight)
{
	const unsigned active[] = { 0, 0, 5, 9 };
	const unsigned weights[] = { 1, 0, 1, 1 };
	const bool eligible[] = { false, true, true, true };
	size_t cursor = 0;
	ck_assert_int_eq(balance_least_conn(active, weights, eligible, 4, &cursor), 2);

	const bool none[] = { false, true, false, false };
	cursor = 3;
	ck_assert_int_eq(balance_least_conn(active, weights, none, 4, &cursor), -1);
	ck_assert_uint_eq(cursor, 3);
	ck_assert_int_eq(balance_least_conn(active, weights, none, 0, &cursor), -1);
}
END_TEST

START_TEST(test_least_conn_cursor_beyond_pool)
{
	/* the pool may have shrunk on reload since the cursor was saved */
	const unsigned active[] = { 1, 1 };
	const unsigned weights[] = { 1, 1 };
	const bool eligible[] = { true, true };
	size_t cursor = 17;
	int got = balance_least_conn(active, weights, eligible, 2, &cursor);
	ck_assert(got == 0 || got == 1);
	ck_assert_uint_eq(cursor, (size_t)got);
}
END_TEST

/* ---- consistent hashing ring ------------------------------------------- */

#define RING_KEYS 10000

static uint64_t key_hash(int k)
{
	char key[32];
	int len = snprintf(key, sizeof(key), "client-%d", k);
	ck_assert(len > 0 && (size_t)len < sizeof(key));
	return balance_hash(key, (size_t)len, 0x5eed);
}

static void ring_owners(const struct balance_ring *r, const bool *eligible, int *owners)
{
	for (int k = 0; k < RING_KEYS; k++)
		owners[k] = balance_ring_pick(r, key_hash(k), eligible);
}

static const char *const four_servers[] = { "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080" };

START_TEST(test_ring_even_distribution)
{
	const unsigned weights[] = { 1, 1, 1, 1 };
	const bool eligible[] = { true, true, true, true };
	struct balance_ring *r = balance_ring_build(four_servers, weights, 4);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(balance_ring_size(r), 4 * 160);
	int *owners = calloc(RING_KEYS, sizeof(int));
	ck_assert_ptr_nonnull(owners);
	ring_owners(r, eligible, owners);
	unsigned counts[4] = { 0 };
	for (int k = 0; k < RING_KEYS; k++) {
		ck_assert(owners[k] >= 0 && owners[k] < 4);
		counts[owners[k]]++;
	}
	for (int s = 0; s < 4; s++)
		ck_assert_msg(counts[s] >= 2000 && counts[s] <= 3000, "server %d owns %u of %d keys", s, counts[s],
		              RING_KEYS);
	free(owners);
	balance_ring_free(r);
}
END_TEST

START_TEST(test_ring_removal_moves_only_its_keys)
{
	const unsigned weights[] = { 1, 1, 1, 1 };
	bool eligible[] = { true, true, true, true };
	struct balance_ring *r = balance_ring_build(four_servers, weights, 4);
	ck_assert_ptr_nonnull(r);
	int *before = calloc(RING_KEYS, sizeof(int));
	int *after = calloc(RING_KEYS, sizeof(int));
	ck_assert(before != NULL && after != NULL);
	ring_owners(r, eligible, before);
	eligible[2] = false;
	ring_owners(r, eligible, after);

	unsigned moved = 0, moved_to[4] = { 0 };
	for (int k = 0; k < RING_KEYS; k++) {
		ck_assert_int_ne(after[k], 2);
		ck_assert_int_ge(after[k], 0);
		if (before[k] != 2) {
			ck_assert_int_eq(after[k], before[k]);
		} else {
			moved++;
			moved_to[after[k]]++;
		}
	}
	ck_assert(moved >= 2000 && moved <= 3000);
	/* the orphaned keys spread over the survivors rather than piling onto
	 * one neighbour */
	for (int s = 0; s < 4; s++)
		if (s != 2)
			ck_assert_msg(moved_to[s] > moved / 6, "server %d took %u of %u moved keys", s, moved_to[s], moved);
	free(before);
	free(after);
	balance_ring_free(r);
}
END_TEST

START_TEST(test_ring_addition_moves_keys_only_to_newcomer)
{
	const char *const five_servers[] = { "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080",
		                             "10.0.0.5:8080" };
	const unsigned weights[] = { 1, 1, 1, 1, 1 };
	const bool eligible[] = { true, true, true, true, true };
	struct balance_ring *four = balance_ring_build(four_servers, weights, 4);
	struct balance_ring *five = balance_ring_build(five_servers, weights, 5);
	ck_assert(four != NULL && five != NULL);
	unsigned moved = 0;
	for (int k = 0; k < RING_KEYS; k++) {
		uint64_t h = key_hash(k);
		int old_owner = balance_ring_pick(four, h, eligible);
		int new_owner = balance_ring_pick(five, h, eligible);
		if (old_owner != new_owner) {
			ck_assert_int_eq(new_owner, 4);
			moved++;
		}
	}
	ck_assert(moved >= 1500 && moved <= 2500);
	balance_ring_free(four);
	balance_ring_free(five);
}
END_TEST

START_TEST(test_ring_weights)
{
	const char *const names[] = { "a:80", "b:80", "c:80" };
	const unsigned weights[] = { 1, 3, 0 };
	const bool eligible[] = { true, true, true };
	struct balance_ring *r = balance_ring_build(names, weights, 3);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(balance_ring_size(r), 4 * 160);
	unsigned counts[3] = { 0 };
	for (int k = 0; k < RING_KEYS; k++) {
		int owner = balance_ring_pick(r, key_hash(k), eligible);
		ck_assert(owner == 0 || owner == 1);
		counts[owner]++;
	}
	ck_assert(counts[0] >= 2000 && counts[0] <= 3000);
	ck_assert(counts[1] >= 7000 && counts[1] <= 8000);

	/* the only eligible server owns no points: nothing can be picked */
	const bool only_zero_weight[] = { false, false, true };
	ck_assert_int_eq(balance_ring_pick(r, key_hash(1), only_zero_weight), -1);
	balance_ring_free(r);
}
END_TEST

START_TEST(test_ring_is_deterministic)
{
	const unsigned weights[] = { 2, 1, 1, 5 };
	const bool eligible[] = { true, true, true, true };
	struct balance_ring *a = balance_ring_build(four_servers, weights, 4);
	struct balance_ring *b = balance_ring_build(four_servers, weights, 4);
	ck_assert(a != NULL && b != NULL);
	for (int k = 0; k < 2000; k++)
		ck_assert_int_eq(balance_ring_pick(a, key_hash(k), eligible), balance_ring_pick(b, key_hash(k), eligible));
	/* the extremes of the hash space wrap to the first point */
	ck_assert_int_ge(balance_ring_pick(a, 0, eligible), 0);
	ck_assert_int_eq(balance_ring_pick(a, UINT64_MAX, eligible), balance_ring_pick(a, 0, eligible));
	balance_ring_free(a);
	balance_ring_free(b);
}
END_TEST

START_TEST(test_ring_none_eligible_and_empty)
{
	const unsigned weights[] = { 1, 1, 1, 1 };
	const bool none[] = { false, false, false, false };
	struct balance_ring *r = balance_ring_build(four_servers, weights, 4);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(balance_ring_pick(r, key_hash(7), none), -1);
	balance_ring_free(r);

	struct balance_ring *empty = balance_ring_build(NULL, NULL, 0);
	ck_assert_ptr_nonnull(empty);
	ck_assert_uint_eq(balance_ring_size(empty), 0);
	ck_assert_int_eq(balance_ring_pick(empty, 1, NULL), -1);
	balance_ring_free(empty);
	balance_ring_free(NULL);
}
END_TEST

START_TEST(test_ring_is_capped)
{
	enum { SERVERS = 300 };
	char (*storage)[32] = calloc(SERVERS, sizeof(*storage));
	const char **names = calloc(SERVERS, sizeof(*names));
	unsigned *weights = calloc(SERVERS, sizeof(*weights));
	bool *eligible = calloc(SERVERS, sizeof(*eligible));
	ck_assert(storage != NULL && names != NULL && weights != NULL && eligible != NULL);
	for (int i = 0; i < SERVERS; i++) {
		snprintf(storage[i], sizeof(storage[i]), "10.1.%d.%d:80", i / 256, i % 256);
		names[i] = storage[i];
		/* one heavy server and many light ones: each light one must keep a point */
		weights[i] = i == 0 ? 1000 : 1;
	}
	struct balance_ring *r = balance_ring_build(names, weights, SERVERS);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_le(balance_ring_size(r), 65535);
	ck_assert_uint_ge(balance_ring_size(r), 65535 - SERVERS);
	/* every light server still owns keys: only it eligible, it is found */
	for (int i = 1; i < SERVERS; i += 37) {
		memset(eligible, 0, SERVERS * sizeof(*eligible));
		eligible[i] = true;
		ck_assert_int_eq(balance_ring_pick(r, key_hash(i), eligible), i);
	}
	balance_ring_free(r);
	free(storage);
	free(names);
	free(weights);
	free(eligible);
}
END_TEST

/* ---- weighted pick ----------------------------------------------------- */

START_TEST(test_weighted_pick_proportions)
{
	const unsigned weights[] = { 1, 0, 2, 7 };
	unsigned counts[4] = { 0 }, out_of_range = 0;
	uint64_t rng = 1;
	const unsigned draws = 200000;
	for (unsigned i = 0; i < draws; i++) {
		int got = balance_weighted_pick(weights, 4, next_random(&rng));
		if (got >= 0 && got < 4)
			counts[got]++;
		else
			out_of_range++;
	}
	ck_assert_uint_eq(out_of_range, 0);
	ck_assert_uint_eq(counts[1], 0);
	/* within 1% of the draws of the exact share */
	const unsigned expected[] = { draws / 10, 0, draws / 5, draws * 7 / 10 };
	for (int s = 0; s < 4; s++)
		ck_assert_msg(counts[s] + draws / 100 >= expected[s] && counts[s] <= expected[s] + draws / 100,
		              "choice %d: %u of %u", s, counts[s], draws);
}
END_TEST

START_TEST(test_weighted_pick_edges)
{
	const unsigned weights[] = { 0, 5, 0, 3, 0 };
	ck_assert_int_eq(balance_weighted_pick(weights, 5, 0), 1);
	ck_assert_int_eq(balance_weighted_pick(weights, 5, UINT64_MAX), 3);
	/* 5/8 of the range is the boundary between the two choices */
	ck_assert_int_eq(balance_weighted_pick(weights, 5, (UINT64_MAX / 8) * 5 - 1), 1);
	ck_assert_int_eq(balance_weighted_pick(weights, 5, (UINT64_MAX / 8) * 5 + 8), 3);
	const unsigned zero[] = { 0, 0 };
	ck_assert_int_eq(balance_weighted_pick(zero, 2, 12345), -1);
	ck_assert_int_eq(balance_weighted_pick(weights, 0, 12345), -1);
	const unsigned huge[] = { UINT32_MAX, UINT32_MAX, UINT32_MAX };
	ck_assert_int_eq(balance_weighted_pick(huge, 3, UINT64_MAX), 2);
}
END_TEST

START_TEST(test_weighted_pick_is_sticky_when_shifting)
{
	/* a 90/10 canary moved to 80/20: only clients who must move do, and
	 * they move towards the canary */
	const unsigned before[] = { 90, 10 };
	const unsigned after[] = { 80, 20 };
	unsigned moved = 0;
	for (int k = 0; k < RING_KEYS; k++) {
		uint64_t h = key_hash(k);
		int a = balance_weighted_pick(before, 2, h);
		int b = balance_weighted_pick(after, 2, h);
		if (a != b) {
			ck_assert_int_eq(a, 0);
			ck_assert_int_eq(b, 1);
			moved++;
		}
	}
	ck_assert(moved >= 800 && moved <= 1200);
}
END_TEST


/* ---- sticky service splits (rendezvous) ----------------------------------- */

enum { SPLIT_KEYS = 10000 };

static uint64_t uid_hash(int k)
{
	char key[32];
	int len = snprintf(key, sizeof key, "uid-%d", k);
	return balance_hash(key, (size_t)len, 0);
}

static const uint64_t SPLIT_SEEDS[] = { 0x1234567890abcdefULL, 0x0fedcba987654321ULL, 0x5555aaaa5555aaaaULL,
	                                0x0123012301230123ULL };

START_TEST(test_rendezvous_shift_moves_only_needed_keys)
{
	/* blue/green 90/10 -> 80/20 -> 50/50 -> 0/100 over 10,000 keys: each step
	 * moves about the share that must move, and only from blue to green */
	const unsigned steps[][2] = { { 90, 10 }, { 80, 20 }, { 50, 50 }, { 0, 100 } };
	const unsigned expect_moved[] = { 1000, 3000, 5000 };
	int *where = calloc(SPLIT_KEYS, sizeof *where);
	ck_assert_ptr_nonnull(where);
	unsigned green = 0;
	for (int k = 0; k < SPLIT_KEYS; k++) {
		where[k] = balance_rendezvous_pick(steps[0], SPLIT_SEEDS, 2, uid_hash(k));
		ck_assert_int_ge(where[k], 0);
		green += where[k] == 1;
	}
	ck_assert_msg(green >= 850 && green <= 1150, "green had %u of 10000 keys at 10%%", green);
	for (size_t s = 1; s < COUNT_OF(steps); s++) {
		unsigned moved = 0;
		for (int k = 0; k < SPLIT_KEYS; k++) {
			int now = balance_rendezvous_pick(steps[s], SPLIT_SEEDS, 2, uid_hash(k));
			if (now != where[k]) {
				ck_assert_msg(where[k] == 0 && now == 1, "key %d moved from green back to blue", k);
				moved++;
			}
			where[k] = now;
		}
		ck_assert_msg(moved + 200 >= expect_moved[s - 1] && moved <= expect_moved[s - 1] + 200,
		              "step %zu moved %u keys, expected about %u", s, moved, expect_moved[s - 1]);
	}
	free(where);
}
END_TEST

START_TEST(test_rendezvous_many_pools)
{
	/* a 70/20/10 split: shares within 2%; raising the third pool to 30 moves
	 * keys only to it, and none between the first two (their ratio holds) */
	const unsigned before[] = { 70, 20, 10 };
	const unsigned after[] = { 70, 20, 30 };
	unsigned count[3] = { 0 }, moved = 0;
	for (int k = 0; k < SPLIT_KEYS; k++) {
		uint64_t h = uid_hash(k);
		int a = balance_rendezvous_pick(before, SPLIT_SEEDS, 3, h);
		int b = balance_rendezvous_pick(after, SPLIT_SEEDS, 3, h);
		ck_assert_int_ge(a, 0);
		count[a]++;
		if (a != b) {
			ck_assert_msg(b == 2, "key %d moved from pool %d to %d", k, a, b);
			moved++;
		}
	}
	ck_assert_msg(count[0] >= 6800 && count[0] <= 7200, "pool 0: %u", count[0]);
	ck_assert_msg(count[1] >= 1800 && count[1] <= 2200, "pool 1: %u", count[1]);
	ck_assert_msg(count[2] >= 800 && count[2] <= 1200, "pool 2: %u", count[2]);
	/* 10% -> 25% of the keys: about 1,500 move */
	ck_assert_msg(moved >= 1300 && moved <= 1700, "moved %u", moved);
}
END_TEST

START_TEST(test_rendezvous_edges)
{
	const unsigned zero[] = { 0, 0, 0 };
	ck_assert_int_eq(balance_rendezvous_pick(zero, SPLIT_SEEDS, 3, 42), -1);
	ck_assert_int_eq(balance_rendezvous_pick(zero, SPLIT_SEEDS, 0, 42), -1);
	const unsigned only_second[] = { 0, 7, 0 };
	for (int k = 0; k < 1000; k++)
		ck_assert_int_eq(balance_rendezvous_pick(only_second, SPLIT_SEEDS, 3, uid_hash(k)), 1);
	/* weights are relative: 9/1 and 90/10 place every key alike */
	const unsigned small[] = { 9, 1 }, large[] = { 90, 10 };
	for (int k = 0; k < 1000; k++)
		ck_assert_int_eq(balance_rendezvous_pick(small, SPLIT_SEEDS, 2, uid_hash(k)),
		                 balance_rendezvous_pick(large, SPLIT_SEEDS, 2, uid_hash(k)));
}
END_TEST

/* ---- hash -------------------------------------------------------------- */

START_TEST(test_hash_known_values)
{
	/* pinned: sticky placement must not change between versions or
	 * platforms, or every client would move on upgrade */
	static const struct {
		const char *input;
		uint64_t seed;
		uint64_t hash;
	} vectors[] = {
		{ "", 0, 0x8f1ff72059d66526ULL },
		{ "a", 0, 0xd3db7f67016ff3f1ULL },
		{ "abc", 0, 0x6e9ee108e31c90e2ULL },
		{ "abcd", 0, 0x641d67e2d7bb7248ULL },
		{ "hello, world", 0, 0x9cb98c5f76940391ULL },
		{ "0123456789abcdef", 0, 0x4f2714f521670899ULL },
		{ "0123456789abcdef0", 0, 0xc884fc7e37a3e1ddULL },
		{ "10.1.2.3:8080#159", 0, 0xce6951107f0f2252ULL },
		{ "The quick brown fox jumps over the lazy dog", 42, 0x175b190d63dff20aULL },
	};
	for (size_t i = 0; i < COUNT_OF(vectors); i++) {
		uint64_t got = balance_hash(vectors[i].input, strlen(vectors[i].input), vectors[i].seed);
		ck_assert_msg(got == vectors[i].hash, "\"%s\": got 0x%016" PRIx64, vectors[i].input, got);
	}
}
END_TEST

START_TEST(test_hash_deterministic_and_seeded)
{
	unsigned char buf[100];
	uint64_t rng = 7;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)next_random(&rng);
	for (size_t len = 0; len <= sizeof(buf); len++) {
		uint64_t h = balance_hash(buf, len, 99);
		ck_assert(h == balance_hash(buf, len, 99));
		ck_assert(h != balance_hash(buf, len, 100));
		ck_assert(h != balance_hash(buf, len, 0));
		if (len > 0)
			ck_assert(h != balance_hash(buf, len - 1, 99));
	}
	/* inputs that differ only by trailing zero bytes */
	const char zeros[8] = { 0 };
	for (size_t len = 0; len < 8; len++)
		ck_assert(balance_hash(zeros, len, 0) != balance_hash(zeros, len + 1, 0));
}
END_TEST

START_TEST(test_hash_no_collisions_on_similar_keys)
{
	enum { KEYS = 50000 };
	uint64_t *hashes = calloc(KEYS, sizeof(*hashes));
	ck_assert_ptr_nonnull(hashes);
	for (int k = 0; k < KEYS; k++)
		hashes[k] = key_hash(k);
	/* counted, then asserted once: Check records every assertion it passes */
	unsigned collisions = 0;
	for (int i = 0; i < KEYS; i++)
		for (int j = i + 1; j < KEYS && j < i + 64; j++)
			collisions += hashes[i] == hashes[j];
	ck_assert_uint_eq(collisions, 0);
	/* and the low bits alone spread evenly over 16 buckets */
	unsigned buckets[16] = { 0 };
	for (int k = 0; k < KEYS; k++)
		buckets[hashes[k] & 15]++;
	for (int b = 0; b < 16; b++)
		ck_assert(buckets[b] > KEYS / 16 * 9 / 10 && buckets[b] < KEYS / 16 * 11 / 10);
	free(hashes);
}
END_TEST

/* Flipping any one input bit should flip each output bit with probability
 * about 1/2. Checked for lengths that take each path through the hash. */
static void check_avalanche(size_t len)
{
	enum { TRIALS = 300 };
	unsigned char key[64];
	ck_assert_uint_le(len, sizeof(key));
	unsigned (*flips)[64] = calloc(len * 8, sizeof(*flips));
	ck_assert_ptr_nonnull(flips);
	uint64_t rng = 0xabcdef + len;
	uint64_t total_flipped = 0;
	for (int t = 0; t < TRIALS; t++) {
		for (size_t i = 0; i < len; i++)
			key[i] = (unsigned char)next_random(&rng);
		uint64_t seed = next_random(&rng);
		uint64_t base = balance_hash(key, len, seed);
		for (size_t bit = 0; bit < len * 8; bit++) {
			key[bit / 8] ^= (unsigned char)(1u << (bit % 8));
			uint64_t diff = base ^ balance_hash(key, len, seed);
			key[bit / 8] ^= (unsigned char)(1u << (bit % 8));
			for (int out = 0; out < 64; out++)
				if (diff >> out & 1) {
					flips[bit][out]++;
					total_flipped++;
				}
		}
	}
	double mean = (double)total_flipped / ((double)TRIALS * (double)len * 8.0 * 64.0);
	ck_assert_msg(mean > 0.48 && mean < 0.52, "len %zu: mean flip rate %.3f", len, mean);
	/* the input/output bit pair furthest from one half, asserted once */
	size_t worst_bit = 0;
	int worst_out = 0;
	unsigned worst_distance = 0;
	for (size_t bit = 0; bit < len * 8; bit++)
		for (int out = 0; out < 64; out++) {
			unsigned f = flips[bit][out];
			unsigned distance = f > TRIALS / 2 ? f - TRIALS / 2 : TRIALS / 2 - f;
			if (distance > worst_distance) {
				worst_distance = distance;
				worst_bit = bit;
				worst_out = out;
			}
		}
	unsigned worst = flips[worst_bit][worst_out];
	free(flips);
	ck_assert_msg(worst_distance < TRIALS / 5, "len %zu: input bit %zu flips output bit %d in %u of %d trials",
	              len, worst_bit, worst_out, worst, TRIALS);
}

START_TEST(test_hash_avalanche)
{
	static const size_t lengths[] = { 1, 3, 4, 7, 8, 12, 16, 17, 33, 64 };
	for (size_t i = 0; i < COUNT_OF(lengths); i++)
		check_avalanche(lengths[i]);
}
END_TEST

static Suite *balance_suite(void)
{
	Suite *s = suite_create("balance");
	TCase *swrr = tcase_create("swrr");
	tcase_add_test(swrr, test_swrr_three_one);
	tcase_add_test(swrr, test_swrr_five_one_one);
	tcase_add_test(swrr, test_swrr_exact_per_cycle);
	tcase_add_test(swrr, test_swrr_skips_ineligible);
	tcase_add_test(swrr, test_swrr_none_eligible);
	suite_add_tcase(s, swrr);

	TCase *least = tcase_create("least_conn");
	tcase_add_test(least, test_least_conn_fewest_active);
	tcase_add_test(least, test_least_conn_weights);
	tcase_add_test(least, test_least_conn_ties_rotate);
	tcase_add_test(least, test_least_conn_skips_ineligible_and_zero_weight);
	tcase_add_test(least, test_least_conn_cursor_beyond_pool);
	suite_add_tcase(s, least);

	TCase *ring = tcase_create("ring");
	tcase_add_test(ring, test_ring_even_distribution);
	tcase_add_test(ring, test_ring_removal_moves_only_its_keys);
	tcase_add_test(ring, test_ring_addition_moves_keys_only_to_newcomer);
	tcase_add_test(ring, test_ring_weights);
	tcase_add_test(ring, test_ring_is_deterministic);
	tcase_add_test(ring, test_ring_none_eligible_and_empty);
	tcase_add_test(ring, test_ring_is_capped);
	tcase_set_timeout(ring, 30);
	suite_add_tcase(s, ring);

	TCase *pick = tcase_create("weighted_pick");
	tcase_add_test(pick, test_weighted_pick_proportions);
	tcase_add_test(pick, test_weighted_pick_edges);
	tcase_add_test(pick, test_weighted_pick_is_sticky_when_shifting);
	tcase_add_test(pick, test_rendezvous_shift_moves_only_needed_keys);
	tcase_add_test(pick, test_rendezvous_many_pools);
	tcase_add_test(pick, test_rendezvous_edges);
	suite_add_tcase(s, pick);

	TCase *hash = tcase_create("hash");
	tcase_add_test(hash, test_hash_known_values);
	tcase_add_test(hash, test_hash_deterministic_and_seeded);
	tcase_add_test(hash, test_hash_no_collisions_on_similar_keys);
	tcase_add_test(hash, test_hash_avalanche);
	tcase_set_timeout(hash, 60);
	suite_add_tcase(s, hash);
	return s;
}

int main(void)
{
	SRunner *runner = srunner_create(balance_suite());
	srunner_run_all(runner, CK_NORMAL);
	int failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
