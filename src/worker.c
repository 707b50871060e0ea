#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
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

struct worker_listener {
	struct worker *w;
	size_t index;
};

/* A listener a reload added: its socket waits here until the worker adopts
 * the snapshot that has it; the node then stays as the accept callback's
 * context until the worker is destroyed. */
struct worker_added_listener {
	struct worker_listener ctx;
	int fd; /* -1 once attached (its accept event owns it) */
	struct worker_added_listener *next;
};

static void worker_set_accepting(struct worker *w, bool on)
{
	for (size_t i = 0; i < w->num_listeners; i++)
		if (w->listeners[i] && (on ? event_add(w->listeners[i], NULL) : event_del(w->listeners[i])) != 0)
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
		h2_session_start(w, h->listener, h->bev, &o);
	} else {
		client_accept_bev(w, h->listener, h->bev, &o);
	}
}

static void worker_accept_failed(struct worker *w, int err);

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
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	int fd = accept4(lfd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		worker_accept_failed(w, errno);
		return;
	}
	struct sockaddr *sa = (struct sockaddr *)&ss;
	int salen = (int)sslen;
	const struct conf_listener *cl = &w->snap->conf->listeners[wl->index];
	if (cl->tls)
		tls_accept(w, wl->index, fd, sa);
	else if (cl->h2c)
		tls_accept_h2c(w, wl->index, fd, sa);
	else
		client_accept(w, wl->index, fd, sa, salen);
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

/* The accept event of listening socket fd (not owned on failure, owned after). */
static struct event *worker_watch_listener(struct worker *w, struct worker_listener *ctx, int fd, bool on)
{
	/* accept4 must not block when the connection that woke us is gone */
	if (evutil_make_socket_nonblocking(fd) != 0)
		return NULL;
	struct event *ev = event_new(w->base, fd, EV_READ | EV_PERSIST, worker_accept_cb, ctx);
	if (ev && on && event_add(ev, NULL) != 0) {
		event_free(ev);
		return NULL;
	}
	return ev;
}

static void worker_close_listeners(struct worker *w)
{
	for (size_t i = 0; i < w->num_listeners; i++) {
		if (w->listeners && w->listeners[i]) {
			evutil_socket_t fd = event_get_fd(w->listeners[i]);
			event_free(w->listeners[i]);
			close(fd);
			w->listeners[i] = NULL;
		}
		if (w->listen_fds && i < w->num_listen_fds && w->listen_fds[i] >= 0) {
			close(w->listen_fds[i]);
			w->listen_fds[i] = -1;
		}
	}
}

static void worker_shutdown(struct worker *w)
{
	if (w->draining)
		return;
	w->draining = true;
	worker_close_listeners(w);
	tls_worker_close_pending(w);
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

void worker_add_listener(struct worker *w, size_t index, int fd)
{
	struct worker_added_listener *a = calloc(1, sizeof(*a));
	if (!a) {
		log_msg(LOG_ERROR, "out of memory adding a listener to a worker");
		close(fd);
		return;
	}
	a->ctx.w = w;
	a->ctx.index = index;
	a->fd = fd;
	pthread_mutex_lock(&w->added_lock);
	a->next = w->added;
	w->added = a;
	pthread_mutex_unlock(&w->added_lock);
}

/* Worker thread: listen on the queued sockets of listeners below count (the
 * adopted snapshot's), in the slots after the existing listeners. */
static void worker_attach_added(struct worker *w, size_t count)
{
	if (count > w->num_listeners) {
		struct event **grown = realloc(w->listeners, count * sizeof(*grown));
		if (!grown) {
			log_msg(LOG_ERROR, "out of memory adding a listener to a worker");
			return;
		}
		for (size_t i = w->num_listeners; i < count; i++)
			grown[i] = NULL;
		w->listeners = grown;
		w->num_listeners = count;
	}
	pthread_mutex_lock(&w->added_lock);
	for (struct worker_added_listener *a = w->added; a; a = a->next) {
		if (a->fd < 0 || a->ctx.index >= count)
			continue;
		int fd = a->fd;
		a->fd = -1;
		if (w->draining) {
			close(fd);
			continue;
		}
		w->listeners[a->ctx.index] = worker_watch_listener(w, &a->ctx, fd, !w->accepting_paused);
		if (!w->listeners[a->ctx.index]) {
			log_msg(LOG_ERROR, "cannot watch a listening socket a reload added");
			close(fd);
			continue;
		}
	}
	pthread_mutex_unlock(&w->added_lock);
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
	worker_attach_added(w, s->conf->num_listeners);
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
                size_t num_listeners, unsigned max_conns)
{
	memset(w, 0, sizeof(*w));
	w->command_fd = -1;
	w->id = id;
	w->server = srv;
	w->max_conns = max_conns ? max_conns : 1;
	w->listen_fds = listen_fds;
	w->num_listen_fds = num_listeners;
	w->num_listeners = num_listeners;
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
	w->module_state = calloc(module_count ? module_count : 1, sizeof(void *));
	w->listeners = calloc(num_listeners ? num_listeners : 1, sizeof(*w->listeners));
	w->listener_ctx = calloc(num_listeners ? num_listeners : 1, sizeof(struct worker_listener));
	if (!w->route_scratch || !w->module_state || !w->listeners ||
	    !w->listener_ctx || !w->tls || (counters_process && !w->counters)) {
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
	struct worker_listener *ctx = w->listener_ctx;
	for (size_t i = 0; i < num_listeners; i++) {
		ctx[i].w = w;
		ctx[i].index = i;
		w->listeners[i] = worker_watch_listener(w, &ctx[i], listen_fds[i], true);
		if (!w->listeners[i]) {
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
	free(w->listeners);
	free(w->listener_ctx);
	while (w->added) {
		struct worker_added_listener *a = w->added;
		w->added = a->next;
		if (a->fd >= 0)
			close(a->fd);
		free(a);
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
