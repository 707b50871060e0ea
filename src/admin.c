#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "admin_cmd.h"
#include "admin_reply.h"
#include "admin_server.h"
#include "admin_show.h"
#include "breaker.h"
#include "clock.h"
#include "control.h"
#include "counters.h"
#include "log.h"
#include "log_queue.h"
#include "rollout.h"
#include "runtime.h"
#include "statedump.h"
#include "snapshot.h"
#include "statefile.h"

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
		admin_reply_error(out, json, "unknown pool \"%s\" (show pools lists them)", pool);
		return NULL;
	}
	bool in_conf = false;
	for (size_t i = 0; i < cp->num_servers && !in_conf; i++)
		in_conf = strcmp(cp->servers[i].address, address) == 0;
	struct runtime_server *s = in_conf ? runtime_find_server(p, address) : NULL;
	if (!s) {
		admin_reply_error(out, json, "no server \"%s\" in pool %s (show servers %s lists them)", address, pool, pool);
		return NULL;
	}
	*cp_out = cp;
	return s;
}

/* ---- show ---- */

/* What the `show` renderers (admin_show.h) describe: the snapshot and tables this admin serves. */
static struct admin_show_view show_view(const struct admin *a)
{
	return (struct admin_show_view){
	    .snap = a->snap, .rt = a->rt, .health = a->health, .sf = a->sf, .control = a->control};
}

static void show_admin(const struct admin *a, bool json, struct evbuffer *out)
{
	struct admin_show_limits l;
	admin_server_limits(a, &l);
	admin_show_admin(&l, json, out);
}

/* save-state [--force]: write the running state now; --force replaces a file
 * that could not be read at start (its changes are then lost). */
static void cmd_save_state(struct admin *a, unsigned uid, char **w, size_t n, bool json, struct evbuffer *out)
{
	bool force = n == 2 && strcmp(w[1], "--force") == 0;
	if (n > 2 || (n == 2 && !force)) {
		admin_reply_error(out, json, "usage: save-state [--force]");
		return;
	}
	if (!a->sf) {
		admin_reply_error(out, json, "no state_file is configured (set state_file in the config to keep changes)");
		return;
	}
	char err[1024];
	if (statefile_save(a->sf, a->rt, force, err, sizeof(err)) != 0) {
		admin_reply_error(out, json, "state file not written: %s", err);
		return;
	}
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin: state file saved");
	log_str(&l, "file", a->sf->path);
	log_int(&l, "force", force);
	log_int(&l, "uid", uid);
	log_end(&l);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"saved\":");
		admin_reply_json_str(out, a->sf->path);
		evbuffer_add_printf(out, "}\n");
	} else {
		evbuffer_add_printf(out, "state file saved: ");
		admin_reply_text(out, a->sf->path);
		evbuffer_add(out, "\n", 1);
	}
}

static void statedump_ctx_of(struct admin *a, struct statedump_ctx *x)
{
	x->rt = a->rt;
	x->conf = a->snap->conf;
	x->generation = a->snap->generation;
	x->sf = a->sf;
	x->rollouts = a->rollouts;
}

/* dump-state: the answer is the file itself (ctl writes it to FILE or stdout) */
static void cmd_dump_state(struct admin *a, unsigned uid, bool json, struct evbuffer *out)
{
	struct statedump_ctx x;
	statedump_ctx_of(a, &x);
	char err[1024];
	uint64_t t0 = clock_mono_us();
	size_t before = evbuffer_get_length(out);
	if (statedump_write(&x, out, err, sizeof err) != 0) {
		admin_reply_error(out, json, "dump-state: %s", err);
		return;
	}
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin: state dumped");
	log_int(&l, "bytes", (long long)(evbuffer_get_length(out) - before));
	log_int(&l, "ms", (long long)((clock_mono_us() - t0) / 1000));
	log_int(&l, "uid", uid);
	log_end(&l);
}

void admin_restore_state(struct admin *a, unsigned uid, const char *body, size_t len, bool json,
                         struct evbuffer *out)
{
	struct statedump_ctx x;
	statedump_ctx_of(a, &x);
	char summary[1024], err[1024];
	if (statedump_restore(&x, body, len, summary, sizeof summary, err, sizeof err) != 0) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "admin: restore-state refused");
		log_str(&l, "error", err);
		log_int(&l, "uid", uid);
		log_end(&l);
		admin_reply_error(out, json, "restore-state: %s", err);
		return;
	}
	if (counters_process)
		CTR_GLOBAL_ADD(counters_main(counters_process), RUNTIME_CHANGES, 0, 1);
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin: state restored");
	log_str(&l, "summary", summary);
	log_int(&l, "uid", uid);
	log_end(&l);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"message\":");
		admin_reply_json_str(out, summary);
		evbuffer_add_printf(out, "}\n");
	} else {
		admin_reply_text(out, summary);
		evbuffer_add(out, "\n", 1);
	}
}

static void show_help(bool json, struct evbuffer *out)
{
	static const char *const lines[] = {
		"show pools                          pools: servers usable, active requests, refusals by reason",
		"show servers [POOL]                 servers: weight, health, drain/disable, breaker, load, error rate",
		"show breakers                       circuit breakers: state, trips, open time, window counts",
		"show config                         the running config: source, when loaded, sizes, state file",
		"show diff                           where the running state differs from the config file",
		"show admin                          admin connections: open, cap, refused, evicted, paused, idle-closed",
		"show state-file                     the state file: path, whether changes are written to it, and why not",
		"show control                        fleet control: Redis link, fleet version, changes, rollout drivers",
		"save-state [--force]                write the state file now (--force: replace one unreadable at start)",
		"dump-state [FILE]                   everything sluice keeps (runtime state, Redis keys) in one file",
		"restore-state FILE                  check a dump-state file whole, then restore it (nothing on error)",
		"show counters                       every counter and histogram: requests, reasons, latency, bytes, ...",
		"show redis                          the shared rate limits' Redis: address, or sentinels and the master now",
		"set weight POOL ADDRESS W           set a server's weight (0 to 1000; 0 takes no new requests)",
		"clear weight POOL ADDRESS           go back to the config's weight",
		"drain POOL ADDRESS                  no new requests; in-flight ones finish; idle connections close",
		"disable POOL ADDRESS                take a server out of rotation",
		"enable POOL ADDRESS                 undo drain and disable",
		"reset breaker POOL ADDRESS          close a server's circuit breaker now",
		"set service-weights SERVICE POOL=W ...  the split of a service between its pools (0 takes a pool out)",
		"show services [SERVICE]             service splits: weights, shares, sticky key, switch memory",
		"switch SERVICE POOL                 blue-green: every request of SERVICE to POOL now (remembers the split)",
		"switch SERVICE --back               restore the split from before the switch",
		"rollout start SERVICE --to POOL ...  canary rollout (--steps --interval --max-error-rate --max-p99 --min-requests)",
		"rollout status [SERVICE]            rollouts: step, weights, the figures judged, verdicts",
		"rollout pause|resume SERVICE        stop and restart the rollout's clock",
		"rollout abort SERVICE               back to the weights from before the rollout",
		"rollout promote SERVICE             the canary to 100% now",
		"reload                              re-read the config file; on any error nothing changes",
		"reopen-logs                         open the log files again by path (logrotate; as SIGUSR1)",
		"flush-logs [TIMEOUT_MS]             answer once every access-log line queued before it is written",
		"help                                this list; add --json to any command for a JSON answer",
	};
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"commands\":[");
		for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
			char cmd[64];
			const char *gap = strstr(lines[i], "  ");
			snprintf(cmd, sizeof(cmd), "%.*s", (int)(gap - lines[i]), lines[i]);
			evbuffer_add_printf(out, "%s", i ? "," : "");
			admin_reply_json_str(out, cmd);
		}
		evbuffer_add_printf(out, "]}\n");
		return;
	}
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
		evbuffer_add_printf(out, "%s\n", lines[i]);
}

/* ---- reload ---- */

static void cmd_reload(struct admin *a, unsigned uid, bool json, struct evbuffer *out)
{
	if (!a->reload) {
		admin_reply_error(out, json, "reload is not available");
		return;
	}
	struct conf_errors errs;
	conf_errors_init(&errs);
	char msg[256];
	const char *source = a->snap->conf->source;
	if (a->reload(a->reload_arg, uid, &errs, msg, sizeof(msg)) == 0) {
		/* a->snap is the new snapshot now */
		if (json) {
			const struct conf *c = a->snap->conf;
			evbuffer_add_printf(out, "{\"ok\":true,\"generation\":%llu,\"routes\":%zu,\"pools\":%zu,\"services\":%zu,"
			                         "\"message\":",
			                    (unsigned long long)a->snap->generation, c->num_routes, c->num_pools, c->num_services);
			admin_reply_json_str(out, msg);
			evbuffer_add_printf(out, "}\n");
		} else {
			evbuffer_add_printf(out, "%s\n", msg);
		}
		conf_errors_free(&errs);
		return;
	}
	/* the same messages as `sluice check`, after a first line that says nothing changed */
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":false,\"error\":\"reload refused: the running config is unchanged\","
		                         "\"errors\":[");
		for (size_t i = 0; i < errs.count; i++) {
			evbuffer_add_printf(out, "%s", i ? "," : "");
			admin_reply_json_str(out, errs.msgs[i]);
		}
		evbuffer_add_printf(out, "]}\n");
	} else {
		evbuffer_add_printf(out, "error: reload refused: the running config (generation %llu) is unchanged\n",
		                    (unsigned long long)a->snap->generation);
		for (size_t i = 0; i < errs.count; i++)
			evbuffer_add_printf(out, "%s\n", errs.msgs[i]);
		evbuffer_add_printf(out, "sluice: %zu error%s in %s\n", errs.count, errs.count == 1 ? "" : "s", source);
	}
	struct log_line l;
	log_begin(&l, LOG_WARN, "admin: reload refused: the running config is unchanged");
	log_int(&l, "uid", uid);
	log_int(&l, "errors", (long long)errs.count);
	log_end(&l);
	conf_errors_free(&errs);
}

void admin_set_reopen_logs(struct admin *a, admin_reopen_logs_fn *fn, void *arg)
{
	a->reopen_logs = fn;
	a->reopen_logs_arg = arg;
}

/* logrotate's postrotate without a signal: the files are opened again by path */
static void cmd_reopen_logs(struct admin *a, unsigned uid, bool json, struct evbuffer *out)
{
	if (!a->reopen_logs) {
		admin_reply_error(out, json, "reopen-logs is not available");
		return;
	}
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin: reopening log files");
	log_int(&l, "uid", uid);
	log_end(&l);
	a->reopen_logs(a->reopen_logs_arg);
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"reopened\":true}\n");
	else
		evbuffer_add_printf(out, "log files reopened (the outcome of each is in the log)\n");
}

/* The log writer's outputs get every access-log line queued before the
 * command (log_queue.h); the main thread waits at most the timeout. */
static void cmd_flush_logs(const char *arg, bool json, struct evbuffer *out)
{
	unsigned long ms = LOGQ_FLUSH_ADMIN_MS;
	if (arg) {
		char *end = NULL;
		ms = strtoul(arg, &end, 10);
		if (arg[0] < '0' || arg[0] > '9' || !end || *end || ms < 1 || ms > LOGQ_FLUSH_ADMIN_MAX_MS) {
			admin_reply_error(out, json, "usage: flush-logs [TIMEOUT_MS] (a wait of 1 to %d ms; default %d)",
			                  LOGQ_FLUSH_ADMIN_MAX_MS, LOGQ_FLUSH_ADMIN_MS);
			return;
		}
	}
	struct logq_flush_result r;
	logq_flush_wait((unsigned)ms, &r);
	double waited_ms = (double)r.waited_us / 1000.0;
	char msg[768];
	if (!r.done) {
		int k = snprintf(msg, sizeof msg, "flush-logs: not finished within %lu ms: %llu bytes of access-log lines still "
		                 "queued", ms, (unsigned long long)r.pending_bytes);
		if (r.blocked_output[0])
			snprintf(msg + k, sizeof msg - (size_t)k, "; waiting on %s (%s) for %llu ms (a pipe nobody "
			         "reads? a stalled disk or collector?)", r.blocked_output, r.blocked_name,
			         (unsigned long long)r.blocked_ms);
	} else if (r.failed_lines || r.cut_lines) {
		snprintf(msg, sizeof msg, "flush-logs: written, but %llu lines could not be written (%s) and were dropped "
		         "(sluice_access_log_dropped_total), %llu cut by a failed write wait for their end",
		         (unsigned long long)r.failed_lines, r.write_error ? strerror(r.write_error) : "no error",
		         (unsigned long long)r.cut_lines);
	} else if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"flushed\":true,\"pid\":%ld,\"queued_bytes\":%llu,\"waited_ms\":%.3f}\n",
		                    (long)getpid(), (unsigned long long)r.queued_bytes, waited_ms);
		return;
	} else {
		evbuffer_add_printf(out, "flushed: every access-log line queued before the command is written (%llu bytes "
		                    "in %.1f ms)\n", (unsigned long long)r.queued_bytes, waited_ms);
		return;
	}
	if (!json) {
		admin_reply_error(out, false, "%s", msg);
		return;
	}
	evbuffer_add_printf(out, "{\"ok\":false,\"error\":");
	admin_reply_json_str(out, msg);
	evbuffer_add_printf(out, ",\"flushed\":%s,\"pending_bytes\":%llu,\"failed_lines\":%llu,\"cut_lines\":%llu,"
	                    "\"blocked_output\":", r.done ? "true" : "false", (unsigned long long)r.pending_bytes,
	                    (unsigned long long)r.failed_lines, (unsigned long long)r.cut_lines);
	admin_reply_json_str(out, r.blocked_output);
	evbuffer_add_printf(out, ",\"blocked_path\":");
	admin_reply_json_str(out, r.blocked_name);
	evbuffer_add_printf(out, ",\"blocked_ms\":%llu,\"waited_ms\":%.3f}\n", (unsigned long long)r.blocked_ms,
	                    waited_ms);
}

void admin_set_reload(struct admin *a, admin_reload_fn *fn, void *arg)
{
	a->reload = fn;
	a->reload_arg = arg;
}

void admin_set_control(struct admin *a, struct control *ctl)
{
	a->control = ctl;
	if (ctl)
		control_set_rollouts(ctl, a->rollouts);
}

/* ---- changes ---- */

/* A change was applied: log it, persist it, answer it. */
static void changed(struct admin *a, unsigned uid, const char *what, bool json, struct evbuffer *out)
{
	if (counters_process)
		CTR_GLOBAL_ADD(counters_main(counters_process), RUNTIME_CHANGES, 0, 1);
	const char *state_file = a->sf ? a->sf->path : NULL;
	char err[1024] = "";
	bool saved = a->sf && statefile_save(a->sf, a->rt, false, err, sizeof(err)) == 0;
	if (a->control)
		control_changed(a->control);
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin change");
	log_str(&l, "change", what);
	log_int(&l, "uid", uid);
	if (state_file && !saved)
		log_str(&l, "state_file_error", err);
	log_end(&l);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"changed\":");
		admin_reply_json_str(out, what);
		evbuffer_add_printf(out, ",\"persisted\":%s", saved ? "true" : "false");
		if (state_file && !saved) {
			evbuffer_add_printf(out, ",\"warning\":");
			admin_reply_json_str(out, err);
		}
		evbuffer_add_printf(out, "}\n");
		return;
	}
	admin_reply_text(out, what);
	evbuffer_add(out, "\n", 1);
	if (state_file && !saved) {
		evbuffer_add_printf(out, "warning: applied, but not saved to the state file (");
		admin_reply_text(out, err);
		evbuffer_add_printf(out, "): a restart would undo it\n");
	}
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
			admin_reply_error(out, json, "usage: %s", usage);
		else
			admin_reply_error(out, json, "usage: %s POOL ADDRESS", w[0]);
		return;
	}
	unsigned weight = 0;
	if (strcmp(w[0], "set") == 0 && !admin_cmd_weight(w[4], &weight)) {
		admin_reply_error(out, json, "invalid weight \"%s\" (a whole number from 0 to 1000)", w[4]);
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
		runtime_breaker_read(s, &cp->breaker, clock_mono_us(), &b, &st);
		runtime_breaker_reset(s);
		snprintf(what, sizeof(what), "pool %s server %s: breaker %s -> closed", cp->name, s->address,
		         breaker_state_name(b.state));
	}
	changed(a, uid, what, json, out);
}

/* The running config's service named name, or NULL after answering that there is none. */
static const struct conf_service *find_service(struct admin *a, const char *name, bool json, struct evbuffer *out)
{
	int si = conf_find_service(a->snap->conf, name);
	if (si < 0) {
		admin_reply_error(out, json, "unknown service \"%s\"", name);
		return NULL;
	}
	return &a->snap->conf->services[si];
}

static void cmd_service_weights(struct admin *a, unsigned uid, char **w, size_t n, bool json, struct evbuffer *out)
{
	if (n < 4) {
		admin_reply_error(out, json, "usage: set service-weights SERVICE POOL=WEIGHT ...");
		return;
	}
	const struct conf *c = a->snap->conf;
	const struct conf_service *sv = find_service(a, w[2], json, out);
	if (!sv)
		return;
	struct runtime_split *splits[ADMIN_CMD_MAX_WORDS];
	unsigned weights[ADMIN_CMD_MAX_WORDS];
	size_t m = 0;
	/* every pair is checked before anything changes */
	for (size_t i = 3; i < n; i++) {
		char *eq = strchr(w[i], '=');
		if (!eq || eq == w[i]) {
			admin_reply_error(out, json, "expected POOL=WEIGHT, got \"%s\"", w[i]);
			return;
		}
		*eq = '\0';
		struct runtime_split *sp = NULL;
		for (size_t j = 0; j < sv->num_pools && !sp; j++)
			if (strcmp(c->pools[sv->pools[j].pool].name, w[i]) == 0)
				sp = runtime_find_split(a->rt, sv->name, w[i]);
		if (!sp) {
			admin_reply_error(out, json, "service %s has no pool \"%s\"", sv->name, w[i]);
			return;
		}
		for (size_t k = 0; k < m; k++)
			if (splits[k] == sp) {
				admin_reply_error(out, json, "pool %s is given twice", w[i]);
				return;
			}
		if (!admin_cmd_weight(eq + 1, &weights[m])) {
			admin_reply_error(out, json, "invalid weight \"%s\" for pool %s (a whole number from 0 to 1000)", eq + 1, w[i]);
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
		admin_reply_error(out, json, "every pool of service %s would have weight 0 (use drain or disable to stop traffic)",
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

/* The weights of sv as "blue 90, green 10" for answers and the log. */
static void split_text(struct admin *a, const struct conf_service *sv, char *buf, size_t size)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t j = 0; j < sv->num_pools && len < size; j++) {
		struct runtime_split *sp = runtime_service_split(a->rt, a->snap->conf, sv, j);
		if (sp)
			len += (size_t)snprintf(buf + len, size - len, "%s%s %u", len ? ", " : "", sp->pool,
			                        atomic_load(&sp->weight));
	}
}

static void cmd_switch(struct admin *a, unsigned uid, char **w, size_t n, bool json, struct evbuffer *out)
{
	if (n != 3) {
		admin_reply_error(out, json, "usage: switch SERVICE POOL | switch SERVICE --back");
		return;
	}
	const struct conf *c = a->snap->conf;
	const struct conf_service *sv = find_service(a, w[1], json, out);
	if (!sv)
		return;
	char before[512], after[512], what[1100];
	split_text(a, sv, before, sizeof before);
	if (strcmp(w[2], "--back") == 0) {
		if (!runtime_switch_back(a->rt, c, sv)) {
			admin_reply_error(out, json, "service %s is not switched (nothing to go back to)", sv->name);
			return;
		}
		split_text(a, sv, after, sizeof after);
		snprintf(what, sizeof what, "service %s: switched back: %s -> %s", sv->name, before, after);
	} else {
		if (!runtime_switch(a->rt, c, sv, w[2])) {
			admin_reply_error(out, json, "service %s has no pool \"%s\"", sv->name, w[2]);
			return;
		}
		split_text(a, sv, after, sizeof after);
		snprintf(what, sizeof what, "service %s: switched to %s: %s -> %s (switch %s --back restores it)", sv->name,
		         w[2], before, after, sv->name);
	}
	changed(a, uid, what, json, out);
}

void admin_execute(struct admin *a, const char *line, size_t len, unsigned uid, struct evbuffer *out)
{
	struct admin_cmd *cmd = &a->cmd;
	const char *refused = admin_cmd_parse(line, len, cmd);
	bool json = cmd->json;
	if (refused) {
		admin_reply_error(out, json, "%s", refused);
		return;
	}
	char **w = cmd->words;
	size_t n = cmd->num_words;
	if (strcmp(w[0], "help") == 0 && n == 1) {
		show_help(json, out);
	} else if (strcmp(w[0], "show") == 0 && n >= 2) {
		const struct admin_show_view v = show_view(a);
		if (strcmp(w[1], "pools") == 0 && n == 2)
			admin_show_pools(&v, json, out);
		else if (strcmp(w[1], "servers") == 0 && n <= 3)
			admin_show_servers(&v, n == 3 ? w[2] : NULL, json, out);
		else if (strcmp(w[1], "breakers") == 0 && n == 2)
			admin_show_breakers(&v, json, out);
		else if (strcmp(w[1], "config") == 0 && n == 2)
			admin_show_config(&v, json, out);
		else if (strcmp(w[1], "diff") == 0 && n == 2)
			admin_show_diff(&v, json, out);
		else if (strcmp(w[1], "admin") == 0 && n == 2)
			show_admin(a, json, out);
		else if (strcmp(w[1], "state-file") == 0 && n == 2)
			admin_show_state_file(&v, json, out);
		else if (strcmp(w[1], "counters") == 0 && n == 2)
			counters_write(counters_process, a->snap->counters, json, out);
		else if (strcmp(w[1], "services") == 0 && n <= 3)
			admin_show_services(&v, n == 3 ? w[2] : NULL, json, out);
		else if (strcmp(w[1], "redis") == 0 && n == 2)
			admin_show_redis(&v, json, out);
		else if (strcmp(w[1], "control") == 0 && n == 2 && a->control)
			control_show(a->control, json, out);
		else if (strcmp(w[1], "control") == 0 && n == 2)
			admin_reply_error(out, json, "no fleet control: this instance has no control section (control = { redis = "
			                             "\"main\" } shares its changes with a fleet; docs/configuration.md)");
		else
			admin_reply_error(out, json, "usage: show pools | show servers [POOL] | show services [SERVICE] | show breakers | "
			                             "show config | show diff | show admin | show state-file | show counters | show redis | "
			                             "show control");
	} else if ((a->upgrading || a->handed_over) &&
	           (strcmp(w[0], "save-state") == 0 || strcmp(w[0], "reload") == 0 || strcmp(w[0], "set") == 0 ||
	            strcmp(w[0], "clear") == 0 || strcmp(w[0], "reset") == 0 || strcmp(w[0], "drain") == 0 ||
	            strcmp(w[0], "enable") == 0 || strcmp(w[0], "disable") == 0 || strcmp(w[0], "switch") == 0 ||
	            strcmp(w[0], "restore-state") == 0 ||
	            (strcmp(w[0], "rollout") == 0 && !(n >= 2 && strcmp(w[1], "status") == 0)))) {
		/* the new process read the state file after this one's last write: a change here would be lost */
		admin_reply_error(out, json, "a binary upgrade is in progress: this process (pid %ld) is handing over to a new "
		                             "one; retry the change in a moment (it goes to the new process)", (long)getpid());
	} else if (strcmp(w[0], "save-state") == 0) {
		cmd_save_state(a, uid, w, n, json, out);
	} else if (strcmp(w[0], "dump-state") == 0 && n == 1) {
		cmd_dump_state(a, uid, json, out);
	} else if (strcmp(w[0], "restore-state") == 0) {
		admin_reply_error(out, json, "usage: sluice ctl restore-state FILE (the file follows the line \"restore-state "
		                             "BYTES\" on the socket)");
	} else if (strcmp(w[0], "reload") == 0 && n == 1) {
		cmd_reload(a, uid, json, out);
	} else if (strcmp(w[0], "reopen-logs") == 0 && n == 1) {
		cmd_reopen_logs(a, uid, json, out);
	} else if (strcmp(w[0], "flush-logs") == 0 && n <= 2) {
		cmd_flush_logs(n == 2 ? w[1] : NULL, json, out);
	} else if (n >= 2 && strcmp(w[0], "set") == 0 && strcmp(w[1], "service-weights") == 0) {
		cmd_service_weights(a, uid, w, n, json, out);
	} else if (strcmp(w[0], "switch") == 0) {
		cmd_switch(a, uid, w, n, json, out);
	} else if (strcmp(w[0], "rollout") == 0) {
		if (rollout_command(a->rollouts, w, n, json, uid, out) && counters_process)
			CTR_GLOBAL_ADD(counters_main(counters_process), RUNTIME_CHANGES, 0, 1);
	} else if ((n >= 2 && (strcmp(w[0], "set") == 0 || strcmp(w[0], "clear") == 0) && strcmp(w[1], "weight") == 0) ||
	           (n >= 2 && strcmp(w[0], "reset") == 0 && strcmp(w[1], "breaker") == 0) || strcmp(w[0], "drain") == 0 ||
	           strcmp(w[0], "enable") == 0 || strcmp(w[0], "disable") == 0) {
		cmd_server_change(a, uid, w, n, json, out);
	} else {
		admin_reply_error(out, json, "unknown command \"%.80s\" (try help)", w[0]);
	}
}
