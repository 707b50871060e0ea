#include "counters.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "clock.h"
#include "conf.h"
#include "json_str.h"
#include "request.h"
#include "snapshot.h"
#include "worker.h"

struct counters *counters_process;

_Static_assert(CTR_HIST_MAX_BOUNDS == CONF_METRICS_MAX_BUCKETS, "metrics.histogram_buckets fits a row");

/* ---- the tables, as data ---- */

struct ctr_family {
	const char *name, *help;
	enum ctr_kind kind;
	enum ctr_dim dim;
	enum ctr_lset lset;
	unsigned offset;
};

static const struct ctr_family families[] = {
#define CTR_FAMILY(dim, sym, name, kind, lset, help) {name, help, CTR_KIND_##kind, CTR_DIM_##dim, CTR_LSET_##lset, CTR_##sym},
#define CTR_F_GLOBAL(sym, name, kind, lset, help) CTR_FAMILY(GLOBAL, sym, name, kind, lset, help)
#define CTR_F_LISTENER(sym, name, kind, lset, help) CTR_FAMILY(LISTENER, sym, name, kind, lset, help)
#define CTR_F_ROUTE(sym, name, kind, lset, help) CTR_FAMILY(ROUTE, sym, name, kind, lset, help)
#define CTR_F_SERVICE(sym, name, kind, lset, help) CTR_FAMILY(SERVICE, sym, name, kind, lset, help)
#define CTR_F_POOL(sym, name, kind, lset, help) CTR_FAMILY(POOL, sym, name, kind, lset, help)
#define CTR_F_SERVER(sym, name, kind, lset, help) CTR_FAMILY(SERVER, sym, name, kind, lset, help)
    CTR_GLOBAL_FAMILIES(CTR_F_GLOBAL) CTR_LISTENER_FAMILIES(CTR_F_LISTENER) CTR_ROUTE_FAMILIES(CTR_F_ROUTE)
        CTR_SERVICE_FAMILIES(CTR_F_SERVICE) CTR_POOL_FAMILIES(CTR_F_POOL) CTR_SERVER_FAMILIES(CTR_F_SERVER)
#undef CTR_F_GLOBAL
#undef CTR_F_LISTENER
#undef CTR_F_ROUTE
#undef CTR_F_SERVICE
#undef CTR_F_POOL
#undef CTR_F_SERVER
#undef CTR_FAMILY
};

static const unsigned dim_width[CTR_DIM__COUNT] = {
    [CTR_DIM_GLOBAL] = CTR_GLOBAL_WIDTH, [CTR_DIM_LISTENER] = CTR_LISTENER_WIDTH, [CTR_DIM_ROUTE] = CTR_ROUTE_WIDTH,
    [CTR_DIM_SERVICE] = CTR_SERVICE_WIDTH, [CTR_DIM_POOL] = CTR_POOL_WIDTH,       [CTR_DIM_SERVER] = CTR_SERVER_WIDTH,
};

/* the label names of a dimension's configured name (server: two) */
static const char *const dim_labels[CTR_DIM__COUNT][2] = {
    [CTR_DIM_LISTENER] = {"listener", NULL}, [CTR_DIM_ROUTE] = {"route", NULL}, [CTR_DIM_SERVICE] = {"service", NULL},
    [CTR_DIM_POOL] = {"pool", NULL},         [CTR_DIM_SERVER] = {"pool", "server"},
};

static const char *const lset_label[CTR_LSET__COUNT] = {
#define CTR_LSET_LABEL(sym, label, card) [CTR_LSET_##sym] = label,
    CTR_LSET_LIST(CTR_LSET_LABEL)
#undef CTR_LSET_LABEL
};

static const unsigned lset_card[CTR_LSET__COUNT] = {
#define CTR_LSET_C(sym, label, card) [CTR_LSET_##sym] = card,
    CTR_LSET_LIST(CTR_LSET_C)
#undef CTR_LSET_C
};

static const char *const sc_names[] = {
#define CTR_SC_STR(sym, str) str,
    CTR_STATUS_CLASS_LIST(CTR_SC_STR)
#undef CTR_SC_STR
};
static const char *const h2_close_names[] = {
#define CTR_H2_STR(sym, str) str,
    CTR_H2_CLOSE_LIST(CTR_H2_STR)
#undef CTR_H2_STR
};
static const char *const tls_fail_names[] = {
#define CTR_TLS_STR(sym, str) str,
    CTR_TLS_FAIL_LIST(CTR_TLS_STR)
#undef CTR_TLS_STR
};
static const char *const rl_names[] = {
#define CTR_RL_STR(sym, str) str,
    CTR_RL_DECISION_LIST(CTR_RL_STR)
#undef CTR_RL_STR
};
#define CTR_NAME_STR(sym, str) str,
static const char *const waf_outcome_names[] = {CTR_WAF_OUTCOME_LIST(CTR_NAME_STR)};
static const char *const waf_group_names[] = {CTR_WAF_GROUP_LIST(CTR_NAME_STR)};
static const char *const policy_outcome_names[] = {CTR_POLICY_OUTCOME_LIST(CTR_NAME_STR)};
static const char *const policy_phase_names[] = {CTR_POLICY_PHASE_LIST(CTR_NAME_STR)};
#undef CTR_NAME_STR
#define CTR_STR(sym, str) str,
static const char *const protocol_names[] = {CTR_PROTOCOL_LIST(CTR_STR)};
static const char *const tls_version_names[] = {CTR_TLS_VERSION_LIST(CTR_STR)};
static const char *const reload_names[] = {CTR_RELOAD_LIST(CTR_STR)};
static const char *const upload_limit_names[] = {CTR_UPLOAD_LIMIT_LIST(CTR_STR)};
static const char *const verdict_names[] = {CTR_ROLLOUT_VERDICT_LIST(CTR_STR)};
static const char *const log_output_names[] = {CTR_LOG_OUTPUT_LIST(CTR_STR)};
static const char *const conn_refused_names[] = {CTR_CONN_REFUSED_LIST(CTR_STR)};
static const char *const trace_reject_names[] = {CTR_TRACE_REJECT_LIST(CTR_STR)};
#undef CTR_STR

/* The value of a fixed label, or NULL for a value that is never shown (REASON_NONE). */
static const char *lset_value(enum ctr_lset ls, unsigned i)
{
	switch (ls) {
	case CTR_LSET_STATUS_CLASS:
		return sc_names[i];
	case CTR_LSET_REASON:
		return i == REASON_NONE ? NULL : reason_name((enum reason)i);
	case CTR_LSET_H2_CLOSE:
		return h2_close_names[i];
	case CTR_LSET_TLS_FAIL:
		return tls_fail_names[i];
	case CTR_LSET_RL_DECISION:
		return rl_names[i];
	case CTR_LSET_WAF_OUTCOME:
		return waf_outcome_names[i];
	case CTR_LSET_WAF_GROUP:
		return waf_group_names[i];
	case CTR_LSET_POLICY_OUTCOME:
		return policy_outcome_names[i];
	case CTR_LSET_POLICY_PHASE:
		return policy_phase_names[i];
	case CTR_LSET_PROTOCOL:
		return protocol_names[i];
	case CTR_LSET_TLS_VERSION:
		return tls_version_names[i];
	case CTR_LSET_RELOAD:
		return reload_names[i];
	case CTR_LSET_UPLOAD_LIMIT:
		return upload_limit_names[i];
	case CTR_LSET_ROLLOUT_VERDICT:
		return verdict_names[i];
	case CTR_LSET_LOG_OUTPUT:
		return log_output_names[i];
	case CTR_LSET_CONN_REFUSED:
		return conn_refused_names[i];
	case CTR_LSET_TRACE_REJECT:
		return trace_reject_names[i];
	case CTR_LSET_NONE:
	default:
		return "";
	}
}

const char *counters_h2_close_name(enum ctr_h2_close c)
{
	return (unsigned)c < CTR_H2_CLOSE__COUNT ? h2_close_names[c] : "";
}

const char *counters_tls_fail_name(enum ctr_tls_fail f)
{
	return (unsigned)f < CTR_TLS_FAIL__COUNT ? tls_fail_names[f] : "";
}

/* ---- the registry ---- */

struct ctr_name {
	char *a, *b; /* b: the server address (SERVER), else NULL */
};

/* A dimension's names, in id order, with a hash index (open addressing,
 * linear probing, at most half full): interning a config of tens of
 * thousands of names stays linear. */
struct ctr_names {
	struct ctr_name *v;
	size_t count, cap;
	uint32_t *index; /* id + 1, 0: empty */
	size_t index_cap; /* a power of two */
};

struct counters {
	pthread_mutex_t lock; /* names, version (written on the main thread, read by growing workers) */
	struct ctr_names names[CTR_DIM__COUNT];
	uint64_t version;                   /* +1 per interned name */
	_Atomic(struct ctr_worker *) workers; /* push-only list, read by the summing thread */
	struct ctr_worker *main;
	struct ctr_hist_bounds hist;
};

static struct ctr_rows *rows_new(uint32_t cap, unsigned width)
{
	struct ctr_rows *r = calloc(1, sizeof(*r) + (size_t)cap * width * sizeof(r->v[0]));
	if (r)
		r->cap = cap;
	return r;
}

/* Called with reg->lock held. Returns false when a row could not grow. */
static bool worker_cover_locked(struct ctr_worker *cw)
{
	struct counters *reg = cw->reg;
	bool ok = true;
	for (int d = 0; d < CTR_DIM__COUNT; d++) {
		size_t need = d == CTR_DIM_GLOBAL ? 1 : reg->names[d].count;
		struct ctr_rows *cur = atomic_load_explicit(&cw->rows[d], memory_order_relaxed);
		uint32_t have = cur ? cur->cap : 0;
		if (need <= have && cur)
			continue;
		size_t cap = have * 2 > need ? have * 2 : need;
		if (cap < 4)
			cap = 4;
		struct ctr_rows *n = rows_new((uint32_t)cap, dim_width[d]);
		if (!n) {
			ok = false;
			continue;
		}
		if (cur) {
			for (size_t i = 0; i < (size_t)have * dim_width[d]; i++)
				atomic_init(&n->v[i], atomic_load_explicit(&cur->v[i], memory_order_relaxed));
			cur->retired_next = cw->retired;
			cw->retired = cur;
		}
		/* the summing thread may load the pointer at any time: publish a filled row */
		atomic_store_explicit(&cw->rows[d], n, memory_order_release);
	}
	if (ok)
		cw->covered = reg->version;
	return ok;
}

atomic_uint_fast64_t *counters_row_slow(struct ctr_worker *cw, const struct counters_map *m, enum ctr_dim d,
                                        uint32_t id, unsigned width)
{
	(void)m;
	pthread_mutex_lock(&cw->reg->lock);
	worker_cover_locked(cw);
	pthread_mutex_unlock(&cw->reg->lock);
	struct ctr_rows *r = atomic_load_explicit(&cw->rows[d], memory_order_relaxed);
	if (!r || id >= r->cap)
		return cw->sink;
	return r->v + (size_t)id * width;
}

struct ctr_worker *counters_worker_new(struct counters *reg)
{
	if (!reg)
		return NULL;
	struct ctr_worker *cw = calloc(1, sizeof(*cw));
	if (!cw)
		return NULL;
	cw->reg = reg;
	cw->hist = &reg->hist;
	pthread_mutex_lock(&reg->lock);
	bool ok = worker_cover_locked(cw);
	pthread_mutex_unlock(&reg->lock);
	if (!ok) {
		for (int d = 0; d < CTR_DIM__COUNT; d++)
			free(atomic_load(&cw->rows[d]));
		free(cw);
		return NULL;
	}
	cw->next = atomic_load_explicit(&reg->workers, memory_order_relaxed);
	atomic_store_explicit(&reg->workers, cw, memory_order_release);
	return cw;
}

struct counters *counters_new(void)
{
	struct counters *reg = calloc(1, sizeof(*reg));
	if (!reg)
		return NULL;
	if (pthread_mutex_init(&reg->lock, NULL) != 0) {
		free(reg);
		return NULL;
	}
	static const uint64_t defaults[] = {CTR_HIST_DEFAULT_BOUNDS_US};
	counters_set_buckets(reg, defaults, CTR_HIST_DEFAULT_BOUNDS);
	reg->main = counters_worker_new(reg);
	if (!reg->main) {
		pthread_mutex_destroy(&reg->lock);
		free(reg);
		return NULL;
	}
	return reg;
}

bool counters_set_buckets(struct counters *reg, const uint64_t *us, unsigned n)
{
	if (n == 0 || n > CTR_HIST_MAX_BOUNDS)
		return false;
	memcpy(reg->hist.us, us, n * sizeof us[0]);
	reg->hist.n = n;
	return true;
}

const struct ctr_hist_bounds *counters_buckets(const struct counters *reg)
{
	return &reg->hist;
}

struct ctr_worker *counters_main(struct counters *reg)
{
	return reg->main;
}

void counters_free(struct counters *reg)
{
	if (!reg)
		return;
	struct ctr_worker *cw = atomic_load(&reg->workers);
	while (cw) {
		struct ctr_worker *next = cw->next;
		for (int d = 0; d < CTR_DIM__COUNT; d++)
			free(atomic_load(&cw->rows[d]));
		while (cw->retired) {
			struct ctr_rows *r = cw->retired;
			cw->retired = r->retired_next;
			free(r);
		}
		free(cw);
		cw = next;
	}
	for (int d = 0; d < CTR_DIM__COUNT; d++) {
		for (size_t i = 0; i < reg->names[d].count; i++) {
			free(reg->names[d].v[i].a);
			free(reg->names[d].v[i].b);
		}
		free(reg->names[d].v);
		free(reg->names[d].index);
	}
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

/* ---- names and maps ---- */

static uint64_t name_hash(const char *a, const char *b)
{
	/* FNV-1a over a, a separator, b */
	uint64_t h = 0xcbf29ce484222325ull;
	for (const char *p = a; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
	h = (h ^ 0xffu) * 0x100000001b3ull;
	for (const char *p = b ? b : ""; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
	return h;
}

static bool name_is(const struct ctr_name *n, const char *a, const char *b)
{
	return strcmp(n->a, a) == 0 && (b ? n->b && strcmp(n->b, b) == 0 : !n->b);
}

/* Rebuilds the index with room for twice the names. */
static bool index_grow(struct ctr_names *ns)
{
	size_t cap = ns->index_cap ? ns->index_cap * 2 : 64;
	uint32_t *index = calloc(cap, sizeof(*index));
	if (!index)
		return false;
	for (size_t i = 0; i < ns->count; i++) {
		size_t k = (size_t)name_hash(ns->v[i].a, ns->v[i].b) & (cap - 1);
		while (index[k])
			k = (k + 1) & (cap - 1);
		index[k] = (uint32_t)i + 1;
	}
	free(ns->index);
	ns->index = index;
	ns->index_cap = cap;
	return true;
}

/* The id of (a, b) in dimension d, added if new. Called with reg->lock held.
 * Returns -1 when out of memory. */
static long intern(struct counters *reg, enum ctr_dim d, const char *a, const char *b)
{
	struct ctr_names *ns = &reg->names[d];
	if ((ns->count + 1) * 2 > ns->index_cap && !index_grow(ns))
		return -1;
	size_t k = (size_t)name_hash(a, b) & (ns->index_cap - 1);
	for (; ns->index[k]; k = (k + 1) & (ns->index_cap - 1))
		if (name_is(&ns->v[ns->index[k] - 1], a, b))
			return (long)ns->index[k] - 1;
	if (ns->count >= UINT32_MAX - 1)
		return -1;
	if (ns->count == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 16;
		struct ctr_name *v = realloc(ns->v, cap * sizeof(*v));
		if (!v)
			return -1;
		ns->v = v;
		ns->cap = cap;
	}
	struct ctr_name *n = &ns->v[ns->count];
	n->a = strdup(a);
	n->b = b ? strdup(b) : NULL;
	if (!n->a || (b && !n->b)) {
		free(n->a);
		free(n->b);
		return -1;
	}
	ns->index[k] = (uint32_t)ns->count + 1;
	reg->version++;
	return (long)ns->count++;
}

void counters_map_free(struct counters_map *m)
{
	if (!m)
		return;
	for (int d = 0; d < CTR_DIM__COUNT; d++)
		free(m->ids[d]);
	free(m->server_base);
	free(m);
}

static bool map_dim(struct counters_map *m, enum ctr_dim d, size_t n)
{
	m->count[d] = n;
	m->ids[d] = calloc(n ? n : 1, sizeof(uint32_t));
	return m->ids[d] != NULL;
}

static bool map_set(struct counters *reg, struct counters_map *m, enum ctr_dim d, size_t i, const char *a,
                    const char *b)
{
	long id = intern(reg, d, a, b);
	if (id < 0)
		return false;
	m->ids[d][i] = (uint32_t)id;
	return true;
}

struct counters_map *counters_map_new(struct counters *reg, const struct conf *c)
{
	if (!reg)
		return NULL;
	struct counters_map *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->reg = reg;
	size_t servers = 0;
	for (size_t i = 0; i < c->num_pools; i++)
		servers += c->pools[i].num_servers;
	m->server_base = calloc(c->num_pools ? c->num_pools : 1, sizeof(size_t));
	bool ok = m->server_base && map_dim(m, CTR_DIM_LISTENER, c->num_listeners) &&
	          map_dim(m, CTR_DIM_ROUTE, c->num_routes) && map_dim(m, CTR_DIM_SERVICE, c->num_services) &&
	          map_dim(m, CTR_DIM_POOL, c->num_pools) && map_dim(m, CTR_DIM_SERVER, servers);
	pthread_mutex_lock(&reg->lock);
	for (size_t i = 0; ok && i < c->num_listeners; i++)
		ok = map_set(reg, m, CTR_DIM_LISTENER, i, c->listeners[i].name, NULL);
	for (size_t i = 0; ok && i < c->num_routes; i++)
		ok = map_set(reg, m, CTR_DIM_ROUTE, i, c->routes[i].name, NULL);
	for (size_t i = 0; ok && i < c->num_services; i++)
		ok = map_set(reg, m, CTR_DIM_SERVICE, i, c->services[i].name, NULL);
	size_t k = 0;
	for (size_t i = 0; ok && i < c->num_pools; i++) {
		ok = map_set(reg, m, CTR_DIM_POOL, i, c->pools[i].name, NULL);
		m->server_base[i] = k;
		for (size_t j = 0; ok && j < c->pools[i].num_servers; j++, k++)
			ok = map_set(reg, m, CTR_DIM_SERVER, k, c->pools[i].name, c->pools[i].servers[j].address);
	}
	m->version = reg->version;
	pthread_mutex_unlock(&reg->lock);
	if (!ok) {
		counters_map_free(m);
		return NULL;
	}
	return m;
}

/* ---- the request path ---- */

void counters_request_done(struct ctr_worker *cw, const struct request *r)
{
	const struct counters_map *m = r->snap ? r->snap->counters : NULL;
	if (!cw || !m)
		return;
	unsigned sc = ctr_status_class(r->status);
	uint64_t us = clock_elapsed_us(r->start_mono_us, r->end_mono_us);
	unsigned bucket = ctr_hist_bucket(cw->hist, us);

	atomic_uint_fast64_t *row;
	if (r->listener_index != SIZE_MAX) {
		row = ctr_row(cw, m, CTR_DIM_LISTENER, r->listener_index, CTR_LISTENER_WIDTH);
		ctr_bump(row + CTR_LISTENER_REQUESTS + sc, 1);
		if (r->reason != REASON_NONE)
			ctr_bump(row + CTR_LISTENER_REASONS + r->reason, 1);
		ctr_observe(row + CTR_LISTENER_DURATION, bucket, us);
		ctr_bump(row + CTR_LISTENER_RECEIVED, r->bytes_in);
		ctr_bump(row + CTR_LISTENER_SENT, r->bytes_out);
	}

	if (r->route >= 0) {
		row = ctr_row(cw, m, CTR_DIM_ROUTE, (size_t)r->route, CTR_ROUTE_WIDTH);
		ctr_bump(row + CTR_ROUTE_REQUESTS + sc, 1);
		if (r->reason != REASON_NONE)
			ctr_bump(row + CTR_ROUTE_REASONS + r->reason, 1);
		ctr_observe(row + CTR_ROUTE_DURATION, bucket, us);
		ctr_bump(row + CTR_ROUTE_RECEIVED, r->bytes_in);
		ctr_bump(row + CTR_ROUTE_SENT, r->bytes_out);
	}
	if (r->service >= 0)
		ctr_bump(ctr_row(cw, m, CTR_DIM_SERVICE, (size_t)r->service, CTR_SERVICE_WIDTH) + CTR_SERVICE_REQUESTS + sc,
		         1);
	if (r->pool >= 0) {
		row = ctr_row(cw, m, CTR_DIM_POOL, (size_t)r->pool, CTR_POOL_WIDTH);
		ctr_bump(row + CTR_POOL_REQUESTS + sc, 1);
		if (r->reason != REASON_NONE)
			ctr_bump(row + CTR_POOL_REASONS + r->reason, 1);
		if (r->upstream_status)
			ctr_observe(row + CTR_POOL_UPSTREAM_RESPONSE, ctr_hist_bucket(cw->hist, r->upstream_header_us),
			            r->upstream_header_us);
		if (r->server >= 0)
			ctr_bump(ctr_row(cw, m, CTR_DIM_SERVER, counters_server_index(m, (size_t)r->pool, (size_t)r->server),
			                 CTR_SERVER_WIDTH) +
			             CTR_SERVER_REQUESTS + sc,
			         1);
	}
}

void counters_server_outcome(struct ctr_worker *cw, const struct counters_map *m, size_t pool, size_t server,
                             bool failed)
{
	if (!cw || !m)
		return;
	atomic_uint_fast64_t *row =
	    ctr_row(cw, m, CTR_DIM_SERVER, counters_server_index(m, pool, server), CTR_SERVER_WIDTH);
	ctr_bump(row + CTR_SERVER_ATTEMPTS, 1);
	if (failed)
		ctr_bump(row + CTR_SERVER_FAILURES, 1);
}

void counters_pool_connection(struct ctr_worker *cw, const struct counters_map *m, size_t pool, bool reused)
{
	if (!cw || !m)
		return;
	if (reused)
		CTR_ADD(cw, m, POOL, pool, POOL_CONNS_REUSED, 0, 1);
	else
		CTR_ADD(cw, m, POOL, pool, POOL_CONNS_OPENED, 0, 1);
}

void counters_rollout_verdict(const struct counters_map *m, size_t service, enum ctr_rollout_verdict v)
{
	if (counters_process && m && service < m->count[CTR_DIM_SERVICE])
		CTR_ADD(counters_main(counters_process), m, SERVICE, service, SERVICE_ROLLOUT_VERDICTS, v, 1);
}

void counters_pool_retry(struct ctr_worker *cw, const struct counters_map *m, size_t pool)
{
	if (cw && m)
		CTR_ADD(cw, m, POOL, pool, POOL_RETRIES, 0, 1);
}

void counters_route_add(const struct request *r, unsigned slot, uint64_t n)
{
	const struct counters_map *m = r->snap ? r->snap->counters : NULL;
	struct ctr_worker *cw = r->worker ? r->worker->counters : NULL;
	if (cw && m && r->route >= 0 && slot < CTR_ROUTE_WIDTH)
		ctr_bump(ctr_row(cw, m, CTR_DIM_ROUTE, (size_t)r->route, CTR_ROUTE_WIDTH) + slot, n);
}

/* ---- reading ---- */

/* Sums slots [slot, slot + n) of name id in dimension d over every set. */
static void sum_slots(const struct counters *reg, enum ctr_dim d, uint32_t id, unsigned slot, unsigned n,
                      uint64_t *out)
{
	memset(out, 0, n * sizeof(*out));
	for (const struct ctr_worker *cw = atomic_load_explicit(&reg->workers, memory_order_acquire); cw;
	     cw = cw->next) {
		const struct ctr_rows *r = atomic_load_explicit(&cw->rows[d], memory_order_acquire);
		if (!r || id >= r->cap)
			continue;
		const atomic_uint_fast64_t *v = r->v + (size_t)id * dim_width[d] + slot;
		for (unsigned i = 0; i < n; i++)
			out[i] += atomic_load_explicit(&v[i], memory_order_relaxed);
	}
}

uint64_t counters_get(const struct counters *reg, const struct counters_map *m, enum ctr_dim d, size_t index,
                      unsigned slot)
{
	if (!reg || (d != CTR_DIM_GLOBAL && (!m || index >= m->count[d])))
		return 0;
	uint64_t v;
	sum_slots(reg, d, d == CTR_DIM_GLOBAL ? 0 : m->ids[d][index], slot, 1, &v);
	return v;
}

/* One label value (or help text), escaped for both forms by json_str.h.
 * Prometheus text and JSON agree on \\, \" and \n; other escapes would
 * stay literal in the text form, but labels are fixed sets and configured
 * names, which are printable ASCII (conf_value_label). */
static void put_escaped(struct evbuffer *out, const char *s)
{
	json_str_add(out, s, strlen(s));
}

struct label {
	const char *name, *value;
};

/* {a="x",b="y"} (text) or {"a":"x","b":"y"} (JSON); extra: le for a bucket */
static void put_labels(struct evbuffer *out, bool json, const struct label *l, size_t n, const char *le)
{
	if (n == 0 && !le) {
		if (json)
			evbuffer_add(out, "{}", 2);
		return;
	}
	evbuffer_add(out, "{", 1);
	for (size_t i = 0; i < n; i++) {
		evbuffer_add_printf(out, json ? "%s\"%s\":\"" : "%s%s=\"", i ? "," : "", l[i].name);
		put_escaped(out, l[i].value);
		evbuffer_add(out, "\"", 1);
	}
	if (le)
		evbuffer_add_printf(out, "%sle=\"%s\"", n ? "," : "", le);
	evbuffer_add(out, "}", 1);
}

/* The `le` of bucket b: its upper bound in seconds, or +Inf for the last. */
static void bound_str(const struct ctr_hist_bounds *h, char *buf, size_t len, unsigned b)
{
	if (b >= h->n)
		snprintf(buf, len, "+Inf");
	else
		snprintf(buf, len, "%g", (double)h->us[b] / 1e6);
}

static void write_histogram(const struct ctr_hist_bounds *h, struct evbuffer *out, bool json, bool *first,
                            const struct ctr_family *f, const struct label *l, size_t nl, const uint64_t *v)
{
	uint64_t count = 0;
	for (unsigned b = 0; b <= h->n; b++)
		count += v[b];
	if (count == 0)
		return;
	double sum = (double)v[CTR_HIST_SUM] / 1e6;
	if (json) {
		evbuffer_add_printf(out, "%s{\"labels\":", *first ? "" : ",");
		put_labels(out, true, l, nl, NULL);
		evbuffer_add_printf(out, ",\"count\":%llu,\"sum\":%.6f,\"buckets\":[", (unsigned long long)count, sum);
		uint64_t cum = 0;
		for (unsigned b = 0; b <= h->n; b++) {
			cum += v[b];
			evbuffer_add_printf(out, "%s%llu", b ? "," : "", (unsigned long long)cum);
		}
		evbuffer_add(out, "]}", 2);
	} else {
		uint64_t cum = 0;
		for (unsigned b = 0; b <= h->n; b++) {
			char le[24];
			cum += v[b];
			bound_str(h, le, sizeof(le), b);
			evbuffer_add_printf(out, "%s_bucket", f->name);
			put_labels(out, false, l, nl, le);
			evbuffer_add_printf(out, " %llu\n", (unsigned long long)cum);
		}
		evbuffer_add_printf(out, "%s_sum", f->name);
		put_labels(out, false, l, nl, NULL);
		evbuffer_add_printf(out, " %.6f\n%s_count", sum, f->name);
		put_labels(out, false, l, nl, NULL);
		evbuffer_add_printf(out, " %llu\n", (unsigned long long)count);
	}
	*first = false;
}

static void write_value(struct evbuffer *out, bool json, bool *first, const struct ctr_family *f,
                        const struct label *l, size_t nl, uint64_t v)
{
	if (v == 0)
		return;
	if (json) {
		evbuffer_add_printf(out, "%s{\"labels\":", *first ? "" : ",");
		put_labels(out, true, l, nl, NULL);
		evbuffer_add_printf(out, ",\"value\":%llu}", (unsigned long long)v);
	} else {
		evbuffer_add_printf(out, "%s", f->name);
		put_labels(out, false, l, nl, NULL);
		evbuffer_add_printf(out, " %llu\n", (unsigned long long)v);
	}
	*first = false;
}

/* The values of a counter or gauge family for name id: card of them in v
 * (a gauge: ups - downs, 0 when a racing read saw a down before its up). */
static void family_values(const struct counters *reg, const struct ctr_family *f, uint32_t id, uint64_t *v)
{
	unsigned card = lset_card[f->lset];
	sum_slots(reg, f->dim, id, f->offset, f->kind == CTR_KIND_GAUGE ? 2 * card : card, v);
	if (f->kind == CTR_KIND_GAUGE)
		for (unsigned i = 0; i < card; i++)
			v[i] = v[i] > v[card + i] ? v[i] - v[card + i] : 0;
}

static const char *kind_name(enum ctr_kind k)
{
	return k == CTR_KIND_HISTOGRAM ? "histogram" : k == CTR_KIND_GAUGE ? "gauge" : "counter";
}

/* Every series of family f for name id (labels l[0..nl) of the name). */
static void write_name(const struct counters *reg, struct evbuffer *out, bool json, bool *first,
                       const struct ctr_family *f, uint32_t id, struct label *l, size_t nl)
{
	uint64_t v[CTR_MAX_WIDTH];
	if (f->kind == CTR_KIND_HISTOGRAM) {
		sum_slots(reg, f->dim, id, f->offset, CTR_HIST_SLOTS, v);
		write_histogram(&reg->hist, out, json, first, f, l, nl, v);
		return;
	}
	unsigned card = lset_card[f->lset];
	family_values(reg, f, id, v);
	for (unsigned i = 0; i < card; i++) {
		const char *value = lset_value(f->lset, i);
		if (!value)
			continue;
		size_t n = nl;
		if (f->lset != CTR_LSET_NONE)
			l[n++] = (struct label){lset_label[f->lset], value};
		write_value(out, json, first, f, l, n, v[i]);
	}
}

static void write_family(const struct counters *reg, const struct counters_map *m, struct evbuffer *out, bool json,
                         const struct ctr_family *f, bool *seen)
{
	if (json) {
		evbuffer_add_printf(out, "{\"name\":\"%s\",\"kind\":\"%s\",\"help\":\"", f->name, kind_name(f->kind));
		put_escaped(out, f->help);
		evbuffer_add(out, "\",\"labels\":[", 12);
		size_t k = 0;
		for (size_t i = 0; i < 2; i++)
			if (dim_labels[f->dim][i])
				evbuffer_add_printf(out, "%s\"%s\"", k++ ? "," : "", dim_labels[f->dim][i]);
		if (f->lset != CTR_LSET_NONE)
			evbuffer_add_printf(out, "%s\"%s\"", k++ ? "," : "", lset_label[f->lset]);
		evbuffer_add(out, "]", 1);
		if (f->kind == CTR_KIND_HISTOGRAM) {
			evbuffer_add(out, ",\"buckets\":[", 12);
			for (unsigned b = 0; b < reg->hist.n; b++) {
				char le[24];
				bound_str(&reg->hist, le, sizeof(le), b);
				evbuffer_add_printf(out, "%s%s", b ? "," : "", le);
			}
			evbuffer_add(out, "]", 1);
		}
		evbuffer_add(out, ",\"series\":[", 11);
	}
	bool first = true;
	struct label l[3];
	if (f->dim == CTR_DIM_GLOBAL) {
		write_name(reg, out, json, &first, f, 0, l, 0);
	} else if (m) {
		size_t n = m->count[f->dim];
		memset(seen, 0, reg->names[f->dim].count);
		for (size_t i = 0; i < n; i++) {
			uint32_t id = m->ids[f->dim][i];
			if (seen[id]) /* two entries with one name count together: show them once */
				continue;
			seen[id] = true;
			const struct ctr_name *nm = &reg->names[f->dim].v[id];
			l[0] = (struct label){dim_labels[f->dim][0], nm->a};
			size_t nl = 1;
			if (nm->b)
				l[nl++] = (struct label){dim_labels[f->dim][1], nm->b};
			write_name(reg, out, json, &first, f, id, l, nl);
		}
	}
	if (json)
		evbuffer_add(out, "]}", 2);
}

void counters_write(const struct counters *reg, const struct counters_map *m, bool json, struct evbuffer *out)
{
	size_t most = 1;
	for (int d = 0; d < CTR_DIM__COUNT; d++)
		if (reg && reg->names[d].count > most)
			most = reg->names[d].count;
	bool *seen = reg ? calloc(most, sizeof(bool)) : NULL;
	if (!seen) {
		evbuffer_add_printf(out, json ? "{\"ok\":false,\"error\":\"no counters (out of memory)\"}\n"
		                              : "error: no counters (out of memory)\n");
		return;
	}
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"counters\":[");
	size_t before = evbuffer_get_length(out);
	for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
		if (json && i)
			evbuffer_add(out, ",", 1);
		write_family(reg, m, out, json, &families[i], seen);
	}
	if (json)
		evbuffer_add_printf(out, "]}\n");
	else if (evbuffer_get_length(out) == before) /* an empty answer reads as a dead gateway to ctl (exit 2) */
		evbuffer_add_printf(out, "# every counter is 0 (a series is listed once it has counted something)\n");
	free(seen);
}

/* ---- the Prometheus / OpenMetrics exposition ---- */

/* Label sets whose values are mostly 0 for any one name (a request ends for
 * a reason other than a normal response rarely, and one name meets few of
 * them; a route's WAF blocks by rule group and its policy errors by phase
 * likewise): their zero series are left out so the series count stays near
 * what is used. Every other series is shown from the start, 0 included, so
 * a rate() sees the first increment. */
static bool lset_sparse(enum ctr_lset ls)
{
	return ls == CTR_LSET_REASON || ls == CTR_LSET_WAF_GROUP || ls == CTR_LSET_POLICY_PHASE;
}

static void expo_u64(struct evbuffer *out, uint64_t v)
{
	char buf[24], *p = buf + sizeof buf;
	do
		*--p = (char)('0' + v % 10);
	while (v /= 10);
	evbuffer_add(out, p, (size_t)(buf + sizeof buf - p));
}

void counters_label_value(struct evbuffer *out, const char *s)
{
	const char *run = s;
	for (; *s; s++) {
		const char *rep = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
		if (!rep)
			continue;
		evbuffer_add(out, run, (size_t)(s - run));
		evbuffer_add(out, rep, 2);
		run = s + 1;
	}
	evbuffer_add(out, run, (size_t)(s - run));
}

/* One sample: NAME SUFFIX{NAMELABELS,XLABEL="XVALUE"} VALUE. names: the
 * configured name's labels already escaped (`route="a"`), "" for none. */
static void expo_sample(struct evbuffer *out, const char *name, const char *suffix, const char *names,
                        size_t names_len, const char *xlabel, const char *xvalue, uint64_t v)
{
	evbuffer_add(out, name, strlen(name));
	if (suffix)
		evbuffer_add(out, suffix, strlen(suffix));
	if (names_len || xlabel) {
		evbuffer_add(out, "{", 1);
		evbuffer_add(out, names, names_len);
		if (xlabel) {
			if (names_len)
				evbuffer_add(out, ",", 1);
			evbuffer_add(out, xlabel, strlen(xlabel));
			evbuffer_add(out, "=\"", 2);
			evbuffer_add(out, xvalue, strlen(xvalue));
			evbuffer_add(out, "\"", 1);
		}
		evbuffer_add(out, "} ", 2);
	} else {
		evbuffer_add(out, " ", 1);
	}
	expo_u64(out, v);
	evbuffer_add(out, "\n", 1);
}

struct expo {
	const struct counters *reg;
	struct evbuffer *out;
	bool om;
	char le[CTR_HIST_MAX_BOUNDS][24]; /* the bounds in seconds, as `le` values */
};

/* Every series of family f for name id; names: its labels, escaped. */
static void expo_name(const struct expo *x, const struct ctr_family *f, uint32_t id, const char *names,
                      size_t names_len)
{
	uint64_t v[CTR_MAX_WIDTH];
	if (f->kind == CTR_KIND_HISTOGRAM) {
		sum_slots(x->reg, f->dim, id, f->offset, CTR_HIST_SLOTS, v);
		uint64_t cum = 0;
		for (unsigned b = 0; b <= x->reg->hist.n; b++) {
			cum += v[b];
			expo_sample(x->out, f->name, "_bucket", names, names_len, "le",
			            b < x->reg->hist.n ? x->le[b] : "+Inf", cum);
		}
		/* the sum in seconds with microsecond precision, without a float's rounding */
		evbuffer_add(x->out, f->name, strlen(f->name));
		evbuffer_add(x->out, "_sum", 4);
		if (names_len) {
			evbuffer_add(x->out, "{", 1);
			evbuffer_add(x->out, names, names_len);
			evbuffer_add(x->out, "}", 1);
		}
		evbuffer_add_printf(x->out, " %llu.%06llu\n", (unsigned long long)(v[CTR_HIST_SUM] / 1000000u),
		                    (unsigned long long)(v[CTR_HIST_SUM] % 1000000u));
		expo_sample(x->out, f->name, "_count", names, names_len, NULL, NULL, cum);
		return;
	}
	unsigned card = lset_card[f->lset];
	family_values(x->reg, f, id, v);
	for (unsigned i = 0; i < card; i++) {
		const char *value = lset_value(f->lset, i);
		if (!value || (v[i] == 0 && lset_sparse(f->lset)))
			continue;
		expo_sample(x->out, f->name, NULL, names, names_len, f->lset == CTR_LSET_NONE ? NULL : lset_label[f->lset],
		            value, v[i]);
	}
}

/* # HELP and # TYPE. OpenMetrics names a counter family without its _total. */
static void expo_header(const struct expo *x, const struct ctr_family *f)
{
	size_t n = strlen(f->name);
	if (x->om && f->kind == CTR_KIND_COUNTER && n > 6 && strcmp(f->name + n - 6, "_total") == 0)
		n -= 6;
	evbuffer_add_printf(x->out, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)n, f->name, f->help, (int)n, f->name,
	                    kind_name(f->kind));
}

void counters_expose(const struct counters *reg, const struct counters_map *m, bool openmetrics,
                     struct evbuffer *out)
{
	if (!reg)
		return;
	struct expo x = {.reg = reg, .out = out, .om = openmetrics};
	for (unsigned b = 0; b < reg->hist.n; b++)
		bound_str(&reg->hist, x.le[b], sizeof x.le[b], b);
	size_t most = 1;
	for (int d = 0; d < CTR_DIM__COUNT; d++)
		if (reg->names[d].count > most)
			most = reg->names[d].count;
	bool *seen = calloc(most, sizeof(bool));
	struct evbuffer *lb = evbuffer_new();
	if (!seen || !lb) {
		free(seen);
		if (lb)
			evbuffer_free(lb);
		return;
	}
	for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
		const struct ctr_family *f = &families[i];
		expo_header(&x, f);
		if (f->dim == CTR_DIM_GLOBAL) {
			expo_name(&x, f, 0, "", 0);
			continue;
		}
		if (!m)
			continue;
		memset(seen, 0, reg->names[f->dim].count);
		for (size_t k = 0; k < m->count[f->dim]; k++) {
			uint32_t id = m->ids[f->dim][k];
			if (seen[id]) /* two entries with one name count together: show them once */
				continue;
			seen[id] = true;
			const struct ctr_name *nm = &reg->names[f->dim].v[id];
			evbuffer_drain(lb, evbuffer_get_length(lb));
			evbuffer_add_printf(lb, "%s=\"", dim_labels[f->dim][0]);
			counters_label_value(lb, nm->a);
			if (nm->b) {
				evbuffer_add_printf(lb, "\",%s=\"", dim_labels[f->dim][1]);
				counters_label_value(lb, nm->b);
			}
			evbuffer_add(lb, "\"", 1);
			size_t len = evbuffer_get_length(lb);
			const char *names = (const char *)evbuffer_pullup(lb, -1);
			if (names)
				expo_name(&x, f, id, names, len);
		}
	}
	evbuffer_free(lb);
	free(seen);
}
