#include "balance.h"

#include "reqkey.h"
#include "runtime.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hashing ---------------------------------------------------------- */

/* Sticky placement must agree between gateway instances and across restarts,
 * so the hash is defined on little-endian words whatever the host order, and
 * its output for given bytes and seed must never change (tests pin it). */

static const uint64_t HASH_K0 = 0xa0761d6478bd642fULL;
static const uint64_t HASH_K1 = 0xe7037ed1a0b428dbULL;
static const uint64_t HASH_K2 = 0x8ebc6af09c88c6e3ULL;
static const uint64_t HASH_K3 = 0x589965cc75374cc3ULL;

/* The full 128-bit product of two words, as high and low halves. */
static void mul_wide(uint64_t a, uint64_t b, uint64_t *high, uint64_t *low)
{
#if defined(__SIZEOF_INT128__) && !defined(SLUICE_PORTABLE_MUL128)
	__extension__ unsigned __int128 product = (unsigned __int128)a * b;
	*high = (uint64_t)(product >> 64);
	*low = (uint64_t)product;
#else
	/* schoolbook on 32-bit halves, for compilers without a 128-bit type */
	uint64_t a_lo = a & 0xffffffffu, a_hi = a >> 32;
	uint64_t b_lo = b & 0xffffffffu, b_hi = b >> 32;
	uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo;
	uint64_t lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
	uint64_t middle = (lo_lo >> 32) + (hi_lo & 0xffffffffu) + lo_hi;
	*high = hi_hi + (hi_lo >> 32) + (middle >> 32);
	*low = (middle << 32) | (lo_lo & 0xffffffffu);
#endif
}

/* The multiply-fold mix of the wyhash family: xor-ing the high and low
 * halves of the product lets both inputs' bits reach every output bit in a
 * single multiplication (the avalanche test measures it). */
static uint64_t mul_fold(uint64_t a, uint64_t b)
{
	uint64_t high, low;
	mul_wide(a, b, &high, &low);
	return high ^ low;
}

static uint64_t read_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t read_le32(const unsigned char *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
}

uint64_t balance_hash(const void *data, size_t len, uint64_t seed)
{
	const unsigned char *p = data;
	size_t remaining = len;
	uint64_t state = seed ^ mul_fold(seed ^ HASH_K0, HASH_K1);

	/* two words per round, one xor-ed with a constant and the other with the
	 * state, so that zero words do not zero the product. As in wyhash, a
	 * word equal to the constant still blinds it; that takes a chosen key,
	 * and a chosen key only steers its own placement. */
	while (remaining > 16) {
		state = mul_fold(read_le64(p) ^ HASH_K1, read_le64(p + 8) ^ state);
		p += 16;
		remaining -= 16;
	}

	/* the last 1..16 bytes are read as two possibly overlapping words; the
	 * total length enters the finaliser, so overlaps cannot make two
	 * different lengths collide */
	uint64_t a = 0, b = 0;
	if (remaining > 8) {
		a = read_le64(p);
		b = read_le64(p + remaining - 8);
	} else if (remaining >= 4) {
		a = read_le32(p);
		b = read_le32(p + remaining - 4);
	} else if (remaining > 0) {
		a = (uint64_t)p[0] << 16 | (uint64_t)p[remaining / 2] << 8 | p[remaining - 1];
	}
	a ^= HASH_K1;
	b ^= state;
	return mul_fold(HASH_K2 ^ (uint64_t)len, mul_fold(a, b) ^ HASH_K3);
}

/* ---- smooth weighted round robin --------------------------------------- */

static bool usable(const unsigned *weights, const bool *eligible, size_t i)
{
	return weights[i] > 0 && eligible[i];
}

int balance_swrr_next(int64_t *current, const unsigned *weights, const bool *eligible, size_t n)
{
	int64_t total = 0;
	size_t best = n;
	for (size_t i = 0; i < n; i++) {
		if (!usable(weights, eligible, i))
			continue;
		current[i] += weights[i];
		total += weights[i];
		if (best == n || current[i] > current[best])
			best = i;
	}
	if (best == n)
		return -1;
	current[best] -= total;
	return (int)best;
}

/* ---- weighted least connections --------------------------------------- */

/* active[a]/weights[a] < active[b]/weights[b] without division or floating
 * point; both products fit in 64 bits since each factor is below 2^32. */
static int compare_load(const unsigned *active, const unsigned *weights, size_t a, size_t b)
{
	uint64_t lhs = (uint64_t)active[a] * weights[b];
	uint64_t rhs = (uint64_t)active[b] * weights[a];
	return (lhs > rhs) - (lhs < rhs);
}

int balance_least_conn(const unsigned *active, const unsigned *weights, const bool *eligible, size_t n,
                       size_t *cursor)
{
	if (n == 0)
		return -1;
	/* scanning from just after the last pick and keeping the first of equal
	 * loads rotates ties instead of always favouring the lowest index */
	size_t start = (*cursor % n) + 1;
	size_t best = n;
	for (size_t step = 0; step < n; step++) {
		size_t i = (start + step) % n;
		if (!usable(weights, eligible, i))
			continue;
		if (best == n || compare_load(active, weights, i, best) < 0)
			best = i;
	}
	if (best == n)
		return -1;
	*cursor = best;
	return (int)best;
}

/* ---- consistent hashing ring ------------------------------------------ */

#define RING_POINTS_PER_WEIGHT 160u
/* Bounds build time and memory (and keeps lookups within 16 binary-search
 * steps) for large pools with large weights. */
#define RING_MAX_POINTS 65535u

struct ring_point {
	uint64_t hash;
	uint32_t server;
};

struct balance_ring {
	size_t num_servers;
	size_t num_points;
	struct ring_point points[];
};

static int ring_point_order(const void *pa, const void *pb)
{
	const struct ring_point *a = pa, *b = pb;
	if (a->hash != b->hash)
		return a->hash < b->hash ? -1 : 1;
	/* equal hashes are astronomically rare but must still sort the same
	 * way everywhere, or instances would disagree on the owner */
	return (a->server > b->server) - (a->server < b->server);
}

struct ring_budget {
	uint64_t total_weight;
	uint64_t weighted_servers;
};

/* A server's point count depends only on its own weight until the cap is
 * reached, so adding or removing a server leaves the others' points (and
 * keys) where they were. Past the cap the counts are scaled down together. */
static size_t ring_points_for(unsigned weight, const struct ring_budget *b)
{
	if (weight == 0)
		return 0;
	if (b->total_weight <= RING_MAX_POINTS / RING_POINTS_PER_WEIGHT)
		return (size_t)weight * RING_POINTS_PER_WEIGHT;
	/* every weighted server keeps one point so it still owns some keys;
	 * the rest of the budget is shared in proportion to weight */
	uint64_t shared = b->weighted_servers < RING_MAX_POINTS ? RING_MAX_POINTS - b->weighted_servers : 0;
	return (size_t)(1 + (uint64_t)weight * shared / b->total_weight);
}

struct balance_ring *balance_ring_build(const char *const *names, const unsigned *weights, size_t n)
{
	if (n > UINT32_MAX)
		return NULL;
	struct ring_budget budget = { 0, 0 };
	size_t longest_name = 0;
	for (size_t i = 0; i < n; i++) {
		budget.total_weight += weights[i];
		budget.weighted_servers += weights[i] > 0;
		size_t name_len = strlen(names[i]);
		if (name_len > longest_name)
			longest_name = name_len;
	}
	size_t num_points = 0;
	for (size_t i = 0; i < n; i++)
		num_points += ring_points_for(weights[i], &budget);

	struct balance_ring *r = malloc(sizeof(*r) + num_points * sizeof(struct ring_point));
	/* "name#k": the name, '#', up to 20 digits, NUL */
	size_t label_cap = longest_name + 23;
	char *label = malloc(label_cap);
	if (r == NULL || label == NULL) {
		free(r);
		free(label);
		return NULL;
	}
	r->num_servers = n;
	r->num_points = num_points;
	size_t next = 0;
	for (size_t i = 0; i < n; i++) {
		size_t count = ring_points_for(weights[i], &budget);
		for (size_t k = 0; k < count; k++) {
			int label_len = snprintf(label, label_cap, "%s#%zu", names[i], k);
			if (label_len < 0 || (size_t)label_len >= label_cap) {
				free(label);
				free(r);
				return NULL;
			}
			r->points[next].hash = balance_hash(label, (size_t)label_len, 0);
			r->points[next].server = (uint32_t)i;
			next++;
		}
	}
	free(label);
	if (num_points > 1)
		qsort(r->points, num_points, sizeof(struct ring_point), ring_point_order);
	return r;
}

void balance_ring_free(struct balance_ring *r)
{
	free(r);
}

size_t balance_ring_size(const struct balance_ring *r)
{
	return r != NULL ? r->num_points : 0;
}

int balance_ring_pick(const struct balance_ring *r, uint64_t hash, const bool *eligible)
{
	if (r == NULL || r->num_points == 0)
		return -1;
	/* checked first so that a pool with nothing eligible costs O(servers),
	 * not a walk round the whole ring */
	bool any_eligible = false;
	for (size_t i = 0; i < r->num_servers && !any_eligible; i++)
		any_eligible = eligible[i];
	if (!any_eligible)
		return -1;

	/* the owner of a hash is the first point at or after it, wrapping round */
	size_t lo = 0, hi = r->num_points;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (r->points[mid].hash < hash)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t step = 0; step < r->num_points; step++) {
		const struct ring_point *pt = &r->points[(lo + step) % r->num_points];
		if (eligible[pt->server])
			return (int)pt->server;
	}
	/* eligible servers of weight 0 own no points */
	return -1;
}

/* ---- weighted pick ----------------------------------------------------- */

int balance_weighted_pick(const unsigned *weights, size_t n, uint64_t r)
{
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += weights[i];
	if (total == 0)
		return -1;
	/* Scaling r as a fraction of 2^64 onto [0, total) rather than r % total:
	 * the bias is below total / 2^64 (nil for any real total), it uses the
	 * best-mixed high bits of a hash, and it keeps stickiness monotone: when
	 * weights shift between neighbours, only the keys in the moved slice of
	 * [0, 1) change choice. */
	uint64_t target, discarded_fraction;
	mul_wide(r, total, &target, &discarded_fraction);
	for (size_t i = 0; i < n; i++) {
		if (target < weights[i])
			return (int)i;
		target -= weights[i];
	}
	/* unreachable: target < total */
	return -1;
}

/* ---- service splits ---------------------------------------------------- */

int balance_rendezvous_pick(const unsigned *weights, const uint64_t *seeds, size_t n, uint64_t key)
{
	int best = -1;
	double best_score = 0;
	for (size_t i = 0; i < n; i++) {
		if (weights[i] == 0)
			continue;
		uint64_t h = mul_fold(key ^ seeds[i] ^ HASH_K2, HASH_K3 ^ seeds[i]);
		h = mul_fold(h ^ HASH_K0, HASH_K1);
		/* the top 53 bits as a point strictly inside (0, 1) */
		double u = ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
		double score = -log(u) / (double)weights[i];
		if (best < 0 || score < best_score) {
			best = (int)i;
			best_score = score;
		}
	}
	return best;
}

enum { SERVICE_MAX_POOLS = 64 };

int balance_service_pick(const struct request *r, const struct conf_service *svc,
                         struct runtime_split *const *splits, uint64_t random)
{
	for (size_t i = 0; i < svc->num_overrides; i++) {
		const struct conf_service_override *o = &svc->overrides[i];
		const char *val;
		size_t len;
		if (reqkey_get(r, reqkey_of_hash_key(o->key.kind), o->key.name, &val, &len) &&
		    len == strlen(o->value) && memcmp(val, o->value, len) == 0)
			return (int)o->pool;
	}
	unsigned weights[SERVICE_MAX_POOLS];
	uint64_t seeds[SERVICE_MAX_POOLS];
	size_t n = svc->num_pools < SERVICE_MAX_POOLS ? svc->num_pools : SERVICE_MAX_POOLS;
	for (size_t i = 0; i < n; i++) {
		weights[i] = atomic_load_explicit(&splits[i]->weight, memory_order_relaxed);
		seeds[i] = svc->pools[i].sticky_seed;
	}
	int i;
	const char *val;
	size_t len;
	if (svc->sticky_set && reqkey_get(r, reqkey_of_hash_key(svc->sticky.kind), svc->sticky.name, &val, &len))
		i = balance_rendezvous_pick(weights, seeds, n, balance_hash(val, len, 0));
	else
		i = balance_weighted_pick(weights, n, random);
	return i < 0 ? -1 : (int)svc->pools[i].pool;
}
