#include "admin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "breaker.h"
#include "health.h"
#include "log.h"
#include "runtime.h"
#include "snapshot.h"
#include "statefile.h"

#define ADMIN_MAX_LINE 4096
#define ADMIN_MAX_WORDS 64
#define ADMIN_MAX_CONNS 32
#define ADMIN_IDLE_SECONDS 60

struct admin_conn {
	struct admin *a;
	struct bufferevent *bev;
	unsigned uid;
	bool closing;
	struct admin_conn *prev, *next;
};

struct admin {
	struct event_base *base;
	struct evconnlistener *listener;
	char *path;
	struct runtime *rt;
	struct snapshot *snap;
	struct health *health;
	struct admin_conn *conns;
	unsigned num_conns;
};

/* ---- output helpers ---- */

static void out_json_str(struct evbuffer *out, const char *s)
{
	char buf[1024];
	size_t len = 0;
	log_json_escape(buf, sizeof(buf), &len, s, strlen(s));
	evbuffer_add(out, "\"", 1);
	evbuffer_add(out, buf, len);
	evbuffer_add(out, "\"", 1);
}

static void reply_error(struct evbuffer *out, bool json, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply_error(struct evbuffer *out, bool json, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":false,\"error\":");
		out_json_str(out, msg);
		evbuffer_add_printf(out, "}\n");
	} else {
		evbuffer_add_printf(out, "error: %s\n", msg);
	}
}

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

/* ---- lookups ---- */

static const struct conf_pool *find_conf_pool(const struct admin *a, const char *name)
{
	int i = conf_find_pool(a->snap->conf, name);
	return i < 0 ? NULL : &a->snap->conf->pools[i];
}

/* The server named by words (POOL ADDRESS), or NULL after answering why. */
static struct runtime_server *find_server(struct admin *a, const char *pool, const char *address, bool json,
                                          struct evbuffer *out, const struct conf_pool **cp_out)
{
	const struct conf_pool *cp = find_conf_pool(a, pool);
	struct runtime_pool *p = cp ? runtime_find_pool(a->rt, pool) : NULL;
	if (!p) {
		reply_error(out, json, "unknown pool \"%s\" (show pools lists them)", pool);
		return NULL;
	}
	bool in_conf = false;
	for (size_t i = 0; i < cp->num_servers && !in_conf; i++)
		in_conf = strcmp(cp->servers[i].address, address) == 0;
	struct runtime_server *s = in_conf ? runtime_find_server(p, address) : NULL;
	if (!s) {
		reply_error(out, json, "no server \"%s\" in pool %s (show servers %s lists them)", address, pool, pool);
		return NULL;
	}
	*cp_out = cp;
	return s;
}

/* ---- show ---- */

static unsigned error_rate_pct(struct runtime_server *s, const struct conf_pool *cp, uint64_t now,
                               struct breaker *b, struct breaker_stats *st)
{
	runtime_breaker_read(s, &cp->breaker, now, b, st);
	return st->total ? (unsigned)((uint64_t)st->failures * 100 / st->total) : 0;
}

static void show_pools(struct admin *a, bool json, struct evbuffer *out)
{
	const struct conf *c = a->snap->conf;
	uint64_t now = runtime_now_us();
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"pools\":[");
	else
		evbuffer_add_printf(out, "%-16s %7s %4s %6s %6s %7s %7s %8s %8s %8s %8s %8s\n", "POOL", "SERVERS", "UP",
		                    "ACTIVE", "CONNS", "PENDING", "RETRIES", "OVERFLOW", "BUDGET", "BREAKER", "NOSERVER",
		                    "RETRIED");
	for (size_t i = 0; i < c->num_pools; i++) {
		struct runtime_pool *p = runtime_find_pool(a->rt, c->pools[i].name);
		if (!p)
			continue;
		size_t usable = 0;
		for (size_t j = 0; j < c->pools[i].num_servers; j++) {
			struct runtime_server *s = runtime_find_server(p, c->pools[i].servers[j].address);
			usable += s && runtime_server_usable(s, now);
		}
		unsigned long long overflow = atomic_load(&p->overflow), denied = atomic_load(&p->retry_denied),
		                   bopen = atomic_load(&p->breaker_open), none = atomic_load(&p->no_server),
		                   retries = atomic_load(&p->retries);
		if (json) {
			evbuffer_add_printf(out, "%s{\"pool\":", i ? "," : "");
			out_json_str(out, p->name);
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

static void show_servers(struct admin *a, const char *only, bool json, struct evbuffer *out)
{
	const struct conf *c = a->snap->conf;
	if (only && !find_conf_pool(a, only)) {
		reply_error(out, json, "unknown pool \"%s\" (show pools lists them)", only);
		return;
	}
	uint64_t now = runtime_now_us();
	bool first = true;
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"servers\":[");
	else
		evbuffer_add_printf(out, "%-12s %-22s %6s %6s %-8s %-9s %6s %5s %6s %8s  %s\n", "POOL", "ADDRESS", "WEIGHT",
		                    "CONFIG", "HEALTH", "STATE", "ACTIVE", "CONNS", "ERR%", "REQUESTS", "BREAKER");
	for (size_t i = 0; i < c->num_pools; i++) {
		const struct conf_pool *cp = &c->pools[i];
		if (only && strcmp(only, cp->name) != 0)
			continue;
		struct runtime_pool *p = runtime_find_pool(a->rt, cp->name);
		for (size_t j = 0; p && j < cp->num_servers; j++) {
			struct runtime_server *s = runtime_find_server(p, cp->servers[j].address);
			if (!s)
				continue;
			struct breaker b;
			struct breaker_stats st;
			unsigned rate = error_rate_pct(s, cp, now, &b, &st);
			const char *bstate = cp->breaker.enabled ? breaker_state_name(b.state) : "off";
			const char *check = health_last_result(a->health, cp->name, s->address);
			if (json) {
				evbuffer_add_printf(out, "%s{\"pool\":", first ? "" : ",");
				out_json_str(out, cp->name);
				evbuffer_add_printf(out, ",\"address\":");
				out_json_str(out, s->address);
				evbuffer_add_printf(out,
				                    ",\"weight\":%u,\"config_weight\":%u,\"health\":\"%s\",\"last_check\":",
				                    atomic_load(&s->weight), atomic_load(&s->config_weight), health_name(s));
				out_json_str(out, check);
				evbuffer_add_printf(out,
				                    ",\"state\":\"%s\",\"breaker\":\"%s\",\"active_requests\":%u,\"connections\":%u,"
				                    "\"window_requests\":%u,\"window_failures\":%u,\"error_rate\":%.3f,"
				                    "\"requests\":%llu,\"failures\":%llu}",
				                    admin_state_name(s), bstate, atomic_load(&s->active_requests),
				                    atomic_load(&s->connections), st.total, st.failures,
				                    st.total ? (double)st.failures / st.total : 0.0,
				                    (unsigned long long)atomic_load(&s->requests),
				                    (unsigned long long)atomic_load(&s->failures));
			} else {
				evbuffer_add_printf(out, "%-12s %-22s %6u %6u %-8s %-9s %6u %5u %5u%% %8llu  %s%s%s%s\n", cp->name,
				                    s->address, atomic_load(&s->weight), atomic_load(&s->config_weight),
				                    health_name(s), admin_state_name(s), atomic_load(&s->active_requests),
				                    atomic_load(&s->connections), rate, (unsigned long long)atomic_load(&s->requests),
				                    bstate, *check ? " (last check: " : "", check, *check ? ")" : "");
			}
			first = false;
		}
	}
	if (json)
		evbuffer_add_printf(out, "]}\n");
}

static void show_breakers(struct admin *a, bool json, struct evbuffer *out)
{
	const struct conf *c = a->snap->conf;
	uint64_t now = runtime_now_us();
	bool first = true;
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"breakers\":[");
	else
		evbuffer_add_printf(out, "%-12s %-22s %-9s %5s %-20s %9s %9s %7s %7s\n", "POOL", "ADDRESS", "STATE", "TRIPS",
		                    "LAST_TRIGGER", "OPEN_MS", "LEFT_MS", "WIN_REQ", "WIN_ERR");
	for (size_t i = 0; i < c->num_pools; i++) {
		const struct conf_pool *cp = &c->pools[i];
		struct runtime_pool *p = runtime_find_pool(a->rt, cp->name);
		for (size_t j = 0; p && j < cp->num_servers; j++) {
			struct runtime_server *s = runtime_find_server(p, cp->servers[j].address);
			if (!s)
				continue;
			struct breaker b;
			struct breaker_stats st;
			error_rate_pct(s, cp, now, &b, &st);
			const char *state = cp->breaker.enabled ? breaker_state_name(b.state) : "off";
			unsigned long long left =
			    b.state == BREAKER_OPEN && b.open_until_us > now ? (b.open_until_us - now) / 1000 : 0;
			if (json) {
				evbuffer_add_printf(out, "%s{\"pool\":", first ? "" : ",");
				out_json_str(out, cp->name);
				evbuffer_add_printf(out, ",\"address\":");
				out_json_str(out, s->address);
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
	}
	if (json)
		evbuffer_add_printf(out, "]}\n");
}

static void show_config(struct admin *a, bool json, struct evbuffer *out)
{
	const struct conf *c = a->snap->conf;
	size_t servers = 0;
	for (size_t i = 0; i < c->num_pools; i++)
		servers += c->pools[i].num_servers;
	char loaded[32];
	log_format_time(a->snap->loaded_wall_us, loaded);
	unsigned long long changes = atomic_load(&a->rt->changes);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"source\":");
		out_json_str(out, c->source);
		evbuffer_add_printf(out,
		                    ",\"generation\":%llu,\"loaded\":\"%s\",\"workers\":%u,\"listeners\":%zu,\"pools\":%zu,"
		                    "\"servers\":%zu,\"services\":%zu,\"routes\":%zu,\"state_file\":",
		                    (unsigned long long)a->snap->generation, loaded, c->workers, c->num_listeners,
		                    c->num_pools, servers, c->num_services, c->num_routes);
		if (c->state_file)
			out_json_str(out, c->state_file);
		else
			evbuffer_add_printf(out, "null");
		evbuffer_add_printf(out, ",\"runtime_changes\":%llu}\n", changes);
		return;
	}
	evbuffer_add_printf(out,
	                    "source      %s\ngeneration  %llu\nloaded      %s\nworkers     %u\nlisteners   %zu\n"
	                    "pools       %zu (%zu servers)\nservices    %zu\nroutes      %zu\nstate file  %s\n"
	                    "changes     %llu since start (show diff lists what differs from the config)\n",
	                    c->source, (unsigned long long)a->snap->generation, loaded, c->workers, c->num_listeners,
	                    c->num_pools, servers, c->num_services, c->num_routes,
	                    c->state_file ? c->state_file : "(none: changes last until restart)", changes);
}

static void show_diff(struct admin *a, bool json, struct evbuffer *out)
{
	const struct conf *c = a->snap->conf;
	size_t n = 0;
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"differences\":[");
	for (size_t i = 0; i < c->num_pools; i++) {
		struct runtime_pool *p = runtime_find_pool(a->rt, c->pools[i].name);
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
				if (json) {
					evbuffer_add_printf(out, "%s", n ? "," : "");
					out_json_str(out, line);
				} else {
					evbuffer_add_printf(out, "%s\n", line);
				}
				n++;
			}
		}
	}
	for (size_t i = 0; i < a->rt->num_splits; i++) {
		struct runtime_split *sp = a->rt->splits[i];
		if (!atomic_load(&sp->weight_set) || atomic_load(&sp->weight) == atomic_load(&sp->config_weight) ||
		    conf_find_service(c, sp->service) < 0)
			continue;
		char line[256];
		snprintf(line, sizeof(line), "service %s pool %s: weight %u -> %u", sp->service, sp->pool,
		         atomic_load(&sp->config_weight), atomic_load(&sp->weight));
		if (json) {
			evbuffer_add_printf(out, "%s", n ? "," : "");
			out_json_str(out, line);
		} else {
			evbuffer_add_printf(out, "%s\n", line);
		}
		n++;
	}
	if (json)
		evbuffer_add_printf(out, "]}\n");
	else if (n == 0)
		evbuffer_add_printf(out, "no differences: the running state is the config file's\n");
}

static void show_help(bool json, struct evbuffer *out)
{
	static const char *const lines[] = {
		"show pools                          pools: servers usable, active requests, refusals by reason",
		"show servers [POOL]                 servers: weight, health, drain/disable, breaker, load, error rate",
		"show breakers                       circuit breakers: state, trips, open time, window counts",
		"show config                         the running config: source, when loaded, sizes, state file",
		"show diff                           where the running state differs from the config file",
		"set weight POOL ADDRESS W           set a server's weight (0 to 1000; 0 takes no new requests)",
		"clear weight POOL ADDRESS           go back to the config's weight",
		"drain POOL ADDRESS                  no new requests; in-flight ones finish; idle connections close",
		"disable POOL ADDRESS                take a server out of rotation",
		"enable POOL ADDRESS                 undo drain and disable",
		"reset breaker POOL ADDRESS          close a server's circuit breaker now",
		"set service-weights SERVICE POOL=W ...  the split of a service between its pools (0 takes a pool out)",
		"help                                this list; add --json to any command for a JSON answer",
	};
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"commands\":[");
		for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
			char cmd[64];
			const char *gap = strstr(lines[i], "  ");
			snprintf(cmd, sizeof(cmd), "%.*s", (int)(gap - lines[i]), lines[i]);
			evbuffer_add_printf(out, "%s", i ? "," : "");
			out_json_str(out, cmd);
		}
		evbuffer_add_printf(out, "]}\n");
		return;
	}
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
		evbuffer_add_printf(out, "%s\n", lines[i]);
}

/* ---- changes ---- */

/* A change was applied: log it, persist it, answer it. */
static void changed(struct admin *a, unsigned uid, const char *what, bool json, struct evbuffer *out)
{
	atomic_fetch_add(&a->rt->changes, 1);
	const char *state_file = a->snap->conf->state_file;
	char err[512] = "";
	bool saved = state_file && statefile_save(state_file, a->rt, err, sizeof(err)) == 0;
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin change");
	log_str(&l, "change", what);
	log_int(&l, "uid", uid);
	if (state_file && !saved)
		log_str(&l, "state_file_error", err);
	log_end(&l);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"changed\":");
		out_json_str(out, what);
		evbuffer_add_printf(out, ",\"persisted\":%s", saved ? "true" : "false");
		if (state_file && !saved) {
			evbuffer_add_printf(out, ",\"warning\":");
			out_json_str(out, err);
		}
		evbuffer_add_printf(out, "}\n");
		return;
	}
	evbuffer_add_printf(out, "%s\n", what);
	if (state_file && !saved)
		evbuffer_add_printf(out, "warning: applied, but not saved to the state file (%s): a restart would undo it\n",
		                    err);
}

static bool parse_weight(const char *s, unsigned *out)
{
	char *end = NULL;
	errno = 0;
	if (!*s || *s == '-' || *s == '+')
		return false;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > 1000)
		return false;
	*out = (unsigned)v;
	return true;
}

static void cmd_server_change(struct admin *a, unsigned uid, char **w, size_t n, bool json, struct evbuffer *out)
{
	/* w: "set weight P A W" | "clear weight P A" | "drain P A" | "disable P A" | "enable P A" | "reset breaker P A" */
	bool two_words = strcmp(w[0], "set") == 0 || strcmp(w[0], "clear") == 0 || strcmp(w[0], "reset") == 0;
	size_t args = two_words ? 2 : 1;
	size_t want = args + 2 + (strcmp(w[0], "set") == 0);
	if (n != want) {
		const char *usage = strcmp(w[0], "set") == 0     ? "set weight POOL ADDRESS WEIGHT"
		                    : strcmp(w[0], "clear") == 0 ? "clear weight POOL ADDRESS"
		                    : strcmp(w[0], "reset") == 0 ? "reset breaker POOL ADDRESS"
		                                                 : NULL;
		if (usage)
			reply_error(out, json, "usage: %s", usage);
		else
			reply_error(out, json, "usage: %s POOL ADDRESS", w[0]);
		return;
	}
	unsigned weight = 0;
	if (strcmp(w[0], "set") == 0 && !parse_weight(w[4], &weight)) {
		reply_error(out, json, "invalid weight \"%s\" (a whole number from 0 to 1000)", w[4]);
		return;
	}
	const struct conf_pool *cp = NULL;
	struct runtime_server *s = find_server(a, w[args], w[args + 1], json, out, &cp);
	if (!s)
		return;
	char what[512];
	if (strcmp(w[0], "set") == 0) {
		unsigned before = atomic_load(&s->weight);
		runtime_set_weight(s, weight);
		snprintf(what, sizeof(what), "pool %s server %s: weight %u -> %u", cp->name, s->address, before, weight);
	} else if (strcmp(w[0], "clear") == 0) {
		unsigned before = atomic_load(&s->weight);
		runtime_clear_weight(s);
		snprintf(what, sizeof(what), "pool %s server %s: weight %u -> %u (the config's)", cp->name, s->address, before,
		         atomic_load(&s->weight));
	} else if (strcmp(w[0], "drain") == 0) {
		bool was = atomic_exchange(&s->drained, true);
		snprintf(what, sizeof(what), "pool %s server %s: %s (%u requests in flight will finish)", cp->name, s->address,
		         was ? "already draining" : "draining, no new requests", atomic_load(&s->active_requests));
	} else if (strcmp(w[0], "disable") == 0) {
		bool was = atomic_exchange(&s->disabled, true);
		snprintf(what, sizeof(what), "pool %s server %s: %s", cp->name, s->address,
		         was ? "already disabled" : "disabled");
	} else if (strcmp(w[0], "enable") == 0) {
		bool drained = atomic_exchange(&s->drained, false), disabled = atomic_exchange(&s->disabled, false);
		snprintf(what, sizeof(what), "pool %s server %s: enabled (was %s)", cp->name, s->address,
		         disabled ? (drained ? "disabled and draining" : "disabled") : drained ? "draining" : "enabled");
	} else {
		struct breaker b;
		struct breaker_stats st;
		runtime_breaker_read(s, &cp->breaker, runtime_now_us(), &b, &st);
		runtime_breaker_reset(s);
		snprintf(what, sizeof(what), "pool %s server %s: breaker %s -> closed", cp->name, s->address,
		         breaker_state_name(b.state));
	}
	changed(a, uid, what, json, out);
}

static void cmd_service_weights(struct admin *a, unsigned uid, char **w, size_t n, bool json, struct evbuffer *out)
{
	if (n < 4) {
		reply_error(out, json, "usage: set service-weights SERVICE POOL=WEIGHT ...");
		return;
	}
	const struct conf *c = a->snap->conf;
	int si = conf_find_service(c, w[2]);
	if (si < 0) {
		reply_error(out, json, "unknown service \"%s\"", w[2]);
		return;
	}
	const struct conf_service *sv = &c->services[si];
	struct runtime_split *splits[ADMIN_MAX_WORDS];
	unsigned weights[ADMIN_MAX_WORDS];
	size_t m = 0;
	/* every pair is checked before anything changes */
	for (size_t i = 3; i < n; i++) {
		char *eq = strchr(w[i], '=');
		if (!eq || eq == w[i]) {
			reply_error(out, json, "expected POOL=WEIGHT, got \"%s\"", w[i]);
			return;
		}
		*eq = '\0';
		struct runtime_split *sp = NULL;
		for (size_t j = 0; j < sv->num_pools && !sp; j++)
			if (strcmp(c->pools[sv->pools[j].pool].name, w[i]) == 0)
				sp = runtime_find_split(a->rt, sv->name, w[i]);
		if (!sp) {
			reply_error(out, json, "service %s has no pool \"%s\"", sv->name, w[i]);
			return;
		}
		for (size_t k = 0; k < m; k++)
			if (splits[k] == sp) {
				reply_error(out, json, "pool %s is given twice", w[i]);
				return;
			}
		if (!parse_weight(eq + 1, &weights[m])) {
			reply_error(out, json, "invalid weight \"%s\" for pool %s (a whole number from 0 to 1000)", eq + 1, w[i]);
			return;
		}
		splits[m++] = sp;
	}
	/* the split after the change must still send traffic somewhere */
	uint64_t total = 0;
	for (size_t j = 0; j < sv->num_pools; j++) {
		struct runtime_split *sp = runtime_find_split(a->rt, sv->name, c->pools[sv->pools[j].pool].name);
		unsigned v = sp ? atomic_load(&sp->weight) : 0;
		for (size_t k = 0; k < m; k++)
			if (splits[k] == sp)
				v = weights[k];
		total += v;
	}
	if (total == 0) {
		reply_error(out, json, "every pool of service %s would have weight 0 (use drain or disable to stop traffic)",
		            sv->name);
		return;
	}
	char what[1024];
	size_t len = (size_t)snprintf(what, sizeof(what), "service %s:", sv->name);
	for (size_t k = 0; k < m; k++) {
		unsigned before = atomic_load(&splits[k]->weight);
		runtime_set_split_weight(splits[k], weights[k]);
		if (len < sizeof(what))
			len += (size_t)snprintf(what + len, sizeof(what) - len, "%s pool %s weight %u -> %u", k ? "," : "",
			                        splits[k]->pool, before, weights[k]);
	}
	changed(a, uid, what, json, out);
}

void admin_execute(struct admin *a, const char *line, unsigned uid, struct evbuffer *out)
{
	char buf[ADMIN_MAX_LINE + 1];
	snprintf(buf, sizeof(buf), "%s", line);
	char *w[ADMIN_MAX_WORDS];
	size_t n = 0;
	bool json = false, too_many = false;
	char *save = NULL;
	for (char *t = strtok_r(buf, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
		if (strcmp(t, "--json") == 0) {
			json = true;
			continue;
		}
		if (n == ADMIN_MAX_WORDS) {
			too_many = true;
			break;
		}
		w[n++] = t;
	}
	if (too_many) {
		reply_error(out, json, "too many words (at most %d)", ADMIN_MAX_WORDS);
		return;
	}
	if (n == 0) {
		reply_error(out, json, "empty command (try help)");
		return;
	}
	if (strcmp(w[0], "help") == 0 && n == 1) {
		show_help(json, out);
	} else if (strcmp(w[0], "show") == 0 && n >= 2) {
		if (strcmp(w[1], "pools") == 0 && n == 2)
			show_pools(a, json, out);
		else if (strcmp(w[1], "servers") == 0 && n <= 3)
			show_servers(a, n == 3 ? w[2] : NULL, json, out);
		else if (strcmp(w[1], "breakers") == 0 && n == 2)
			show_breakers(a, json, out);
		else if (strcmp(w[1], "config") == 0 && n == 2)
			show_config(a, json, out);
		else if (strcmp(w[1], "diff") == 0 && n == 2)
			show_diff(a, json, out);
		else
			reply_error(out, json, "usage: show pools | show servers [POOL] | show breakers | show config | show diff");
	} else if (n >= 2 && strcmp(w[0], "set") == 0 && strcmp(w[1], "service-weights") == 0) {
		cmd_service_weights(a, uid, w, n, json, out);
	} else if ((n >= 2 && (strcmp(w[0], "set") == 0 || strcmp(w[0], "clear") == 0) && strcmp(w[1], "weight") == 0) ||
	           (n >= 2 && strcmp(w[0], "reset") == 0 && strcmp(w[1], "breaker") == 0) || strcmp(w[0], "drain") == 0 ||
	           strcmp(w[0], "enable") == 0 || strcmp(w[0], "disable") == 0) {
		cmd_server_change(a, uid, w, n, json, out);
	} else {
		char shown[80];
		snprintf(shown, sizeof(shown), "%s", line);
		for (char *p = shown; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
		reply_error(out, json, "unknown command \"%s\" (try help)", shown);
	}
}

/* ---- connections ---- */

static void conn_free(struct admin_conn *c)
{
	struct admin *a = c->a;
	if (c->prev)
		c->prev->next = c->next;
	else
		a->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	a->num_conns--;
	bufferevent_free(c->bev);
	free(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct admin_conn *c = arg;
	if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(c);
}

static void conn_close_after_flush(struct admin_conn *c)
{
	c->closing = true;
	if (bufferevent_disable(c->bev, EV_READ) != 0 || evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_free(c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct admin_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);
	for (;;) {
		size_t len = 0;
		char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
		if (!line)
			break;
		if (len > ADMIN_MAX_LINE || strlen(line) != len) {
			reply_error(out, false, "line too long or not text");
		} else {
			admin_execute(c->a, line, c->uid, out);
		}
		free(line);
	}
	if (evbuffer_get_length(in) > ADMIN_MAX_LINE) {
		reply_error(out, false, "line too long (at most %d bytes)", ADMIN_MAX_LINE);
		conn_close_after_flush(c);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct admin_conn *c = arg;
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
		/* a last command without its newline still counts */
		struct evbuffer *in = bufferevent_get_input(bev);
		if (evbuffer_get_length(in) > 0 && evbuffer_add(in, "\n", 1) == 0)
			conn_read_cb(bev, c);
		if (!c->closing)
			conn_close_after_flush(c);
		return;
	}
	conn_free(c);
}

static void refuse(int fd, const char *msg)
{
	/* one best-effort line: the peer is not ours and gets nothing else */
	ssize_t n = send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)n;
	/* what the peer already sent is dropped unread, so the close does not reset the answer away */
	char sink[512];
	while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
	if (shutdown(fd, SHUT_WR) != 0)
		log_msg(LOG_DEBUG, "admin: shutdown of a refused connection failed");
	close(fd);
}

static void admin_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	struct admin *a = arg;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
		log_msg(LOG_WARN, "admin: cannot read a peer's credentials; refused");
		refuse(fd, "error: permission denied (unknown peer)\n");
		return;
	}
	if (cred.uid != geteuid()) {
		struct log_line ll;
		log_begin(&ll, LOG_WARN, "admin: connection refused: peer is not the user sluice runs as");
		log_int(&ll, "uid", cred.uid);
		log_int(&ll, "pid", cred.pid);
		log_end(&ll);
		char msg[128];
		snprintf(msg, sizeof(msg), "error: permission denied: uid %u may not use this socket\n", (unsigned)cred.uid);
		refuse(fd, msg);
		return;
	}
	if (a->num_conns >= ADMIN_MAX_CONNS) {
		refuse(fd, "error: too many admin connections\n");
		return;
	}
	struct admin_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->a = a;
	c->uid = (unsigned)cred.uid;
	c->bev = bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		close(fd);
		free(c);
		return;
	}
	c->next = a->conns;
	if (a->conns)
		a->conns->prev = c;
	a->conns = c;
	a->num_conns++;
	struct timeval idle = {.tv_sec = ADMIN_IDLE_SECONDS, .tv_usec = 0};
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	if (bufferevent_set_timeouts(c->bev, &idle, &idle) != 0 || bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0)
		conn_free(c);
}

/* A socket file left by a process that is gone may be replaced; a live one may not. */
static bool stale_socket(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return errno == ENOENT;
	if (!S_ISSOCK(st.st_mode))
		return false;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	bool live = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	close(fd);
	return !live && unlink(path) == 0;
}

struct admin *admin_start(struct event_base *base, struct runtime *rt, struct snapshot *snap, struct health *health)
{
	const struct conf_admin *ca = &snap->conf->admin;
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (!ca->socket || strlen(ca->socket) >= sizeof(sun.sun_path))
		return NULL;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", ca->socket);
	const char *problem = NULL;
	int fd = -1;
	if (!stale_socket(ca->socket)) {
		problem = "the path exists and is not a stale socket (another sluice running?)";
	} else if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
		problem = strerror(errno);
	} else {
		/* the socket must never be reachable with looser permissions, not even between bind and chmod */
		mode_t old = umask(0777 & ~ca->mode);
		int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
		umask(old);
		if (rc != 0 || chmod(ca->socket, ca->mode) != 0 || listen(fd, 16) != 0)
			problem = strerror(errno);
	}
	if (problem) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "admin: cannot listen on the admin socket");
		log_str(&l, "socket", ca->socket);
		log_str(&l, "error", problem);
		log_end(&l);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct admin *a = calloc(1, sizeof(*a));
	if (a)
		a->path = strdup(ca->socket);
	if (a && a->path)
		a->listener = evconnlistener_new(base, admin_accept_cb, a, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (!a || !a->path || !a->listener) {
		log_msg(LOG_ERROR, "admin: out of memory");
		if (!a || !a->listener)
			close(fd);
		if (a)
			free(a->path);
		free(a);
		unlink(ca->socket);
		return NULL;
	}
	a->base = base;
	a->rt = rt;
	a->health = health;
	snapshot_ref(snap);
	a->snap = snap;
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin socket listening");
	log_str(&l, "socket", a->path);
	log_end(&l);
	return a;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	while (a->conns)
		conn_free(a->conns);
	evconnlistener_free(a->listener);
	if (unlink(a->path) != 0 && errno != ENOENT)
		log_msg(LOG_WARN, "admin: cannot remove the socket file");
	free(a->path);
	snapshot_unref(a->snap);
	free(a);
}
