#include "rl_table.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "counters.h"

#define WAYS 8
#define MAX_LOCKS 256

struct rl_lock {
	pthread_mutex_t m;
	char pad[64 - sizeof(pthread_mutex_t) % 64]; /* one mutex a cache line: no false sharing */
};

struct rl_table {
	struct rl_entry *slots;
	size_t num_sets; /* power of two */
	struct rl_lock *locks;
	size_t num_locks; /* power of two, <= num_sets */
	uint64_t idle_us;
	uint64_t seed;
	/* the registry (rl_table_get); a table made by rl_table_new() has no name */
	char *name;
	size_t max_keys;
	uint64_t fingerprint;
	unsigned refs;
	struct rl_table *next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rl_table *registry;

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

/* Seeded per process, so an attacker cannot aim keys at one set; a flood
 * that lands anywhere still only evicts within the sets it hits. */
static uint64_t key_hash(uint64_t seed, const char *key, size_t len)
{
	uint64_t h = seed ^ (len * 0x9E3779B97F4A7C15ull);
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, key + i, 8);
		h = mix(h ^ v);
	}
	uint64_t tail = 0;
	memcpy(&tail, key + i, len - i);
	h = mix(h ^ tail ^ 0x5bd1e995u);
	return h ? h : 1;
}

struct rl_table *rl_table_new(size_t max_keys, uint64_t idle_us)
{
	struct rl_table *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	size_t sets = 1;
	while (sets * WAYS < max_keys)
		sets *= 2;
	t->num_sets = sets;
	t->num_locks = sets < MAX_LOCKS ? sets : MAX_LOCKS;
	t->idle_us = idle_us;
	if (getrandom(&t->seed, sizeof t->seed, 0) != (ssize_t)sizeof t->seed)
		t->seed = (uint64_t)(uintptr_t)t * 0x9E3779B97F4A7C15ull;
	t->slots = calloc(sets * WAYS, sizeof *t->slots);
	t->locks = calloc(t->num_locks, sizeof *t->locks);
	if (!t->slots || !t->locks) {
		free(t->slots);
		free(t->locks);
		free(t);
		return NULL;
	}
	for (size_t i = 0; i < t->num_locks; i++) {
		if (pthread_mutex_init(&t->locks[i].m, NULL) != 0) {
			while (i-- > 0)
				pthread_mutex_destroy(&t->locks[i].m);
			free(t->slots);
			free(t->locks);
			free(t);
			return NULL;
		}
	}
	return t;
}

void rl_table_free(struct rl_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->num_locks; i++)
		pthread_mutex_destroy(&t->locks[i].m);
	free(t->slots);
	free(t->locks);
	free(t);
}

static pthread_mutex_t *set_lock(struct rl_table *t, size_t set)
{
	return &t->locks[set & (t->num_locks - 1)].m;
}

static struct rl_entry *lookup(struct rl_table *t, uint64_t h, size_t set, const char *key, size_t len)
{
	struct rl_entry *ways = &t->slots[set * WAYS];
	for (size_t i = 0; i < WAYS; i++)
		if (ways[i].hash == h && ways[i].key_len == len && memcmp(ways[i].key, key, len) == 0)
			return &ways[i];
	return NULL;
}

struct rl_entry *rl_table_find(struct rl_table *t, const char *key, size_t len)
{
	if (len > RL_KEY_MAX)
		return NULL;
	uint64_t h = key_hash(t->seed, key, len);
	size_t set = (size_t)(h & (t->num_sets - 1));
	pthread_mutex_lock(set_lock(t, set));
	struct rl_entry *e = lookup(t, h, set, key, len);
	if (!e)
		pthread_mutex_unlock(set_lock(t, set));
	return e;
}

struct rl_entry *rl_table_acquire(struct rl_table *t, const char *key, size_t len, uint64_t now_us, bool *fresh,
                                  struct ctr_worker *counters)
{
	if (len > RL_KEY_MAX)
		len = RL_KEY_MAX; /* callers shorten keys first; this only keeps memory safe */
	uint64_t h = key_hash(t->seed, key, len);
	size_t set = (size_t)(h & (t->num_sets - 1));
	pthread_mutex_lock(set_lock(t, set));
	struct rl_entry *e = lookup(t, h, set, key, len);
	*fresh = e == NULL;
	if (!e) {
		struct rl_entry *ways = &t->slots[set * WAYS];
		struct rl_entry *victim = NULL;
		bool idle = false;
		for (size_t i = 0; i < WAYS && !idle; i++) {
			if (ways[i].hash == 0) {
				victim = &ways[i];
				break;
			}
			if (now_us > ways[i].used_us && now_us - ways[i].used_us > t->idle_us) {
				victim = &ways[i];
				idle = true;
			} else if (!victim || ways[i].used_us < victim->used_us) {
				victim = &ways[i];
			}
		}
		if (victim->hash != 0 && counters)
			ctr_bump(ctr_global_row(counters) + (idle ? CTR_RL_EXPIRED : CTR_RL_EVICTIONS), 1);
		e = victim;
		memset(e, 0, sizeof *e);
		e->hash = h;
		e->key_len = (uint8_t)len;
		memcpy(e->key, key, len);
	}
	e->used_us = now_us;
	return e;
}

void rl_table_release(struct rl_table *t, struct rl_entry *e)
{
	size_t set = (size_t)(e - t->slots) / WAYS;
	pthread_mutex_unlock(set_lock(t, set));
}

size_t rl_table_slots(const struct rl_table *t)
{
	return t->num_sets * WAYS;
}

struct rl_table *rl_table_get(const char *name, size_t max_keys, uint64_t idle_us, uint64_t fingerprint)
{
	pthread_mutex_lock(&registry_lock);
	struct rl_table *t = registry;
	while (t && !(strcmp(t->name, name) == 0 && t->max_keys == max_keys && t->idle_us == idle_us &&
	              t->fingerprint == fingerprint))
		t = t->next;
	if (t) {
		t->refs++;
	} else if ((t = rl_table_new(max_keys, idle_us))) {
		t->name = strdup(name);
		if (!t->name) {
			rl_table_free(t);
			t = NULL;
		} else {
			t->max_keys = max_keys;
			t->fingerprint = fingerprint;
			t->refs = 1;
			t->next = registry;
			registry = t;
		}
	}
	pthread_mutex_unlock(&registry_lock);
	return t;
}

void rl_table_put(struct rl_table *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&registry_lock);
	bool last = --t->refs == 0;
	if (last) {
		for (struct rl_table **pp = &registry; *pp; pp = &(*pp)->next) {
			if (*pp == t) {
				*pp = t->next;
				break;
			}
		}
	}
	pthread_mutex_unlock(&registry_lock);
	if (last) {
		free(t->name);
		rl_table_free(t);
	}
}
