/* lua_cache.h - the `cache` library of request scripts: a per-worker LRU
 * cache of small values with a time to live, for scripts that need memory
 * between requests (docs/policies.md, "Helpers"): cache.get(key),
 * cache.set(key, value [, ttl_seconds]), cache.delete(key).
 *
 * The cache is C memory owned by its embedder (one per worker, outliving
 * Lua states and reloads: a new snapshot's scripts see what the old ones
 * stored). Keys are strings; values strings, numbers or booleans, copied in.
 * Bounded by entries and bytes: the least recently used entries go first;
 * expired ones are dropped when met. Not thread-safe: one worker's. */
#ifndef SLUICE_LUA_CACHE_H
#define SLUICE_LUA_CACHE_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

struct lua_cache;

/* NULL when out of memory. */
struct lua_cache *lua_cache_new(size_t max_entries, size_t max_bytes);
void lua_cache_free(struct lua_cache *c);
/* Entries held now. */
size_t lua_cache_count(const struct lua_cache *c);

/* Sets `cache` in the table at stack index t, bound to c (which must
 * outlive the state's use of it). */
void lua_cache_open(lua_State *L, int t, struct lua_cache *c);

#endif
