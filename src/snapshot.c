#include "snapshot.h"

#include <stdlib.h>

#include "balance.h"
#include "clock.h"
#include "counters.h"
#include "module.h"
#include "route.h"

void snapshot_free(struct snapshot *s)
{
	if (s->module_state) {
		for (size_t i = 0; i < module_count; i++)
			if (module_list[i]->snapshot_free && s->module_state[i])
				module_list[i]->snapshot_free(s->module_state[i]);
		free(s->module_state);
	}
	if (s->rings) {
		for (size_t i = 0; i < s->conf->num_pools; i++)
			if (s->rings[i])
				balance_ring_free(s->rings[i]);
		free(s->rings);
	}
	if (s->routes)
		route_table_free(s->routes);
	counters_map_free(s->counters);
	conf_free(s->conf);
	free(s);
}

static int snapshot_build_rings(struct snapshot *s, struct conf_errors *errs)
{
	const struct conf *c = s->conf;
	s->rings = calloc(c->num_pools ? c->num_pools : 1, sizeof(*s->rings));
	if (!s->rings) {
		conf_errors_add(errs, "%s: out of memory building pools", c->source);
		return -1;
	}
	for (size_t p = 0; p < c->num_pools; p++) {
		const struct conf_pool *pool = &c->pools[p];
		if (pool->balance != CONF_BALANCE_HASH)
			continue;
		const char **names = calloc(pool->num_servers, sizeof(*names));
		unsigned *weights = calloc(pool->num_servers, sizeof(*weights));
		if (names && weights) {
			for (size_t i = 0; i < pool->num_servers; i++) {
				names[i] = pool->servers[i].address;
				weights[i] = pool->servers[i].weight;
			}
			s->rings[p] = balance_ring_build(names, weights, pool->num_servers);
		}
		free(names);
		free(weights);
		if (!s->rings[p]) {
			conf_errors_add(errs, "%s: pools.%s: out of memory building the hash ring", c->source, pool->name);
			return -1;
		}
	}
	return 0;
}

struct snapshot *snapshot_build(const char *path, uint64_t generation, struct conf_errors *errs)
{
	struct conf *c = conf_load(path, errs);
	if (!c)
		return NULL;
	struct snapshot *s = calloc(1, sizeof(*s));
	if (!s) {
		conf_free(c);
		conf_errors_add(errs, "%s: out of memory", path);
		return NULL;
	}
	atomic_init(&s->refs, 1);
	s->loaded_by_uid = -1;
	s->loaded_how = "start";
	s->generation = generation;
	s->conf = c;
	s->loaded_wall_us = clock_wall_us();

	s->routes = route_table_build(c, errs);
	int failed = s->routes == NULL;
	if (counters_process && !(s->counters = counters_map_new(counters_process, c))) {
		conf_errors_add(errs, "%s: out of memory naming counters", path);
		failed = 1;
	}
	if (snapshot_build_rings(s, errs) != 0)
		failed = 1;
	s->module_state = calloc(module_count ? module_count : 1, sizeof(void *));
	if (!s->module_state) {
		conf_errors_add(errs, "%s: out of memory", path);
		failed = 1;
	} else {
		for (size_t i = 0; i < module_count; i++)
			if (module_list[i]->snapshot_init &&
			    module_list[i]->snapshot_init(c, &s->module_state[i], errs) != 0)
				failed = 1;
	}
	if (failed) {
		snapshot_free(s);
		return NULL;
	}
	return s;
}

void snapshot_ref(struct snapshot *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void snapshot_unref(struct snapshot *s)
{
	if (!s)
		return;
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (s->reaper && !pthread_equal(pthread_self(), s->reaper_thread))
		s->reaper(s, s->reaper_arg);
	else
		snapshot_free(s);
}

void snapshot_set_reaper(struct snapshot *s, void (*reaper)(struct snapshot *, void *), void *arg)
{
	s->reaper = reaper;
	s->reaper_arg = arg;
	s->reaper_thread = pthread_self();
}
