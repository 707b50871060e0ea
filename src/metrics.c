/* metrics.c - /metrics and /readyz (metrics.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "metrics.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/opensslv.h>

#include "config.h"
#include "metrics_impl.h"
#include "clock.h"
#include "counters.h"
#include "runtime.h"
#include "snapshot.h"
#include "conf_tls.h"
#include "tls_ctx.h"

static uint64_t wall_us(void)
{
	return clock_wall_us();
}

struct metrics *metrics_new(struct runtime *rt, struct snapshot *snap, unsigned workers)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->rt = rt;
	m->workers = workers;
	m->start_wall_us = wall_us();
	m->last_reload_ok = true;
	m->last_success_wall_us = snap->loaded_wall_us;
	snapshot_ref(snap);
	m->snap = snap;
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	snapshot_unref(m->snap);
	free(m);
}

void metrics_set_snapshot(struct metrics *m, struct snapshot *snap)
{
	snapshot_ref(snap);
	snapshot_unref(m->snap);
	m->snap = snap;
}

void metrics_set_ready(struct metrics *m)
{
	m->ready = true;
}

void metrics_set_draining(struct metrics *m)
{
	m->draining = true;
}

void metrics_reloaded(struct metrics *m, bool ok)
{
	m->last_reload_ok = ok;
	m->last_reload_wall_us = wall_us();
	if (ok)
		m->last_success_wall_us = m->snap->loaded_wall_us;
}

const char *metrics_not_ready(const struct metrics *m)
{
	if (m->draining)
		return "draining";
	if (!m->ready)
		return "starting";
	return NULL;
}

const char *metrics_breaker_name(int state)
{
	switch (state) {
	case BREAKER_OPEN:
		return "open";
	case BREAKER_HALF_OPEN:
		return "half_open";
	default:
		return "closed";
	}
}

/* # HELP and # TYPE of a family. type "info": OpenMetrics' info type, a gauge
 * named NAME_info in the Prometheus format. */
static void family(struct evbuffer *out, bool om, const char *name, const char *type, const char *help)
{
	if (strcmp(type, "info") == 0 && !om) {
		evbuffer_add_printf(out, "# HELP %s_info %s\n# TYPE %s_info gauge\n", name, help, name);
		return;
	}
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void series_begin(struct evbuffer *out, const char *name, const char *l1, const char *v1)
{
	evbuffer_add_printf(out, "%s{%s=\"", name, l1);
	counters_label_value(out, v1);
	evbuffer_add(out, "\"", 1);
}

static void series_label(struct evbuffer *out, const char *l, const char *v)
{
	evbuffer_add_printf(out, ",%s=\"", l);
	counters_label_value(out, v);
	evbuffer_add(out, "\"", 1);
}

static void series_end(struct evbuffer *out, unsigned long long v)
{
	evbuffer_add_printf(out, "} %llu\n", v);
}

static void scalar(struct evbuffer *out, bool om, const char *name, const char *type, const char *help,
                   unsigned long long v)
{
	family(out, om, name, type, help);
	evbuffer_add_printf(out, "%s %llu\n", name, v);
}

static void seconds(struct evbuffer *out, bool om, const char *name, const char *help, uint64_t us)
{
	family(out, om, name, "gauge", help);
	evbuffer_add_printf(out, "%s %llu.%06llu\n", name, (unsigned long long)(us / 1000000u),
	                    (unsigned long long)(us % 1000000u));
}

static void process_families(const struct metrics *m, struct evbuffer *out, bool om)
{
	family(out, om, "sluice_build", "info", "Build information: the version and the OpenSSL it was built with");
	evbuffer_add_printf(out, "sluice_build_info{version=\"%s\",openssl=\"%s\"} 1\n", PACKAGE_VERSION,
	                    OPENSSL_VERSION_TEXT);
	seconds(out, om, "sluice_start_time_seconds", "When the process started, in seconds since the Unix epoch",
	        m->start_wall_us);
	scalar(out, om, "sluice_workers", "gauge", "Worker threads", m->workers);
	scalar(out, om, "sluice_ready", "gauge",
	       "1 when the config is loaded, every listener bound and the process not draining (what /readyz says)",
	       metrics_not_ready(m) == NULL);
	scalar(out, om, "sluice_config_generation", "gauge",
	       "Generation of the config in use: 1 at start, +1 per successful reload", m->snap->generation);
	scalar(out, om, "sluice_config_last_reload_successful", "gauge",
	       "1 when the last reload (ctl reload, SIGHUP) was applied or none was tried, 0 when it was refused",
	       m->last_reload_ok);
	seconds(out, om, "sluice_config_last_reload_success_timestamp_seconds",
	        "When the config in use was loaded, in seconds since the Unix epoch", m->last_success_wall_us);
}

/* One gauge per server of every pool of the current config; with a state
 * label, one series per state (k: its index), 1 for the current one. */
typedef unsigned long long server_value_fn(const struct runtime_server *s, size_t k);

static unsigned long long srv_up(const struct runtime_server *s, size_t k)
{
	(void)k;
	return atomic_load(&s->health) == RUNTIME_HEALTH_UP;
}
static unsigned long long srv_weight(const struct runtime_server *s, size_t k)
{
	(void)k;
	return atomic_load(&s->weight);
}
static unsigned long long srv_drained(const struct runtime_server *s, size_t k)
{
	(void)k;
	return atomic_load(&s->drained) || atomic_load(&s->disabled);
}
static unsigned long long srv_active(const struct runtime_server *s, size_t k)
{
	(void)k;
	return atomic_load(&s->active_requests);
}
static unsigned long long srv_conns(const struct runtime_server *s, size_t k)
{
	(void)k;
	return atomic_load(&s->connections);
}
static const int breaker_states[] = { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };
static unsigned long long srv_breaker(const struct runtime_server *s, size_t k)
{
	return atomic_load(&s->breaker_state) == breaker_states[k];
}

static void server_family(const struct metrics *m, struct evbuffer *out, bool om, const char *name,
                          const char *help, server_value_fn *fn, size_t states)
{
	const struct conf *c = m->snap->conf;
	family(out, om, name, "gauge", help);
	for (size_t i = 0; i < c->num_pools; i++) {
		const struct conf_pool *cp = &c->pools[i];
		const struct runtime_pool *p = runtime_find_pool(m->rt, cp->name);
		for (size_t j = 0; p && j < cp->num_servers; j++) {
			const struct runtime_server *s = runtime_find_server(p, cp->servers[j].address);
			for (size_t k = 0; s && k < (states ? states : 1); k++) {
				series_begin(out, name, "pool", cp->name);
				series_label(out, "server", cp->servers[j].address);
				if (states)
					series_label(out, "state", metrics_breaker_name(breaker_states[k]));
				series_end(out, fn(s, k));
			}
		}
	}
}

/* Per-pool gauges: a live atomic of struct runtime_pool (by offset), or
 * computed from the config and the servers' state. */
enum pool_value { POOL_SERVERS, POOL_USABLE, POOL_FIELD };

static unsigned long long pool_value(const struct metrics *m, const struct conf_pool *cp,
                                     const struct runtime_pool *p, enum pool_value what, size_t field)
{
	if (what == POOL_SERVERS)
		return cp->num_servers;
	if (what == POOL_FIELD)
		return atomic_load((const atomic_uint *)((const char *)p + field));
	unsigned long long n = 0;
	for (size_t j = 0; j < cp->num_servers; j++) {
		const struct runtime_server *s = runtime_find_server(p, cp->servers[j].address);
		n += s && runtime_server_usable(s, m->now_us);
	}
	return n;
}

static void pool_family(const struct metrics *m, struct evbuffer *out, bool om, const char *name, const char *help,
                        enum pool_value what, size_t field)
{
	const struct conf *c = m->snap->conf;
	family(out, om, name, "gauge", help);
	for (size_t i = 0; i < c->num_pools; i++) {
		const struct runtime_pool *p = runtime_find_pool(m->rt, c->pools[i].name);
		if (!p)
			continue;
		series_begin(out, name, "pool", c->pools[i].name);
		series_end(out, pool_value(m, &c->pools[i], p, what, field));
	}
}

static void split_family(const struct metrics *m, struct evbuffer *out, bool om)
{
	const struct conf *c = m->snap->conf;
	family(out, om, "sluice_service_pool_weight", "gauge",
	       "A service's current weight for each of its pools (the traffic split; deployer changes included)");
	for (size_t i = 0; i < c->num_services; i++) {
		const struct conf_service *sv = &c->services[i];
		for (size_t j = 0; j < sv->num_pools; j++) {
			const char *pool = c->pools[sv->pools[j].pool].name;
			const struct runtime_split *sp = runtime_find_split(m->rt, sv->name, pool);
			if (!sp)
				continue;
			series_begin(out, "sluice_service_pool_weight", "service", sv->name);
			series_label(out, "pool", pool);
			series_end(out, atomic_load(&sp->weight));
		}
	}
}

/* The value of word `key=` in a rollout line (rollout.c keeps one per
 * service in the runtime table: "to=POOL steps=5,25,100 ... step=1
 * state=running start=..."), copied into buf; NULL when absent. */
static const char *rollout_word(const char *line, const char *key, char *buf, size_t size)
{
	size_t klen = strlen(key);
	for (const char *p = line; p && *p; p = strchr(p, ' ')) {
		while (*p == ' ')
			p++;
		if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
			size_t n = strcspn(p + klen + 1, " ");
			if (n >= size)
				return NULL;
			memcpy(buf, p + klen + 1, n);
			buf[n] = '\0';
			return buf;
		}
	}
	return NULL;
}

static const char *const rollout_states[] = {"running", "paused", "completed", "aborted", "rolled_back", "stopped"};

bool metrics_rollout(const struct metrics *m, const char *service, struct metrics_rollout *out)
{
	const char *line = runtime_rollout_line(m->rt, service);
	char steps[128], step[24];
	if (!line || !rollout_word(line, "to", out->pool, sizeof out->pool) ||
	    !rollout_word(line, "steps", steps, sizeof steps) || !rollout_word(line, "step", step, sizeof step) ||
	    !rollout_word(line, "state", out->state, sizeof out->state))
		return false;
	unsigned long k = strtoul(step, NULL, 10);
	unsigned long pct = 0;
	const char *p = steps;
	for (unsigned long j = 0; j <= k && *p; j++) {
		pct = strtoul(p, NULL, 10);
		p += strcspn(p, ",");
		if (*p == ',')
			p++;
	}
	out->step = (unsigned)k + 1;
	out->percent = (unsigned)pct;
	return true;
}

/* Rollouts (rollout.h): per service with one, its canary pool's step, the
 * share that step gives it, and its state. */
static void rollout_families(const struct metrics *m, struct evbuffer *out, bool om)
{
	const struct conf *c = m->snap->conf;
	static const char *const names[] = {"sluice_service_rollout_step", "sluice_service_rollout_canary_percent",
	                                    "sluice_service_rollout_state"};
	static const char *const helps[] = {
	    "The rollout's current step (1 = the first), per service and canary pool",
	    "The share of the service (percent) the rollout's current step gives the canary pool",
	    "The rollout's state: 1 for the current one (running, paused, completed, aborted, rolled_back, stopped)"};
	for (size_t f = 0; f < 3; f++) {
		family(out, om, names[f], "gauge", helps[f]);
		for (size_t i = 0; i < c->num_services; i++) {
			struct metrics_rollout ro;
			if (!metrics_rollout(m, c->services[i].name, &ro))
				continue;
			for (size_t j = 0; j < (f == 2 ? sizeof rollout_states / sizeof rollout_states[0] : 1); j++) {
				series_begin(out, names[f], "service", c->services[i].name);
				series_label(out, "pool", ro.pool);
				if (f == 2)
					series_label(out, "state", rollout_states[j]);
				series_end(out, f == 0 ? ro.step : f == 1 ? ro.percent : strcmp(ro.state, rollout_states[j]) == 0);
			}
		}
	}
}

static void listener_family(const struct metrics *m, struct evbuffer *out, bool om)
{
	const struct conf *c = m->snap->conf;
	family(out, om, "sluice_listener_info", "gauge",
	       "One series per configured listener: its address, whether it speaks TLS (1: listening)");
	for (size_t i = 0; i < c->num_listeners; i++) {
		series_begin(out, "sluice_listener_info", "listener", c->listeners[i].name);
		series_label(out, "address", c->listeners[i].address);
		series_label(out, "tls", c->listeners[i].tls ? "true" : "false");
		series_end(out, 1);
	}
}

static void cert_family(const struct metrics *m, struct evbuffer *out, bool om)
{
	const struct conf *c = m->snap->conf;
	family(out, om, "sluice_tls_certificate_expiry_timestamp_seconds", "gauge",
	       "When each listener certificate expires (notAfter), in seconds since the Unix epoch; names: the DNS "
	       "names it answers for");
	for (size_t i = 0; i < c->num_listeners; i++) {
		const struct conf_tls *t = c->listeners[i].tls;
		int64_t not_after;
		const char *names;
		for (size_t k = 0; t && tls_server_cert_expiry(t->server, k, &not_after, &names); k++) {
			series_begin(out, "sluice_tls_certificate_expiry_timestamp_seconds", "listener", c->listeners[i].name);
			/* "a.test b.test " -> "a.test,b.test" */
			size_t n = strlen(names);
			while (n > 0 && names[n - 1] == ' ')
				n--;
			char *joined = strndup(names, n);
			for (char *p = joined; p && *p; p++)
				if (*p == ' ')
					*p = ',';
			series_label(out, "names", joined ? joined : "");
			free(joined);
			series_end(out, (unsigned long long)(not_after > 0 ? not_after : 0));
		}
	}
}

void metrics_write(struct metrics *m, struct evbuffer *out, bool om)
{
	m->now_us = clock_mono_us();
	process_families(m, out, om);
	listener_family(m, out, om);
	cert_family(m, out, om);
	split_family(m, out, om);
	rollout_families(m, out, om);
	pool_family(m, out, om, "sluice_pool_servers", "Servers configured in the pool", POOL_SERVERS, 0);
	pool_family(m, out, om, "sluice_pool_servers_usable",
	            "Servers of the pool that may take new requests (up, not drained or disabled, weight above 0, "
	            "breaker not open)",
	            POOL_USABLE, 0);
	pool_family(m, out, om, "sluice_pool_active_requests", "Requests in flight to the pool, all workers",
	            POOL_FIELD, offsetof(struct runtime_pool, active_requests));
	pool_family(m, out, om, "sluice_pool_upstream_connections", "Upstream connections open to the pool, all workers",
	            POOL_FIELD, offsetof(struct runtime_pool, connections));
	pool_family(m, out, om, "sluice_pool_upstream_connections_idle",
	            "Of the upstream connections open to the pool, the idle keep-alive ones (the rest are in use)",
	            POOL_FIELD, offsetof(struct runtime_pool, idle));
	pool_family(m, out, om, "sluice_pool_pending_requests", "Requests waiting for a new upstream connection",
	            POOL_FIELD, offsetof(struct runtime_pool, pending));
	server_family(m, out, om, "sluice_server_up", "1 when the server passes its health checks (or has none)",
	              srv_up, 0);
	server_family(m, out, om, "sluice_server_breaker_state",
	              "Circuit breaker of each server: 1 for its current state (closed, open, half_open), 0 for the others",
	              srv_breaker, sizeof(breaker_states) / sizeof(breaker_states[0]));
	server_family(m, out, om, "sluice_server_weight", "The server's effective weight (a deployer override included)",
	              srv_weight, 0);
	server_family(m, out, om, "sluice_server_drained", "1 when the server is drained or disabled by a deployer",
	              srv_drained, 0);
	server_family(m, out, om, "sluice_server_active_requests", "Requests in flight to the server, all workers",
	              srv_active, 0);
	server_family(m, out, om, "sluice_server_upstream_connections",
	              "Upstream connections open to the server, all workers", srv_conns, 0);
	/* the request totals: the counter registry, summed over the workers here */
	counters_expose(counters_process, m->snap->counters, om, out);
	if (om)
		evbuffer_add(out, "# EOF\n", 6);
}
