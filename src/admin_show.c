#include "admin_show.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "admin_reply.h"
#include "breaker.h"
#include "clock.h"
#include "control.h"
#include "counters.h"
#include "health.h"
#include "log.h"
#include "redis_sentinel.h"
#include "runtime.h"
#include "snapshot.h"
#include "statefile.h"

static const char *health_name(const struct runtime_server *s)
{
	return atomic_load(&s->health) == RUNTIME_HEALTH_UP ? "up" : "down";
}

static const char *admin_state_name(const struct runtime_server *s)
{
	if (atomic_load(&s->disabled))
		return "disabled";
	if (atomic_load(&s->drained))
		return "draining";
	return "active";
}

/* A server's breaker and window as `show servers` and `show breakers` give
 * them: b and st filled, the state's name returned ("off": the pool has none). */
static const char *breaker_read(struct runtime_server *s, const struct conf_pool *cp, uint64_t now, struct breaker *b,
                                struct breaker_stats *st)
{
	runtime_breaker_read(s, &cp->breaker, now, b, st);
	return cp->breaker.enabled ? breaker_state_name(b->state) : "off";
}

/* The start of a server's JSON object, {"pool":...,"address":..., after a comma unless it is the first. */
static void json_server_head(struct evbuffer *out, bool first, const char *pool, const char *address)
{
	evbuffer_add_printf(out, "%s{\"pool\":", first ? "" : ",");
	admin_reply_json_str(out, pool);
	evbuffer_add_printf(out, ",\"address\":");
	admin_reply_json_str(out, address);
}

void admin_show_pools(const struct admin_show_view *v, bool json, struct evbuffer *out)
{
	const struct conf *c = v->snap->conf;
	uint64_t now = clock_mono_us();
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"pools\":[");
	else
		evbuffer_add_printf(out, "%-16s %7s %4s %6s %6s %7s %7s %8s %8s %8s %8s %8s\n", "POOL", "SERVERS", "UP",
		                    "ACTIVE", "CONNS", "PENDING", "RETRIES", "OVERFLOW", "BUDGET", "BREAKER", "NOSERVER",
		                    "RETRIED");
	for (size_t i = 0; i < c->num_pools; i++) {
		struct runtime_pool *p = runtime_find_pool(v->rt, c->pools[i].name);
		if (!p)
			continue;
		size_t usable = 0;
		for (size_t j = 0; j < c->pools[i].num_servers; j++) {
			struct runtime_server *s = runtime_find_server(p, c->pools[i].servers[j].address);
			usable += s && runtime_server_usable(s, now);
		}
		const struct counters_map *m = v->snap->counters;
#define POOL_REASON(r) (unsigned long long)counters_get(counters_process, m, CTR_DIM_POOL, i, CTR_POOL_REASONS + (r))
		unsigned long long overflow = POOL_REASON(REASON_POOL_OVERFLOW),
		                   denied = POOL_REASON(REASON_RETRY_BUDGET_EXHAUSTED),
		                   bopen = POOL_REASON(REASON_BREAKER_OPEN), none = POOL_REASON(REASON_NO_HEALTHY_UPSTREAM),
		                   retries = counters_get(counters_process, m, CTR_DIM_POOL, i, CTR_POOL_RETRIES);
#undef POOL_REASON
		if (json) {
			evbuffer_add_printf(out, "%s{\"pool\":", i ? "," : "");
			admin_reply_json_str(out, p->name);
			evbuffer_add_printf(out,
			                    ",\"servers\":%zu,\"usable\":%zu,\"active_requests\":%u,\"connections\":%u,"
			                    "\"pending\":%u,\"retries_in_flight\":%u,\"refused\":{\"pool_overflow\":%llu,"
			                    "\"retry_budget_exhausted\":%llu,\"breaker_open\":%llu,\"no_healthy_upstream\":%llu},"
			                    "\"retries\":%llu}",
			                    c->pools[i].num_servers, usable, atomic_load(&p->active_requests),
			                    atomic_load(&p->connections), atomic_load(&p->pending),
			                    atomic_load(&p->retries_inflight), overflow, denied, bopen, none, retries);
		} else {
			evbuffer_add_printf(out, "%-16s %7zu %4zu %6u %6u %7u %7u %8llu %8llu %8llu %8llu %8llu\n", p->name,
			                    c->pools[i].num_servers, usable, atomic_load(&p->active_requests),
			                    atomic_load(&p->connections), atomic_load(&p->pending),
			                    atomic_load(&p->retries_inflight), overflow, denied, bopen, none, retries);
		}
	}
	if (json)
		evbuffer_add_printf(out, "]}\n");
}

/* Every configured server that has runtime state, pool by pool (only the pool
 * named ONLY when set), with its breaker read once: the walk that show servers
 * and show breakers share. */
struct server_walk {
	const struct admin_show_view *v;
	const char *only;
	size_t pool, server;
};

struct server_row {
	const struct conf_pool *pool;
	size_t pool_index, server_index;
	struct runtime_server *server;
	struct breaker breaker;
	struct breaker_stats stats;
	const char *breaker_state;
};

static bool server_walk_next(struct server_walk *w, uint64_t now, struct server_row *row)
{
	const struct conf *c = w->v->snap->conf;
	for (; w->pool < c->num_pools; w->pool++, w->server = 0) {
		const struct conf_pool *cp = &c->pools[w->pool];
		if (w->only && strcmp(w->only, cp->name) != 0)
			continue;
		struct runtime_pool *p = runtime_find_pool(w->v->rt, cp->name);
		while (p && w->server < cp->num_servers) {
			size_t j = w->server++;
			struct runtime_server *s = runtime_find_server(p, cp->servers[j].address);
			if (!s)
				continue;
			*row = (struct server_row){ .pool = cp, .pool_index = w->pool, .server_index = j, .server = s };
			row->breaker_state = breaker_read(s, cp, now, &row->breaker, &row->stats);
			return true;
		}
	}
	return false;
}

void admin_show_servers(const struct admin_show_view *v, const char *only, bool json, struct evbuffer *out)
{
	const struct conf *c = v->snap->conf;
	if (only && conf_find_pool(c, only) < 0) {
		admin_reply_error(out, json, "unknown pool \"%s\" (show pools lists them)", only);
		return;
	}
	uint64_t now = clock_mono_us();
	bool first = true;
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"servers\":[");
	else
		evbuffer_add_printf(out, "%-12s %-22s %6s %6s %-8s %-9s %6s %5s %6s %8s  %s\n", "POOL", "ADDRESS", "WEIGHT",
		                    "CONFIG", "HEALTH", "STATE", "ACTIVE", "CONNS", "ERR%", "REQUESTS", "BREAKER");
	struct server_row row;
	for (struct server_walk w = { .v = v, .only = only }; server_walk_next(&w, now, &row);) {
		const struct conf_pool *cp = row.pool;
		struct runtime_server *s = row.server;
		struct breaker_stats st = row.stats;
		const char *bstate = row.breaker_state;
		size_t i = row.pool_index, j = row.server_index;
		unsigned rate = st.total ? (unsigned)((uint64_t)st.failures * 100 / st.total) : 0;
		const char *check = health_last_result(v->health, cp->name, s->address);
		size_t si = v->snap->counters ? counters_server_index(v->snap->counters, i, j) : 0;
		unsigned long long requests =
		    counters_get(counters_process, v->snap->counters, CTR_DIM_SERVER, si, CTR_SERVER_ATTEMPTS);
		unsigned long long failures =
		    counters_get(counters_process, v->snap->counters, CTR_DIM_SERVER, si, CTR_SERVER_FAILURES);
		if (json) {
			json_server_head(out, first, cp->name, s->address);
			evbuffer_add_printf(out,
			                    ",\"weight\":%u,\"config_weight\":%u,\"health\":\"%s\",\"last_check\":",
			                    atomic_load(&s->weight), atomic_load(&s->config_weight), health_name(s));
			admin_reply_json_str(out, check);
			evbuffer_add_printf(out,
			                    ",\"state\":\"%s\",\"breaker\":\"%s\",\"active_requests\":%u,\"connections\":%u,"
			                    "\"window_requests\":%u,\"window_failures\":%u,\"error_rate\":%.3f,"
			                    "\"requests\":%llu,\"failures\":%llu}",
			                    admin_state_name(s), bstate, atomic_load(&s->active_requests),
			                    atomic_load(&s->connections), st.total, st.failures,
			                    st.total ? (double)st.failures / st.total : 0.0, requests, failures);
		} else {
			evbuffer_add_printf(out, "%-12s %-22s %6u %6u %-8s %-9s %6u %5u %5u%% %8llu  %s%s%s%s\n", cp->name,
			                    s->address, atomic_load(&s->weight), atomic_load(&s->config_weight),
			                    health_name(s), admin_state_name(s), atomic_load(&s->active_requests),
			                    atomic_load(&s->connections), rate, requests,
			                    bstate, *check ? " (last check: " : "", check, *check ? ")" : "");
		}
		first = false;
	}
	if (json)
		evbuffer_add_printf(out, "]}\n");
}

void admin_show_breakers(const struct admin_show_view *v, bool json, struct evbuffer *out)
{
	uint64_t now = clock_mono_us();
	bool first = true;
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"breakers\":[");
	else
		evbuffer_add_printf(out, "%-12s %-22s %-9s %5s %-20s %9s %9s %7s %7s\n", "POOL", "ADDRESS", "STATE", "TRIPS",
		                    "LAST_TRIGGER", "OPEN_MS", "LEFT_MS", "WIN_REQ", "WIN_ERR");
	struct server_row row;
	for (struct server_walk w = { .v = v }; server_walk_next(&w, now, &row);) {
		const struct conf_pool *cp = row.pool;
		struct runtime_server *s = row.server;
		struct breaker b = row.breaker;
		struct breaker_stats st = row.stats;
		const char *state = row.breaker_state;
		unsigned long long left =
		    b.state == BREAKER_OPEN && b.open_until_us > now ? (b.open_until_us - now) / 1000 : 0;
		if (json) {
			json_server_head(out, first, cp->name, s->address);
			evbuffer_add_printf(out,
			                    ",\"state\":\"%s\",\"trips\":%llu,\"last_trigger\":\"%s\",\"open_ms\":%llu,"
			                    "\"remaining_ms\":%llu,\"window_requests\":%u,\"window_failures\":%u}",
			                    state, (unsigned long long)b.trips, breaker_trigger_name(b.last_trigger),
			                    (unsigned long long)(b.open_for_us / 1000), left, st.total, st.failures);
		} else {
			evbuffer_add_printf(out, "%-12s %-22s %-9s %5llu %-20s %9llu %9llu %7u %7u\n", cp->name, s->address,
			                    state, (unsigned long long)b.trips, breaker_trigger_name(b.last_trigger),
			                    (unsigned long long)(b.open_for_us / 1000), left, st.total, st.failures);
		}
		first = false;
	}
	if (json)
		evbuffer_add_printf(out, "]}\n");
}

void admin_show_config(const struct admin_show_view *v, bool json, struct evbuffer *out)
{
	const struct conf *c = v->snap->conf;
	size_t servers = 0;
	for (size_t i = 0; i < c->num_pools; i++)
		servers += c->pools[i].num_servers;
	char loaded[32];
	log_format_time(v->snap->loaded_wall_us, loaded);
	unsigned long long changes = counters_get(counters_process, NULL, CTR_DIM_GLOBAL, 0, CTR_RUNTIME_CHANGES);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"pid\":%ld,\"source\":", (long)getpid());
		admin_reply_json_str(out, c->source);
		evbuffer_add_printf(out,
		                    ",\"generation\":%llu,\"loaded\":\"%s\",\"workers\":%u,\"listeners\":%zu,\"pools\":%zu,"
		                    "\"servers\":%zu,\"services\":%zu,\"routes\":%zu,\"state_file\":",
		                    (unsigned long long)v->snap->generation, loaded, c->workers, c->num_listeners,
		                    c->num_pools, servers, c->num_services, c->num_routes);
		if (c->state_file)
			admin_reply_json_str(out, c->state_file);
		else
			evbuffer_add_printf(out, "null");
		evbuffer_add_printf(out, ",\"loaded_by\":\"%s\",\"loaded_uid\":", v->snap->loaded_how);
		if (v->snap->loaded_by_uid >= 0)
			evbuffer_add_printf(out, "%lld", v->snap->loaded_by_uid);
		else
			evbuffer_add_printf(out, "null");
		if (v->sf) {
			evbuffer_add_printf(out, ",\"state_file_writable\":%s,\"state_file_problem\":",
			                    statefile_writable(v->sf) ? "true" : "false");
			admin_reply_json_str(out, v->sf->problem);
		}
		evbuffer_add_printf(out, ",\"runtime_changes\":%llu}\n", changes);
		return;
	}
	char by[64];
	if (v->snap->loaded_by_uid >= 0)
		snprintf(by, sizeof(by), "%s, uid %lld", v->snap->loaded_how, v->snap->loaded_by_uid);
	else
		snprintf(by, sizeof(by), "%s", v->snap->loaded_how);
	evbuffer_add_printf(out,
	                    "pid         %ld\nsource      %s\ngeneration  %llu\nloaded      %s by %s\nworkers     %u\n"
	                    "listeners   %zu\n"
	                    "pools       %zu (%zu servers)\nservices    %zu\nroutes      %zu\nstate file  %s\n"
	                    "changes     %llu since start (show diff lists what differs from the config)\n",
	                    (long)getpid(), c->source, (unsigned long long)v->snap->generation, loaded, by, c->workers,
	                    c->num_listeners,
	                    c->num_pools, servers, c->num_services, c->num_routes,
	                    c->state_file ? c->state_file : "(none: changes last until restart)", changes);
	if (v->sf && !statefile_writable(v->sf)) {
		evbuffer_add_printf(out, "state file  NOT WRITTEN on changes: ");
		admin_reply_text(out, v->sf->problem);
		evbuffer_add_printf(out, v->sf->status == STATEFILE_UNREADABLE
		                             ? " (sluice ctl save-state --force replaces it; show state-file)\n"
		                             : " (never replaced; show state-file)\n");
	}
}

/* One difference: a line of text, or a string of the JSON list (*n so far). */
static void diff_line(struct evbuffer *out, bool json, size_t *n, const char *line)
{
	if (json) {
		evbuffer_add_printf(out, "%s", *n ? "," : "");
		admin_reply_json_str(out, line);
	} else {
		evbuffer_add_printf(out, "%s\n", line);
	}
	(*n)++;
}

void admin_show_diff(const struct admin_show_view *v, bool json, struct evbuffer *out)
{
	const struct conf *c = v->snap->conf;
	size_t n = 0;
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"differences\":[");
	for (size_t i = 0; i < c->num_pools; i++) {
		struct runtime_pool *p = runtime_find_pool(v->rt, c->pools[i].name);
		for (size_t j = 0; p && j < c->pools[i].num_servers; j++) {
			struct runtime_server *s = runtime_find_server(p, c->pools[i].servers[j].address);
			if (!s)
				continue;
			char line[256];
			const char *what[3] = { NULL, NULL, NULL };
			char weight[64];
			if (atomic_load(&s->weight_set) && atomic_load(&s->weight) != atomic_load(&s->config_weight)) {
				snprintf(weight, sizeof(weight), "weight %u -> %u", atomic_load(&s->config_weight),
				         atomic_load(&s->weight));
				what[0] = weight;
			}
			if (atomic_load(&s->drained))
				what[1] = "drained";
			if (atomic_load(&s->disabled))
				what[2] = "disabled";
			for (size_t k = 0; k < 3; k++) {
				if (!what[k])
					continue;
				snprintf(line, sizeof(line), "pool %s server %s: %s", p->name, s->address, what[k]);
				diff_line(out, json, &n, line);
			}
		}
	}
	for (size_t i = 0; i < v->rt->num_splits; i++) {
		struct runtime_split *sp = v->rt->splits[i];
		if (!atomic_load(&sp->weight_set) || atomic_load(&sp->weight) == atomic_load(&sp->config_weight) ||
		    conf_find_service(c, sp->service) < 0)
			continue;
		char line[256];
		snprintf(line, sizeof(line), "service %s pool %s: weight %u -> %u", sp->service, sp->pool,
		         atomic_load(&sp->config_weight), atomic_load(&sp->weight));
		diff_line(out, json, &n, line);
	}
	for (size_t i = 0; i < v->rt->num_splits; i++) {
		struct runtime_split *sp = v->rt->splits[i];
		if (!sp->saved_set || conf_find_service(c, sp->service) < 0)
			continue;
		char line[256];
		snprintf(line, sizeof(line), "service %s pool %s: weight %u before the switch (switch %s --back restores it)",
		         sp->service, sp->pool, sp->saved_weight, sp->service);
		diff_line(out, json, &n, line);
	}
	if (json)
		evbuffer_add_printf(out, "]}\n");
	else if (n == 0)
		evbuffer_add_printf(out, "no differences: the running state is the config file's\n");
}

void admin_show_admin(const struct admin_show_limits *s, bool json, struct evbuffer *out)
{
	unsigned long long open = s->num_conns;
	if (json) {
		evbuffer_add_printf(out,
		                    "{\"ok\":true,\"connections\":%llu,\"max_connections\":%u,\"idle_timeout_s\":%d,"
		                    "\"max_unread_answer_bytes\":%u,\"accepted\":%llu,\"refused_uid\":%llu,"
		                    "\"refused_full\":%llu,\"evicted_idle\":%llu,\"paused_unread\":%llu,\"closed_idle\":%llu}\n",
		                    open, s->max_conns, s->idle_seconds, s->max_pending_output, s->accepted,
		                    s->refused_uid, s->refused_full, s->evicted, s->paused, s->idle_closed);
		return;
	}
	evbuffer_add_printf(out,
	                    "connections        %llu open of %u (admin.max_connections; the last one is kept for the socket's owner)\n"
	                    "idle timeout       %d s\n"
	                    "unread answers     at most %u bytes a connection, then it is not read until they drain\n"
	                    "accepted           %llu\n"
	                    "refused (uid)      %llu\n"
	                    "refused (full)     %llu\n"
	                    "evicted (idle)     %llu (the longest idle, to make room)\n"
	                    "paused (unread)    %llu\n"
	                    "closed (idle)      %llu\n",
	                    open, s->max_conns, s->idle_seconds, s->max_pending_output, s->accepted, s->refused_uid,
	                    s->refused_full, s->evicted, s->paused, s->idle_closed);
}

static const char *statefile_status_name(const struct statefile *sf)
{
	if (statefile_writable(sf))
		return sf->forced ? "written (replaced by save-state --force)" : "written on every change";
	return sf->status == STATEFILE_NOT_REGULAR ? "refused: not a regular file, never written"
	                                           : "held: unreadable at start, not written until save-state --force";
}

void admin_show_state_file(const struct admin_show_view *v, bool json, struct evbuffer *out)
{
	const struct statefile *sf = v->sf;
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"path\":");
		if (sf)
			admin_reply_json_str(out, sf->path);
		else
			evbuffer_add_printf(out, "null");
		evbuffer_add_printf(out, ",\"writable\":%s", sf && statefile_writable(sf) ? "true" : "false");
		if (sf) {
			evbuffer_add_printf(out, ",\"status\":");
			admin_reply_json_str(out, statefile_status_name(sf));
			evbuffer_add_printf(out, ",\"problem\":");
			admin_reply_json_str(out, sf->problem);
			evbuffer_add_printf(out, ",\"applied_at_start\":%u,\"skipped_at_start\":%u", sf->applied, sf->skipped);
		}
		evbuffer_add_printf(out, "}\n");
		return;
	}
	if (!sf) {
		evbuffer_add_printf(out, "no state_file configured: changes last until the process ends\n");
		return;
	}
	evbuffer_add_printf(out, "path        ");
	admin_reply_text(out, sf->path);
	evbuffer_add_printf(out, "\nstatus      %s\n", statefile_status_name(sf));
	if (sf->problem[0]) {
		evbuffer_add_printf(out, "problem     ");
		admin_reply_text(out, sf->problem);
		evbuffer_add(out, "\n", 1);
	}
	evbuffer_add_printf(out, "at start    %u changes applied, %u lines skipped\n", sf->applied, sf->skipped);
}
/* show redis: the shared rate limits' Redis, and with Sentinel the master reached now */
void admin_show_redis(const struct admin_show_view *v, bool json, struct evbuffer *out)
{
	const struct conf_redis *cr = &v->snap->conf->redis;
	static const char *const modes[] = {"local", "allow", "deny"};
	struct rs_addr m;
	unsigned long long switches = 0;
	uint64_t since = 0;
	bool known = rs_master_current(&m, &switches, &since);
	char master[80] = "", when[32] = "";
	if (known) {
		rs_addr_format(&m, master, sizeof master);
		log_format_time(since, when);
	}
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"enabled\":%s", cr->enabled ? "true" : "false");
		if (cr->enabled) {
			evbuffer_add_printf(out, ",\"mode\":\"%s\",\"on_failure\":\"%s\"",
			                    cr->num_sentinels ? "sentinel" : "address", modes[cr->on_failure]);
			if (cr->num_sentinels) {
				evbuffer_add_printf(out, ",\"master_name\":");
				admin_reply_json_str(out, cr->master);
				evbuffer_add_printf(out, ",\"sentinels\":[");
				for (size_t i = 0; i < cr->num_sentinels; i++) {
					evbuffer_add_printf(out, "%s", i ? "," : "");
					admin_reply_json_str(out, cr->sentinels[i].address);
				}
				evbuffer_add_printf(out, "],\"master\":");
				if (known)
					admin_reply_json_str(out, master);
				else
					evbuffer_add_printf(out, "null");
				evbuffer_add_printf(out, ",\"master_since\":");
				if (known)
					admin_reply_json_str(out, when);
				else
					evbuffer_add_printf(out, "null");
				evbuffer_add_printf(out, ",\"switches\":%llu", switches);
			} else {
				evbuffer_add_printf(out, ",\"address\":");
				admin_reply_json_str(out, cr->address);
			}
		}
		evbuffer_add_printf(out, "}\n");
		return;
	}
	if (!cr->enabled) {
		evbuffer_add_printf(out, "no redis section: every rate limit is local\n");
		return;
	}
	if (!cr->num_sentinels) {
		evbuffer_add_printf(out, "mode        address\naddress     ");
		admin_reply_text(out, cr->address);
		evbuffer_add_printf(out, "\non_failure  %s\n", modes[cr->on_failure]);
		return;
	}
	evbuffer_add_printf(out, "mode        sentinel\nmaster name ");
	admin_reply_text(out, cr->master);
	evbuffer_add_printf(out, "\nsentinels   ");
	for (size_t i = 0; i < cr->num_sentinels; i++) {
		evbuffer_add_printf(out, "%s", i ? ", " : "");
		admin_reply_text(out, cr->sentinels[i].address);
	}
	if (known)
		evbuffer_add_printf(out, "\nmaster      %s (since %s; %llu switch%s since start)\n", master, when, switches,
		                    switches == 1 ? "" : "es");
	else
		evbuffer_add_printf(out, "\nmaster      (not reached yet: see the log for why)\n");
	evbuffer_add_printf(out, "on_failure  %s\n", modes[cr->on_failure]);
}
static const char *key_text(const struct conf_key *k, char *buf, size_t size)
{
	static const char *const kinds[] = { [CONF_KEY_CLIENT_IP] = "client_ip", [CONF_KEY_HEADER] = "header:",
		                             [CONF_KEY_COOKIE] = "cookie:",      [CONF_KEY_PATH] = "path",
		                             [CONF_KEY_HOST] = "host",           [CONF_KEY_QUERY] = "query:",
		                             [CONF_KEY_TLS_SUBJECT] = "tls_subject" };
	snprintf(buf, size, "%s%s", kinds[k->kind], k->name ? k->name : "");
	return buf;
}

void admin_show_services(const struct admin_show_view *v, const char *only, bool json, struct evbuffer *out)
{
	const struct conf *c = v->snap->conf;
	if (only && conf_find_service(c, only) < 0) {
		admin_reply_error(out, json, "unknown service \"%s\"", only);
		return;
	}
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"services\":[");
	else
		evbuffer_add_printf(out, "%-16s %-16s %6s %6s %6s  %s\n", "SERVICE", "POOL", "WEIGHT", "CONFIG", "SHARE",
		                    "SPLIT");
	size_t shown = 0;
	for (size_t i = 0; i < c->num_services; i++) {
		const struct conf_service *sv = &c->services[i];
		if (only ? strcmp(sv->name, only) != 0 : sv->implicit)
			continue;
		char key[300] = "per request";
		if (sv->sticky_set) {
			char k[256];
			snprintf(key, sizeof key, "sticky %s", key_text(&sv->sticky, k, sizeof k));
		}
		bool switched = runtime_switched(v->rt, c, sv);
		uint64_t total = 0;
		for (size_t j = 0; j < sv->num_pools; j++) {
			struct runtime_split *sp = runtime_service_split(v->rt, c, sv, j);
			total += sp ? atomic_load(&sp->weight) : 0;
		}
		if (json) {
			evbuffer_add_printf(out, "%s{\"service\":", shown ? "," : "");
			admin_reply_json_str(out, sv->name);
			evbuffer_add_printf(out, ",\"sticky\":");
			if (sv->sticky_set) {
				char k[256];
				admin_reply_json_str(out, key_text(&sv->sticky, k, sizeof k));
			} else {
				evbuffer_add_printf(out, "null");
			}
			evbuffer_add_printf(out, ",\"overrides\":%zu,\"switched\":%s,\"pools\":[", sv->num_overrides,
			                    switched ? "true" : "false");
		}
		for (size_t j = 0; j < sv->num_pools; j++) {
			struct runtime_split *sp = runtime_service_split(v->rt, c, sv, j);
			if (!sp)
				continue;
			unsigned wt = atomic_load(&sp->weight);
			double share = total ? 100.0 * wt / (double)total : 0;
			if (json) {
				evbuffer_add_printf(out, "%s{\"pool\":", j ? "," : "");
				admin_reply_json_str(out, sp->pool);
				evbuffer_add_printf(out, ",\"weight\":%u,\"config_weight\":%u,\"share\":%.1f", wt,
				                    atomic_load(&sp->config_weight), share);
				if (sp->saved_set)
					evbuffer_add_printf(out, ",\"weight_before_switch\":%u", sp->saved_weight);
				evbuffer_add_printf(out, "}");
			} else {
				char extra[400];
				int len = snprintf(extra, sizeof extra, "%s", j == 0 ? key : "");
				if (j == 0 && sv->num_overrides)
					len += snprintf(extra + len, sizeof extra - (size_t)len, ", %zu override%s", sv->num_overrides,
					                sv->num_overrides == 1 ? "" : "s");
				if (sp->saved_set)
					snprintf(extra + len, sizeof extra - (size_t)len, "%sswitched (was %u; switch %s --back)",
					         len ? ", " : "", sp->saved_weight, sv->name);
				evbuffer_add_printf(out, "%-16s %-16s %6u %6u %5.1f%%  %s\n", sv->name, sp->pool, wt,
				                    atomic_load(&sp->config_weight), share, extra);
			}
		}
		if (json)
			evbuffer_add_printf(out, "]}");
		shown++;
	}
	if (json) {
		evbuffer_add_printf(out, "]");
		if (v->control) {
			evbuffer_add_printf(out, ",\"control\":");
			control_brief(v->control, true, out);
		}
		evbuffer_add_printf(out, "}\n");
	} else if (v->control) {
		control_brief(v->control, false, out);
	}
}
