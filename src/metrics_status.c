/* metrics_status.c - the status page of GET / and its JSON twin (metrics.h):
 * listeners, services with their split, rollouts in progress, rate-limit
 * and WAF/policy counters (the registry's totals, and per route), pools
 * with each server's health, breaker, weight, drain mark, in-flight
 * requests and recent error rate (the breaker's rolling window). One
 * self-contained page: inline style, no
 * script, refreshed by <meta http-equiv="refresh">. */
#include "metrics.h"

#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "clock.h"
#include "counters.h"
#include "json_str.h"
#include "metrics_impl.h"
#include "runtime.h"
#include "snapshot.h"

#define STATUS_REFRESH_SECONDS 5

struct status_server {
	const char *health, *breaker;
	unsigned weight, in_flight, connections;
	bool drained, disabled, usable;
	unsigned error_pct, window_requests;
};

static void read_server(struct metrics *m, const struct conf_pool *cp, struct runtime_server *s,
                        struct status_server *o)
{
	struct breaker b;
	struct breaker_stats st;
	runtime_breaker_read(s, &cp->breaker, m->now_us, &b, &st);
	o->health = atomic_load(&s->health) == RUNTIME_HEALTH_UP ? "up" : "down";
	o->breaker = metrics_breaker_name(atomic_load(&s->breaker_state));
	o->weight = atomic_load(&s->weight);
	o->in_flight = atomic_load(&s->active_requests);
	o->connections = atomic_load(&s->connections);
	o->drained = atomic_load(&s->drained);
	o->disabled = atomic_load(&s->disabled);
	o->usable = runtime_server_usable(s, m->now_us);
	o->window_requests = (unsigned)st.total;
	o->error_pct = st.total ? (unsigned)((uint64_t)st.failures * 100 / st.total) : 0;
}

/* The rate-limit and WAF/policy figures of the page, from the counter
 * registry: per route (what it refused and why) and for the process. */
struct status_guard {
	unsigned long long rate_limited, waf_blocked, waf_detected, waf_errors, policy_denied, policy_errors;
};
#define GUARD_FIELDS 6

static unsigned long long route_slot(const struct metrics *m, size_t route, unsigned slot)
{
	return counters_get(counters_process, m->snap->counters, CTR_DIM_ROUTE, route, slot);
}

/* Route i's figures; false when they are all 0. */
static bool read_route_guard(const struct metrics *m, size_t i, struct status_guard *g)
{
	g->rate_limited = route_slot(m, i, CTR_ROUTE_REASONS + REASON_RATE_LIMITED);
	g->waf_blocked = route_slot(m, i, CTR_ROUTE_WAF + CTR_WAF_BLOCKED);
	g->waf_detected = route_slot(m, i, CTR_ROUTE_WAF + CTR_WAF_DETECTED);
	g->waf_errors = route_slot(m, i, CTR_ROUTE_WAF + CTR_WAF_BUDGET) + route_slot(m, i, CTR_ROUTE_WAF + CTR_WAF_ERROR);
	g->policy_denied = route_slot(m, i, CTR_ROUTE_POLICY + CTR_POLICY_DENIED);
	g->policy_errors = route_slot(m, i, CTR_ROUTE_POLICY + CTR_POLICY_ERROR) +
	                   route_slot(m, i, CTR_ROUTE_POLICY + CTR_POLICY_BUDGET) +
	                   route_slot(m, i, CTR_ROUTE_POLICY + CTR_POLICY_MEMORY);
	return g->rate_limited || g->waf_blocked || g->waf_detected || g->waf_errors || g->policy_denied ||
	       g->policy_errors;
}

static void guard_values(const struct status_guard *g, unsigned long long *v)
{
	unsigned long long tmp[GUARD_FIELDS] = {g->rate_limited,  g->waf_blocked,   g->waf_detected,
	                                        g->waf_errors,    g->policy_denied, g->policy_errors};
	memcpy(v, tmp, sizeof tmp);
}

/* The process's rate-limit decisions, and the WAF/policy figures summed over the config's routes. */
struct status_totals {
	unsigned long long allowed, limited, fallback, redis_failures;
	struct status_guard routes;
};

static void read_totals(const struct metrics *m, struct status_totals *t)
{
	const struct counters *reg = counters_process;
	t->allowed = counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_RL_DECISIONS + CTR_RL_ALLOWED);
	t->limited = counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_RL_DECISIONS + CTR_RL_LIMITED);
	t->fallback = counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_RL_FALLBACK);
	t->redis_failures = counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_RL_REDIS_FAILURES);
	memset(&t->routes, 0, sizeof t->routes);
	for (size_t i = 0; i < m->snap->conf->num_routes; i++) {
		struct status_guard g;
		read_route_guard(m, i, &g);
		t->routes.rate_limited += g.rate_limited;
		t->routes.waf_blocked += g.waf_blocked;
		t->routes.waf_detected += g.waf_detected;
		t->routes.waf_errors += g.waf_errors;
		t->routes.policy_denied += g.policy_denied;
		t->routes.policy_errors += g.policy_errors;
	}
}

static const char *const guard_names[GUARD_FIELDS] = {"rate_limited",  "waf_blocked",   "waf_detected",
                                                       "waf_errors",    "policy_denied", "policy_errors"};
static const char *const guard_titles[GUARD_FIELDS] = {"rate limited",  "WAF blocked",   "WAF detected",
                                                        "WAF budget exceeded / errors", "policy denied",
                                                        "policy errors"};

/* ---- HTML ---- */

static void html_text(struct evbuffer *out, const char *s)
{
	const char *run = s;
	for (; *s; s++) {
		const char *rep = *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '&' ? "&amp;" : *s == '"' ? "&quot;" : NULL;
		if (!rep)
			continue;
		evbuffer_add(out, run, (size_t)(s - run));
		evbuffer_add(out, rep, strlen(rep));
		run = s + 1;
	}
	evbuffer_add(out, run, (size_t)(s - run));
}

static void td(struct evbuffer *out, const char *cls, const char *text)
{
	if (cls)
		evbuffer_add_printf(out, "<td class=\"%s\">", cls);
	else
		evbuffer_add(out, "<td>", 4);
	html_text(out, text);
	evbuffer_add(out, "</td>", 5);
}

static const char status_style[] =
	"body{font:14px/1.4 system-ui,sans-serif;margin:1em;color:#222}"
	"h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}"
	"table{border-collapse:collapse;margin:.3em 0}th,td{border:1px solid #bbb;padding:2px 8px;text-align:left}"
	"th{background:#eee}.up,.closed{background:#cfc}.down,.open{background:#fbb}.half_open,.drained{background:#ffd}"
	".pool{font-weight:bold;background:#dde}";

static void html_page(struct metrics *m, struct evbuffer *out)
{
	const struct conf *c = m->snap->conf;
	const char *nr = metrics_not_ready(m);
	evbuffer_add_printf(out,
	                    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	                    "<meta http-equiv=\"refresh\" content=\"%d\"><title>sluice status</title><style>%s</style>"
	                    "</head><body>\n<h1>sluice %s</h1>\n<p id=\"summary\">config generation %llu, %u workers, "
	                    "<span id=\"ready\">%s</span>, last reload %s</p>\n",
	                    STATUS_REFRESH_SECONDS, status_style, PACKAGE_VERSION,
	                    (unsigned long long)m->snap->generation, m->workers, nr ? nr : "ready",
	                    m->last_reload_wall_us == 0 ? "none" : m->last_reload_ok ? "ok" : "failed");
	evbuffer_add(out, "<h2>Listeners</h2>\n<table id=\"listeners\"><tr><th>name</th><th>address</th><th>tls</th></tr>\n",
	             strlen("<h2>Listeners</h2>\n<table id=\"listeners\"><tr><th>name</th><th>address</th><th>tls</th></tr>\n"));
	for (size_t i = 0; i < c->num_listeners; i++) {
		evbuffer_add(out, "<tr>", 4);
		td(out, NULL, c->listeners[i].name);
		td(out, NULL, c->listeners[i].address);
		td(out, NULL, c->listeners[i].tls ? "yes" : "no");
		evbuffer_add(out, "</tr>\n", 6);
	}
	evbuffer_add_printf(out, "</table>\n<h2>Services</h2>\n<table id=\"services\"><tr><th>service</th><th>pool</th>"
	                         "<th>weight</th><th>share</th></tr>\n");
	for (size_t i = 0; i < c->num_services; i++) {
		const struct conf_service *sv = &c->services[i];
		unsigned total = 0;
		for (size_t j = 0; j < sv->num_pools; j++) {
			const struct runtime_split *sp = runtime_find_split(m->rt, sv->name, c->pools[sv->pools[j].pool].name);
			total += sp ? atomic_load(&sp->weight) : 0;
		}
		for (size_t j = 0; j < sv->num_pools; j++) {
			const char *pool = c->pools[sv->pools[j].pool].name;
			const struct runtime_split *sp = runtime_find_split(m->rt, sv->name, pool);
			unsigned w = sp ? atomic_load(&sp->weight) : 0;
			evbuffer_add(out, "<tr>", 4);
			td(out, NULL, sv->name);
			td(out, NULL, pool);
			evbuffer_add_printf(out, "<td>%u%s</td><td>%u%%</td></tr>\n", w,
			                    sp && atomic_load(&sp->weight_set) ? " (set)" : "",
			                    total ? (unsigned)((uint64_t)w * 100 / total) : 0);
		}
	}
	evbuffer_add(out, "</table>\n", 9);
	bool any = false;
	for (size_t i = 0; i < c->num_services; i++) {
		struct metrics_rollout ro;
		if (!metrics_rollout(m, c->services[i].name, &ro))
			continue;
		if (!any)
			evbuffer_add_printf(out, "<h2>Rollouts</h2>\n<table id=\"rollouts\"><tr><th>service</th><th>canary pool"
			                         "</th><th>step</th><th>canary share</th><th>state</th></tr>\n");
		any = true;
		evbuffer_add_printf(out, "<tr data-service=\"");
		html_text(out, c->services[i].name);
		evbuffer_add(out, "\">", 2);
		td(out, NULL, c->services[i].name);
		td(out, NULL, ro.pool);
		evbuffer_add_printf(out, "<td>%u</td><td>%u%%</td>", ro.step, ro.percent);
		td(out, ro.state, ro.state);
		evbuffer_add(out, "</tr>\n", 6);
	}
	if (any)
		evbuffer_add(out, "</table>\n", 9);
	struct status_totals t;
	read_totals(m, &t);
	evbuffer_add_printf(out,
	                    "<h2>Rate limits and WAF</h2>\n<table id=\"rate-limits\"><tr><th>allowed</th><th>limited</th>"
	                    "<th>decided without Redis</th><th>Redis failures</th></tr>\n<tr><td id=\"rl-allowed\">%llu</td>"
	                    "<td id=\"rl-limited\">%llu</td><td id=\"rl-fallback\">%llu</td>"
	                    "<td id=\"rl-redis-failures\">%llu</td></tr>\n</table>\n<table id=\"route-guards\"><tr>"
	                    "<th>route</th>",
	                    t.allowed, t.limited, t.fallback, t.redis_failures);
	for (size_t k = 0; k < GUARD_FIELDS; k++)
		evbuffer_add_printf(out, "<th>%s</th>", guard_titles[k]);
	evbuffer_add(out, "</tr>\n", 6);
	for (size_t i = 0; i <= c->num_routes; i++) {
		struct status_guard g;
		if (i < c->num_routes && !read_route_guard(m, i, &g))
			continue;
		unsigned long long v[GUARD_FIELDS];
		guard_values(i < c->num_routes ? &g : &t.routes, v);
		evbuffer_add_printf(out, "<tr%s>", i < c->num_routes ? "" : " class=\"total\"");
		td(out, NULL, i < c->num_routes ? c->routes[i].name : "all routes");
		for (size_t k = 0; k < GUARD_FIELDS; k++)
			evbuffer_add_printf(out, "<td data-field=\"%s\">%llu</td>", guard_names[k], v[k]);
		evbuffer_add(out, "</tr>\n", 6);
	}
	evbuffer_add(out, "</table>\n", 9);
	evbuffer_add_printf(out, "<h2>Pools</h2>\n<table id=\"pools\"><tr><th>pool / server</th><th>health</th>"
	                         "<th>breaker</th><th>weight</th><th>drain</th><th>in flight</th><th>connections</th>"
	                         "<th>recent errors</th></tr>\n");
	for (size_t i = 0; i < c->num_pools; i++) {
		const struct conf_pool *cp = &c->pools[i];
		struct runtime_pool *p = runtime_find_pool(m->rt, cp->name);
		if (!p)
			continue;
		evbuffer_add(out, "<tr class=\"pool\">", strlen("<tr class=\"pool\">"));
		td(out, NULL, cp->name);
		evbuffer_add_printf(out, "<td colspan=\"4\">%zu servers</td><td>%u</td><td>%u</td><td></td></tr>\n",
		                    cp->num_servers, atomic_load(&p->active_requests), atomic_load(&p->connections));
		for (size_t j = 0; j < cp->num_servers; j++) {
			struct runtime_server *s = runtime_find_server(p, cp->servers[j].address);
			if (!s)
				continue;
			struct status_server o;
			read_server(m, cp, s, &o);
			evbuffer_add_printf(out, "<tr class=\"server\" data-pool=\"");
			html_text(out, cp->name);
			evbuffer_add_printf(out, "\" data-server=\"");
			html_text(out, cp->servers[j].address);
			evbuffer_add(out, "\">", 2);
			td(out, NULL, cp->servers[j].address);
			td(out, o.health, o.health);
			td(out, o.breaker, o.breaker);
			evbuffer_add_printf(out, "<td>%u</td>", o.weight);
			td(out, o.drained || o.disabled ? "drained" : NULL,
			   o.disabled ? "disabled" : o.drained ? "drained" : "-");
			evbuffer_add_printf(out, "<td>%u</td><td>%u</td><td>%u%% of %u</td></tr>\n", o.in_flight, o.connections,
			                    o.error_pct, o.window_requests);
		}
	}
	evbuffer_add_printf(out, "</table>\n<p>Refreshes every %d s. The same as JSON: <a href=\"/?json\">/?json</a>; "
	                         "metrics: <a href=\"/metrics\">/metrics</a>.</p>\n</body></html>\n",
	                    STATUS_REFRESH_SECONDS);
}

/* ---- JSON ---- */

static void json_str(struct evbuffer *out, const char *s)
{
	json_str_add_quoted(out, s, strlen(s));
}

static void json_page(struct metrics *m, struct evbuffer *out)
{
	const struct conf *c = m->snap->conf;
	const char *nr = metrics_not_ready(m);
	evbuffer_add_printf(out, "{\"version\":\"%s\",\"generation\":%llu,\"workers\":%u,\"ready\":%s,\"state\":\"%s\","
	                         "\"last_reload\":\"%s\",\"listeners\":[",
	                    PACKAGE_VERSION, (unsigned long long)m->snap->generation, m->workers, nr ? "false" : "true",
	                    nr ? nr : "ready",
	                    m->last_reload_wall_us == 0 ? "none" : m->last_reload_ok ? "ok" : "failed");
	for (size_t i = 0; i < c->num_listeners; i++) {
		evbuffer_add_printf(out, "%s{\"name\":", i ? "," : "");
		json_str(out, c->listeners[i].name);
		evbuffer_add(out, ",\"address\":", strlen(",\"address\":"));
		json_str(out, c->listeners[i].address);
		evbuffer_add_printf(out, ",\"tls\":%s}", c->listeners[i].tls ? "true" : "false");
	}
	evbuffer_add(out, "],\"services\":[", strlen("],\"services\":["));
	for (size_t i = 0; i < c->num_services; i++) {
		const struct conf_service *sv = &c->services[i];
		evbuffer_add_printf(out, "%s{\"name\":", i ? "," : "");
		json_str(out, sv->name);
		evbuffer_add(out, ",\"split\":[", strlen(",\"split\":["));
		for (size_t j = 0; j < sv->num_pools; j++) {
			const char *pool = c->pools[sv->pools[j].pool].name;
			const struct runtime_split *sp = runtime_find_split(m->rt, sv->name, pool);
			evbuffer_add_printf(out, "%s{\"pool\":", j ? "," : "");
			json_str(out, pool);
			evbuffer_add_printf(out, ",\"weight\":%u,\"weight_set\":%s}", sp ? atomic_load(&sp->weight) : 0,
			                    sp && atomic_load(&sp->weight_set) ? "true" : "false");
		}
		evbuffer_add(out, "]}", 2);
	}
	evbuffer_add(out, "],\"rollouts\":[", strlen("],\"rollouts\":["));
	bool rfirst = true;
	for (size_t i = 0; i < c->num_services; i++) {
		struct metrics_rollout ro;
		if (!metrics_rollout(m, c->services[i].name, &ro))
			continue;
		evbuffer_add_printf(out, "%s{\"service\":", rfirst ? "" : ",");
		rfirst = false;
		json_str(out, c->services[i].name);
		evbuffer_add(out, ",\"pool\":", strlen(",\"pool\":"));
		json_str(out, ro.pool);
		evbuffer_add_printf(out, ",\"step\":%u,\"percent\":%u,\"state\":", ro.step, ro.percent);
		json_str(out, ro.state);
		evbuffer_add(out, "}", 1);
	}
	struct status_totals t;
	read_totals(m, &t);
	evbuffer_add_printf(out,
	                    "],\"rate_limits\":{\"allowed\":%llu,\"limited\":%llu,\"fallback\":%llu,\"redis_failures\":%llu},"
	                    "\"guards\":{\"total\":",
	                    t.allowed, t.limited, t.fallback, t.redis_failures);
	rfirst = true;
	for (size_t i = 0; i <= c->num_routes; i++) {
		struct status_guard g;
		bool total = i == 0;
		size_t r = i - 1;
		if (!total && !read_route_guard(m, r, &g))
			continue;
		unsigned long long v[GUARD_FIELDS];
		guard_values(total ? &t.routes : &g, v);
		if (!total) {
			evbuffer_add_printf(out, "%s{\"route\":", rfirst ? "" : ",");
			rfirst = false;
			json_str(out, c->routes[r].name);
			evbuffer_add(out, ",", 1);
		} else {
			evbuffer_add(out, "{", 1);
		}
		for (size_t k = 0; k < GUARD_FIELDS; k++)
			evbuffer_add_printf(out, "%s\"%s\":%llu", k ? "," : "", guard_names[k], v[k]);
		evbuffer_add(out, total ? "},\"routes\":[" : "}", total ? 12 : 1);
	}
	evbuffer_add(out, "]},\"pools\":[", strlen("]},\"pools\":["));
	bool first = true;
	for (size_t i = 0; i < c->num_pools; i++) {
		const struct conf_pool *cp = &c->pools[i];
		struct runtime_pool *p = runtime_find_pool(m->rt, cp->name);
		if (!p)
			continue;
		evbuffer_add_printf(out, "%s{\"name\":", first ? "" : ",");
		first = false;
		json_str(out, cp->name);
		evbuffer_add_printf(out, ",\"active_requests\":%u,\"connections\":%u,\"servers\":[",
		                    atomic_load(&p->active_requests), atomic_load(&p->connections));
		bool sfirst = true;
		for (size_t j = 0; j < cp->num_servers; j++) {
			struct runtime_server *s = runtime_find_server(p, cp->servers[j].address);
			if (!s)
				continue;
			struct status_server o;
			read_server(m, cp, s, &o);
			evbuffer_add_printf(out, "%s{\"address\":", sfirst ? "" : ",");
			sfirst = false;
			json_str(out, cp->servers[j].address);
			evbuffer_add_printf(out, ",\"health\":\"%s\",\"breaker\":\"%s\",\"weight\":%u,\"drained\":%s,"
			                         "\"disabled\":%s,\"usable\":%s,\"in_flight\":%u,\"connections\":%u,"
			                         "\"error_rate_pct\":%u,\"window_requests\":%u}",
			                    o.health, o.breaker, o.weight, o.drained ? "true" : "false",
			                    o.disabled ? "true" : "false", o.usable ? "true" : "false", o.in_flight,
			                    o.connections, o.error_pct, o.window_requests);
		}
		evbuffer_add(out, "]}", 2);
	}
	evbuffer_add(out, "]}\n", 3);
}

void metrics_status(struct metrics *m, struct evbuffer *out, bool json)
{
	m->now_us = clock_mono_us();
	if (json)
		json_page(m, out);
	else
		html_page(m, out);
}
