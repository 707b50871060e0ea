/* addrcount.c - per-address counts with a cap (addrcount.h).
 *
 * Open addressing with linear probing and backward-shift deletion, so no
 * tombstones pile up as addresses come and go. The table doubles at 3/4 full
 * and never shrinks below its peak: its peak is bounded by the connections the
 * worker (or, shared, the process) may hold. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "addrcount.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ADDR_MAX 64 /* an IPv6 text address with zone fits */

struct addrcount_slot {
	unsigned count; /* 0: free */
	char addr[ADDR_MAX];
};

struct addrcount {
	struct addrcount_slot *slots;
	size_t cap; /* a power of two */
	size_t used;
};

static uint64_t addr_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

struct addrcount *addrcount_new(void)
{
	struct addrcount *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->cap = 16;
	t->slots = calloc(t->cap, sizeof(*t->slots));
	if (!t->slots) {
		free(t);
		return NULL;
	}
	return t;
}

void addrcount_free(struct addrcount *t)
{
	if (!t)
		return;
	free(t->slots);
	free(t);
}

/* The slot holding addr, or the free slot where it would go. */
static size_t find(const struct addrcount *t, const char *addr)
{
	size_t mask = t->cap - 1;
	size_t i = (size_t)addr_hash(addr) & mask;
	while (t->slots[i].count && strcmp(t->slots[i].addr, addr) != 0)
		i = (i + 1) & mask;
	return i;
}

static bool grow(struct addrcount *t)
{
	struct addrcount_slot *old = t->slots;
	size_t old_cap = t->cap;
	struct addrcount_slot *slots = calloc(old_cap * 2, sizeof(*slots));
	if (!slots)
		return false;
	t->slots = slots;
	t->cap = old_cap * 2;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].count)
			t->slots[find(t, old[i].addr)] = old[i];
	free(old);
	return true;
}

bool addrcount_acquire(struct addrcount *t, const char *addr, unsigned limit)
{
	size_t i = find(t, addr);
	struct addrcount_slot *s = &t->slots[i];
	if (s->count)
		return s->count < limit ? (s->count++, true) : false;
	if (limit == 0)
		return false;
	if ((t->used + 1) * 4 > t->cap * 3) {
		if (!grow(t))
			return false;
		s = &t->slots[find(t, addr)];
	}
	size_t n = strnlen(addr, ADDR_MAX - 1);
	memcpy(s->addr, addr, n);
	s->addr[n] = '\0';
	s->count = 1;
	t->used++;
	return true;
}

void addrcount_release(struct addrcount *t, const char *addr)
{
	size_t mask = t->cap - 1;
	size_t i = find(t, addr);
	if (!t->slots[i].count)
		return;
	if (--t->slots[i].count)
		return;
	t->used--;
	/* backward shift: move later members of the probe run into the hole
	 * when their home slot does not lie cyclically in (hole, j] */
	size_t hole = i;
	for (size_t j = (i + 1) & mask; t->slots[j].count; j = (j + 1) & mask) {
		size_t home = (size_t)addr_hash(t->slots[j].addr) & mask;
		bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
		if (!stays) {
			t->slots[hole] = t->slots[j];
			t->slots[j].count = 0;
			hole = j;
		}
	}
}

unsigned addrcount_get(const struct addrcount *t, const char *addr)
{
	return t->slots[find(t, addr)].count;
}

size_t addrcount_size(const struct addrcount *t)
{
	return t->used;
}

/* ---- client keys ---- */

const char *addrcount_client_key(const char *ip, char buf[ADDRCOUNT_KEY_MAX])
{
	if (!strchr(ip, ':'))
		return ip; /* IPv4, or no address */
	struct in6_addr a;
	if (inet_pton(AF_INET6, ip, &a) != 1)
		return ip;
	if (IN6_IS_ADDR_V4MAPPED(&a))
		return inet_ntop(AF_INET, &a.s6_addr[12], buf, ADDRCOUNT_KEY_MAX) ? buf : ip;
	memset(&a.s6_addr[8], 0, 8);
	if (!inet_ntop(AF_INET6, &a, buf, ADDRCOUNT_KEY_MAX - sizeof("/64")))
		return ip;
	strcat(buf, "/64");
	return buf;
}

/* ---- one table for the process ---- */

/* A power of two; the shard is chosen by the hash's top bits, the slot in
 * the shard's table by its low bits, so a shard's keys still spread over
 * its slots. */
#define ADDRCOUNT_SHARD_BITS 4
#define ADDRCOUNT_SHARDS (1u << ADDRCOUNT_SHARD_BITS)

struct addrcount_shard {
	_Alignas(64) pthread_mutex_t lock; /* a cache line each: workers on different shards do not share one */
	struct addrcount *t;
};

struct addrcount_shared {
	struct addrcount_shard shards[ADDRCOUNT_SHARDS];
};

struct addrcount_shared *addrcount_shared_new(void)
{
	struct addrcount_shared *t = aligned_alloc(64, sizeof(*t));
	if (!t)
		return NULL;
	memset(t, 0, sizeof(*t));
	size_t i;
	for (i = 0; i < ADDRCOUNT_SHARDS; i++) {
		if (!(t->shards[i].t = addrcount_new()))
			break;
		if (pthread_mutex_init(&t->shards[i].lock, NULL) != 0) {
			addrcount_free(t->shards[i].t);
			break;
		}
	}
	if (i == ADDRCOUNT_SHARDS)
		return t;
	while (i-- > 0) {
		pthread_mutex_destroy(&t->shards[i].lock);
		addrcount_free(t->shards[i].t);
	}
	free(t);
	return NULL;
}

void addrcount_shared_free(struct addrcount_shared *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < ADDRCOUNT_SHARDS; i++) {
		pthread_mutex_destroy(&t->shards[i].lock);
		addrcount_free(t->shards[i].t);
	}
	free(t);
}

static struct addrcount_shard *shard_of(struct addrcount_shared *t, const char *key)
{
	return &t->shards[addr_hash(key) >> (64 - ADDRCOUNT_SHARD_BITS)];
}

bool addrcount_shared_acquire(struct addrcount_shared *t, const char *ip, unsigned limit)
{
	char buf[ADDRCOUNT_KEY_MAX];
	const char *key = t ? addrcount_client_key(ip, buf) : "";
	if (!*key)
		return true;
	struct addrcount_shard *sh = shard_of(t, key);
	pthread_mutex_lock(&sh->lock);
	bool ok = addrcount_acquire(sh->t, key, limit);
	pthread_mutex_unlock(&sh->lock);
	return ok;
}

void addrcount_shared_hold(struct addrcount_shared *t, const char *ip)
{
	/* false only out of memory, which the contract accepts (addrcount.h) */
	(void)addrcount_shared_acquire(t, ip, ADDRCOUNT_NO_LIMIT);
}

void addrcount_shared_release(struct addrcount_shared *t, const char *ip)
{
	char buf[ADDRCOUNT_KEY_MAX];
	const char *key = t ? addrcount_client_key(ip, buf) : "";
	if (!*key)
		return;
	struct addrcount_shard *sh = shard_of(t, key);
	pthread_mutex_lock(&sh->lock);
	addrcount_release(sh->t, key);
	pthread_mutex_unlock(&sh->lock);
}

unsigned addrcount_shared_get(struct addrcount_shared *t, const char *ip)
{
	char buf[ADDRCOUNT_KEY_MAX];
	const char *key = t ? addrcount_client_key(ip, buf) : "";
	if (!*key)
		return 0;
	struct addrcount_shard *sh = shard_of(t, key);
	pthread_mutex_lock(&sh->lock);
	unsigned n = addrcount_get(sh->t, key);
	pthread_mutex_unlock(&sh->lock);
	return n;
}

size_t addrcount_shared_size(struct addrcount_shared *t)
{
	size_t n = 0;
	for (size_t i = 0; t && i < ADDRCOUNT_SHARDS; i++) {
		pthread_mutex_lock(&t->shards[i].lock);
		n += addrcount_size(t->shards[i].t);
		pthread_mutex_unlock(&t->shards[i].lock);
	}
	return n;
}
