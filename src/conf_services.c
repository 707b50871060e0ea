/* conf_services.c - the `services` section (conf_services.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_services.h"

#include "balance.h"
#include "conf_pools.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

static int compare_service_name(const void *name, const void *service)
{
	return strcmp(name, ((const struct conf_service *)service)->name);
}

int conf_find_service_in(const struct conf *c, size_t n, const char *name)
{
	const struct conf_service *s = n ? bsearch(name, c->services, n, sizeof *c->services, compare_service_name)
	                                 : NULL;
	return s ? (int)(s - c->services) : -1;
}

int conf_find_service(const struct conf *c, const char *name)
{
	if (strncmp(name, "pool:", 5) == 0) {
		int p = conf_find_pool(c, name + 5);
		return p >= 0 && c->pools[p].implicit_service ? (int)(c->pools[p].implicit_service - 1) : -1;
	}
	/* the services from the file come first: find where the implicit ones begin */
	size_t lo = 0, hi = c->num_services;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (c->services[mid].implicit)
			hi = mid;
		else
			lo = mid + 1;
	}
	return conf_find_service_in(c, lo, name);
}


static struct conf_service *add_service(struct conf_walker *w, const char *name)
{
	struct conf *c = w->c;
	if (c->num_services == w->services_cap) {
		w->services_cap = w->services_cap ? w->services_cap * 2 : 8;
		c->services = conf_xreallocarray(c->services, w->services_cap, sizeof *c->services);
	}
	struct conf_service *s = &c->services[c->num_services++];
	memset(s, 0, sizeof *s);
	s->name = conf_xstrdup(name);
	return s;
}

/* The seed of a pool's rendezvous draw depends on the pool's name only, so a
 * key lands the same way in every service with the same pools and weights,
 * on every instance and across restarts. */
static uint64_t sticky_seed(const char *pool)
{
	return balance_hash(pool, strlen(pool), 0x736c756963652d73ULL);
}

static void walk_override(struct conf_walker *w, int t, struct conf_service_override *o, bool *ok)
{
	static const char *const keys[] = { "header", "cookie", "query", "value", "pool", NULL };
	static const char *const kinds[] = { "header", "cookie", "query" };
	static const enum conf_key_kind kind_of[] = { CONF_KEY_HEADER, CONF_KEY_COOKIE, CONF_KEY_QUERY };
	conf_check_record_keys(w, t, keys);
	*ok = true;
	size_t found = 0;
	for (size_t k = 0; k < 3; k++) {
		struct conf_field f;
		if (!conf_field_open(w, t, kinds[k], &f))
			continue;
		const char *name = conf_value_string(w, lua_gettop(w->L));
		if (name && !conf_is_token(name)) {
			char *q = conf_quoted(name);
			conf_werr(w, "%s is not a valid %s name", q, kinds[k]);
			free(q);
			*ok = false;
		} else if (name && found++ == 0) {
			o->key.kind = kind_of[k];
			o->key.name = conf_xstrdup(name);
			if (o->key.kind == CONF_KEY_HEADER)
				for (char *c = o->key.name; *c; c++)
					*c = conf_ascii_lower(*c);
		} else if (!name) {
			*ok = false;
		}
		conf_field_close(w, &f);
	}
	if (found != 1) {
		conf_werr(w, found ? "give only one of header, cookie or query"
		                   : "missing what to match (write { header = \"x-canary\", value = \"1\", pool = \"green\" })");
		*ok = false;
	}
	struct conf_field f;
	if (conf_field_open(w, t, "value", &f)) {
		const char *v = conf_value_string(w, lua_gettop(w->L));
		if (v)
			o->value = conf_xstrdup(v);
		else
			*ok = false;
		conf_field_close(w, &f);
	} else {
		conf_werr_key(w, "value", "missing (the exact value that selects the pool)");
		*ok = false;
	}
	if (conf_field_open(w, t, "pool", &f)) {
		const char *name = conf_value_string(w, lua_gettop(w->L));
		int pool = name ? conf_find_pool(w->c, name) : -1;
		if (name && pool < 0)
			conf_unknown_pool_error(w, name);
		if (pool >= 0)
			o->pool = (size_t)pool;
		else
			*ok = false;
		conf_field_close(w, &f);
	} else {
		conf_werr_key(w, "pool", "missing (the pool these requests go to)");
		*ok = false;
	}
}

static void walk_overrides(struct conf_walker *w, int t, struct conf_service *s)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "overrides", &f))
		return;
	int list = lua_gettop(w->L);
	size_t n;
	if (conf_list_length(w, list, "{ { header = \"x-canary\", value = \"1\", pool = \"green\" } }", &n)) {
		s->overrides = conf_xcalloc(n ? n : 1, sizeof *s->overrides);
		for (size_t i = 0; i < n; i++) {
			struct conf_field item;
			conf_item_open(w, list, i + 1, &item);
			int v = lua_gettop(w->L);
			struct conf_service_override *o = &s->overrides[s->num_overrides];
			bool ok = false;
			if (lua_type(w->L, v) == LUA_TTABLE)
				walk_override(w, v, o, &ok);
			else
				conf_type_error(w, v, "a table like { cookie = \"version\", value = \"green\", pool = \"green\" }");
			if (ok) {
				s->num_overrides++;
			} else {
				free(o->key.name);
				free(o->value);
				memset(o, 0, sizeof *o);
			}
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &f);
}

static void walk_service(struct conf_walker *w, int t, struct conf_service *s)
{
	static const char *const keys[] = { "pools", "sticky", "overrides", NULL };
	conf_check_record_keys(w, t, keys);
	struct conf_field f;
	if (conf_field_open(w, t, "sticky", &f)) {
		const char *k = conf_value_string(w, lua_gettop(w->L));
		if (k) {
			size_t errors = w->errs->count;
			conf_walk_key(w, k, &s->sticky);
			s->sticky_set = w->errs->count == errors;
		}
		conf_field_close(w, &f);
	}
	walk_overrides(w, t, s);
	if (!conf_field_open(w, t, "pools", &f)) {
		conf_werr_key(w, "pools", "missing (write pools = { web = 100 })");
		return;
	}
	int map = lua_gettop(w->L);
	if (lua_type(w->L, map) != LUA_TTABLE) {
		conf_type_error(w, map, "a table of pool weights like { web = 90, canary = 10 }");
		conf_field_close(w, &f);
		return;
	}
	size_t n;
	const char **names = conf_map_keys(w, map, "pools = { web = 90, canary = 10 }", &n);
	if (n == 0 && conf_count_entries(w->L, map) == 0)
		conf_werr(w, "empty (a service needs at least one pool)");
	s->pools = conf_xcalloc(n, sizeof *s->pools);
	bool all_valid = n > 0;
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++) {
		struct conf_field entry;
		conf_entry_open(w, map, names[i], &entry);
		long long weight;
		bool weight_ok = conf_value_integer(w, lua_gettop(w->L), 0, 10000, &weight);
		int pool = conf_find_pool(w->c, names[i]);
		if (pool < 0)
			conf_unknown_pool_error(w, names[i]);
		if (weight_ok && pool >= 0) {
			s->pools[s->num_pools].pool = (size_t)pool;
			s->pools[s->num_pools].weight = (unsigned)weight;
			s->pools[s->num_pools].sticky_seed = sticky_seed(names[i]);
			s->num_pools++;
			sum += (uint64_t)weight;
		} else {
			all_valid = false;
		}
		conf_field_close(w, &entry);
	}
	if (all_valid && sum == 0)
		conf_werr(w, "weights add up to 0 (give at least one pool a weight above 0)");
	conf_field_close(w, &f);
}

void conf_walk_services(struct conf_walker *w, int root)
{
	struct conf_field f;
	if (!conf_field_open(w, root, "services", &f))
		return;
	int map = lua_gettop(w->L);
	if (lua_type(w->L, map) != LUA_TTABLE) {
		conf_type_error(w, map, "a table of named services");
		conf_field_close(w, &f);
		return;
	}
	size_t n;
	const char **names = conf_map_keys(w, map, "services = { web = { pools = { web = 100 } } }", &n);
	for (size_t i = 0; i < n; i++) {
		struct conf_service *s = add_service(w, names[i]);
		struct conf_field entry;
		conf_entry_open(w, map, names[i], &entry);
		int v = lua_gettop(w->L);
		conf_check_object_name(w, "service", names[i]);
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_service(w, v, s);
		else
			conf_type_error(w, v, "a table like { pools = { web = 100 } }");
		conf_field_close(w, &entry);
	}
	conf_field_close(w, &f);
}

/* The service behind a route's `pool = "x"`: one per pool, shared by every such route. */
size_t conf_implicit_service(struct conf_walker *w, size_t pool)
{
	struct conf *c = w->c;
	if (c->pools[pool].implicit_service)
		return c->pools[pool].implicit_service - 1;
	char *name = conf_xasprintf("pool:%s", c->pools[pool].name);
	struct conf_service *s = add_service(w, name);
	free(name);
	s->implicit = true;
	s->pools = conf_xcalloc(1, sizeof *s->pools);
	s->pools[0].pool = pool;
	s->pools[0].weight = 100;
	s->pools[0].sticky_seed = sticky_seed(c->pools[pool].name);
	s->num_pools = 1;
	c->pools[pool].implicit_service = c->num_services;
	return c->num_services - 1;
}

