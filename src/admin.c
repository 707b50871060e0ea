#include "admin.h"

#include <errno.h>
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

#include "admin_cmd.h"
#include "admin_reply.h"
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

/* A connection whose unread answers pass this stops being read until they
 * drain: 400 KB of "help" lines once left 90 MB queued. */
#define ADMIN_MAX_PENDING_OUTPUT (1u << 20)
/* Connections a client has made that the gateway has not accepted yet. */
#define ADMIN_BACKLOG 16
/* No command, and no answer taken by the client, for this long: closed. */
#define ADMIN_IDLE_SECONDS 10

struct admin_conn {
	struct admin *a;
	struct bufferevent *bev;
	unsigned uid;
	bool closing;
	bool paused;      /* not read while its answers are not taken */
	bool eof;         /* the client half-closed */
	uint64_t last_us; /* last command or answer taken: the longest idle is evicted first */
	size_t body_want; /* restore-state N: the N bytes of the file still to come */
	bool body_json;
	struct admin_conn *prev, *next;
};

struct admin {
	struct event_base *base;
	struct evconnlistener *listener;
	char *path;
	struct runtime *rt;
	struct snapshot *snap;
	struct health *health;
	struct statefile *sf; /* NULL: no state_file */
	struct admin_conn *conns;
	unsigned num_conns;
	unsigned max_conns; /* admin.max_connections */
	uid_t owner;        /* the socket file's owner: the user sluice runs as */
	/* since start, for `show admin` */
	unsigned long long accepted, refused_uid, refused_full, evicted, paused, idle_closed;
	struct admin_cmd cmd; /* the command being run (4 KiB: kept off the stack) */
	admin_reload_fn *reload;
	void *reload_arg;
	admin_reopen_logs_fn *reopen_logs;
	void *reopen_logs_arg;
	struct rollout_ctl *rollouts; /* the rollout controller, reading a->snap */
	struct control *control;      /* fleet control (NULL: none); owned by the server */
	/* binary upgrade (upgrade.h) */
	const struct admin_upgrade_ops *up_ops;
	void *up_arg;
	struct admin_conn *upgrading; /* the new process's connection, once it took the sockets */
	bool handed_over;             /* draining for a new process */
	bool published;               /* the socket file at path is ours (not only at tmp_path) */
	char *tmp_path;               /* admin_start_upgrade: where it listens until admin_publish */
	dev_t dev;                    /* the socket file we made: only that one is removed at exit */
	ino_t ino;
};

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
	const struct admin_show_limits s = {
	    .num_conns = a->num_conns,
	    .max_conns = a->max_conns,
	    .idle_seconds = ADMIN_IDLE_SECONDS,
	    .max_pending_output = ADMIN_MAX_PENDING_OUTPUT,
	    .accepted = a->accepted,
	    .refused_uid = a->refused_uid,
	    .refused_full = a->refused_full,
	    .evicted = a->evicted,
	    .paused = a->paused,
	    .idle_closed = a->idle_closed,
	};
	admin_show_admin(&s, json, out);
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

/* The file restore-state sends after its line: at most this many bytes. */
#define ADMIN_MAX_RESTORE_BYTES (64u << 20)

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

static void cmd_restore_state(struct admin *a, unsigned uid, const char *body, size_t len, bool json,
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

void admin_set_snapshot(struct admin *a, struct snapshot *snap, struct health *health)
{
	snapshot_ref(snap);
	snapshot_unref(a->snap);
	a->snap = snap;
	a->health = health;
	/* a reload may change these two; the path needs a restart (server.c) */
	const struct conf_admin *ca = &snap->conf->admin;
	a->max_conns = ca->max_connections ? ca->max_connections : 1;
	const char *mine = a->published ? a->path : a->tmp_path;
	struct stat st;
	if (mine && lstat(mine, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino &&
	    (st.st_mode & 07777) != ca->mode && chmod(mine, ca->mode) != 0) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "admin: cannot change the socket's mode");
		log_str(&l, "socket", mine);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
	}
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

/* ---- connections ---- */

static void conn_free(struct admin_conn *c)
{
	struct admin *a = c->a;
	if (a->upgrading == c) {
		a->upgrading = NULL;
		if (!a->handed_over) {
			rollout_ctl_hold(a->rollouts, false);
			log_msg(LOG_WARN, "upgrade abandoned: the new process went away before taking over; this process "
			                  "keeps serving and takes changes again");
		}
	}
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

/* Returns false if c was freed (nothing left to send). */
static bool conn_close_after_flush(struct admin_conn *c)
{
	c->closing = true;
	if (bufferevent_disable(c->bev, EV_READ) != 0 || evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_free(c);
		return false;
	}
	return true;
}

/* `upgrade-listeners` and `upgrade-drain` (upgrade.h) need the connection
 * itself: the sockets go out with sendmsg, past the bufferevent. Returns
 * whether line was one of them. */
static bool conn_upgrade_line(struct admin_conn *c, const char *line, size_t len, struct evbuffer *out)
{
	struct admin *a = c->a;
	bool listeners = len == strlen("upgrade-listeners") && memcmp(line, "upgrade-listeners", len) == 0;
	bool drain = len == strlen("upgrade-drain") && memcmp(line, "upgrade-drain", len) == 0;
	if (!listeners && !drain)
		return false;
	int fd = bufferevent_getfd(c->bev);
	struct ucred cred = {.pid = -1};
	socklen_t cl = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0)
		cred.pid = -1;
	char err[256] = "";
	if (!a->up_ops)
		snprintf(err, sizeof(err), "binary upgrade is not available in this process");
	else if (a->handed_over)
		snprintf(err, sizeof(err), "this process (pid %ld) already hands over to another one", (long)getpid());
	else if (listeners && a->upgrading)
		snprintf(err, sizeof(err), "another upgrade is in progress");
	else if (drain && a->upgrading != c)
		snprintf(err, sizeof(err), "upgrade-drain comes after upgrade-listeners on the same connection");
	else if (listeners && evbuffer_get_length(out) > 0)
		snprintf(err, sizeof(err), "upgrade-listeners must be the first command on its connection");
	else if (listeners && a->up_ops->send(a->up_arg, fd, err, sizeof(err)) != 0 && !err[0])
		snprintf(err, sizeof(err), "cannot send the listening sockets");
	if (err[0]) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "upgrade refused");
		log_str(&l, "error", err);
		log_int(&l, "peer_pid", cred.pid);
		log_end(&l);
		admin_reply_error(out, false, "%s", err);
		/* the peer reads the error and the close; anything after it would be misread */
		c->closing = true;
		if (bufferevent_disable(c->bev, EV_READ) != 0)
			log_msg(LOG_DEBUG, "admin: cannot stop reading a refused upgrade connection");
		return true;
	}
	struct log_line l;
	if (listeners) {
		a->upgrading = c;
		/* before the new process reads the state file: no rollout step may land here after it */
		rollout_ctl_hold(a->rollouts, true);
		log_begin(&l, LOG_INFO, "upgrade: listening sockets handed to a new process; changes are refused until it "
		                        "takes over or goes away");
	} else {
		a->handed_over = true;
		/* sent now, not queued: with no connection left this process exits before the loop would flush it */
		char ans[96];
		int n = snprintf(ans, sizeof(ans), "draining: pid %ld hands over to pid %ld\n", (long)getpid(),
		                 (long)cred.pid);
		if (evbuffer_get_length(out) > 0 || send(fd, ans, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
			evbuffer_add(out, ans, (size_t)n);
		log_begin(&l, LOG_INFO, "upgrade: the new process serves; draining");
	}
	log_int(&l, "new_pid", cred.pid);
	log_end(&l);
	if (drain)
		a->up_ops->drain(a->up_arg);
	return true;
}

static void conn_run_line(struct admin_conn *c, struct evbuffer *in, size_t len, struct evbuffer *out)
{
	char line[ADMIN_CMD_MAX_LINE];
	if (len > sizeof(line)) {
		evbuffer_drain(in, len);
		admin_reply_error(out, false, "line too long (at most %d bytes)", ADMIN_CMD_MAX_LINE);
		return;
	}
	if (evbuffer_remove(in, line, len) != (int)len) {
		admin_reply_error(out, false, "internal error reading the command");
		return;
	}
	if (conn_upgrade_line(c, line, len, out))
		return;
	/* restore-state BYTES: the file follows the line (conn_process reads it) */
	struct admin_cmd *cmd = &c->a->cmd;
	if (len > 14 && memcmp(line, "restore-state ", 14) == 0 && !admin_cmd_parse(line, len, cmd) &&
	    cmd->num_words == 2) {
		char *end = NULL;
		unsigned long long want = strtoull(cmd->words[1], &end, 10);
		if (!end || *end || cmd->words[1][0] < '0' || cmd->words[1][0] > '9' || want == 0 ||
		    want > ADMIN_MAX_RESTORE_BYTES) {
			admin_reply_error(out, cmd->json, "restore-state: the size must be 1 to %u bytes", ADMIN_MAX_RESTORE_BYTES);
			/* the bytes that follow are a file, not commands: nothing more is read */
			c->closing = true;
			if (bufferevent_disable(c->bev, EV_READ) != 0)
				log_msg(LOG_DEBUG, "admin: cannot stop reading a refused restore-state");
			return;
		}
		c->body_want = (size_t)want;
		c->body_json = cmd->json;
		return;
	}
	admin_execute(c->a, line, len, c->uid, out);
}

/* The file after "restore-state BYTES": false while it has not all arrived. */
static bool conn_body(struct admin_conn *c, struct evbuffer *in, struct evbuffer *out)
{
	size_t avail = evbuffer_get_length(in);
	if (avail < c->body_want) {
		if (!c->eof)
			return false;
		admin_reply_error(out, c->body_json, "restore-state: the file ended after %zu of %zu bytes (nothing was restored)",
		            avail, c->body_want);
		evbuffer_drain(in, avail);
		c->body_want = 0;
		return true;
	}
	if (c->a->upgrading || c->a->handed_over) {
		/* the new process read the state file already: a restore here would be lost */
		admin_reply_error(out, c->body_json, "a binary upgrade is in progress: this process (pid %ld) is handing over to a "
		                               "new one; retry the restore in a moment (it goes to the new process)",
		            (long)getpid());
		evbuffer_drain(in, c->body_want);
		c->body_want = 0;
		return true;
	}
	char *body = malloc(c->body_want);
	if (!body || evbuffer_remove(in, body, c->body_want) != (int)c->body_want) {
		admin_reply_error(out, c->body_json, "restore-state: out of memory reading the file (nothing was restored)");
		evbuffer_drain(in, c->body_want);
	} else {
		cmd_restore_state(c->a, c->uid, body, c->body_want, c->body_json, out);
	}
	free(body);
	c->body_want = 0;
	return true;
}

/* Run every complete line in the input, in order, until the client's unread
 * answers pass the cap (then stop reading it until they drain); after the
 * client's half-close, a last line without its newline is a command too.
 * Returns false if c was freed. */
static bool conn_process(struct admin_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	while (!c->closing) {
		if (evbuffer_get_length(out) > ADMIN_MAX_PENDING_OUTPUT) {
			if (!c->paused) {
				c->paused = true;
				c->a->paused++;
				log_msg(LOG_INFO, "admin: a client is not reading its answers; its commands wait until it does");
			}
			if (bufferevent_disable(c->bev, EV_READ) != 0) {
				conn_free(c);
				return false;
			}
			return true;
		}
		if (c->body_want) {
			if (!conn_body(c, in, out))
				break;
			continue;
		}
		size_t eol_len = 0;
		struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		size_t avail = evbuffer_get_length(in);
		if (eol.pos >= 0) {
			conn_run_line(c, in, (size_t)eol.pos, out);
			evbuffer_drain(in, eol_len);
			continue;
		}
		if (avail > ADMIN_CMD_MAX_LINE) {
			admin_reply_error(out, false, "line too long (at most %d bytes)", ADMIN_CMD_MAX_LINE);
			evbuffer_drain(in, avail);
			return conn_close_after_flush(c);
		}
		if (c->eof && avail > 0) {
			conn_run_line(c, in, avail, out);
			continue;
		}
		break;
	}
	if (c->eof && !c->closing && evbuffer_get_length(in) == 0)
		return conn_close_after_flush(c);
	return true;
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct admin_conn *c = arg;
	c->last_us = clock_mono_us();
	conn_process(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct admin_conn *c = arg;
	c->last_us = clock_mono_us();
	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_free(c);
		return;
	}
	if (c->paused && evbuffer_get_length(bufferevent_get_output(bev)) <= ADMIN_MAX_PENDING_OUTPUT / 4) {
		c->paused = false;
		if (!conn_process(c))
			return;
		if (!c->paused && !c->closing && !c->eof && bufferevent_enable(bev, EV_READ) != 0)
			conn_free(c);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct admin_conn *c = arg;
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
		c->eof = true;
		if (!c->paused)
			conn_process(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		c->a->idle_closed++;
		log_msg(LOG_DEBUG, "admin: idle connection closed");
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
	for (int i = 0; i < 128 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	if (shutdown(fd, SHUT_WR) != 0)
		log_msg(LOG_DEBUG, "admin: shutdown of a refused connection failed");
	close(fd);
}

/* Every slot is taken and the owner (or root) knocks: the connection idle the
 * longest (nothing unread, nothing unanswered) makes room. Returns whether one
 * was closed. */
static bool evict_idle(struct admin *a)
{
	struct admin_conn *oldest = NULL;
	for (struct admin_conn *c = a->conns; c; c = c->next) {
		if (c->closing || c->paused || evbuffer_get_length(bufferevent_get_output(c->bev)) > 0 ||
		    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
			continue;
		if (!oldest || c->last_us < oldest->last_us)
			oldest = c;
	}
	if (!oldest)
		return false;
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin: every connection slot taken; the longest idle connection closed to make room");
	log_int(&l, "idle_ms", (long long)((clock_mono_us() - oldest->last_us) / 1000));
	log_int(&l, "max_connections", a->max_conns);
	log_end(&l);
	a->evicted++;
	conn_free(oldest);
	return true;
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
		a->refused_uid++;
		refuse(fd, "error: permission denied (unknown peer)\n");
		return;
	}
	if (cred.uid != geteuid()) {
		struct log_line ll;
		log_begin(&ll, LOG_WARN, "admin: connection refused: peer is not the user sluice runs as");
		log_int(&ll, "uid", cred.uid);
		log_int(&ll, "pid", cred.pid);
		log_end(&ll);
		a->refused_uid++;
		char msg[128];
		snprintf(msg, sizeof(msg), "error: permission denied: uid %u may not use this socket\n", (unsigned)cred.uid);
		refuse(fd, msg);
		return;
	}
	/* the last slot is kept for the socket's owner or root, who may also make
	 * room by closing the longest idle connection */
	bool privileged = cred.uid == 0 || cred.uid == a->owner;
	unsigned open_slots = a->max_conns - (a->num_conns < a->max_conns ? a->num_conns : a->max_conns);
	if ((open_slots == 0 || (open_slots == 1 && !privileged)) && !(privileged && evict_idle(a))) {
		a->refused_full++;
		struct log_line ll;
		log_begin(&ll, LOG_WARN, "admin: connection refused: every connection slot is busy");
		log_int(&ll, "max_connections", a->max_conns);
		log_int(&ll, "pid", cred.pid);
		log_end(&ll);
		char msg[160];
		snprintf(msg, sizeof(msg),
		         "error: too many admin connections (%u busy, admin.max_connections); try again shortly\n",
		         a->num_conns);
		refuse(fd, msg);
		return;
	}
	struct admin_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->a = a;
	c->uid = (unsigned)cred.uid;
	c->last_us = clock_mono_us();
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
	a->accepted++;
	struct timeval idle = {.tv_sec = ADMIN_IDLE_SECONDS, .tv_usec = 0};
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	/* the write callback also runs once the answers fall to a quarter of the cap: a paused client resumes */
	bufferevent_setwatermark(c->bev, EV_WRITE, ADMIN_MAX_PENDING_OUTPUT / 4, 0);
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

/* upgrade: the running process's socket stays at the path until admin_publish(). */
static struct admin *admin_start_at(struct event_base *base, struct runtime *rt, struct snapshot *snap,
                                    struct health *health, struct statefile *sf, bool upgrade)
{
	const struct conf_admin *ca = &snap->conf->admin;
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (!ca->socket || strlen(ca->socket) >= sizeof(sun.sun_path))
		return NULL;
	/* bound under a temporary name and renamed once listening: whoever waits
	 * for the socket file to appear can connect as soon as it does */
	char tmp[sizeof(sun.sun_path)];
	bool via_tmp = strlen(ca->socket) + 4 < sizeof(tmp);
	snprintf(tmp, sizeof(tmp), via_tmp ? "%s.new" : "%s", ca->socket);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", tmp);
	const char *problem = NULL;
	int fd = -1;
	if (upgrade && !via_tmp) {
		problem = "the path is too long to bind beside it for an upgrade (use a shorter admin.socket)";
	} else if ((!upgrade && !stale_socket(ca->socket)) || (via_tmp && !stale_socket(tmp))) {
		problem = "the path exists and is not a stale socket (another sluice running?)";
	} else if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
		problem = strerror(errno);
	} else {
		/* the socket must never be reachable with looser permissions, not even between bind and chmod */
		mode_t old = umask(0777 & ~ca->mode);
		int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
		umask(old);
		if (rc != 0 || chmod(tmp, ca->mode) != 0 || listen(fd, ADMIN_BACKLOG) != 0 ||
		    (via_tmp && !upgrade && rename(tmp, ca->socket) != 0)) {
			problem = strerror(errno);
			if (rc == 0)
				unlink(tmp);
		}
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
	if (a && a->path && upgrade && !(a->tmp_path = strdup(tmp)))
		free(a->path), a->path = NULL;
	if (a && a->path)
		a->listener = evconnlistener_new(base, admin_accept_cb, a, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (!a || !a->path || !a->listener) {
		log_msg(LOG_ERROR, "admin: out of memory");
		if (!a || !a->listener)
			close(fd);
		if (a)
			free(a->path);
		free(a);
		unlink(upgrade ? tmp : ca->socket);
		return NULL;
	}
	struct stat st;
	if (stat(tmp, &st) == 0 || stat(ca->socket, &st) == 0) {
		a->dev = st.st_dev;
		a->ino = st.st_ino;
	}
	a->published = !upgrade;
	a->base = base;
	a->rt = rt;
	a->health = health;
	a->owner = geteuid();
	a->sf = sf;
	a->max_conns = ca->max_connections ? ca->max_connections : 1;
	snapshot_ref(snap);
	a->snap = snap;
	a->rollouts = rollout_ctl_new(base, rt, &a->snap, sf);
	if (!a->rollouts) {
		log_msg(LOG_ERROR, "admin: out of memory");
		admin_stop(a);
		return NULL;
	}
	if (a->published) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "admin socket listening");
		log_str(&l, "socket", a->path);
		log_int(&l, "max_connections", a->max_conns);
		log_end(&l);
	}
	return a;
}

struct admin *admin_start(struct event_base *base, struct runtime *rt, struct snapshot *snap, struct health *health,
                          struct statefile *sf)
{
	return admin_start_at(base, rt, snap, health, sf, false);
}

struct admin *admin_start_upgrade(struct event_base *base, struct runtime *rt, struct snapshot *snap,
                                  struct health *health, struct statefile *sf)
{
	return admin_start_at(base, rt, snap, health, sf, true);
}

int admin_publish(struct admin *a)
{
	if (a->published)
		return 0;
	if (rename(a->tmp_path, a->path) != 0) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "admin: cannot move the admin socket into place");
		log_str(&l, "socket", a->path);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
		return -1;
	}
	a->published = true;
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin socket listening");
	log_str(&l, "socket", a->path);
	log_int(&l, "max_connections", a->max_conns);
	log_end(&l);
	return 0;
}

void admin_set_upgrade(struct admin *a, const struct admin_upgrade_ops *ops, void *arg)
{
	a->up_ops = ops;
	a->up_arg = arg;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	while (a->conns)
		conn_free(a->conns);
	rollout_ctl_free(a->rollouts);
	evconnlistener_free(a->listener);
	/* after a binary upgrade the file at the path is the new process's socket: only ours is removed */
	const char *mine = a->published ? a->path : a->tmp_path;
	struct stat st;
	if (lstat(mine, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino && unlink(mine) != 0 && errno != ENOENT)
		log_msg(LOG_WARN, "admin: cannot remove the socket file");
	free(a->path);
	free(a->tmp_path);
	snapshot_unref(a->snap);
	free(a);
}
