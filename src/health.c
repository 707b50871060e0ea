#include "health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "log.h"
#include "snapshot.h"

/* A status line longer than this is not HTTP. */
#define HEALTH_MAX_STATUS_LINE 1024

struct health_target {
	struct health *h;
	const struct conf_pool *pool;
	const struct conf_server *srv;
	struct runtime_server *rs;
	struct event *timer;    /* next check */
	struct event *deadline; /* the running check's timeout */
	struct bufferevent *bev; /* the running check's connection, or NULL */
	unsigned passes, failures; /* in a row */
	bool up;
	char last[96];
};

struct health {
	struct event_base *base;
	struct snapshot *snap; /* one reference: the pools and servers checked belong to it */
	struct health_target *targets;
	size_t num_targets;
	uint64_t rng;
};

static uint64_t health_random(struct health *h)
{
	/* xorshift64*: jitter only, not for secrets */
	h->rng ^= h->rng >> 12;
	h->rng ^= h->rng << 25;
	h->rng ^= h->rng >> 27;
	return h->rng * 0x2545F4914F6CDD1DULL;
}

static void health_schedule(struct health_target *t, conf_msec base_ms, unsigned jitter_pct)
{
	uint64_t jitter = base_ms * jitter_pct / 100;
	uint64_t ms = base_ms;
	if (jitter > 0)
		ms = base_ms - jitter + health_random(t->h) % (2 * jitter + 1);
	struct timeval tv = conf_msec_timeval(ms);
	if (evtimer_add(t->timer, &tv) != 0)
		log_msg(LOG_ERROR, "health: cannot arm a check timer");
}

static void health_log_transition(const struct health_target *t, bool up, const char *why)
{
	struct log_line l;
	log_begin(&l, up ? LOG_INFO : LOG_WARN, up ? "upstream server up" : "upstream server down");
	log_str(&l, "pool", t->pool->name);
	log_str(&l, "server", t->srv->address);
	log_str(&l, "reason", why);
	log_int(&l, "in_a_row", up ? t->passes : t->failures);
	log_end(&l);
}

static void health_finish(struct health_target *t, bool pass, const char *why)
{
	if (t->bev) {
		bufferevent_free(t->bev);
		t->bev = NULL;
	}
	evtimer_del(t->deadline);
	snprintf(t->last, sizeof(t->last), "%s", why);
	if (pass) {
		t->passes++;
		t->failures = 0;
		if (!t->up && t->passes >= t->pool->health_check.rise) {
			t->up = true;
			atomic_store(&t->rs->health, t->up ? RUNTIME_HEALTH_UP : RUNTIME_HEALTH_DOWN);
			health_log_transition(t, true, why);
		}
	} else {
		t->failures++;
		t->passes = 0;
		if (t->up && t->failures >= t->pool->health_check.fall) {
			t->up = false;
			atomic_store(&t->rs->health, RUNTIME_HEALTH_DOWN);
			health_log_transition(t, false, why);
		}
	}
	health_schedule(t, t->pool->health_check.interval, 10);
}

static void health_read_cb(struct bufferevent *bev, void *arg)
{
	struct health_target *t = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_CRLF);
	if (eol.pos < 0) {
		if (evbuffer_get_length(in) > HEALTH_MAX_STATUS_LINE)
			health_finish(t, false, "bad response");
		return;
	}
	char line[HEALTH_MAX_STATUS_LINE + 1];
	size_t n = (size_t)eol.pos < HEALTH_MAX_STATUS_LINE ? (size_t)eol.pos : HEALTH_MAX_STATUS_LINE;
	if (evbuffer_copyout(in, line, n) != (ssize_t)n) {
		health_finish(t, false, "bad response");
		return;
	}
	line[n] = '\0';
	int status = 0;
	char minor = 0, space = 0;
	if (sscanf(line, "HTTP/1.%c %3d%c", &minor, &status, &space) < 2 || (minor != '0' && minor != '1') ||
	    status < 100 || status > 599) {
		health_finish(t, false, "bad response");
		return;
	}
	char why[32];
	snprintf(why, sizeof(why), "status %d", status);
	const struct conf_health_check *hc = &t->pool->health_check;
	health_finish(t, status >= hc->expect_lo && status <= hc->expect_hi, why);
}

static void health_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct health_target *t = arg;
	if (what & BEV_EVENT_CONNECTED) {
		if (t->pool->health_check.type == CONF_HEALTH_TCP) {
			health_finish(t, true, "connected");
			return;
		}
		const struct conf_health_check *hc = &t->pool->health_check;
		if (evbuffer_add_printf(bufferevent_get_output(bev),
		                        "GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: sluice-health-check\r\n"
		                        "connection: close\r\n\r\n",
		                        hc->path, hc->host ? hc->host : t->srv->address) < 0 ||
		    bufferevent_enable(bev, EV_READ | EV_WRITE) != 0)
			health_finish(t, false, "out of memory");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		int err = EVUTIL_SOCKET_ERROR();
		health_finish(t, false, err == ECONNREFUSED ? "refused" : err ? strerror(err) : "connection error");
		return;
	}
	health_finish(t, false, "closed before a response");
}

static void health_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	health_finish(arg, false, "timeout");
}

static void health_check_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct health_target *t = arg;
	const struct conf_health_check *hc = &t->pool->health_check;
	struct timeval tv = conf_msec_timeval(hc->timeout);
	t->bev = bufferevent_socket_new(t->h->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!t->bev || evtimer_add(t->deadline, &tv) != 0) {
		health_finish(t, false, "out of resources");
		return;
	}
	bufferevent_setcb(t->bev, health_read_cb, NULL, health_event_cb, t);
	if (bufferevent_socket_connect(t->bev, (const struct sockaddr *)&t->srv->addr, (int)t->srv->addr_len) != 0) {
		int err = errno;
		health_finish(t, false, err == ECONNREFUSED ? "refused" : err ? strerror(err) : "connect failed");
	}
}

/* The target of the previous checker for the same pool name and address, or NULL. */
static const struct health_target *health_find(const struct health *h, const char *pool, const char *address)
{
	for (size_t i = 0; h && i < h->num_targets; i++)
		if (strcmp(h->targets[i].pool->name, pool) == 0 && strcmp(h->targets[i].srv->address, address) == 0)
			return &h->targets[i];
	return NULL;
}

struct health *health_start(struct event_base *base, struct runtime *rt, struct snapshot *snap,
                            const struct health *prev)
{
	const struct conf *c = snap->conf;
	struct health *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	snapshot_ref(snap);
	h->snap = snap;
	h->base = base;
	if (getrandom(&h->rng, sizeof(h->rng), 0) != (ssize_t)sizeof(h->rng) || h->rng == 0)
		h->rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull | 1;
	size_t n = 0;
	for (size_t i = 0; i < c->num_pools; i++)
		if (c->pools[i].health_check.type != CONF_HEALTH_NONE)
			n += c->pools[i].num_servers;
	h->targets = calloc(n ? n : 1, sizeof(*h->targets));
	if (!h->targets) {
		health_stop(h);
		return NULL;
	}
	for (size_t i = 0; i < c->num_pools; i++) {
		const struct conf_pool *p = &c->pools[i];
		if (p->health_check.type == CONF_HEALTH_NONE)
			continue;
		struct runtime_pool *rp = runtime_find_pool(rt, p->name);
		for (size_t s = 0; s < p->num_servers; s++) {
			struct health_target *t = &h->targets[h->num_targets];
			t->h = h;
			t->pool = p;
			t->srv = &p->servers[s];
			t->rs = rp ? runtime_find_server(rp, p->servers[s].address) : NULL;
			/* servers start up, as they are until shown otherwise; fall checks take one out.
			 * After a reload a server checked before goes on from where it was. */
			const struct health_target *was = health_find(prev, p->name, p->servers[s].address);
			t->up = true;
			if (was && t->rs) {
				t->up = was->up;
				t->passes = was->passes;
				t->failures = was->failures;
				memcpy(t->last, was->last, sizeof(t->last));
			}
			t->timer = evtimer_new(base, health_check_cb, t);
			t->deadline = evtimer_new(base, health_deadline_cb, t);
			h->num_targets++;
			if (!t->rs || !t->timer || !t->deadline) {
				log_msg(LOG_ERROR, "health: cannot set up the checks");
				health_stop(h);
				return NULL;
			}
			atomic_store(&t->rs->health, t->up ? RUNTIME_HEALTH_UP : RUNTIME_HEALTH_DOWN);
			/* the first round is spread over a tenth of the interval */
			health_schedule(t, p->health_check.interval / 20, 100);
		}
	}
	return h;
}

void health_stop(struct health *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->num_targets; i++) {
		struct health_target *t = &h->targets[i];
		if (t->bev)
			bufferevent_free(t->bev);
		if (t->timer)
			event_free(t->timer);
		if (t->deadline)
			event_free(t->deadline);
	}
	free(h->targets);
	snapshot_unref(h->snap);
	free(h);
}

const char *health_last_result(const struct health *h, const char *pool, const char *address)
{
	const struct health_target *t = health_find(h, pool, address);
	return t ? t->last : "";
}
