#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "conf_schema.h"
#include "conf_secrets.h"
#include "addrcount.h"
#include "admin.h"
#include "admin_http.h"
#include "clock.h"
#include "conf_metrics.h"
#include "conf_control.h"
#include "control.h"
#include "counters.h"
#include "health.h"
#include "log.h"
#include "log_syslog.h"
#include "metrics.h"
#include "module.h"
#include "priv.h"
#include "runtime.h"
#include "signals.h"
#include "statefile.h"
#include "snapshot.h"
#include "upgrade.h"
#include "worker.h"

/* Descriptors kept aside for listeners, logs, the admin socket and health checks. */
#define SERVER_RESERVED_FDS 64
/* How long a reload waits for every worker to adopt the new snapshot. */
#define SERVER_ADOPT_WAIT_MS 5000

struct server {
	const char *config_path;
	struct snapshot *snap;
	struct event_base *base;
	struct worker *workers;
	unsigned num_workers;
	struct signals *signals;
	struct event *drain_ev, *exited_ev;
	atomic_uint workers_exited;
	int stopping;
	struct runtime *runtime;
	struct addrcount_shared *conns_by_addr; /* server_conns_by_addr */
	struct addrcount_shared *uploads_by_addr; /* server_uploads_by_addr */
	struct health *health;
	struct admin *admin;
	struct metrics *metrics;       /* NULL without admin.http */
	struct admin_http *admin_http; /* NULL without admin.http */
	struct statefile *statefile;
	struct control *control;       /* NULL without a control section */
	size_t num_start_listeners; /* the listening sockets made at start: fds[worker][0..n) */
	unsigned next_listener_id;  /* for the next listener a reload adds or changes (conf.h id) */
	struct upgrade_src *upsrc; /* every listening socket, for a new binary (upgrade.h) */
	struct upgrade *up;        /* sluice run --upgrade: the old process's sockets, until it drains */
	bool handover;             /* draining because a new process took over */
	/* snapshots whose last reference went on a worker wait here for the main loop */
	pthread_mutex_t reap_lock;
	struct snapshot *reap_list;
	struct event *reap_ev;
	/* workers report adopting a snapshot */
	pthread_mutex_t adopt_lock;
	pthread_cond_t adopt_cond;
};

struct runtime *server_runtime(struct server *srv)
{
	return srv->runtime;
}

struct addrcount_shared *server_conns_by_addr(struct server *srv)
{
	return srv->conns_by_addr;
}

struct addrcount_shared *server_uploads_by_addr(struct server *srv)
{
	return srv->uploads_by_addr;
}

static void print_errors(const struct conf_errors *errs, const char *path)
{
	for (size_t i = 0; i < errs->count; i++)
		fprintf(stderr, "%s\n", errs->msgs[i]);
	fprintf(stderr, "sluice: %zu error%s in %s\n", errs->count, errs->count == 1 ? "" : "s", path);
}

int server_check(const char *config_path)
{
	struct conf_errors errs;
	conf_errors_init(&errs);
	conf_secrets_warn(config_path, stderr);
	struct snapshot *s = snapshot_build(config_path, 1, &errs);
	if (!s) {
		print_errors(&errs, config_path);
		conf_errors_free(&errs);
		return 1;
	}
	const struct conf *c = s->conf;
	size_t servers = 0;
	for (size_t i = 0; i < c->num_pools; i++)
		servers += c->pools[i].num_servers;
	printf("%s: ok: %zu listener%s, %zu pool%s (%zu server%s), %zu service%s, %zu route%s, %u worker%s\n",
	       config_path, c->num_listeners, c->num_listeners == 1 ? "" : "s", c->num_pools, c->num_pools == 1 ? "" : "s",
	       servers, servers == 1 ? "" : "s", c->num_services, c->num_services == 1 ? "" : "s", c->num_routes,
	       c->num_routes == 1 ? "" : "s", c->workers, c->workers == 1 ? "" : "s");
	snapshot_unref(s);
	conf_errors_free(&errs);
	return 0;
}

/* The connection budget comes from the descriptor limit: each client may need
 * an upstream connection too. */
static unsigned server_max_connections(const struct conf *c)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
			rl.rlim_cur = 1024;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		rl.rlim_cur = 1024;
	rlim_t budget = rl.rlim_cur > SERVER_RESERVED_FDS * 2 ? (rl.rlim_cur - SERVER_RESERVED_FDS) / 2 : 16;
	if (c->limits.max_connections && c->limits.max_connections < budget)
		return c->limits.max_connections;
	if (c->limits.max_connections > budget) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "limits.max_connections is above what the open-files limit allows; lowered");
		log_int(&l, "configured", c->limits.max_connections);
		log_int(&l, "used", (long long)budget);
		log_end(&l);
	}
	return budget > 0xffffffffu ? 0xffffffffu : (unsigned)budget;
}

/* glibc gives a heap's free top back to the kernel once it passes 128 KiB, and
 * raises that bound only after freeing a block it had mmap'd. Under a burst
 * (1,000 h2 streams with 16 KiB bodies in flight) a worker's heap then shrank
 * and regrew all the time: MADV_DONTNEED, mprotect, and a page fault for every
 * page touched again, up to a third of the worker's CPU. A fixed threshold
 * keeps the working set of the last burst. */
static void server_set_heap_keep_free(const struct conf *c)
{
	int keep = (int)c->heap_keep_free; /* at most 1g: conf.c checks the range */
	if (mallopt(M_TRIM_THRESHOLD, keep) == 1)
		return;
	/* sanitizers' allocators and other malloc replacements refuse it */
	struct log_line l;
	log_begin(&l, LOG_INFO, "heap_keep_free not applied: the allocator in use ignores mallopt");
	log_int(&l, "heap_keep_free", (long long)keep);
	log_end(&l);
}

/* Every worker binds its own SO_REUSEPORT socket, and Linux lets any process
 * of the same user join such a group: a second sluice (or a stale one) on the
 * same address would silently share its traffic. A plain bind first tells
 * whether anybody holds the address. Returns 0 or -1 with errno. */
static int server_probe_address(const struct conf_listener *l)
{
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	int rc = 0;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, (const struct sockaddr *)&l->addr, l->addr_len) != 0)
		rc = -1;
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

static int server_listen(const struct conf_listener *l)
{
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(fd, (const struct sockaddr *)&l->addr, l->addr_len) != 0 || listen(fd, 4096) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static void server_begin_shutdown(struct server *srv, const char *signal_name)
{
	if (srv->stopping)
		return;
	srv->stopping = 1;
	if (srv->metrics)
		metrics_set_draining(srv->metrics);
	struct log_line l;
	log_begin(&l, LOG_INFO, "shutting down: no new connections, finishing in-flight requests");
	log_str(&l, "signal", signal_name);
	log_int(&l, "drain_timeout_ms", (long long)srv->snap->conf->drain_timeout);
	log_end(&l);
	/* a socket nobody accepts on must leave the SO_REUSEPORT group now, not at exit */
	upgrade_src_close(srv->upsrc);
	for (unsigned i = 0; i < srv->num_workers; i++)
		(srv->handover ? worker_request_handover : worker_request_shutdown)(&srv->workers[i]);
	struct timeval tv = conf_msec_timeval(srv->snap->conf->drain_timeout);
	if (evtimer_add(srv->drain_ev, &tv) != 0)
		log_msg(LOG_ERROR, "cannot arm the drain timer");
}

static void server_signal_shutdown(void *arg, const char *signal_name)
{
	server_begin_shutdown(arg, signal_name);
}

/* logrotate renames the files and sends SIGUSR1: every log sluice writes to
 * a file is opened again by its path, on the same descriptor numbers, so
 * workers writing concurrently never see a closed descriptor. */
static void server_signal_reopen_logs(void *arg)
{
	struct server *srv = arg;
	log_reopen();
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i]->reopen && srv->snap->module_state[i])
			module_list[i]->reopen(srv->snap->conf, srv->snap->module_state[i]);
}

static void server_drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct server *srv = arg;
	log_msg(LOG_WARN, "drain timeout reached: closing the remaining connections");
	for (unsigned i = 0; i < srv->num_workers; i++)
		worker_request_stop(&srv->workers[i]);
}

static void server_exited_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct server *srv = arg;
	if (atomic_load(&srv->workers_exited) >= srv->num_workers)
		event_base_loopexit(srv->base, NULL);
}

void server_worker_exited(struct server *srv)
{
	atomic_fetch_add(&srv->workers_exited, 1);
	event_active(srv->exited_ev, EV_READ, 1);
}

void server_worker_adopted(struct server *srv)
{
	pthread_mutex_lock(&srv->adopt_lock);
	pthread_cond_broadcast(&srv->adopt_cond);
	pthread_mutex_unlock(&srv->adopt_lock);
}

/* A snapshot's last reference went on a worker: queue it for the main loop. */
static void server_reap(struct snapshot *s, void *arg)
{
	struct server *srv = arg;
	pthread_mutex_lock(&srv->reap_lock);
	s->reap_next = srv->reap_list;
	srv->reap_list = s;
	pthread_mutex_unlock(&srv->reap_lock);
	event_active(srv->reap_ev, EV_READ, 1);
}

static void server_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct server *srv = arg;
	pthread_mutex_lock(&srv->reap_lock);
	struct snapshot *list = srv->reap_list;
	srv->reap_list = NULL;
	pthread_mutex_unlock(&srv->reap_lock);
	while (list) {
		struct snapshot *s = list;
		list = s->reap_next;
		struct log_line l;
		log_begin(&l, LOG_DEBUG, "config freed: its last request ended");
		log_int(&l, "generation", (long long)s->generation);
		log_end(&l);
		snapshot_free(s);
	}
}

/* Waits until every worker adopted generation gen; false after the bound. */
static bool server_wait_adopted(struct server *srv, uint64_t gen)
{
	/* the condition variable waits on the monotonic clock (set at its creation) */
	uint64_t deadline_us = clock_mono_us() + (uint64_t)SERVER_ADOPT_WAIT_MS * 1000u;
	struct timespec until = {(time_t)(deadline_us / 1000000u), (long)(deadline_us % 1000000u) * 1000};
	bool all = false;
	pthread_mutex_lock(&srv->adopt_lock);
	for (;;) {
		all = true;
		for (unsigned i = 0; i < srv->num_workers && all; i++)
			all = atomic_load(&srv->workers[i].adopted) >= gen;
		if (all || pthread_cond_timedwait(&srv->adopt_cond, &srv->adopt_lock, &until) != 0)
			break;
	}
	pthread_mutex_unlock(&srv->adopt_lock);
	return all;
}

/* Listeners on reload. A listener of the new config that has the name,
 * address, tls on/off and h2c of a running one keeps its number (conf.h id)
 * and its sockets; its certificates and HTTP/2 settings change in place (new
 * handshakes and sessions take the new snapshot's). Any other is new: a new
 * number and sockets, which are a running listener's that the new config
 * drops or changes if one has the same address (its accept queue is kept:
 * a change of name, tls or h2c refuses no connection), else bound now,
 * before anything is published. The running listeners that keep no number
 * are retired: each worker stops accepting on them when it adopts the new
 * snapshot and drains their connections (worker.c). */
struct listener_plan {
	size_t count;   /* listeners that get sockets, in the new config's order */
	size_t *index;  /* [k]: into the new config's listeners */
	int *fds;       /* [k * num_workers + worker] */
	unsigned next_id;
};

static void listener_plan_free(struct listener_plan *p, unsigned num_workers)
{
	if (p->fds)
		for (size_t i = 0; i < p->count * num_workers; i++)
			if (p->fds[i] >= 0)
				close(p->fds[i]);
	free(p->fds);
	free(p->index);
	memset(p, 0, sizeof(*p));
}

static bool listener_same(const struct conf_listener *a, const struct conf_listener *b)
{
	return strcmp(a->name, b->name) == 0 && conf_sockaddr_equal(&a->addr, a->addr_len, &b->addr, b->addr_len) &&
	       (a->tls == NULL) == (b->tls == NULL) && a->h2c == b->h2c;
}

/* Numbers c's listeners (c is not shared yet) and makes the sockets of the
 * new ones. On a failure nothing is kept and the error names the listener. */
static int server_plan_listeners(struct server *srv, const struct conf *old, struct conf *c, struct listener_plan *p,
                                 struct conf_errors *errs)
{
	memset(p, 0, sizeof(*p));
	p->next_id = srv->next_listener_id;
	p->index = calloc(c->num_listeners, sizeof(*p->index));
	p->fds = malloc(c->num_listeners * srv->num_workers * sizeof(*p->fds));
	if (!p->index || !p->fds) {
		listener_plan_free(p, srv->num_workers);
		conf_errors_add(errs, "%s: out of memory", c->source);
		return -1;
	}
	for (size_t i = 0; i < c->num_listeners * srv->num_workers; i++)
		p->fds[i] = -1;
	bool *kept = calloc(old->num_listeners ? old->num_listeners : 1, sizeof(*kept));
	if (!kept) {
		listener_plan_free(p, srv->num_workers);
		conf_errors_add(errs, "%s: out of memory", c->source);
		return -1;
	}
	for (size_t i = 0; i < c->num_listeners; i++) {
		struct conf_listener *l = &c->listeners[i];
		size_t j = 0;
		while (j < old->num_listeners && !listener_same(&old->listeners[j], l))
			j++;
		if (j < old->num_listeners) {
			l->id = old->listeners[j].id;
			kept[j] = true;
		} else {
			l->id = p->next_id++;
			p->index[p->count++] = i;
		}
	}
	int rc = 0;
	for (size_t k = 0; k < p->count && rc == 0; k++) {
		const struct conf_listener *l = &c->listeners[p->index[k]];
		int *fds = &p->fds[k * srv->num_workers];
		/* a retired listener on the same address passes its sockets on */
		const struct conf_listener *from = NULL;
		for (size_t j = 0; j < old->num_listeners && !from; j++)
			if (!kept[j] && conf_sockaddr_equal(&old->listeners[j].addr, old->listeners[j].addr_len, &l->addr,
			                                    l->addr_len))
				from = &old->listeners[j];
		const char *why = NULL;
		if (!from && server_probe_address(l) != 0)
			why = errno == EADDRINUSE ? "address in use (another process listens there)" : strerror(errno);
		for (unsigned w = 0; !why && w < srv->num_workers; w++) {
			int kept_fd = from ? upgrade_src_fd(srv->upsrc, w, from->name, from->address) : -1;
			fds[w] = kept_fd >= 0 ? fcntl(kept_fd, F_DUPFD_CLOEXEC, 3) : server_listen(l);
			if (fds[w] < 0)
				why = strerror(errno);
		}
		if (why) {
			conf_errors_add(errs, "%s: listener %s: cannot listen on %s: %s", c->source, l->name, l->address, why);
			rc = -1;
		}
	}
	free(kept);
	if (rc != 0)
		listener_plan_free(p, srv->num_workers);
	return rc;
}

/* The plan is certain (nothing can fail any more): the workers get the new
 * sockets before the snapshot that has them; the upgrade table follows. */
static void server_apply_listeners(struct server *srv, const struct conf *old, const struct snapshot *s,
                                   struct listener_plan *p, const char *how)
{
	const struct conf *c = s->conf;
	for (size_t j = 0; j < old->num_listeners; j++) {
		const struct conf_listener *o = &old->listeners[j];
		if (conf_listener_by_id(c, o->id, NULL))
			continue;
		upgrade_src_remove(srv->upsrc, o->name, o->address);
		struct log_line l;
		log_begin(&l, LOG_INFO, "listener removed: no new connections, its connections drain");
		log_str(&l, "listener", o->name);
		log_str(&l, "address", o->address);
		log_str(&l, "removed_by", how);
		log_end(&l);
	}
	for (size_t k = 0; k < p->count; k++) {
		const struct conf_listener *l = &c->listeners[p->index[k]];
		for (unsigned w = 0; w < srv->num_workers; w++) {
			int fd = p->fds[k * srv->num_workers + w];
			p->fds[k * srv->num_workers + w] = -1;
			upgrade_src_add(srv->upsrc, w, l->name, l->address, fd);
			worker_add_listener(&srv->workers[w], l->id, l->name, fd, s->generation);
		}
		struct log_line ll;
		log_begin(&ll, LOG_INFO, "listening");
		log_str(&ll, "listener", l->name);
		log_str(&ll, "address", l->address);
		log_str(&ll, "added_by", how);
		log_end(&ll);
	}
	srv->next_listener_id = p->next_id;
	listener_plan_free(p, srv->num_workers);
}

/* What a reload cannot change yet: each difference is an error that names
 * the key and says a restart applies it. */
static void server_restart_only(const struct conf *old, const struct conf *c, struct conf_errors *errs)
{
	const char *restart = "it cannot change on reload; restart sluice to apply it (docs/configuration.md)";
	if (old->workers != c->workers)
		conf_errors_add(errs, "%s: workers: changed from %u to %u: %s", c->source, old->workers, c->workers, restart);
	if (!conf_same_str(old->user, c->user))
		conf_errors_add(errs, "%s: user: changed: %s", c->source, restart);
	if (!conf_same_str(old->admin.socket, c->admin.socket))
		conf_errors_add(errs, "%s: admin.socket: changed from %s to %s: %s", c->source,
		                old->admin.socket ? old->admin.socket : "(none)", c->admin.socket ? c->admin.socket : "(none)",
		                restart);
	if (!conf_same_str(old->state_file, c->state_file))
		conf_errors_add(errs, "%s: state_file: changed: %s", c->source, restart);
	if (conf_metrics_buckets_differ(old, c))
		conf_errors_add(errs, "%s: metrics.histogram_buckets: changed: %s", c->source, restart);
	if (!conf_control_same(old->control, c->control))
		conf_errors_add(errs, "%s: control: changed: %s", c->source, restart);
	/* redis may change: each worker reconnects with the new settings (ratelimit.c) */
}

/* admin.http on reload: a new address (or one added) is bound before
 * anything is published; *moved says whether the listener changes. */
static int server_plan_admin_http(struct server *srv, const struct conf_admin *ao, const struct conf_admin *an,
                                  const char *source, bool *moved, struct admin_http **out, struct conf_errors *errs)
{
	*out = NULL;
	*moved = (ao->http == NULL) != (an->http == NULL) ||
	         (an->http && !conf_sockaddr_equal(&ao->http_addr, ao->http_addr_len, &an->http_addr, an->http_addr_len));
	if (!*moved || !an->http)
		return 0;
	if (!srv->metrics) {
		if (!(srv->metrics = metrics_new(srv->runtime, srv->snap, srv->num_workers))) {
			conf_errors_add(errs, "%s: out of memory", source);
			return -1;
		}
		metrics_set_ready(srv->metrics);
	}
	if (!(*out = admin_http_start(srv->base, an, srv->metrics, -1))) {
		conf_errors_add(errs, "%s: admin.http: cannot listen on %s: %s (see the log)", source, an->http,
		                strerror(errno));
		return -1;
	}
	return 0;
}

static void server_apply_admin_http(struct server *srv, const struct conf_admin *ao, const struct conf_admin *an,
                                    bool moved, struct admin_http *h)
{
	if (!moved) {
		if (srv->admin_http && (ao->http_token_len != an->http_token_len ||
		                        (an->http_token && memcmp(ao->http_token, an->http_token, an->http_token_len) != 0)))
			if (admin_http_set_token(srv->admin_http, an) != 0)
				log_msg(LOG_ERROR, "admin.http: out of memory: the previous token stays");
		return;
	}
	if (srv->admin_http) {
		upgrade_src_remove(srv->upsrc, "admin.http", ao->http);
		admin_http_stop(srv->admin_http);
		struct log_line l;
		log_begin(&l, LOG_INFO, "admin HTTP listener stopped");
		log_str(&l, "address", ao->http);
		log_end(&l);
	}
	srv->admin_http = h;
	if (h)
		upgrade_src_add(srv->upsrc, UPGRADE_ADMIN_HTTP, "admin.http", an->http, admin_http_fd(h));
}

int server_reload(struct server *srv, long long uid, const char *how, struct conf_errors *errs, char *msg,
                  size_t msg_size)
{
	uint64_t t0 = clock_mono_us();
	if (srv->stopping) {
		conf_errors_add(errs, "%s: sluice is shutting down: not reloaded", srv->config_path);
		return -1;
	}
	uint64_t gen = srv->snap->generation + 1;
	struct snapshot *s = snapshot_build(srv->config_path, gen, errs);
	if (!s)
		return -1;
	server_restart_only(srv->snap->conf, s->conf, errs);
	struct listener_plan plan = {0};
	if (errs->count == 0)
		server_plan_listeners(srv, srv->snap->conf, s->conf, &plan, errs);
	const struct conf_admin *ao = &srv->snap->conf->admin, *an = &s->conf->admin;
	bool http_moved = false;
	struct admin_http *new_http = NULL;
	if (errs->count == 0 && server_plan_admin_http(srv, ao, an, s->conf->source, &http_moved, &new_http, errs) != 0)
		listener_plan_free(&plan, srv->num_workers);
	if (errs->count > 0) {
		snapshot_unref(s);
		return -1;
	}
	s->loaded_by_uid = uid;
	s->loaded_how = how;
	snapshot_set_reaper(s, server_reap, srv);
	/* entries for new names first: the workers bind their pool sets to them */
	struct health *h = NULL;
	if (runtime_sync(srv->runtime, s->conf) != 0)
		conf_errors_add(errs, "%s: out of memory building the runtime state", srv->config_path);
	else if (!(h = health_start(srv->base, srv->runtime, s, srv->health)))
		conf_errors_add(errs, "%s: cannot start the health checks (see the log)", srv->config_path);
	if (!h) {
		listener_plan_free(&plan, srv->num_workers);
		admin_http_stop(new_http);
		snapshot_unref(s);
		return -1;
	}
	runtime_prune(srv->runtime, s->conf);
	server_set_heap_keep_free(s->conf);
	server_apply_listeners(srv, srv->snap->conf, s, &plan, how);
	server_apply_admin_http(srv, ao, an, http_moved, new_http);
	unsigned per_worker = server_max_connections(s->conf) / srv->num_workers;
	for (unsigned i = 0; i < srv->num_workers; i++)
		worker_set_max_conns(&srv->workers[i], per_worker);
	for (unsigned i = 0; i < srv->num_workers; i++)
		worker_publish(&srv->workers[i], s);
	if (srv->admin)
		admin_set_snapshot(srv->admin, s, h);
	if (srv->metrics)
		metrics_set_snapshot(srv->metrics, s);
	health_stop(srv->health);
	srv->health = h;
	snapshot_unref(srv->snap);
	srv->snap = s;
	char log_why[512];
	if (logsys_errlog_apply(&s->conf->error_log, srv->base, log_why, sizeof log_why) != 0) {
		struct log_line el;
		log_begin(&el, LOG_ERROR, "error_log: cannot apply the reloaded setting; the previous outputs stay");
		log_str(&el, "error", log_why);
		log_end(&el);
	}
	bool all = server_wait_adopted(srv, gen);
	double ms = (double)clock_elapsed_us(t0, clock_mono_us()) / 1000.0;
	const struct conf *c = s->conf;
	snprintf(msg, msg_size, "reloaded: generation %llu, %zu routes, %zu pools, %zu services in %.0f ms",
	         (unsigned long long)gen, c->num_routes, c->num_pools, c->num_services, ms);
	struct log_line l;
	log_begin(&l, all ? LOG_INFO : LOG_WARN,
	          all ? "config reloaded" : "config reloaded, but some workers have not adopted it yet");
	log_str(&l, "config", srv->config_path);
	log_int(&l, "generation", (long long)gen);
	log_str(&l, "by", how);
	log_int(&l, "uid", uid);
	log_int(&l, "routes", (long long)c->num_routes);
	log_int(&l, "pools", (long long)c->num_pools);
	log_int(&l, "services", (long long)c->num_services);
	log_int(&l, "ms", (long long)(ms + 0.5));
	log_end(&l);
	return 0;
}

/* A reload ended (rc 0: published): counted, and shown by /metrics. */
static void server_reload_done(struct server *srv, int rc)
{
	if (counters_process)
		CTR_GLOBAL_ADD(counters_main(counters_process), RELOADS, rc == 0 ? CTR_RELOAD_SUCCESS : CTR_RELOAD_FAILURE, 1);
	if (srv->metrics)
		metrics_reloaded(srv->metrics, rc == 0);
}

static int server_admin_reload(void *arg, long long uid, struct conf_errors *errs, char *msg, size_t msg_size)
{
	struct server *srv = arg;
	int rc = server_reload(srv, uid, "ctl reload", errs, msg, msg_size);
	server_reload_done(srv, rc);
	return rc;
}

/* SIGHUP (signals.h): the same reload; errors only go to the log. */
static void server_signal_reload(void *arg)
{
	struct server *srv = arg;
	struct conf_errors errs;
	conf_errors_init(&errs);
	char msg[256];
	int rc = server_reload(srv, -1, "SIGHUP", &errs, msg, sizeof(msg));
	server_reload_done(srv, rc);
	if (rc != 0) {
		for (size_t i = 0; i < errs.count; i++) {
			struct log_line l;
			log_begin(&l, LOG_ERROR, "reload on SIGHUP refused: the running config is unchanged");
			log_str(&l, "error", errs.msgs[i]);
			log_end(&l);
		}
	}
	conf_errors_free(&errs);
}

static void server_cleanup(struct server *srv, int **fds)
{
	for (unsigned i = 0; i < srv->num_workers; i++) {
		worker_join(&srv->workers[i]);
		worker_destroy(&srv->workers[i]);
	}
	free(srv->workers);
	if (fds) {
		for (unsigned i = 0; i < srv->num_workers; i++) {
			if (!fds[i])
				continue;
			for (size_t j = 0; j < srv->num_start_listeners; j++)
				if (fds[i][j] >= 0)
					close(fds[i][j]);
			free(fds[i]);
		}
		free(fds);
	}
	upgrade_free(srv->up);
	upgrade_src_free(srv->upsrc);
	signals_stop(srv->signals);
	if (srv->drain_ev)
		event_free(srv->drain_ev);
	if (srv->exited_ev)
		event_free(srv->exited_ev);
	if (srv->admin)
		admin_set_control(srv->admin, NULL);
	control_free(srv->control); /* releases its rollout leases while the controller is still there */
	admin_stop(srv->admin);
	admin_http_stop(srv->admin_http);
	metrics_free(srv->metrics);
	statefile_free(srv->statefile);
	health_stop(srv->health);
	/* what the workers handed over after the loop ended */
	server_reap_cb(-1, 0, srv);
	if (srv->reap_ev)
		event_free(srv->reap_ev);
	logsys_errlog_stop();
	if (srv->base)
		event_base_free(srv->base);
	snapshot_unref(srv->snap);
	runtime_free(srv->runtime);
	addrcount_shared_free(srv->conns_by_addr);
	addrcount_shared_free(srv->uploads_by_addr);
	pthread_mutex_destroy(&srv->reap_lock);
	pthread_mutex_destroy(&srv->adopt_lock);
	pthread_cond_destroy(&srv->adopt_cond);
	/* last: modules log their totals from it as the snapshot goes */
	counters_free(counters_process);
	counters_process = NULL;
}

static int server_upgrade_send(void *arg, int fd, char *err, size_t err_size)
{
	struct server *srv = arg;
	if (srv->stopping) {
		snprintf(err, err_size, "this process is shutting down");
		return -1;
	}
	return upgrade_src_send(srv->upsrc, fd, err, err_size);
}

static void server_upgrade_drain(void *arg)
{
	struct server *srv = arg;
	srv->handover = true;
	/* the new process answers /metrics, /healthz and /readyz on the same socket from now on */
	admin_http_stop(srv->admin_http);
	srv->admin_http = NULL;
	server_begin_shutdown(srv, "upgrade");
}

int server_run(const char *config_path, bool upgrade)
{
	struct server srv;
	memset(&srv, 0, sizeof(srv));
	srv.config_path = config_path;
	/* a peer closing mid-write must be an error return, not a dead process;
	 * and no signal an operator sends may kill the gateway while it starts
	 * (a large config takes a while to load) */
	signals_ignore_early();
	log_remember_files();
	pthread_condattr_t cattr;
	if (pthread_mutex_init(&srv.reap_lock, NULL) != 0 || pthread_mutex_init(&srv.adopt_lock, NULL) != 0 ||
	    pthread_condattr_init(&cattr) != 0 || pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&srv.adopt_cond, &cattr) != 0) {
		fprintf(stderr, "sluice: cannot create the server's locks\n");
		return 1;
	}
	pthread_condattr_destroy(&cattr);
	struct conf_errors errs;
	conf_errors_init(&errs);
	/* the counter registry first: a snapshot names its series in it as it is built */
	counters_process = counters_new();
	if (!counters_process) {
		fprintf(stderr, "sluice: out of memory\n");
		conf_errors_free(&errs);
		return 1;
	}
	srv.snap = snapshot_build(config_path, 1, &errs);
	if (!srv.snap) {
		counters_free(counters_process);
		counters_process = NULL;
		print_errors(&errs, config_path);
		fprintf(stderr, "sluice: not started\n");
		conf_errors_free(&errs);
		return 1;
	}
	conf_errors_free(&errs);
	const struct conf *c = srv.snap->conf;
	counters_set_buckets(counters_process, c->metrics.buckets_us, c->metrics.num_buckets);
	/* before the state file is read: the running process refuses changes from here on */
	if (upgrade) {
		char err[512];
		if (!(srv.up = upgrade_begin(c->admin.socket, err, sizeof(err)))) {
			fprintf(stderr, "%s: --upgrade: %s\nsluice: not started; the running sluice is unchanged\n", c->source,
			        err);
			snapshot_unref(srv.snap);
			return 1;
		}
	}
	if (!(srv.upsrc = upgrade_src_new())) {
		log_msg(LOG_ERROR, "out of memory");
		upgrade_free(srv.up);
		snapshot_unref(srv.snap);
		return 1;
	}

	if (evthread_use_pthreads() != 0) {
		log_msg(LOG_ERROR, "libevent has no thread support");
		snapshot_unref(srv.snap);
		return 1;
	}
	/* runtime state first: the workers' pools bind to its entries by name */
	srv.runtime = runtime_new();
	srv.conns_by_addr = addrcount_shared_new();
	srv.uploads_by_addr = addrcount_shared_new();
	if (!srv.runtime || !srv.conns_by_addr || !srv.uploads_by_addr || runtime_sync(srv.runtime, c) != 0) {
		log_msg(LOG_ERROR, "out of memory building the runtime state");
		server_cleanup(&srv, NULL);
		return 1;
	}
	/* deployers' changes survive restarts: applied before any request is served */
	if (c->state_file && !(srv.statefile = statefile_open(c->state_file, srv.runtime))) {
		server_cleanup(&srv, NULL);
		return 1;
	}

	server_set_heap_keep_free(c);
	unsigned max_conns = server_max_connections(c);
	srv.num_workers = c->workers;
	srv.workers = calloc(srv.num_workers, sizeof(*srv.workers));
	int **fds = calloc(srv.num_workers, sizeof(*fds));
	if (!srv.workers || !fds) {
		log_msg(LOG_ERROR, "out of memory");
		free(fds);
		server_cleanup(&srv, NULL);
		return 1;
	}
	/* every worker gets its own SO_REUSEPORT socket per listener: the kernel
	 * spreads connections over workers without a shared accept queue */
	for (unsigned i = 0; i < srv.num_workers; i++) {
		srv.num_start_listeners = c->num_listeners;
		fds[i] = malloc(c->num_listeners * sizeof(int));
		if (!fds[i]) {
			server_cleanup(&srv, fds);
			return 1;
		}
		for (size_t j = 0; j < c->num_listeners; j++)
			fds[i][j] = -1;
		for (size_t j = 0; j < c->num_listeners; j++) {
			const struct conf_listener *cl = &c->listeners[j];
			/* the old process's socket for this worker, else a fresh one (it joins the old one's group) */
			if (srv.up && (fds[i][j] = upgrade_take(srv.up, cl->name, cl->address, i)) >= 0)
				continue;
			bool old_has = srv.up && upgrade_has(srv.up, cl->name, cl->address);
			if (i == 0 && !old_has && server_probe_address(&c->listeners[j]) != 0) {
				fprintf(stderr, "%s: listeners[%zu] (%s): cannot listen on %s: %s%s\n", c->source, j + 1,
				        c->listeners[j].name, c->listeners[j].address, strerror(errno),
				        errno == EADDRINUSE ? " (another process, maybe another sluice, listens there: stop "
				                              "it or choose another address)"
				                            : "");
				server_cleanup(&srv, fds);
				return 1;
			}
			fds[i][j] = server_listen(&c->listeners[j]);
			if (fds[i][j] < 0) {
				fprintf(stderr, "%s: listeners[%zu] (%s): cannot listen on %s: %s\n", c->source, j + 1,
				        c->listeners[j].name, c->listeners[j].address, strerror(errno));
				server_cleanup(&srv, fds);
				return 1;
			}
		}
	}
	for (unsigned i = 0; i < srv.num_workers; i++)
		for (size_t j = 0; j < c->num_listeners; j++)
			upgrade_src_add(srv.upsrc, i, c->listeners[j].name, c->listeners[j].address, fds[i][j]);
	srv.next_listener_id = (unsigned)c->num_listeners; /* conf_load numbers them by index */
	/* listeners bound and keys read (at config load): nothing needs root any more */
	if (priv_drop(c->user) != 0) {
		server_cleanup(&srv, fds);
		return 1;
	}

	srv.base = event_base_new();
	if (!srv.base) {
		server_cleanup(&srv, fds);
		return 1;
	}
	static const struct signals_ops sig_ops = {
		.shutdown = server_signal_shutdown,
		.reload = server_signal_reload,
		.reopen_logs = server_signal_reopen_logs,
	};
	srv.drain_ev = evtimer_new(srv.base, server_drain_timeout_cb, &srv);
	srv.exited_ev = event_new(srv.base, -1, 0, server_exited_cb, &srv);
	srv.reap_ev = event_new(srv.base, -1, 0, server_reap_cb, &srv);
	if (!srv.drain_ev || !srv.exited_ev || !srv.reap_ev || !(srv.signals = signals_start(srv.base, &sig_ops, &srv))) {
		log_msg(LOG_ERROR, "cannot set up the main event loop");
		server_cleanup(&srv, fds);
		return 1;
	}
	/* from here on a last unref on a worker comes back to this loop */
	snapshot_set_reaper(srv.snap, server_reap, &srv);
	char log_why[512];
	if (logsys_errlog_apply(&c->error_log, srv.base, log_why, sizeof log_why) != 0) {
		fprintf(stderr, "%s: error_log: %s\nsluice: not started\n", c->source, log_why);
		server_cleanup(&srv, NULL);
		return 1;
	}
	srv.health = health_start(srv.base, srv.runtime, srv.snap, NULL);
	if (!srv.health) {
		server_cleanup(&srv, fds);
		return 1;
	}
	if (c->admin.socket) {
		srv.admin = (srv.up ? admin_start_upgrade : admin_start)(srv.base, srv.runtime, srv.snap, srv.health,
		                                                          srv.statefile);
		if (!srv.admin) {
			fprintf(stderr, "%s: admin.socket: cannot listen on %s (see the log above)\n", c->source, c->admin.socket);
			server_cleanup(&srv, fds);
			return 1;
		}
		admin_set_reload(srv.admin, server_admin_reload, &srv);
		admin_set_reopen_logs(srv.admin, server_signal_reopen_logs, &srv);
		static const struct admin_upgrade_ops up_ops = {.send = server_upgrade_send, .drain = server_upgrade_drain};
		admin_set_upgrade(srv.admin, &up_ops, &srv);
	}
	if (c->control) {
		if (!(srv.control = control_new(srv.base, c->control, srv.runtime, srv.statefile, &srv.snap))) {
			server_cleanup(&srv, fds);
			return 1;
		}
		if (srv.admin)
			admin_set_control(srv.admin, srv.control);
	}
	if (c->admin.http) {
		srv.metrics = metrics_new(srv.runtime, srv.snap, srv.num_workers);
		int fd = srv.up ? upgrade_take(srv.up, "admin.http", c->admin.http, UPGRADE_ADMIN_HTTP) : -1;
		if (!srv.metrics || !(srv.admin_http = admin_http_start(srv.base, &c->admin, srv.metrics, fd))) {
			fprintf(stderr, "%s: admin.http: cannot listen on %s (see the log above)\n", c->source, c->admin.http);
			server_cleanup(&srv, fds);
			return 1;
		}
		upgrade_src_add(srv.upsrc, UPGRADE_ADMIN_HTTP, "admin.http", c->admin.http, admin_http_fd(srv.admin_http));
	}

	/* workers must not take the signals meant for the main loop */
	sigset_t old;
	if (signals_block_for_threads(&old) != 0) {
		log_msg(LOG_ERROR, "cannot block signals for the worker threads");
		server_cleanup(&srv, fds);
		return 1;
	}
	unsigned per_worker = max_conns / srv.num_workers;
	int failed = 0;
	for (unsigned i = 0; i < srv.num_workers && !failed; i++) {
		if (worker_init(&srv.workers[i], &srv, i, srv.snap, fds[i], per_worker) != 0 ||
		    worker_start(&srv.workers[i]) != 0)
			failed = 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (failed) {
		for (unsigned i = 0; i < srv.num_workers; i++)
			if (srv.workers[i].thread_started)
				worker_request_stop(&srv.workers[i]);
		server_cleanup(&srv, fds);
		return 1;
	}
	for (size_t j = 0; j < c->num_listeners; j++) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "listening");
		log_str(&l, "listener", c->listeners[j].name);
		log_str(&l, "address", c->listeners[j].address);
		log_end(&l);
	}
	{
		struct log_line l;
		log_begin(&l, LOG_INFO, "started");
		log_str(&l, "config", config_path);
		log_int(&l, "workers", srv.num_workers);
		log_int(&l, "max_connections", max_conns);
		log_int(&l, "pid", getpid());
		log_end(&l);
	}
	int status = 0;
	if (srv.up) {
		/* serving: the old process drains; then the admin socket's path is ours */
		long old_pid = upgrade_old_pid(srv.up);
		char err[512];
		int rc = upgrade_finish(srv.up, err, sizeof(err));
		srv.up = NULL;
		struct log_line l;
		if (rc != 0 || admin_publish(srv.admin) != 0) {
			log_begin(&l, LOG_ERROR, "upgrade failed: this process stops again; the old one keeps serving");
			log_str(&l, "error", rc != 0 ? err : "cannot move the admin socket into place");
			log_int(&l, "old_pid", old_pid);
			log_end(&l);
			status = 1;
			server_begin_shutdown(&srv, "upgrade failed");
		} else {
			log_begin(&l, LOG_INFO, "upgrade: took over; the old process drains");
			log_int(&l, "old_pid", old_pid);
			log_int(&l, "pid", getpid());
			log_end(&l);
		}
	}
	/* config loaded, every listener bound, workers serving: /readyz says so */
	if (srv.metrics)
		metrics_set_ready(srv.metrics);
	if (event_base_dispatch(srv.base) < 0)
		log_msg(LOG_ERROR, "main event loop failed");
	server_cleanup(&srv, fds);
	log_msg(LOG_INFO, "stopped");
	return status;
}
