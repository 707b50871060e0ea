/* metrics_status.c - the status page of GET / and its JSON twin (metrics.h):
 * listeners, services with their split, pools with each server's health,
 * breaker, weight, drain mark, in-flight requests and recent error rate
 * (the breaker's rolling window). One self-contained page: inline style, no
 * script, refreshed by <meta http-equiv="refresh">. */
#include "metrics.h"

#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "clock.h"
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
	evbuffer_add_printf(out, "</table>\n<h2>Pools</h2>\n<table id=\"pools\"><tr><th>pool / server</th><th>health</th>"
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
	evbuffer_add(out, "\"", 1);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			evbuffer_add_printf(out, "\\%c", ch);
		else if (ch < 0x20)
			evbuffer_add_printf(out, "\\u%04x", ch);
		else
			evbuffer_add(out, s, 1);
	}
	evbuffer_add(out, "\"", 1);
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
	evbuffer_add(out, "],\"pools\":[", strlen("],\"pools\":["));
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
