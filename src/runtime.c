#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct runtime *runtime_new(void)
{
	return calloc(1, sizeof(struct runtime));
}

static void server_free(struct runtime_server *s)
{
	pthread_mutex_destroy(&s->lock);
	free(s->address);
	free(s);
}

void runtime_free(struct runtime *rt)
{
	if (!rt)
		return;
	for (size_t i = 0; i < rt->num_pools; i++) {
		struct runtime_pool *p = rt->pools[i];
		for (size_t j = 0; j < p->num_servers; j++)
			server_free(p->servers[j]);
		free(p->servers);
		free(p->server_index);
		free(p->name);
		free(p);
	}
	free(rt->pools);
	for (size_t i = 0; i < rt->num_splits; i++) {
		free(rt->splits[i]->service);
		free(rt->splits[i]->pool);
		free(rt->splits[i]);
	}
	free(rt->splits);
	for (size_t i = 0; i < rt->num_rollouts; i++) {
		free(rt->rollouts[i].service);
		free(rt->rollouts[i].line);
	}
	free(rt->rollouts);
	free(rt->pool_index);
	free(rt->split_index);
	free(rt);
}

/* FNV-1a over a, then a NUL, then b (b may be NULL). */
static size_t name_hash(const char *a, const char *b)
{
	uint64_t h = 14695981039346656037u;
	for (const char *s = a;; s++) {
		h = (h ^ (unsigned char)*s) * 1099511628211u;
		if (!*s)
			break;
	}
	for (const char *s = b; s && *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211u;
	return (size_t)h;
}

static size_t pool_slot(struct runtime_pool *const *index, size_t cap, const char *name)
{
	size_t i = name_hash(name, NULL) & (cap - 1);
	while (index[i] && strcmp(index[i]->name, name) != 0)
		i = (i + 1) & (cap - 1);
	return i;
}

static size_t server_slot(struct runtime_server *const *index, size_t cap, const char *address)
{
	size_t i = name_hash(address, NULL) & (cap - 1);
	while (index[i] && strcmp(index[i]->address, address) != 0)
		i = (i + 1) & (cap - 1);
	return i;
}

static size_t split_slot(struct runtime_split *const *index, size_t cap, const char *service, const char *pool)
{
	size_t i = name_hash(service, pool) & (cap - 1);
	while (index[i] && (strcmp(index[i]->service, service) != 0 || strcmp(index[i]->pool, pool) != 0))
		i = (i + 1) & (cap - 1);
	return i;
}

/* Makes room for one more entry (count: entries after it) in a half-full-at-most index. */
static bool index_reserve(void ***index, size_t *cap, size_t count)
{
	if (count * 2 <= *cap)
		return true;
	size_t grown = *cap ? *cap * 2 : 64;
	while (count * 2 > grown)
		grown *= 2;
	void **fresh = calloc(grown, sizeof(void *));
	if (!fresh)
		return false;
	free(*index);
	*index = fresh;
	*cap = grown;
	return true;
}

static bool index_pool(struct runtime *rt, struct runtime_pool *p)
{
	size_t cap = rt->pool_index_cap;
	if (!index_reserve((void ***)&rt->pool_index, &rt->pool_index_cap, rt->num_pools))
		return false;
	if (cap != rt->pool_index_cap) { /* rebuilt empty: index every pool, p included */
		for (size_t i = 0; i < rt->num_pools; i++)
			rt->pool_index[pool_slot(rt->pool_index, rt->pool_index_cap, rt->pools[i]->name)] = rt->pools[i];
		return true;
	}
	rt->pool_index[pool_slot(rt->pool_index, rt->pool_index_cap, p->name)] = p;
	return true;
}

static bool index_server(struct runtime_pool *p, struct runtime_server *s)
{
	size_t cap = p->server_index_cap;
	if (!index_reserve((void ***)&p->server_index, &p->server_index_cap, p->num_servers))
		return false;
	if (cap != p->server_index_cap) {
		for (size_t i = 0; i < p->num_servers; i++)
			p->server_index[server_slot(p->server_index, p->server_index_cap, p->servers[i]->address)] =
			    p->servers[i];
		return true;
	}
	p->server_index[server_slot(p->server_index, p->server_index_cap, s->address)] = s;
	return true;
}

static bool index_split(struct runtime *rt, struct runtime_split *sp)
{
	size_t cap = rt->split_index_cap;
	if (!index_reserve((void ***)&rt->split_index, &rt->split_index_cap, rt->num_splits))
		return false;
	if (cap != rt->split_index_cap) {
		for (size_t i = 0; i < rt->num_splits; i++) {
			struct runtime_split *s = rt->splits[i];
			rt->split_index[split_slot(rt->split_index, rt->split_index_cap, s->service, s->pool)] = s;
		}
		return true;
	}
	rt->split_index[split_slot(rt->split_index, rt->split_index_cap, sp->service, sp->pool)] = sp;
	return true;
}

struct runtime_pool *runtime_find_pool(const struct runtime *rt, const char *name)
{
	if (!rt->pool_index)
		return NULL;
	return rt->pool_index[pool_slot(rt->pool_index, rt->pool_index_cap, name)];
}

struct runtime_server *runtime_find_server(const struct runtime_pool *p, const char *address)
{
	if (!p->server_index)
		return NULL;
	return p->server_index[server_slot(p->server_index, p->server_index_cap, address)];
}

struct runtime_split *runtime_find_split(const struct runtime *rt, const char *service, const char *pool)
{
	if (!rt->split_index)
		return NULL;
	return rt->split_index[split_slot(rt->split_index, rt->split_index_cap, service, pool)];
}

/* Appends to a pointer array, growing it; false on out-of-memory. */
static bool push(void ***arr, size_t *n, void *item)
{
	void **grown = realloc(*arr, (*n + 1) * sizeof(void *));
	if (!grown)
		return false;
	grown[(*n)++] = item;
	*arr = grown;
	return true;
}

static struct runtime_pool *add_pool(struct runtime *rt, const char *name)
{
	struct runtime_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->name = strdup(name);
	if (!p->name || !push((void ***)&rt->pools, &rt->num_pools, p)) {
		free(p->name);
		free(p);
		return NULL;
	}
	if (!index_pool(rt, p)) {
		rt->num_pools--;
		free(p->name);
		free(p);
		return NULL;
	}
	return p;
}

static struct runtime_server *add_server(struct runtime_pool *p, const char *address)
{
	struct runtime_server *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->address = strdup(address);
	if (!s->address || pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s->address);
		free(s);
		return NULL;
	}
	breaker_init(&s->breaker);
	atomic_store(&s->breaker_state, BREAKER_CLOSED);
	atomic_store(&s->breaker_epoch, s->breaker.epoch);
	if (!push((void ***)&p->servers, &p->num_servers, s)) {
		server_free(s);
		return NULL;
	}
	if (!index_server(p, s)) {
		p->num_servers--;
		server_free(s);
		return NULL;
	}
	return s;
}

static struct runtime_split *add_split(struct runtime *rt, const char *service, const char *pool)
{
	struct runtime_split *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return NULL;
	sp->service = strdup(service);
	sp->pool = strdup(pool);
	if (!sp->service || !sp->pool || !push((void ***)&rt->splits, &rt->num_splits, sp)) {
		free(sp->service);
		free(sp->pool);
		free(sp);
		return NULL;
	}
	if (!index_split(rt, sp)) {
		rt->num_splits--;
		free(sp->service);
		free(sp->pool);
		free(sp);
		return NULL;
	}
	return sp;
}

int runtime_sync(struct runtime *rt, const struct conf *c)
{
	for (size_t i = 0; i < c->num_pools; i++) {
		const struct conf_pool *cp = &c->pools[i];
		struct runtime_pool *p = runtime_find_pool(rt, cp->name);
		if (!p && !(p = add_pool(rt, cp->name)))
			return -1;
		for (size_t j = 0; j < cp->num_servers; j++) {
			struct runtime_server *s = runtime_find_server(p, cp->servers[j].address);
			if (!s && !(s = add_server(p, cp->servers[j].address)))
				return -1;
			atomic_store(&s->config_weight, cp->servers[j].weight);
			if (!atomic_load(&s->weight_set))
				atomic_store(&s->weight, cp->servers[j].weight);
			/* no active checks in this config: nothing would ever bring it back */
			if (cp->health_check.type == CONF_HEALTH_NONE)
				atomic_store(&s->health, RUNTIME_HEALTH_UP);
		}
	}
	for (size_t i = 0; i < c->num_services; i++) {
		const struct conf_service *sv = &c->services[i];
		for (size_t j = 0; j < sv->num_pools; j++) {
			const char *pool = c->pools[sv->pools[j].pool].name;
			struct runtime_split *sp = runtime_find_split(rt, sv->name, pool);
			if (!sp && !(sp = add_split(rt, sv->name, pool)))
				return -1;
			atomic_store(&sp->config_weight, sv->pools[j].weight);
			if (!atomic_load(&sp->weight_set))
				atomic_store(&sp->weight, sv->pools[j].weight);
		}
	}
	return 0;
}

bool runtime_server_usable(const struct runtime_server *s, uint64_t now_us)
{
	if (atomic_load_explicit(&s->weight, memory_order_relaxed) == 0 ||
	    atomic_load_explicit(&s->drained, memory_order_relaxed) ||
	    atomic_load_explicit(&s->disabled, memory_order_relaxed) ||
	    atomic_load_explicit(&s->health, memory_order_relaxed) != RUNTIME_HEALTH_UP)
		return false;
	if (atomic_load_explicit(&s->breaker_state, memory_order_acquire) == BREAKER_OPEN)
		return now_us >= atomic_load_explicit(&s->open_until_us, memory_order_relaxed);
	return true;
}

static void mirror(struct runtime_server *s)
{
	atomic_store_explicit(&s->open_until_us, s->breaker.open_until_us, memory_order_relaxed);
	atomic_store_explicit(&s->breaker_epoch, s->breaker.epoch, memory_order_relaxed);
	atomic_store_explicit(&s->breaker_state, (int)s->breaker.state, memory_order_release);
}

enum breaker_admit runtime_breaker_admit(struct runtime_server *s, const struct conf_breaker *c, uint64_t now_us,
                                         uint64_t *epoch, bool *half_opened)
{
	*half_opened = false;
	if (atomic_load_explicit(&s->breaker_state, memory_order_acquire) == BREAKER_CLOSED) {
		*epoch = atomic_load_explicit(&s->breaker_epoch, memory_order_relaxed);
		return BREAKER_ADMIT;
	}
	pthread_mutex_lock(&s->lock);
	enum breaker_state before = s->breaker.state;
	enum breaker_admit a = breaker_admit(&s->breaker, c, now_us, epoch);
	*half_opened = before == BREAKER_OPEN && s->breaker.state == BREAKER_HALF_OPEN;
	mirror(s);
	pthread_mutex_unlock(&s->lock);
	return a;
}

bool runtime_breaker_record(struct runtime_server *s, const struct conf_breaker *c, uint64_t now_us, uint64_t epoch,
                            bool probe, enum breaker_outcome o, uint64_t duration_us, enum breaker_state *state)
{
	pthread_mutex_lock(&s->lock);
	bool changed = breaker_record(&s->breaker, c, now_us, epoch, probe, o, duration_us);
	if (changed)
		mirror(s);
	*state = s->breaker.state;
	pthread_mutex_unlock(&s->lock);
	return changed;
}

void runtime_breaker_reset(struct runtime_server *s)
{
	pthread_mutex_lock(&s->lock);
	breaker_reset(&s->breaker);
	mirror(s);
	pthread_mutex_unlock(&s->lock);
}

void runtime_breaker_read(struct runtime_server *s, const struct conf_breaker *c, uint64_t now_us, struct breaker *b,
                          struct breaker_stats *st)
{
	pthread_mutex_lock(&s->lock);
	*b = s->breaker;
	breaker_window(&s->breaker, c, now_us, st);
	pthread_mutex_unlock(&s->lock);
}

void runtime_set_weight(struct runtime_server *s, unsigned weight)
{
	atomic_store(&s->weight_set, true);
	atomic_store(&s->weight, weight);
}

void runtime_clear_weight(struct runtime_server *s)
{
	atomic_store(&s->weight_set, false);
	atomic_store(&s->weight, atomic_load(&s->config_weight));
}

void runtime_set_split_weight(struct runtime_split *sp, unsigned weight)
{
	atomic_store(&sp->weight_set, true);
	atomic_store(&sp->weight, weight);
}

const unsigned runtime_latency_bound_ms[RUNTIME_LATENCY_BUCKETS] = { 1,   2,   5,    10,   20,   50,
	                                                               100, 200, 300,  500,  750,  1000,
	                                                               2000, 5000, 10000, UINT32_MAX };

void runtime_outcome_record(struct runtime_pool *p, bool error, uint64_t latency_us)
{
	atomic_fetch_add_explicit(&p->outcomes.attempts, 1, memory_order_relaxed);
	if (error)
		atomic_fetch_add_explicit(&p->outcomes.errors, 1, memory_order_relaxed);
	uint64_t ms = latency_us / 1000;
	size_t b = 0;
	while (b + 1 < RUNTIME_LATENCY_BUCKETS && ms >= runtime_latency_bound_ms[b])
		b++;
	atomic_fetch_add_explicit(&p->outcomes.latency[b], 1, memory_order_relaxed);
}

void runtime_outcome_read(const struct runtime_pool *p, struct runtime_figures *f)
{
	f->attempts = atomic_load_explicit(&p->outcomes.attempts, memory_order_relaxed);
	f->errors = atomic_load_explicit(&p->outcomes.errors, memory_order_relaxed);
	for (size_t b = 0; b < RUNTIME_LATENCY_BUCKETS; b++)
		f->latency[b] = atomic_load_explicit(&p->outcomes.latency[b], memory_order_relaxed);
}

void runtime_figures_sub(const struct runtime_figures *now, const struct runtime_figures *before,
                         struct runtime_figures *d)
{
	d->attempts = now->attempts - before->attempts;
	d->errors = now->errors - before->errors;
	for (size_t b = 0; b < RUNTIME_LATENCY_BUCKETS; b++)
		d->latency[b] = now->latency[b] - before->latency[b];
}

unsigned runtime_figures_quantile_ms(const struct runtime_figures *d, double q)
{
	uint64_t total = 0;
	for (size_t b = 0; b < RUNTIME_LATENCY_BUCKETS; b++)
		total += d->latency[b];
	if (total == 0)
		return 0;
	/* the smallest bucket whose running count reaches q of the total */
	uint64_t want = (uint64_t)((double)total * q + 0.999999), seen = 0;
	for (size_t b = 0; b < RUNTIME_LATENCY_BUCKETS; b++) {
		seen += d->latency[b];
		if (seen >= want)
			return runtime_latency_bound_ms[b];
	}
	return UINT32_MAX;
}

const char *runtime_rollout_line(const struct runtime *rt, const char *service)
{
	for (size_t i = 0; i < rt->num_rollouts; i++)
		if (strcmp(rt->rollouts[i].service, service) == 0)
			return rt->rollouts[i].line;
	return NULL;
}

int runtime_set_rollout_line(struct runtime *rt, const char *service, const char *line)
{
	size_t i = 0;
	while (i < rt->num_rollouts && strcmp(rt->rollouts[i].service, service) != 0)
		i++;
	if (!line) {
		if (i < rt->num_rollouts) {
			free(rt->rollouts[i].service);
			free(rt->rollouts[i].line);
			rt->rollouts[i] = rt->rollouts[--rt->num_rollouts];
		}
		return 0;
	}
	char *copy = strdup(line);
	if (!copy)
		return -1;
	if (i == rt->num_rollouts) {
		struct runtime_rollout *grown = realloc(rt->rollouts, (rt->num_rollouts + 1) * sizeof *grown);
		char *name = strdup(service);
		if (!grown || !name) {
			if (grown)
				rt->rollouts = grown;
			free(name);
			free(copy);
			return -1;
		}
		rt->rollouts = grown;
		rt->rollouts[i].service = name;
		rt->rollouts[i].line = NULL;
		rt->num_rollouts++;
	}
	free(rt->rollouts[i].line);
	rt->rollouts[i].line = copy;
	return 0;
}

void runtime_set_service_weights(struct runtime *rt, const struct conf *c, const struct conf_service *sv,
                                 const unsigned *weights)
{
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < sv->num_pools; i++) {
			struct runtime_split *sp = runtime_service_split(rt, c, sv, i);
			if (sp && (weights[i] > atomic_load(&sp->weight)) == (pass == 0))
				runtime_set_split_weight(sp, weights[i]);
		}
}

struct runtime_split *runtime_service_split(const struct runtime *rt, const struct conf *c,
                                            const struct conf_service *sv, size_t i)
{
	return runtime_find_split(rt, sv->name, c->pools[sv->pools[i].pool].name);
}

bool runtime_switched(const struct runtime *rt, const struct conf *c, const struct conf_service *sv)
{
	for (size_t i = 0; i < sv->num_pools; i++) {
		const struct runtime_split *sp = runtime_service_split(rt, c, sv, i);
		if (sp && sp->saved_set)
			return true;
	}
	return false;
}

bool runtime_switch(struct runtime *rt, const struct conf *c, const struct conf_service *sv, const char *pool)
{
	struct runtime_split *target = NULL;
	for (size_t i = 0; i < sv->num_pools; i++)
		if (strcmp(c->pools[sv->pools[i].pool].name, pool) == 0)
			target = runtime_service_split(rt, c, sv, i);
	if (!target)
		return false;
	bool remembered = runtime_switched(rt, c, sv);
	for (size_t i = 0; i < sv->num_pools && !remembered; i++) {
		struct runtime_split *sp = runtime_service_split(rt, c, sv, i);
		if (sp) {
			sp->saved_weight = atomic_load(&sp->weight);
			sp->saved_set = true;
		}
	}
	/* a target already in the split takes everything as soon as the others
	 * are 0; one at 0 must be raised first, or a pick could find no pool */
	if (atomic_load(&target->weight) == 0)
		runtime_set_split_weight(target, RUNTIME_SWITCH_WEIGHT);
	for (size_t i = 0; i < sv->num_pools; i++) {
		struct runtime_split *sp = runtime_service_split(rt, c, sv, i);
		if (sp && sp != target)
			runtime_set_split_weight(sp, 0);
	}
	runtime_set_split_weight(target, RUNTIME_SWITCH_WEIGHT);
	return true;
}

bool runtime_switch_back(struct runtime *rt, const struct conf *c, const struct conf_service *sv)
{
	if (!runtime_switched(rt, c, sv))
		return false;
	unsigned *weights = calloc(sv->num_pools ? sv->num_pools : 1, sizeof *weights);
	if (!weights)
		return false;
	for (size_t i = 0; i < sv->num_pools; i++) {
		struct runtime_split *sp = runtime_service_split(rt, c, sv, i);
		weights[i] = !sp ? 0 : sp->saved_set ? sp->saved_weight : atomic_load(&sp->weight);
		if (sp)
			sp->saved_set = false;
	}
	runtime_set_service_weights(rt, c, sv, weights);
	free(weights);
	return true;
}

static bool conf_has_server(const struct conf *c, const char *pool, const char *address)
{
	int i = conf_find_pool(c, pool);
	if (i < 0)
		return false;
	for (size_t j = 0; j < c->pools[i].num_servers; j++)
		if (strcmp(c->pools[i].servers[j].address, address) == 0)
			return true;
	return false;
}

static bool conf_has_split(const struct conf *c, const char *service, const char *pool)
{
	int i = conf_find_service(c, service);
	if (i < 0)
		return false;
	const struct conf_service *sv = &c->services[i];
	for (size_t j = 0; j < sv->num_pools; j++)
		if (strcmp(c->pools[sv->pools[j].pool].name, pool) == 0)
			return true;
	return false;
}

/* Clears what deployers and the breaker left on a server; writes what it was into what. */
static bool server_drop_state(struct runtime_server *s, char *what, size_t size)
{
	size_t n = 0;
	what[0] = '\0';
	if (atomic_exchange(&s->weight_set, false))
		n += (size_t)snprintf(what + n, size - n, "%sweight %u", n ? ", " : "", atomic_load(&s->weight));
	if (n < size && atomic_exchange(&s->drained, false))
		n += (size_t)snprintf(what + n, size - n, "%sdrained", n ? ", " : "");
	if (n < size && atomic_exchange(&s->disabled, false))
		n += (size_t)snprintf(what + n, size - n, "%sdisabled", n ? ", " : "");
	if (n < size && atomic_load(&s->breaker_state) != BREAKER_CLOSED) {
		n += (size_t)snprintf(what + n, size - n, "%sbreaker %s", n ? ", " : "",
		                      breaker_state_name((enum breaker_state)atomic_load(&s->breaker_state)));
		runtime_breaker_reset(s);
	}
	atomic_store(&s->weight, atomic_load(&s->config_weight));
	atomic_store(&s->health, RUNTIME_HEALTH_UP);
	return n > 0;
}

size_t runtime_prune(struct runtime *rt, const struct conf *c)
{
	size_t dropped = 0;
	for (size_t i = 0; i < rt->num_pools; i++) {
		struct runtime_pool *p = rt->pools[i];
		for (size_t j = 0; j < p->num_servers; j++) {
			struct runtime_server *s = p->servers[j];
			char what[128];
			if (conf_has_server(c, p->name, s->address) || !server_drop_state(s, what, sizeof(what)))
				continue;
			struct log_line l;
			log_begin(&l, LOG_WARN, "reload: runtime state dropped: the server is no longer in the config");
			log_str(&l, "pool", p->name);
			log_str(&l, "server", s->address);
			log_str(&l, "dropped", what);
			log_end(&l);
			dropped++;
		}
	}
	for (size_t i = 0; i < rt->num_splits; i++) {
		struct runtime_split *sp = rt->splits[i];
		if (conf_has_split(c, sp->service, sp->pool))
			continue;
		sp->saved_set = false;
		if (!atomic_exchange(&sp->weight_set, false))
			continue;
		unsigned was = atomic_exchange(&sp->weight, atomic_load(&sp->config_weight));
		struct log_line l;
		log_begin(&l, LOG_WARN, "reload: runtime state dropped: the service no longer uses the pool");
		log_str(&l, "service", sp->service);
		log_str(&l, "pool", sp->pool);
		log_int(&l, "weight", was);
		log_end(&l);
		dropped++;
	}
	return dropped;
}
