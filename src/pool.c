#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "balance.h"
#include "log.h"
#include "worker.h"

struct pool_set *pool_set_new(struct worker *w, const struct conf *c)
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
	for (size_t i = 0; i < c->num_pools; i++) {
		struct pool_state *p = &ps->pools[i];
		size_t n = c->pools[i].num_servers;
		p->worker = w;
		p->conf = &c->pools[i];
		p->servers = calloc(n, sizeof(*p->servers));
		p->swrr_current = calloc(n, sizeof(*p->swrr_current));
		p->weights = calloc(n, sizeof(*p->weights));
		p->active = calloc(n, sizeof(*p->active));
		p->eligible = calloc(n, sizeof(*p->eligible));
		if (!p->servers || !p->swrr_current || !p->weights || !p->active || !p->eligible) {
			pool_set_free(ps);
			return NULL;
		}
		for (size_t s = 0; s < n; s++) {
			p->weights[s] = c->pools[i].servers[s].weight;
			p->eligible[s] = p->weights[s] > 0;
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
	}
	free(ps->pools);
	free(ps);
}

int pool_pick_server(struct pool_state *p, const struct balance_ring *ring, bool has_key, uint64_t key_hash)
{
	size_t n = p->conf->num_servers;
	switch (p->conf->balance) {
	case CONF_BALANCE_HASH:
		if (has_key && ring)
			return balance_ring_pick(ring, key_hash, p->eligible);
		/* no key in this request: spread it like round robin */
		return balance_swrr_next(p->swrr_current, p->weights, p->eligible, n);
	case CONF_BALANCE_LEAST_CONN:
		return balance_least_conn(p->active, p->weights, p->eligible, n, &p->lc_cursor);
	case CONF_BALANCE_ROUND_ROBIN:
	default:
		return balance_swrr_next(p->swrr_current, p->weights, p->eligible, n);
	}
}

static void idle_unlink(struct upstream_conn *uc)
{
	struct pool_server_state *ss = &uc->pool->servers[uc->server];
	if (!uc->idle)
		return;
	if (uc->prev)
		uc->prev->next = uc->next;
	else
		ss->idle = uc->next;
	if (uc->next)
		uc->next->prev = uc->prev;
	uc->prev = uc->next = NULL;
	uc->idle = false;
	ss->num_idle--;
}

void upstream_conn_free(struct upstream_conn *uc)
{
	if (!uc)
		return;
	idle_unlink(uc);
	uc->pool->servers[uc->server].open--;
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
	uc->bev = bufferevent_socket_new(p->worker->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!uc->bev) {
		free(uc);
		return NULL;
	}
	p->servers[server].open++;
	return uc;
}

/* An idle connection became readable, closed, errored or timed out: in every
 * case it can no longer be trusted for a request. */
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

void pool_release(struct upstream_conn *uc)
{
	struct pool_state *p = uc->pool;
	struct pool_server_state *ss = &p->servers[uc->server];
	uc->owner = NULL;
	if (p->worker->draining || ss->num_idle >= p->conf->keepalive_idle ||
	    evbuffer_get_length(bufferevent_get_input(uc->bev)) > 0 ||
	    evbuffer_get_length(bufferevent_get_output(uc->bev)) > 0) {
		upstream_conn_free(uc);
		return;
	}
	struct timeval idle_tv = {
	    .tv_sec = (time_t)(p->conf->keepalive_idle_timeout / 1000),
	    .tv_usec = (suseconds_t)(p->conf->keepalive_idle_timeout % 1000) * 1000,
	};
	bufferevent_setcb(uc->bev, idle_read_cb, NULL, idle_event_cb, uc);
	if (bufferevent_set_timeouts(uc->bev, &idle_tv, NULL) != 0 || bufferevent_enable(uc->bev, EV_READ) != 0) {
		upstream_conn_free(uc);
		return;
	}
	uc->idle = true;
	uc->prev = NULL;
	uc->next = ss->idle;
	if (ss->idle)
		ss->idle->prev = uc;
	ss->idle = uc;
	ss->num_idle++;
}
