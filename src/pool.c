#include "pool.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "balance.h"
#include "clock.h"
#include "conn_sock.h"
#include "log.h"
#include "conf_tls.h"
#include "tls_ctx.h"
#include "runtime.h"
#include "worker.h"

/* How often idle connections to servers out of rotation (drained, disabled,
 * down) are looked for and closed. */
#define POOL_SWEEP_MS 200

static void pool_sweep_cb(evutil_socket_t fd, short what, void *arg);

static struct upstream_conn *pool_timer_conn(struct conn_timer *t)
{
	return (struct upstream_conn *)((char *)t - offsetof(struct upstream_conn, timer));
}

/* An idle connection's time is up: it closes (conn_timer.h callback). */
static void pool_idle_expired(struct conn_timer *t)
{
	upstream_conn_free(pool_timer_conn(t));
}

static void pool_busy_expired(struct upstream_conn *uc, enum pool_deadline kind)
{
	if (uc->on_deadline)
		uc->on_deadline(uc, kind);
	else
		upstream_conn_free(uc); /* no owner to tell: cannot happen, but never leaks */
}

static void pool_connect_expired(struct conn_timer *t)
{
	pool_busy_expired(pool_timer_conn(t), POOL_DL_CONNECT);
}

static void pool_response_expired(struct conn_timer *t)
{
	pool_busy_expired(pool_timer_conn(t), POOL_DL_RESPONSE);
}

uint64_t pool_deadline_us(const struct pool_state *p, enum pool_deadline kind)
{
	switch (kind) {
	case POOL_DL_CONNECT:
		return (uint64_t)p->conf->connect_timeout * 1000u;
	case POOL_DL_RESPONSE:
		return (uint64_t)p->conf->response_timeout * 1000u;
	case POOL_DL_IDLE:
	default:
		return (uint64_t)p->conf->keepalive_idle_timeout * 1000u;
	}
}

void pool_conn_deadline(struct upstream_conn *uc, enum pool_deadline kind, uint64_t from_us)
{
	struct pool_state *p = uc->pool;
	conn_timer_set(&p->dl[kind], &uc->timer, from_us + pool_deadline_us(p, kind));
}

/* Binds each service entry to its runtime split, by name. */
static bool pool_bind_splits(struct pool_set *ps, struct runtime *rt, const struct conf *c)
{
	ps->num_services = c->num_services;
	ps->splits = calloc(c->num_services ? c->num_services : 1, sizeof(*ps->splits));
	if (!ps->splits)
		return false;
	for (size_t i = 0; i < c->num_services; i++) {
		const struct conf_service *sv = &c->services[i];
		ps->splits[i] = calloc(sv->num_pools ? sv->num_pools : 1, sizeof(**ps->splits));
		if (!ps->splits[i])
			return false;
		for (size_t j = 0; j < sv->num_pools; j++) {
			ps->splits[i][j] = runtime_find_split(rt, sv->name, c->pools[sv->pools[j].pool].name);
			if (!ps->splits[i][j])
				return false;
		}
	}
	return true;
}

struct pool_set *pool_set_new(struct worker *w, struct runtime *rt, const struct conf *c)
{
	struct pool_set *ps = calloc(1, sizeof(*ps));
	if (!ps)
		return NULL;
	ps->num_pools = c->num_pools;
	ps->pools = calloc(c->num_pools ? c->num_pools : 1, sizeof(*ps->pools));
	if (!ps->pools) {
		free(ps);
		return NULL;
	}
	/* runtime_sync() ran on the main thread before the snapshot was published */
	if (!rt || !pool_bind_splits(ps, rt, c)) {
		log_msg(LOG_ERROR, "pools: runtime state is missing entries for this config");
		pool_set_free(ps);
		return NULL;
	}
	ps->sweep_ev = event_new(w->base, -1, EV_PERSIST, pool_sweep_cb, ps);
	struct timeval sweep_tv = {.tv_sec = 0, .tv_usec = POOL_SWEEP_MS * 1000};
	if (!ps->sweep_ev || event_add(ps->sweep_ev, &sweep_tv) != 0) {
		pool_set_free(ps);
		return NULL;
	}
	for (size_t i = 0; i < c->num_pools; i++) {
		struct pool_state *p = &ps->pools[i];
		size_t n = c->pools[i].num_servers;
		p->worker = w;
		p->set = ps;
		p->conf = &c->pools[i];
		p->servers = calloc(n, sizeof(*p->servers));
		p->swrr_current = calloc(n, sizeof(*p->swrr_current));
		p->weights = calloc(n, sizeof(*p->weights));
		p->active = calloc(n, sizeof(*p->active));
		p->eligible = calloc(n, sizeof(*p->eligible));
		p->rs = calloc(n ? n : 1, sizeof(*p->rs));
		p->rt = runtime_find_pool(rt, c->pools[i].name);
		if (!p->servers || !p->swrr_current || !p->weights || !p->active || !p->eligible || !p->rs || !p->rt ||
		    conn_timer_queue_init(&p->dl[POOL_DL_IDLE], w->base, pool_idle_expired) != 0 ||
		    conn_timer_queue_init(&p->dl[POOL_DL_CONNECT], w->base, pool_connect_expired) != 0 ||
		    conn_timer_queue_init(&p->dl[POOL_DL_RESPONSE], w->base, pool_response_expired) != 0) {
			pool_set_free(ps);
			return NULL;
		}
		for (size_t s = 0; s < n; s++) {
			p->weights[s] = c->pools[i].servers[s].weight;
			p->eligible[s] = p->weights[s] > 0;
			p->rs[s] = runtime_find_server(p->rt, c->pools[i].servers[s].address);
			if (!p->rs[s]) {
				pool_set_free(ps);
				return NULL;
			}
		}
		/* start each worker's round robin at a different place so that N workers
		 * do not all send their first request to the same server */
		p->lc_cursor = w ? w->id % (n ? n : 1) : 0;
	}
	return ps;
}

void pool_set_free(struct pool_set *ps)
{
	if (!ps)
		return;
	for (size_t i = 0; i < ps->num_pools; i++) {
		struct pool_state *p = &ps->pools[i];
		if (p->servers && p->conf) {
			for (size_t s = 0; s < p->conf->num_servers; s++)
				while (p->servers[s].idle)
					upstream_conn_free(p->servers[s].idle);
		}
		free(p->servers);
		free(p->swrr_current);
		free(p->weights);
		free(p->active);
		free(p->eligible);
		free(p->rs);
		for (int k = 0; k < POOL_DL_KINDS; k++)
			conn_timer_queue_free(&p->dl[k]);
	}
	if (ps->splits)
		for (size_t i = 0; i < ps->num_services; i++)
			free(ps->splits[i]);
	free(ps->splits);
	if (ps->sweep_ev)
		event_free(ps->sweep_ev);
	free(ps->pools);
	free(ps);
}

struct pool_state *pool_set_find(struct pool_set *ps, const char *name)
{
	/* a set is in its config's pool order, which is sorted by name (conf_find_pool) */
	size_t lo = 0, hi = ps->num_pools;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int cmp = strcmp(name, ps->pools[mid].conf->name);
		if (cmp == 0)
			return &ps->pools[mid];
		if (cmp < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static void idle_push(struct upstream_conn *uc, uint64_t until_us);
static void idle_unlink(struct upstream_conn *uc);

/* Moves a connection (not idle-listed) of another set to the same pool name
 * and server address in ps. The runtime entries are the same (bound by
 * name), so only this worker's per-server counts move. False: no such
 * server, or a TLS pool on either side (its settings may have changed). */
static bool pool_adopt_conn(struct pool_set *ps, struct upstream_conn *uc)
{
	struct pool_state *from = uc->pool;
	struct pool_state *to = pool_set_find(ps, from->conf->name);
	if (!to || to == from || to->conf->tls || from->conf->tls)
		return false;
	const char *address = from->conf->servers[uc->server].address;
	for (size_t s = 0; s < to->conf->num_servers; s++) {
		if (strcmp(to->conf->servers[s].address, address) != 0)
			continue;
		if (to->servers[s].num_idle >= to->conf->keepalive_idle)
			return false;
		from->servers[uc->server].open--;
		to->servers[s].open++;
		uc->pool = to;
		uc->server = s;
		return true;
	}
	return false;
}

unsigned pool_set_take_idle(struct pool_set *to, struct pool_set *from)
{
	unsigned moved = 0;
	from->retired = true;
	for (size_t i = 0; i < from->num_pools; i++) {
		struct pool_state *p = &from->pools[i];
		for (size_t s = 0; s < p->conf->num_servers; s++) {
			/* oldest first, so that the warmest ends up on top of the new list */
			struct upstream_conn *uc = p->servers[s].idle;
			while (uc && uc->next)
				uc = uc->next;
			while (uc) {
				struct upstream_conn *prev = uc->prev;
				uint64_t until = uc->timer.at_us; /* its idle deadline carries over */
				idle_unlink(uc);
				if (pool_adopt_conn(to, uc)) {
					idle_push(uc, until);
					moved++;
				} else {
					upstream_conn_free(uc);
				}
				uc = prev;
			}
		}
	}
	return moved;
}

/* A server whose idle connections must not be kept: drained, disabled, down. */
static bool pool_server_retired(const struct runtime_server *rs)
{
	return atomic_load_explicit(&rs->drained, memory_order_relaxed) ||
	       atomic_load_explicit(&rs->disabled, memory_order_relaxed) ||
	       atomic_load_explicit(&rs->health, memory_order_relaxed) != RUNTIME_HEALTH_UP;
}

static void pool_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pool_set *ps = arg;
	for (size_t i = 0; i < ps->num_pools; i++) {
		struct pool_state *p = &ps->pools[i];
		for (size_t s = 0; s < p->conf->num_servers; s++)
			if (p->servers[s].idle && pool_server_retired(p->rs[s]))
				while (p->servers[s].idle)
					upstream_conn_free(p->servers[s].idle);
	}
}

/* Balancing state from the runtime table: effective weights and which
 * servers may take new requests. Returns how many are eligible; *breakers
 * counts those left out only because their breaker is open, and *soonest
 * is the earliest time one of those may reopen. */
static size_t pool_refresh(struct pool_state *p, uint64_t now, uint64_t avoid, size_t *breakers, uint64_t *soonest)
{
	size_t n = p->conf->num_servers, count = 0;
	*breakers = 0;
	*soonest = UINT64_MAX;
	for (size_t s = 0; s < n; s++) {
		struct runtime_server *rs = p->rs[s];
		p->weights[s] = atomic_load_explicit(&rs->weight, memory_order_relaxed);
		p->eligible[s] = (s >= 64 || !(avoid & ((uint64_t)1 << s))) && runtime_server_usable(rs, now);
		if (p->eligible[s]) {
			count++;
		} else if (p->weights[s] > 0 && !pool_server_retired(rs) &&
		           atomic_load_explicit(&rs->breaker_state, memory_order_relaxed) == BREAKER_OPEN) {
			uint64_t until = atomic_load_explicit(&rs->open_until_us, memory_order_relaxed);
			(*breakers)++;
			if (until < *soonest)
				*soonest = until;
		}
	}
	return count;
}

static int pool_pick_one(struct pool_state *p, const struct balance_ring *ring, bool has_key, uint64_t key_hash)
{
	size_t n = p->conf->num_servers;
	switch (p->conf->balance) {
	case CONF_BALANCE_HASH:
		if (has_key && ring)
			return balance_ring_pick(ring, key_hash, p->eligible);
		/* no key in this request: spread it like round robin */
		return balance_swrr_next(p->swrr_current, p->weights, p->eligible, n);
	case CONF_BALANCE_LEAST_CONN:
		/* in-flight requests of every worker (runtime atomics), so that N
		 * workers do not each pile onto "their" least loaded server */
		for (size_t s = 0; s < n; s++)
			p->active[s] = atomic_load_explicit(&p->rs[s]->active_requests, memory_order_relaxed);
		return balance_least_conn(p->active, p->weights, p->eligible, n, &p->lc_cursor);
	case CONF_BALANCE_ROUND_ROBIN:
	default:
		return balance_swrr_next(p->swrr_current, p->weights, p->eligible, n);
	}
}

void pool_pick_server(struct pool_state *p, const struct balance_ring *ring, bool has_key, uint64_t key_hash,
                      uint64_t avoid, struct pool_pick *out)
{
	uint64_t now = clock_mono_us();
	size_t breakers;
	uint64_t soonest;
	memset(out, 0, sizeof(*out));
	out->server = -1;
	size_t left = pool_refresh(p, now, avoid, &breakers, &soonest);
	/* a half-open breaker may refuse once its probes are out: try the others */
	while (left > 0) {
		int s = pool_pick_one(p, ring, has_key, key_hash);
		if (s < 0)
			break;
		bool half_opened = false;
		enum breaker_admit a = p->conf->breaker.enabled
		                           ? runtime_breaker_admit(p->rs[s], &p->conf->breaker, now, &out->epoch, &half_opened)
		                           : BREAKER_ADMIT;
		if (half_opened) {
			struct log_line l;
			log_begin(&l, LOG_INFO, "circuit breaker state changed");
			log_str(&l, "pool", p->conf->name);
			log_str(&l, "server", p->rs[s]->address);
			log_str(&l, "state", "half_open");
			log_end(&l);
		}
		if (a != BREAKER_DENY) {
			out->server = s;
			out->probe = a == BREAKER_ADMIT_PROBE;
			return;
		}
		p->eligible[s] = false;
		left--;
		breakers++;
		uint64_t until = atomic_load_explicit(&p->rs[s]->open_until_us, memory_order_relaxed);
		if (until < soonest)
			soonest = until;
	}
	out->breaker_open = breakers > 0 && left == 0;
	out->retry_after = 1;
	if (out->breaker_open && soonest != UINT64_MAX && soonest > now) {
		uint64_t secs = (soonest - now + 999999) / 1000000;
		out->retry_after = secs > 3600 ? 3600 : (unsigned)secs;
	}
}

static void idle_unlink(struct upstream_conn *uc)
{
	struct pool_server_state *ss = &uc->pool->servers[uc->server];
	if (!uc->idle)
		return;
	conn_timer_clear(&uc->timer);
	if (uc->prev)
		uc->prev->next = uc->next;
	else
		ss->idle = uc->next;
	if (uc->next)
		uc->next->prev = uc->prev;
	uc->prev = uc->next = NULL;
	uc->idle = false;
	ss->num_idle--;
	atomic_fetch_sub_explicit(&uc->pool->rt->idle, 1, memory_order_relaxed);
}

void upstream_conn_free(struct upstream_conn *uc)
{
	if (!uc)
		return;
	idle_unlink(uc);
	conn_timer_clear(&uc->timer);
	uc->pool->servers[uc->server].open--;
	atomic_fetch_sub_explicit(&uc->pool->rt->connections, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&uc->pool->rs[uc->server]->connections, 1, memory_order_relaxed);
	io_flusher_free(&uc->flusher);
	if (uc->rev)
		event_free(uc->rev); /* before the socket closes */
	if (uc->bev)
		bufferevent_free(uc->bev); /* BEV_OPT_CLOSE_ON_FREE closes the socket */
	free(uc);
}

struct upstream_conn *pool_take_idle(struct pool_state *p, size_t server)
{
	struct upstream_conn *uc = p->servers[server].idle;
	if (!uc)
		return NULL;
	idle_unlink(uc);
	/* the pool watched this connection for EOF; the proxy installs its own callbacks */
	bufferevent_setcb(uc->bev, NULL, NULL, NULL, NULL);
	return uc;
}

struct upstream_conn *pool_new_conn(struct pool_state *p, size_t server)
{
	struct upstream_conn *uc = calloc(1, sizeof(*uc));
	if (!uc)
		return NULL;
	uc->pool = p;
	uc->server = server;
	/* TLS to the upstream: the handshake runs inside the connect (tls_ctx.h) */
	uc->bev = p->conf->tls ? tls_client_bev(p->conf->tls->client, p->worker->base)
	                       : bufferevent_socket_new(p->worker->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!uc->bev) {
		free(uc);
		return NULL;
	}
	p->servers[server].open++;
	atomic_fetch_add_explicit(&p->rt->connections, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->rs[server]->connections, 1, memory_order_relaxed);
	return uc;
}

/* One wakeup reads what the socket holds, up to POOL_READ_MAX more input:
 * first one read(2) of up to 2 KiB into the stack, copied into the input (a
 * small response then takes a chain of its own size, which malloc serves
 * from its per-thread cache; reading in place would reserve a 4 KiB chain,
 * ~270 instructions more per request), and when that read filled, straight
 * into the input in 16 KiB steps while reads fill them (conn_sock.h), so
 * that a larger response leaves in one write. (A 16 KiB first read into the
 * stack made a 16 KiB response cost 70% more instructions.) */
#define POOL_READ_FIRST 2048
#define POOL_READ_STEP (16 * 1024 - 128)
#define POOL_READ_MAX (256 * 1024)

/* uc's own read event: reads into the bufferevent's input, then runs the
 * bufferevent's callbacks as its own read would have (EOF and errors stop
 * reading and go to the event callback). The callbacks may free uc. */
static void pool_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct upstream_conn *uc = arg;
	struct bufferevent *bev = uc->bev;
	struct evbuffer *in = bufferevent_get_input(bev);
	bufferevent_data_cb readcb;
	bufferevent_event_cb eventcb;
	void *cbarg;
	bufferevent_getcb(bev, &readcb, NULL, &eventcb, &cbarg);
	char first[POOL_READ_FIRST];
	ssize_t n = read(fd, first, sizeof(first));
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n > 0) {
		/* a socket bufferevent freezes the end of its input (only its own read adds): thaw it for ours */
		evbuffer_unfreeze(in, 0);
		int rc = evbuffer_add(in, first, (size_t)n);
		/* what else is there; an EOF or error after it shows on the next wakeup */
		if (rc == 0 && (size_t)n == sizeof(first))
			(void)conn_sock_read(fd, in, POOL_READ_STEP, evbuffer_get_length(in) + POOL_READ_MAX);
		evbuffer_freeze(in, 0);
		if (rc == 0) {
			if (readcb)
				readcb(bev, cbarg);
			return;
		}
	}
	(void)pool_conn_read(uc, false);
	short events = BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR);
	if (eventcb)
		eventcb(bev, events, cbarg);
	else
		upstream_conn_free(uc);
}

int pool_conn_own_reads(struct upstream_conn *uc)
{
	evutil_socket_t fd = bufferevent_getfd(uc->bev);
	if (uc->rev || fd < 0 || uc->pool->conf->tls)
		return -1;
	uc->rev = event_new(uc->pool->worker->base, fd, EV_READ | EV_PERSIST, pool_read_cb, uc);
	if (!uc->rev)
		return -1;
	if (bufferevent_disable(uc->bev, EV_READ) != 0 || event_add(uc->rev, NULL) != 0) {
		event_free(uc->rev);
		uc->rev = NULL;
		(void)bufferevent_enable(uc->bev, EV_READ);
		return -1;
	}
	uc->reading = true;
	return 0;
}

int pool_conn_read(struct upstream_conn *uc, bool on)
{
	if (!uc->rev) {
		if (!on)
			return bufferevent_disable(uc->bev, EV_READ);
		/* enabling it again when it is on re-adds the event */
		return (bufferevent_get_enabled(uc->bev) & EV_READ) ? 0 : bufferevent_enable(uc->bev, EV_READ);
	}
	if (on == uc->reading)
		return 0;
	if ((on ? event_add(uc->rev, NULL) : event_del(uc->rev)) != 0)
		return -1;
	uc->reading = on;
	return 0;
}

/* An idle connection became readable, closed or errored: in every case it
 * can no longer be trusted for a request. */
static void idle_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	upstream_conn_free(arg);
}

static void idle_event_cb(struct bufferevent *bev, short events, void *arg)
{
	(void)bev;
	(void)events;
	upstream_conn_free(arg);
}

static void idle_push(struct upstream_conn *uc, uint64_t until_us)
{
	struct pool_server_state *ss = &uc->pool->servers[uc->server];
	conn_timer_set(&uc->pool->dl[POOL_DL_IDLE], &uc->timer, until_us);
	uc->idle = true;
	uc->prev = NULL;
	uc->next = ss->idle;
	if (ss->idle)
		ss->idle->prev = uc;
	ss->idle = uc;
	ss->num_idle++;
	atomic_fetch_add_explicit(&uc->pool->rt->idle, 1, memory_order_relaxed);
}

void pool_release(struct upstream_conn *uc)
{
	uc->owner = NULL;
	uc->on_deadline = NULL;
	conn_timer_clear(&uc->timer); /* the owner's deadline, on the queue of the pool it came from */
	/* a request of an older snapshot: the connection joins the current set */
	if (uc->pool->set->retired && !pool_adopt_conn(worker_current_pools(uc->pool->worker), uc)) {
		upstream_conn_free(uc);
		return;
	}
	struct pool_state *p = uc->pool;
	struct pool_server_state *ss = &p->servers[uc->server];
	if (p->worker->draining || ss->num_idle >= p->conf->keepalive_idle || pool_server_retired(p->rs[uc->server]) ||
	    evbuffer_get_length(bufferevent_get_input(uc->bev)) > 0 ||
	    evbuffer_get_length(bufferevent_get_output(uc->bev)) > 0) {
		upstream_conn_free(uc);
		return;
	}
	bufferevent_setcb(uc->bev, idle_read_cb, NULL, idle_event_cb, uc);
	if (pool_conn_read(uc, true) != 0) {
		upstream_conn_free(uc);
		return;
	}
	idle_push(uc, clock_mono_us() + pool_deadline_us(p, POOL_DL_IDLE));
}
