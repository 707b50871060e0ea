/* addrcount.c - per-address counts with a cap (addrcount.h).
 *
 * Open addressing with linear probing and backward-shift deletion, so no
 * tombstones pile up as addresses come and go. The table doubles at 3/4 full
 * and never shrinks below its peak: its peak is bounded by the connections the
 * worker may hold. */
#include "addrcount.h"

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
