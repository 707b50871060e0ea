#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "addrcount.h"
#include "client.h"
#include "clock.h"
#include "conf_schema.h"
#include "counters.h"
#include "h2.h"
#include "io.h"
#include "log.h"
#include "module.h"
#include "pipeline.h"
#include "pool.h"
#include "route.h"
#include "server.h"
#include "snapshot.h"
#include "tls_accept.h"

/* How long accepting stays paused after the process ran out of descriptors. */
#define WORKER_ACCEPT_RETRY_MS 100

/* A listener on this worker, by the process's number for it (conf.h id).
 * Nodes stay until the worker is destroyed: a retired one (a reload removed
 * or changed its listener) keeps its name for the requests its connections
 * still carry. */
struct worker_listener {
	struct worker *w;
	unsigned id;
	char *name;
	struct event *ev; /* accepting on the socket, which it owns; NULL: not yet watched, or retired */
	int fd;           /* queued by a reload, not watched yet; else -1 */
	uint64_t generation; /* queued: the generation of the snapshot that has it first */
	struct worker_listener *next;
};

static void worker_set_accepting(struct worker *w, bool on)
{
	for (struct worker_listener *l = w->listeners; l; l = l->next)
		if (l->ev && (on ? event_add(l->ev, NULL) : event_del(l->ev)) != 0)
			log_msg(LOG_ERROR, "cannot change a listening socket's watch");
	w->accepting_paused = !on;
}

/* TLS and h2c connections whose protocol is known (tls_accept.h): the
 * worker, not the TLS code, decides which protocol code serves them. */
static void worker_dispatch(struct worker *w, const struct tls_handoff *h)
{
	struct client_origin o;
	client_origin_from_sockaddr(&o, h->peer);
	o.scheme = h->tls ? "https" : "http";
	o.plain_socket = !h->tls; /* HTTP/1 on a plain socket gets direct writes (io.h) */
	if (h->proto == TLS_PROTO_H2) {
		h2_session_start(w, h->snap, h->listener, h->bev, &o);
	} else {
		struct client_conn *cc = client_accept_bev(w, h->listener, h->bev, &o);
		/* the handshake outlived its listener (a reload changed it): one answer, then close */
		if (cc && !conf_listener_by_id(w->snap->conf, (unsigned)h->listener, NULL))
			cc->drain = true;
	}
}

static void worker_accept_failed(struct worker *w, int err);

/* A connection closed at accept because its client holds
 * max_connections_per_client: counted, and logged at most once a second
 * (a flood would otherwise be a flood of log lines too). */
static void worker_conn_refused(struct worker *w, const struct conf_listener *cl, size_t listener_index,
                                const char *ip)
{
	const struct snapshot *s = w->snap;
	if (w->counters && s->counters)
		CTR_ADD(w->counters, s->counters, LISTENER, listener_index, LISTENER_CONNS_REFUSED,
		        CTR_CONN_REFUSED_PER_CLIENT_LIMIT, 1);
	uint64_t now = clock_mono_us();
	if (w->conn_refused_logged_us && clock_elapsed_us(w->conn_refused_logged_us, now) < 1000000) {
		w->conn_refused_unlogged++;
		return;
	}
	char buf[ADDRCOUNT_KEY_MAX];
	const char *key = addrcount_client_key(ip, buf);
	struct log_line line;
	log_begin(&line, LOG_WARN, "connection refused: the client holds max_connections_per_client");
	log_str(&line, "client_ip", ip);
	if (key != ip)
		log_str(&line, "counted_as", key);
	log_str(&line, "listener", cl->name);
	log_int(&line, "limit", cl->max_connections_per_client);
	log_int(&line, "worker", w->id);
	log_int(&line, "refused_unlogged", w->conn_refused_unlogged); /* since the last such line */
	log_end(&line);
	w->conn_refused_logged_us = now;
	w->conn_refused_unlogged = 0;
}

/* Admission by client address (limits.max_connections_per_client), in the
 * process-wide table, so the cap holds however the kernel spreads
 * connections over workers; the hold is offered to the object the accept
 * path makes (worker_conn_hold_offer). False: closed here, before any read. */
static bool worker_admit(struct worker *w, const struct conf_listener *cl, size_t listener_index, const char *ip)
{
	unsigned limit = cl->max_connections_per_client ? cl->max_connections_per_client : ADDRCOUNT_NO_LIMIT;
	if (addrcount_shared_acquire(w->conns_by_addr, ip, limit))
		return true;
	if (limit != ADDRCOUNT_NO_LIMIT && addrcount_shared_get(w->conns_by_addr, ip) >= limit)
		worker_conn_refused(w, cl, listener_index, ip);
	else
		log_msg(LOG_ERROR, "out of memory counting a client's connections: connection closed");
	return false;
}

/* One accept4 per wakeup, as nginx does without multi_accept: libevent's
 * evconnlistener loops until accept fails with EAGAIN, a wasted system call
 * per wakeup when connections arrive one at a time (the listening socket
 * stays readable while more wait: the next loop turn takes the next one,
 * between the other connections' events). */
static void worker_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	struct worker_listener *wl = arg;
	struct worker *w = wl->w;
	/* watched only while the current snapshot has it (worker_adopt) */
	size_t listener_index;
	const struct conf_listener *cl = conf_listener_by_id(w->snap->conf, wl->id, &listener_index);
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	int fd = accept4(lfd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		worker_accept_failed(w, errno);
		return;
	}
	struct sockaddr *sa = (struct sockaddr *)&ss;
	int salen = (int)sslen;
	if (!cl) {
		close(fd);
		return;
	}
	struct client_origin o;
	client_origin_from_sockaddr(&o, sa);
	if (!worker_admit(w, cl, listener_index, o.ip)) {
		/* a reset: a flood of refusals leaves no TIME_WAIT behind */
		struct linger reset = {.l_onoff = 1, .l_linger = 0};
		if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) != 0)
			log_msg(LOG_DEBUG, "SO_LINGER failed on a refused client socket");
		close(fd);
		return;
	}
	worker_conn_hold_offer(w);
	if (cl->tls)
		tls_accept(w, wl->id, fd, sa, o.ip);
	else if (cl->h2c)
		tls_accept_h2c(w, wl->id, fd, sa, o.ip);
	else
		client_accept(w, wl->id, fd, sa, salen);
	worker_conn_hold_settle(w, o.ip);
	if (w->num_conns >= w->max_conns && !w->accepting_paused) {
		worker_set_accepting(w, false);
		struct log_line line;
		log_begin(&line, LOG_WARN, "connection limit reached, accepting paused");
		log_int(&line, "worker", w->id);
		log_int(&line, "max_connections", w->max_conns);
		log_end(&line);
	}
}

static void worker_resume_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct worker *w = arg;
	if (!w->draining && w->num_conns < w->max_conns)
		worker_set_accepting(w, true);
}

static void worker_accept_failed(struct worker *w, int err)
{
	/* nothing waiting any more (another worker's wakeup took it), or a
	 * connection that died in the queue: Linux passes such network errors
	 * on to accept, to be treated like EAGAIN */
	if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED || err == EPROTO ||
	    err == EPERM || err == ENETDOWN || err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET ||
	    err == EHOSTUNREACH || err == EOPNOTSUPP || err == ENETUNREACH)
		return;
	struct log_line line;
	log_begin(&line, LOG_ERROR, "accept failed");
	log_str(&line, "error", evutil_socket_error_to_string(err));
	log_end(&line);
	/* out of descriptors: back off instead of spinning on a listener that stays readable */
	worker_set_accepting(w, false);
	struct timeval tv = {0, WORKER_ACCEPT_RETRY_MS * 1000};
	if (event_base_once(w->base, -1, EV_TIMEOUT, worker_resume_accept_cb, w, &tv) != 0)
		worker_set_accepting(w, true);
}

/* Accept on listening socket fd for l (l->ev owns fd after, not on failure). */
static int worker_watch_listener(struct worker *w, struct worker_listener *l, int fd, bool on)
{
	/* accept4 must not block when the connection that woke us is gone */
	if (evutil_make_socket_nonblocking(fd) != 0)
		return -1;
	struct event *ev = event_new(w->base, fd, EV_READ | EV_PERSIST, worker_accept_cb, l);
	if (!ev || (on && event_add(ev, NULL) != 0)) {
		if (ev)
			event_free(ev);
		return -1;
	}
	l->ev = ev;
	return 0;
}

static struct worker_listener *worker_listener_new(struct worker *w, unsigned id, const char *name, int fd)
{
	struct worker_listener *l = calloc(1, sizeof(*l));
	if (l && !(l->name = strdup(name))) {
		free(l);
		l = NULL;
	}
	if (l) {
		l->w = w;
		l->id = id;
		l->fd = fd;
	}
	return l;
}

/* Stop accepting on l: its socket is closed (this worker's member of the
 * SO_REUSEPORT group leaves it) unless a reload passed it on to another
 * listener, whose node holds its own descriptor. */
static void worker_unwatch_listener(struct worker_listener *l)
{
	if (l->ev) {
		evutil_socket_t fd = event_get_fd(l->ev);
		event_free(l->ev);
		close(fd);
		l->ev = NULL;
	}
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
}

static void worker_close_listeners(struct worker *w)
{
	for (struct worker_listener *l = w->listeners; l; l = l->next)
		worker_unwatch_listener(l);
	pthread_mutex_lock(&w->added_lock);
	for (struct worker_listener *l = w->added; l; l = l->next)
		worker_unwatch_listener(l);
	pthread_mutex_unlock(&w->added_lock);
}

static void worker_drain_h2_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	h2_drain_all(arg);
}

/* A hand-over leaves busy HTTP/2 sessions alone for half the drain time
 * (h2.h h2_handover), then tells them to go, in time for their last streams
 * to finish before the drain time is over. */
static void worker_handover_h2(struct worker *w)
{
	h2_handover(w);
	struct timeval tv = conf_msec_timeval(w->snap->conf->drain_timeout / 2);
	if (event_base_once(w->base, -1, EV_TIMEOUT, worker_drain_h2_cb, w, &tv) != 0)
		h2_drain_all(w);
}

static void worker_shutdown(struct worker *w)
{
	if (w->draining)
		return;
	w->draining = true;
	worker_close_listeners(w);
	/* a hand-over lets handshakes in progress finish: the client has no
	 * reason to expect a failure, and the connection then drains */
	if (!w->handover)
		tls_worker_close_pending(w);
	if (w->handover)
		worker_handover_h2(w);
	else
		h2_drain_all(w);
	/* a hand-over closes no HTTP/1 connection under a client that may be
	 * sending on it: each one's next answer says connection: close (a head
	 * already sent said keep-alive, so that connection must take one more) */
	if (!w->handover)
		client_drain_all(w);
	if (w->num_conns == 0)
		event_base_loopexit(w->base, NULL);
}

static void worker_stop(struct worker *w)
{
	w->draining = true;
	worker_close_listeners(w);
	tls_worker_close_pending(w);
	h2_close_all(w);
	client_close_all(w);
	event_base_loopexit(w->base, NULL);
}

static struct worker_gen *worker_gen_new(struct worker *w, struct snapshot *s)
{
	struct worker_gen *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->pools = pool_set_new(w, server_runtime(w->server), s->conf);
	if (!g->pools) {
		free(g);
		return NULL;
	}
	g->snap = s;
	g->users = 1;
	return g;
}

/* Frees g: nothing uses it any more. Its snapshot reference goes to the
 * snapshot's reaper when this is not the main thread. */
static void worker_gen_free(struct worker *w, struct worker_gen *g)
{
	for (struct worker_gen **pp = &w->gen; *pp; pp = &(*pp)->next) {
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	}
	pool_set_free(g->pools);
	snapshot_unref(g->snap);
	free(g);
}

static void worker_gen_release(struct worker *w, struct worker_gen *g)
{
	if (--g->users == 0)
		worker_gen_free(w, g);
}

static struct worker_gen *worker_gen_of(struct worker *w, const struct snapshot *s)
{
	for (struct worker_gen *g = w->gen; g; g = g->next)
		if (g->snap == s)
			return g;
	return NULL;
}

struct snapshot *worker_snap_enter(struct worker *w)
{
	w->gen->users++;
	return w->gen->snap;
}

void worker_snap_leave(struct worker *w, const struct snapshot *s)
{
	struct worker_gen *g = worker_gen_of(w, s);
	if (g)
		worker_gen_release(w, g);
	else
		log_msg(LOG_ERROR, "a request left a snapshot its worker does not know");
}

struct pool_set *worker_pools(struct worker *w, const struct snapshot *s)
{
	struct worker_gen *g = worker_gen_of(w, s);
	return g ? g->pools : w->gen->pools;
}

struct pool_set *worker_current_pools(struct worker *w)
{
	return w->gen->pools;
}

void worker_add_listener(struct worker *w, unsigned id, const char *name, int fd, uint64_t generation)
{
	struct worker_listener *l = worker_listener_new(w, id, name, fd);
	if (!l) {
		log_msg(LOG_ERROR, "out of memory adding a listener to a worker");
		close(fd);
		return;
	}
	l->generation = generation;
	pthread_mutex_lock(&w->added_lock);
	l->next = w->added;
	w->added = l;
	pthread_mutex_unlock(&w->added_lock);
}

const char *worker_listener_name(const struct worker *w, unsigned id)
{
	for (const struct worker_listener *l = w->listeners; l; l = l->next)
		if (l->id == id)
			return l->name;
	return "";
}

/* Worker thread, adopting s after prev: the listeners s has and this worker
 * does not watch yet start accepting (sockets queued by the reloads up to
 * s); the ones s no longer has stop accepting, and their connections drain:
 * idle keep-alive ones close (unless s listens on the same address), the
 * others close after their current request
 * (HTTP/1: the next answer says connection: close; HTTP/2: GOAWAY), and TLS
 * handshakes still in progress on them are closed. */
static void worker_switch_listeners(struct worker *w, const struct snapshot *prev, const struct snapshot *s)
{
	const struct conf *c = s->conf;
	pthread_mutex_lock(&w->added_lock);
	struct worker_listener **pp = &w->added;
	while (*pp) {
		struct worker_listener *l = *pp;
		if (l->generation > s->generation) {
			pp = &l->next; /* for a reload published after s */
			continue;
		}
		*pp = l->next;
		int fd = l->fd;
		l->fd = -1;
		l->next = w->listeners;
		w->listeners = l;
		if (w->draining || !conf_listener_by_id(c, l->id, NULL)) {
			close(fd); /* a later reload removed it again, or this worker is stopping */
		} else if (worker_watch_listener(w, l, fd, !w->accepting_paused) != 0) {
			log_msg(LOG_ERROR, "cannot watch a listening socket a reload added");
			close(fd);
		}
	}
	pthread_mutex_unlock(&w->added_lock);
	for (struct worker_listener *l = w->listeners; l; l = l->next) {
		if (!l->ev || conf_listener_by_id(c, l->id, NULL))
			continue;
		worker_unwatch_listener(l);
		/* a listener changed on the same address (name, tls, h2c) passed its
		 * sockets on: its clients may be sending on idle connections and
		 * handshakes now, which finish and close after one answer */
		const struct conf_listener *was = conf_listener_by_id(prev->conf, l->id, NULL);
		bool same_address = false;
		for (size_t i = 0; was && i < c->num_listeners && !same_address; i++)
			same_address = conf_sockaddr_equal(&was->addr, was->addr_len, &c->listeners[i].addr,
			                                   c->listeners[i].addr_len);
		if (!same_address)
			tls_worker_close_listener(w, l->id);
		h2_drain_listener(w, l->id);
		client_drain_listener(w, l->id, !same_address);
		struct log_line line;
		log_begin(&line, LOG_DEBUG, "worker stopped accepting on a listener the config no longer has");
		log_int(&line, "worker", w->id);
		log_str(&line, "listener", l->name);
		log_end(&line);
	}
}

/* The worker thread takes snapshot s (one reference, now the generation's). */
static void worker_adopt(struct worker *w, struct snapshot *s)
{
	struct worker_gen *old = w->gen;
	struct worker_gen *g = worker_gen_new(w, s);
	if (!g) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "out of memory adopting a new config: this worker keeps the previous one");
		log_int(&l, "worker", w->id);
		log_int(&l, "generation", (long long)s->generation);
		log_end(&l);
		snapshot_unref(s);
		return;
	}
	unsigned moved = pool_set_take_idle(g->pools, old->pools);
	g->next = old;
	w->gen = g;
	w->snap = s;
	worker_switch_listeners(w, old->snap, s);
	unsigned max_conns = atomic_exchange(&w->max_conns_next, 0);
	if (max_conns) {
		w->max_conns = max_conns;
		if (!w->draining)
			worker_set_accepting(w, w->num_conns < w->max_conns);
	}
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i]->worker_adopt)
			module_list[i]->worker_adopt(w, w->module_state[i], s->module_state[i]);
	worker_gen_release(w, old);
	atomic_store(&w->adopted, s->generation);
	if (log_enabled(LOG_DEBUG)) {
		struct log_line l;
		log_begin(&l, LOG_DEBUG, "worker adopted a new config");
		log_int(&l, "worker", w->id);
		log_int(&l, "generation", (long long)s->generation);
		log_int(&l, "idle_upstream_moved", moved);
		log_end(&l);
	}
	server_worker_adopted(w->server);
}

static void worker_command_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct worker *w = arg;
	uint64_t count;
	/* the counter's value is irrelevant: the bits say what was asked */
	if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_msg(LOG_ERROR, "worker command read failed");
	unsigned cmds = atomic_exchange(&w->commands, 0);
	if (cmds & WORKER_CMD_ADOPT) {
		struct snapshot *s = atomic_exchange(&w->pending, NULL);
		if (s)
			worker_adopt(w, s);
	}
	if (cmds & WORKER_CMD_HANDOVER)
		w->handover = true;
	if (cmds & WORKER_CMD_STOP)
		worker_stop(w);
	else if (cmds & WORKER_CMD_SHUTDOWN)
		worker_shutdown(w);
}

int worker_init(struct worker *w, struct server *srv, unsigned id, struct snapshot *s, int *listen_fds,
                unsigned max_conns)
{
	memset(w, 0, sizeof(*w));
	w->command_fd = -1;
	w->id = id;
	w->server = srv;
	w->conns_by_addr = server_conns_by_addr(srv);
	w->uploads_by_addr = server_uploads_by_addr(srv);
	w->max_conns = max_conns ? max_conns : 1;
	if (pthread_mutex_init(&w->added_lock, NULL) != 0) {
		log_msg(LOG_ERROR, "cannot create a worker's lock");
		return -1;
	}
	if (getrandom(&w->rng_state, sizeof(w->rng_state), 0) != (ssize_t)sizeof(w->rng_state))
		w->rng_state = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull + id;
	/* no locks: only this thread touches the base (commands come through an
	 * eventfd). No precise timer either: it re-arms a timerfd on every loop
	 * iteration (a syscall per wakeup), and timeouts do not need sub-ms steps. */
	struct event_config *cfg = event_config_new();
	if (cfg && event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK) == 0)
		w->base = event_base_new_with_config(cfg);
	if (cfg)
		event_config_free(cfg);
	if (!w->base) {
		log_msg(LOG_ERROR, "cannot create an event base");
		return -1;
	}
	w->command_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->command_fd >= 0)
		w->command_ev = event_new(w->base, w->command_fd, EV_READ | EV_PERSIST, worker_command_cb, w);
	if (!w->command_ev || event_add(w->command_ev, NULL) != 0) {
		log_msg(LOG_ERROR, "cannot create the worker's command channel");
		return -1;
	}
	if (io_flush_queue_init(&w->flush_queue, w->base) != 0) {
		log_msg(LOG_ERROR, "cannot create the worker's flush queue");
		return -1;
	}
	w->route_scratch = route_scratch_new();
	snapshot_ref(s);
	w->gen = worker_gen_new(w, s);
	if (!w->gen) {
		snapshot_unref(s);
		log_msg(LOG_ERROR, "out of memory creating a worker's pools");
		return -1;
	}
	w->snap = s;
	atomic_store(&w->adopted, s->generation);
	w->tls = tls_worker_new(worker_dispatch);
	/* owned by the registry: the totals outlive the worker */
	w->counters = counters_worker_new(counters_process);
	if (w->route_scratch)
		route_scratch_count_into(w->route_scratch, w->counters);
	w->module_state = calloc(module_count ? module_count : 1, sizeof(void *));
	if (!w->route_scratch || !w->module_state || !w->tls || (counters_process && !w->counters)) {
		log_msg(LOG_ERROR, "out of memory creating a worker");
		return -1;
	}
	for (size_t i = 0; i < module_count; i++) {
		if (module_list[i]->worker_init && module_list[i]->worker_init(w, &w->module_state[i]) != 0) {
			struct log_line l;
			log_begin(&l, LOG_ERROR, "module failed to start on a worker");
			log_str(&l, "module", module_list[i]->name);
			log_end(&l);
			return -1;
		}
	}
	/* in reverse: the list then has the config's order */
	for (size_t i = s->conf->num_listeners; i-- > 0;) {
		const struct conf_listener *cl = &s->conf->listeners[i];
		struct worker_listener *l = worker_listener_new(w, cl->id, cl->name, -1);
		if (!l) {
			log_msg(LOG_ERROR, "out of memory creating a worker");
			return -1;
		}
		l->next = w->listeners;
		w->listeners = l;
		if (worker_watch_listener(w, l, listen_fds[i], true) != 0) {
			log_msg(LOG_ERROR, "cannot watch a listening socket");
			return -1;
		}
		listen_fds[i] = -1; /* the event's socket now, closed with it */
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	if (event_base_dispatch(w->base) < 0)
		log_msg(LOG_ERROR, "worker event loop failed");
	server_worker_exited(w->server);
	return NULL;
}

int worker_start(struct worker *w)
{
	int rc = pthread_create(&w->thread, NULL, worker_main, w);
	if (rc != 0) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "cannot start a worker thread");
		log_str(&l, "error", strerror(rc));
		log_end(&l);
		return -1;
	}
	w->thread_started = true;
	return 0;
}

void worker_join(struct worker *w)
{
	if (w->thread_started) {
		pthread_join(w->thread, NULL);
		w->thread_started = false;
	}
}

void worker_destroy(struct worker *w)
{
	if (w->base)
		worker_close_listeners(w);
	h2_close_all(w);
	if (w->conns)
		client_close_all(w);
	client_worker_free(w);
	tls_worker_free(w);
	h2_worker_free(w);
	/* this worker's share of the registry's total (ctl show counters has the sum) */
	uint64_t dropped = w->counters ? ctr_global_own(w->counters, CTR_TRAILER_FIELDS_DROPPED) : 0;
	if (dropped) {
		struct log_line line;
		log_begin(&line, LOG_INFO, "HTTP trailers");
		log_int(&line, "worker", w->id);
		log_int(&line, "fields_dropped", (long long)dropped);
		log_end(&line);
	}
	pipeline_free_exchanges(w);
	if (w->module_state) {
		for (size_t i = 0; i < module_count; i++)
			if (module_list[i]->worker_free && w->module_state[i])
				module_list[i]->worker_free(w->module_state[i]);
		free(w->module_state);
	}
	/* every request is gone: the generations only have their own holds left */
	while (w->gen)
		worker_gen_free(w, w->gen);
	snapshot_unref(atomic_exchange(&w->pending, NULL));
	if (w->route_scratch)
		route_scratch_free(w->route_scratch);
	struct worker_listener *lists[2] = {w->listeners, w->added};
	for (int i = 0; i < 2; i++) {
		while (lists[i]) {
			struct worker_listener *l = lists[i];
			lists[i] = l->next;
			worker_unwatch_listener(l);
			free(l->name);
			free(l);
		}
	}
	if (w->base)
		pthread_mutex_destroy(&w->added_lock);
	io_flush_queue_free(&w->flush_queue);
	if (w->command_ev)
		event_free(w->command_ev);
	/* a worker that never reached worker_init is all zeroes: fd 0 is not ours */
	if (w->base && w->command_fd >= 0)
		close(w->command_fd);
	if (w->base)
		event_base_free(w->base);
	memset(w, 0, sizeof(*w));
}

static void worker_send(struct worker *w, unsigned cmd)
{
	atomic_fetch_or(&w->commands, cmd);
	uint64_t one = 1;
	if (write(w->command_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		log_msg(LOG_ERROR, "cannot signal a worker");
}

void worker_request_shutdown(struct worker *w)
{
	worker_send(w, WORKER_CMD_SHUTDOWN);
}

void worker_request_handover(struct worker *w)
{
	worker_send(w, WORKER_CMD_SHUTDOWN | WORKER_CMD_HANDOVER);
}

void worker_request_stop(struct worker *w)
{
	worker_send(w, WORKER_CMD_STOP);
}

void worker_set_max_conns(struct worker *w, unsigned max_conns)
{
	atomic_store(&w->max_conns_next, max_conns ? max_conns : 1);
}

void worker_publish(struct worker *w, struct snapshot *s)
{
	snapshot_ref(s);
	/* an older one the worker did not get to is dropped here, on the caller's thread */
	snapshot_unref(atomic_exchange(&w->pending, s));
	worker_send(w, WORKER_CMD_ADOPT);
}

struct timeval worker_timeval(struct worker *w, uint64_t ms)
{
	struct timeval tv = conf_msec_timeval(ms);
	for (size_t i = 0; i < w->num_common_timeouts; i++)
		if (w->common_timeouts[i].ms == ms)
			return *w->common_timeouts[i].tv;
	if (w->num_common_timeouts < sizeof(w->common_timeouts) / sizeof(w->common_timeouts[0])) {
		const struct timeval *common = event_base_init_common_timeout(w->base, &tv);
		if (common) {
			w->common_timeouts[w->num_common_timeouts].ms = ms;
			w->common_timeouts[w->num_common_timeouts].tv = common;
			w->num_common_timeouts++;
			return *common;
		}
	}
	return tv;
}

uint64_t worker_random(struct worker *w)
{
	/* splitmix64: tiny state, good statistical quality, not for secrets */
	uint64_t z = (w->rng_state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void worker_conn_closed(struct worker *w)
{
	w->num_conns--;
	if (w->draining) {
		if (w->num_conns == 0)
			event_base_loopexit(w->base, NULL);
		return;
	}
	/* resume with some headroom so that accept does not flap at the limit */
	if (w->accepting_paused && w->num_conns < w->max_conns - w->max_conns / 10)
		worker_set_accepting(w, true);
}

void worker_conn_hold_offer(struct worker *w)
{
	w->conn_hold_offered = true;
}

void worker_conn_hold_settle(struct worker *w, const char *ip)
{
	if (w->conn_hold_offered) {
		w->conn_hold_offered = false;
		addrcount_shared_release(w->conns_by_addr, ip);
	}
}

void worker_conn_hold_take(struct worker *w, const char *ip)
{
	if (w->conn_hold_offered)
		w->conn_hold_offered = false;
	else /* not made through an accept path or a hand-over (none today): counted all the same */
		addrcount_shared_hold(w->conns_by_addr, ip);
}

void worker_conn_hold_release(struct worker *w, const char *ip)
{
	addrcount_shared_release(w->conns_by_addr, ip);
}
