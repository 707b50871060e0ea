/* lua_cache.c - a per-worker LRU cache with TTL for request scripts (lua_cache.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "lua_cache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "clock.h"

enum cache_type { CACHE_STRING, CACHE_INTEGER, CACHE_NUMBER, CACHE_BOOLEAN };

struct cache_entry {
	struct cache_entry *hnext;       /* hash chain */
	struct cache_entry *prev, *next; /* LRU list, most recent first */
	uint64_t expires_ns;             /* 0: never */
	uint64_t hash;
	size_t klen, vlen;
	uint8_t type;
	char data[]; /* the key, then the value */
};

struct lua_cache {
	struct cache_entry **buckets;
	size_t nbuckets; /* a power of two */
	size_t count, max_entries;
	size_t bytes, max_bytes;
	struct cache_entry lru; /* sentinel */
};

static uint64_t now_ns(void)
{
	return clock_mono_ns();
}

static uint64_t hash_key(const char *k, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)k[i]) * 0x100000001b3ull;
	return h ^ (h >> 29);
}

struct lua_cache *lua_cache_new(size_t max_entries, size_t max_bytes)
{
	struct lua_cache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->nbuckets = 64;
	while (c->nbuckets < max_entries)
		c->nbuckets *= 2;
	c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
	if (!c->buckets) {
		free(c);
		return NULL;
	}
	c->max_entries = max_entries;
	c->max_bytes = max_bytes;
	c->lru.next = c->lru.prev = &c->lru;
	return c;
}

static void unlink_entry(struct lua_cache *c, struct cache_entry *e)
{
	struct cache_entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	e->prev->next = e->next;
	e->next->prev = e->prev;
	c->count--;
	c->bytes -= sizeof *e + e->klen + e->vlen;
	free(e);
}

void lua_cache_free(struct lua_cache *c)
{
	if (!c)
		return;
	while (c->lru.next != &c->lru)
		unlink_entry(c, c->lru.next);
	free(c->buckets);
	free(c);
}

size_t lua_cache_count(const struct lua_cache *c)
{
	return c->count;
}

static struct cache_entry *find(struct lua_cache *c, const char *k, size_t n, uint64_t h)
{
	for (struct cache_entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
		if (e->hash == h && e->klen == n && memcmp(e->data, k, n) == 0)
			return e;
	return NULL;
}

static struct lua_cache *cache_of(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}

static int cache_get(lua_State *L)
{
	struct lua_cache *c = cache_of(L);
	size_t n;
	const char *k = luaL_checklstring(L, 1, &n);
	uint64_t h = hash_key(k, n);
	struct cache_entry *e = find(c, k, n, h);
	if (!e) {
		lua_pushnil(L);
		return 1;
	}
	if (e->expires_ns && e->expires_ns <= now_ns()) {
		unlink_entry(c, e);
		lua_pushnil(L);
		return 1;
	}
	/* most recently used first */
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->next = c->lru.next;
	e->prev = &c->lru;
	c->lru.next->prev = e;
	c->lru.next = e;
	const char *v = e->data + e->klen;
	switch (e->type) {
	case CACHE_STRING:
		lua_pushlstring(L, v, e->vlen);
		break;
	case CACHE_INTEGER: {
		lua_Integer i;
		memcpy(&i, v, sizeof i);
		lua_pushinteger(L, i);
		break;
	}
	case CACHE_NUMBER: {
		lua_Number d;
		memcpy(&d, v, sizeof d);
		lua_pushnumber(L, d);
		break;
	}
	default:
		lua_pushboolean(L, v[0]);
		break;
	}
	return 1;
}

static int cache_delete(lua_State *L)
{
	struct lua_cache *c = cache_of(L);
	size_t n;
	const char *k = luaL_checklstring(L, 1, &n);
	struct cache_entry *e = find(c, k, n, hash_key(k, n));
	if (e)
		unlink_entry(c, e);
	lua_pushboolean(L, e != NULL);
	return 1;
}

static int cache_set(lua_State *L)
{
	struct lua_cache *c = cache_of(L);
	size_t n;
	const char *k = luaL_checklstring(L, 1, &n);
	lua_Number ttl = luaL_optnumber(L, 3, 0);
	luaL_argcheck(L, ttl >= 0 && ttl <= 31536000, 3, "a time to live in seconds, 0 to 31536000 (0: none)");
	char num[sizeof(lua_Number) > sizeof(lua_Integer) ? sizeof(lua_Number) : sizeof(lua_Integer)];
	const char *v;
	size_t vlen;
	uint8_t type;
	switch (lua_type(L, 2)) {
	case LUA_TSTRING:
		v = lua_tolstring(L, 2, &vlen);
		type = CACHE_STRING;
		break;
	case LUA_TNUMBER:
		if (lua_isinteger(L, 2)) {
			lua_Integer i = lua_tointeger(L, 2);
			memcpy(num, &i, sizeof i);
			vlen = sizeof i;
			type = CACHE_INTEGER;
		} else {
			lua_Number d = lua_tonumber(L, 2);
			memcpy(num, &d, sizeof d);
			vlen = sizeof d;
			type = CACHE_NUMBER;
		}
		v = num;
		break;
	case LUA_TBOOLEAN:
		num[0] = (char)lua_toboolean(L, 2);
		v = num;
		vlen = 1;
		type = CACHE_BOOLEAN;
		break;
	case LUA_TNIL: {
		struct cache_entry *old = find(c, k, n, hash_key(k, n));
		if (old)
			unlink_entry(c, old);
		return 0;
	}
	default:
		return luaL_argerror(L, 2, "a string, number, boolean or nil");
	}
	size_t size = sizeof(struct cache_entry) + n + vlen;
	if (size > c->max_bytes / 4)
		return luaL_error(L, "cache.set: the entry (%d bytes) is larger than a quarter of the cache", (int)size);
	uint64_t h = hash_key(k, n);
	struct cache_entry *old = find(c, k, n, h);
	if (old)
		unlink_entry(c, old);
	while (c->count > 0 && (c->count >= c->max_entries || c->bytes + size > c->max_bytes))
		unlink_entry(c, c->lru.prev); /* the least recently used */
	struct cache_entry *e = malloc(size);
	if (!e)
		return luaL_error(L, "cache.set: out of memory");
	e->hash = h;
	e->klen = n;
	e->vlen = vlen;
	e->type = type;
	e->expires_ns = ttl > 0 ? now_ns() + (uint64_t)(ttl * 1e9) : 0;
	memcpy(e->data, k, n);
	memcpy(e->data + n, v, vlen);
	struct cache_entry **b = &c->buckets[h & (c->nbuckets - 1)];
	e->hnext = *b;
	*b = e;
	e->next = c->lru.next;
	e->prev = &c->lru;
	c->lru.next->prev = e;
	c->lru.next = e;
	c->count++;
	c->bytes += size;
	return 0;
}

void lua_cache_open(lua_State *L, int t, struct lua_cache *c)
{
	static const luaL_Reg fns[] = {
	    {"get", cache_get}, {"set", cache_set}, {"delete", cache_delete}, {NULL, NULL},
	};
	t = lua_absindex(L, t);
	lua_createtable(L, 0, 3);
	lua_pushlightuserdata(L, c);
	luaL_setfuncs(L, fns, 1);
	lua_setfield(L, t, "cache");
}
