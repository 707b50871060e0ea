#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "balance.h"
#include "clock.h"
#include "conf_resilience.h"
#include "counters.h"
#include "log.h"
#include "exchange.h"
#include "pool.h"
#include "runtime.h"
#include "reqkey.h"
#include "snapshot.h"
#include "worker.h"

/* A response head from an upstream is bounded like a client's: beyond this it is a bad response. */
#define PROXY_MAX_RESPONSE_HEAD (64 * 1024)
/* Upstream input kept at most while the client is slow (reading pauses above it). */
#define PROXY_UPSTREAM_READ_HIGH (256 * 1024)

static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);
static void proxy_attempt(struct exchange *ex, bool allow_reuse);
static void proxy_pump_request(struct exchange *ex);
static void proxy_pump_response(struct exchange *ex);

/* Decimal and hex without printf: these run for every response and chunk. */
static size_t fmt_u64(char *out, uint64_t v)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

/* A trailer field named name[0..n), either direction: forwarded unless RFC
 * 9110 6.5.1 says it cannot be a trailer (h1_trailer_field_allowed).
 * Dropped fields are counted (counters.h). */
static bool proxy_trailer_forwardable(struct exchange *ex, const char *name, size_t n)
{
	if (n > 0 && h1_trailer_field_allowed(name, n))
		return true;
	CTR_GLOBAL_ADD(ex->req.worker->counters, TRAILER_FIELDS_DROPPED, 0, 1);
	return false;
}

static void proxy_add_chunk_size(struct evbuffer *out, size_t n)
{
	char line[H1_CHUNK_LINE_MAX];
	evbuffer_add(out, line, h1_chunk_size_line(line, n));
}

/* ---- balancing ---- */

static bool proxy_hash_key(const struct exchange *ex, const struct conf_key *key, uint64_t *hash)
{
	const char *data;
	size_t len;
	if (!reqkey_get(&ex->req, reqkey_of_hash_key(key->kind), key->name, &data, &len))
		return false;
	*hash = balance_hash(data, len, 0);
	return len > 0 || key->kind == CONF_KEY_PATH;
}

/* Tell the breaker how the current attempt went (once per attempt). */
static void proxy_report(struct exchange *ex, enum breaker_outcome o)
{
	struct proxy_txn *txn = &ex->txn;
	if (!txn->outcome_pending || !txn->pool || txn->server < 0)
		return;
	txn->outcome_pending = false;
	struct pool_state *p = txn->pool;
	struct runtime_server *rs = p->rs[txn->server];
	uint64_t now = clock_mono_us();
	if (o != BREAKER_CANCELLED) /* for rollouts: a 5xx is an error even when the breaker does not count it */
		runtime_outcome_record(p->rt, o == BREAKER_FAILURE || txn->resp.status >= 500, now - txn->attempt_start_us);
	enum breaker_state st;
	if (o != BREAKER_CANCELLED)
		counters_server_outcome(ex->req.worker->counters, ex->req.snap->counters, (size_t)ex->req.pool,
		                        (size_t)txn->server, o == BREAKER_FAILURE);
	if (runtime_breaker_record(rs, &p->conf->breaker, now, txn->breaker_epoch, txn->probe, o,
	                           clock_elapsed_us(txn->attempt_start_us, now), &st)) {
		struct breaker b;
		struct breaker_stats stats;
		runtime_breaker_read(rs, &p->conf->breaker, now, &b, &stats);
		struct log_line l;
		log_begin(&l, st == BREAKER_CLOSED ? LOG_INFO : LOG_WARN, "circuit breaker state changed");
		log_str(&l, "pool", p->conf->name);
		log_str(&l, "server", rs->address);
		log_str(&l, "state", breaker_state_name(st));
		if (st == BREAKER_OPEN) {
			log_str(&l, "trigger", breaker_trigger_name(b.last_trigger));
			log_int(&l, "open_ms", (long long)(b.open_for_us / 1000));
		}
		log_end(&l);
	}
}

/* Take server s of the transaction's pool for the next attempt. */
static void proxy_use_server(struct exchange *ex, const struct pool_pick *pick)
{
	struct proxy_txn *txn = &ex->txn;
	struct pool_state *p = txn->pool;
	txn->server = pick->server;
	ex->req.server = pick->server;
	txn->probe = pick->probe;
	txn->breaker_epoch = pick->epoch;
	txn->tries++;
	if (pick->server < 64)
		txn->avoid |= (uint64_t)1 << pick->server;
	atomic_fetch_add_explicit(&p->rs[pick->server]->active_requests, 1, memory_order_relaxed);
	/* addresses are at most 63 bytes ("ip:port"); a longer name is cut like snprintf would */
	const char *addr = p->conf->servers[pick->server].address;
	size_t n = strnlen(addr, sizeof(ex->req.upstream) - 1);
	memcpy(ex->req.upstream, addr, n);
	ex->req.upstream[n] = '\0';
}

/* Give back what the current server holds for this request. */
static void proxy_leave_server(struct exchange *ex, enum breaker_outcome o)
{
	struct proxy_txn *txn = &ex->txn;
	struct pool_state *p = txn->pool;
	if (!p || txn->server < 0)
		return;
	proxy_report(ex, o);
	atomic_fetch_sub_explicit(&p->rs[txn->server]->active_requests, 1, memory_order_relaxed);
	txn->server = -1;
}

static void proxy_refuse(struct exchange *ex, enum reason reason, unsigned retry_after)
{
	struct fields f;
	fields_init(&f, &ex->req.arena);
	fields_add_u64(&f, "retry-after", retry_after ? retry_after : 1);
	ex->pipe->respond_error(ex, 503, reason, &f);
}

static void proxy_end_txn(struct exchange *ex, bool reusable);

void proxy_start(struct exchange *ex)
{
	struct proxy_txn *txn = &ex->txn;
	struct request *r = &ex->req;
	struct worker *w = ex->req.worker;
	const struct snapshot *s = r->snap;
	const struct conf *c = s->conf;
	memset(txn, 0, offsetof(struct proxy_txn, resp));
	txn->server = -1;

	/* the pools of the snapshot the request started on, even after a reload */
	struct pool_set *ps = worker_pools(w, s);
	/* a policy may have chosen the pool (r:set_pool, one of the service's) */
	int pool_index = r->pool >= 0 ? r->pool
	                               : balance_service_pick(&ex->req, &c->services[r->service], ps->splits[r->service],
	                                                      worker_random(ex->req.worker));
	if (pool_index < 0) {
		proxy_refuse(ex, REASON_NO_HEALTHY_UPSTREAM, 1);
		return;
	}
	r->pool = pool_index;
	struct pool_state *p = &ps->pools[pool_index];
	txn->pool = p;
	txn->counted = true;
	unsigned active = atomic_fetch_add_explicit(&p->rt->active_requests, 1, memory_order_relaxed);
	if (p->conf->pool_limits.max_requests && active >= p->conf->pool_limits.max_requests) {
		proxy_end_txn(ex, false);
		proxy_refuse(ex, REASON_POOL_OVERFLOW, 1);
		return;
	}
	uint64_t hash = 0;
	bool has_key = p->conf->balance == CONF_BALANCE_HASH && proxy_hash_key(ex, &p->conf->hash_key, &hash);
	struct pool_pick pick;
	pool_pick_server(p, s->rings[pool_index], has_key, hash, 0, &pick);
	if (pick.server < 0) {
		proxy_end_txn(ex, false);
		proxy_refuse(ex, pick.breaker_open ? REASON_BREAKER_OPEN : REASON_NO_HEALTHY_UPSTREAM, pick.retry_after);
		return;
	}
	proxy_use_server(ex, &pick);
	proxy_attempt(ex, true);
}

/* ---- the upstream request head ---- */

struct head_builder {
	char *buf;
	size_t len;
	size_t cap;
};

static void hb_add(struct head_builder *hb, const char *s, size_t n)
{
	/* the capacity is computed from the input head, so this never truncates;
	 * the check keeps a wrong estimate from becoming an overflow */
	if (hb->len + n > hb->cap)
		n = hb->cap - hb->len;
	memcpy(hb->buf + hb->len, s, n);
	hb->len += n;
}

static void hb_str(struct head_builder *hb, const char *s)
{
	hb_add(hb, s, strlen(s));
}

/* Every non-empty value of the request's `name` fields, then `last`, joined
 * with ", " (the list form of X-Forwarded-For and Via). */
static void hb_join_values(struct head_builder *hb, const struct fields *f, const char *name, const char *last)
{
	for (size_t i = 0; i < f->n; i++) {
		if (!http_name_is(&f->v[i], name) || f->v[i].value_len == 0)
			continue;
		hb_add(hb, f->v[i].value, f->v[i].value_len);
		hb_add(hb, ", ", 2);
	}
	hb_str(hb, last);
}

/* Headers that sluice sets itself on the way up (hop-by-hop ones are flagged by the parser). */
static bool proxy_header_replaced(const struct http_header *h)
{
	return http_name_is(h, "host") || http_name_is(h, "x-forwarded-for") || http_name_is(h, "x-forwarded-proto") ||
	       http_name_is(h, "x-forwarded-host") || http_name_is(h, "via") || http_name_is(h, "x-request-id") ||
	       http_name_is(h, "expect");
}

/* The upstream request head, from the request's fields as the access phase
 * left them; the framing is ours: content-length when the body's length is
 * known, chunked when it is not (an HTTP/1 chunked body, an HTTP/2 body
 * without content-length). */
static void proxy_build_head(struct exchange *ex, struct evbuffer *out)
{
	struct request *r = &ex->req;
	const struct fields *f = &r->headers;
	size_t auth_len = r->authority ? strlen(r->authority) : 0;
	struct head_builder hb;
	hb.cap = strlen(r->method) + strlen(r->origin_target) + 2 * auth_len + 2 * sizeof(r->client_ip) +
	         sizeof(r->request_id) + 256;
	for (size_t i = 0; i < f->n; i++)
		hb.cap += 2 * (f->v[i].name_len + f->v[i].value_len + 4);
	hb.buf = arena_alloc(&r->arena, hb.cap);
	hb.len = 0;

	hb_str(&hb, r->method);
	hb_add(&hb, " ", 1);
	hb_str(&hb, r->origin_target);
	hb_str(&hb, " HTTP/1.1\r\nhost: ");
	if (r->authority)
		hb_add(&hb, r->authority, auth_len);
	else
		hb_str(&hb, r->upstream);
	hb_str(&hb, "\r\n");

	for (size_t i = 0; i < f->n; i++) {
		const struct http_header *h = &f->v[i];
		if ((fields_flags(f, i) & FIELD_HOP) || proxy_header_replaced(h))
			continue;
		hb_add(&hb, h->name, h->name_len);
		hb_add(&hb, ": ", 2);
		hb_add(&hb, h->value, h->value_len);
		hb_add(&hb, "\r\n", 2);
	}
	/* X-Forwarded-For and Via accumulate along the chain of proxies */
	hb_str(&hb, "x-forwarded-for: ");
	hb_join_values(&hb, f, "x-forwarded-for", r->client_ip);
	hb_str(&hb, "\r\nx-forwarded-proto: ");
	hb_str(&hb, r->scheme);
	if (r->authority) {
		hb_str(&hb, "\r\nx-forwarded-host: ");
		hb_add(&hb, r->authority, auth_len);
	}
	hb_str(&hb, "\r\nvia: ");
	hb_join_values(&hb, f, "via", strcmp(r->protocol, "HTTP/1.0") == 0 ? "1.0 sluice" : "1.1 sluice");
	hb_str(&hb, "\r\nx-request-id: ");
	hb_str(&hb, r->request_id);
	hb_str(&hb, "\r\n");
	if (ex->body == EX_BODY_LENGTH) {
		char num[24];
		hb_str(&hb, "content-length: ");
		hb_add(&hb, num, fmt_u64(num, ex->body_length));
		hb_add(&hb, "\r\n", 2);
	} else if (ex->body == EX_BODY_STREAM) {
		hb_str(&hb, "transfer-encoding: chunked\r\n");
	}
	hb_add(&hb, "\r\n", 2);
	if (evbuffer_add(out, hb.buf, hb.len) != 0)
		log_msg(LOG_ERROR, "out of memory writing an upstream request");
}

/* ---- attempts ---- */

static void proxy_release_upstream(struct exchange *ex, bool reusable)
{
	struct proxy_txn *txn = &ex->txn;
	struct upstream_conn *uc = txn->uc;
	if (!uc)
		return;
	txn->uc = NULL;
	uc->owner = NULL;
	if (reusable)
		pool_release(uc);
	else
		upstream_conn_free(uc);
}

static void proxy_end_txn(struct exchange *ex, bool reusable)
{
	struct proxy_txn *txn = &ex->txn;
	struct pool_state *p = txn->pool;
	proxy_release_upstream(ex, reusable);
	if (txn->req_chunk) {
		evbuffer_free(txn->req_chunk);
		txn->req_chunk = NULL;
	}
	/* an attempt that ends without an outcome (client gone, bad request
	 * body) says nothing about the server; a probe gives its slot back */
	proxy_leave_server(ex, BREAKER_CANCELLED);
	if (p) {
		if (txn->pending)
			atomic_fetch_sub_explicit(&p->rt->pending, 1, memory_order_relaxed);
		if (txn->retrying)
			atomic_fetch_sub_explicit(&p->rt->retries_inflight, 1, memory_order_relaxed);
		if (txn->counted)
			atomic_fetch_sub_explicit(&p->rt->active_requests, 1, memory_order_relaxed);
	}
	txn->pending = txn->retrying = txn->counted = false;
	txn->pool = NULL;
}

static bool proxy_method_idempotent(const struct exchange *ex)
{
	static const char *const methods[] = { "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE" };
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
		if (strcmp(methods[i], ex->req.method) == 0)
			return true;
	return false;
}

static unsigned proxy_retry_condition(enum reason reason)
{
	switch (reason) {
	case REASON_UPSTREAM_CONNECT_FAILED:
		return CONF_RETRY_CONNECT_FAILURE;
	case REASON_UPSTREAM_RESET:
		return CONF_RETRY_RESET;
	case REASON_UPSTREAM_TIMEOUT:
		return CONF_RETRY_TIMEOUT;
	default:
		return 0;
	}
}

enum proxy_retry { PROXY_RETRY_NO, PROXY_RETRY_STARTED, PROXY_RETRY_DENIED };

/* After a failed attempt (its outcome already reported): send the request to
 * another server if the pool's retry policy, the request and the retry
 * budget allow. nothing_sent: the failure happened before any byte of the
 * request could have reached the upstream (connect failure). */
static enum proxy_retry proxy_try_retry(struct exchange *ex, bool condition_met, bool nothing_sent)
{
	struct proxy_txn *txn = &ex->txn;
	struct pool_state *p = txn->pool;
	const struct conf_pool *pc = p->conf;
	/* the body streams through: once a byte of it left, it cannot be sent again */
	bool body_replayable = ex->body == EX_BODY_NONE || (ex->body == EX_BODY_LENGTH && txn->req_body_sent == 0);
	if (!condition_met || txn->tries >= pc->retry.attempts || ex->response_started || !body_replayable ||
	    (!nothing_sent && !proxy_method_idempotent(ex)))
		return PROXY_RETRY_NO;
	struct pool_pick pick;
	pool_pick_server(p, ex->req.snap->rings[ex->req.pool], false, 0, txn->avoid, &pick);
	if (pick.server < 0)
		return PROXY_RETRY_NO;
	if (!txn->retrying) {
		unsigned inflight = atomic_load_explicit(&p->rt->retries_inflight, memory_order_relaxed);
		unsigned active = atomic_load_explicit(&p->rt->active_requests, memory_order_relaxed);
		double allowed = pc->retry.budget * (double)active;
		if (allowed < (double)pc->retry.min_retries)
			allowed = (double)pc->retry.min_retries;
		if ((double)(inflight + 1) > allowed ||
		    (pc->pool_limits.max_retries && inflight >= pc->pool_limits.max_retries)) {
			if (pick.probe) {
				enum breaker_state st;
				runtime_breaker_record(p->rs[pick.server], &pc->breaker, clock_mono_us(), pick.epoch,
				                       true, BREAKER_CANCELLED, 0, &st);
			}
			return PROXY_RETRY_DENIED;
		}
		atomic_fetch_add_explicit(&p->rt->retries_inflight, 1, memory_order_relaxed);
		txn->retrying = true;
	}
	counters_pool_retry(ex->req.worker->counters, ex->req.snap->counters, (size_t)ex->req.pool);
	proxy_release_upstream(ex, false);
	proxy_leave_server(ex, BREAKER_CANCELLED);
	if (txn->pending) {
		txn->pending = false;
		atomic_fetch_sub_explicit(&p->rt->pending, 1, memory_order_relaxed);
	}
	proxy_use_server(ex, &pick);
	txn->failed_over = false;
	/* a retry on the response's status ends its attempt here (a failure already did, in proxy_fail) */
	if (ex->req.trace_hooks)
		ex->req.trace_hooks->attempt_end(&ex->req, txn->resp.status, REASON_NONE);
	if (log_enabled(LOG_DEBUG)) {
		struct log_line l;
		log_begin(&l, LOG_DEBUG, "retrying on another server");
		log_str(&l, "upstream", ex->req.upstream);
		log_int(&l, "try", txn->tries);
		log_end(&l);
	}
	proxy_attempt(ex, true);
	return PROXY_RETRY_STARTED;
}

void proxy_abort(struct exchange *ex)
{
	proxy_end_txn(ex, false);
}

static void proxy_fail(struct exchange *ex, enum reason reason, int status)
{
	struct proxy_txn *txn = &ex->txn;
	if (ex->req.trace_hooks)
		ex->req.trace_hooks->attempt_end(&ex->req, txn->resp_head_done ? txn->resp.status : 0, reason);
	/* A pooled connection may have been closed by the upstream just as we
	 * picked it: if nothing of the request body left and no byte came back,
	 * the request is safe to send again, once, on a fresh connection. */
	if (txn->reused && !txn->failed_over && txn->resp_bytes_seen == 0 && txn->req_body_sent == 0 &&
	    reason == REASON_UPSTREAM_RESET) {
		proxy_release_upstream(ex, false);
		txn->failed_over = true;
		proxy_attempt(ex, false);
		return;
	}
	if (txn->outcome_pending) {
		proxy_report(ex, BREAKER_FAILURE);
		enum proxy_retry rr = proxy_try_retry(ex, (txn->pool->conf->retry.on & proxy_retry_condition(reason)) != 0,
		                                      reason == REASON_UPSTREAM_CONNECT_FAILED);
		if (rr == PROXY_RETRY_STARTED)
			return;
		if (rr == PROXY_RETRY_DENIED) {
			proxy_end_txn(ex, false);
			proxy_refuse(ex, REASON_RETRY_BUDGET_EXHAUSTED, 1);
			return;
		}
	}
	proxy_end_txn(ex, false);
	if (log_enabled(LOG_DEBUG)) {
		struct log_line l;
		log_begin(&l, LOG_DEBUG, "upstream failed");
		log_str(&l, "upstream", ex->req.upstream);
		log_str(&l, "reason", reason_name(reason));
		log_end(&l);
	}
	if (!ex->response_started) {
		ex->pipe->respond_error(ex, status, reason, NULL);
	} else {
		ex->pipe->abort(ex, reason);
	}
}

/* A busy upstream connection's deadline passed (pool.h). The connect
 * deadline is final. The response deadline runs from the last progress
 * (uc->active_us: a read, a drained write, the request sent): it is not
 * moved on every read, only looked at here; while it is not the upstream's
 * turn (the request body is still coming from the client, or the client is
 * slow to take the response) it starts again from now. */
static void proxy_up_deadline(struct upstream_conn *uc, enum pool_deadline kind)
{
	struct exchange *ex = uc->owner;
	struct proxy_txn *txn = &ex->txn;
	if (kind == POOL_DL_RESPONSE) {
		uint64_t now = clock_mono_us();
		size_t out = evbuffer_get_length(bufferevent_get_output(uc->bev));
		/* bytes wait on the upstream only once a write found its socket full (the
		 * write event armed); bytes just queued for this loop turn's flush (io.h)
		 * are the client's progress: a slow body whose byte landed in the same
		 * turn as this check, twice at the same length, read as a stalled upstream */
		bool stuck = out > 0 && (bufferevent_get_enabled(uc->bev) & EV_WRITE);
		bool upstreams_turn = stuck || (txn->req_done && !txn->resp_paused);
		if (out != uc->out_seen || !upstreams_turn) {
			/* request bytes moved (written directly: no write callback), or not waiting on it */
			uc->out_seen = out;
			uc->active_us = now;
		}
		if (clock_elapsed_us(uc->active_us, now) < pool_deadline_us(uc->pool, POOL_DL_RESPONSE)) {
			pool_conn_deadline(uc, POOL_DL_RESPONSE, uc->active_us);
			return;
		}
	}
	proxy_fail(ex, REASON_UPSTREAM_TIMEOUT, 504);
}

static void proxy_attempt(struct exchange *ex, bool allow_reuse)
{
	struct proxy_txn *txn = &ex->txn;
	struct request *r = &ex->req;
	struct pool_state *p = txn->pool;
	const struct conf_pool *pc = p->conf;
	const struct conf_server *srv = &pc->servers[txn->server];
	r->attempts++;
	if (r->trace_hooks)
		r->trace_hooks->attempt_begin(r);
	txn->outcome_pending = true;
	txn->attempt_start_us = clock_mono_us();
	txn->resp_bytes_seen = 0;
	txn->resp_head_done = false;
	txn->resp_done = false;
	txn->req_done = false;
	txn->req_paused = false;
	txn->resp_paused = false;

	struct upstream_conn *uc = allow_reuse ? pool_take_idle(p, (size_t)txn->server) : NULL;
	txn->reused = uc != NULL;
	if (!uc) {
		/* the pool's limits are checked only where a new connection is needed:
		 * a request served from the idle list costs nothing new */
		const struct conf_pool_limits *lim = &pc->pool_limits;
		if ((lim->max_connections &&
		     atomic_load_explicit(&p->rt->connections, memory_order_relaxed) >= lim->max_connections) ||
		    (lim->max_pending && !txn->pending &&
		     atomic_load_explicit(&p->rt->pending, memory_order_relaxed) >= lim->max_pending)) {
			proxy_end_txn(ex, false);
			proxy_refuse(ex, REASON_POOL_OVERFLOW, 1);
			return;
		}
		if (!txn->pending) {
			txn->pending = true;
			atomic_fetch_add_explicit(&p->rt->pending, 1, memory_order_relaxed);
		}
		uc = pool_new_conn(p, (size_t)txn->server);
		if (!uc) {
			proxy_fail(ex, REASON_UPSTREAM_CONNECT_FAILED, 502);
			return;
		}
	}
	txn->uc = uc;
	uc->owner = ex;
	uc->requests++;
	counters_pool_connection(ex->req.worker->counters, ex->req.snap->counters, (size_t)ex->req.pool, txn->reused);
	bufferevent_setcb(uc->bev, up_read_cb, up_write_cb, up_event_cb, ex);
	/* deadlines are on the pool's queues (pool.h), not bufferevent timeouts:
	 * those re-add both events on every change, twice per request */
	uc->on_deadline = proxy_up_deadline;
	uc->active_us = txn->attempt_start_us;
	uc->out_seen = 0;
	if (txn->reused) {
		txn->connecting = false;
		pool_conn_deadline(uc, POOL_DL_RESPONSE, txn->attempt_start_us);
	} else {
		/* set once per connection: they survive its stays in the idle list */
		/* no read high-water mark: libevent would re-add the read event on
		 * every drain of the input to lift it; the input is drained as it
		 * arrives, and reading stops (resp_paused) while the client is slow */
		bufferevent_setwatermark(uc->bev, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
		bufferevent_set_max_single_read(uc->bev, PROXY_HIGH_WATER);
		txn->connecting = true;
		txn->connect_start_us = txn->attempt_start_us;
		pool_conn_deadline(uc, POOL_DL_CONNECT, txn->attempt_start_us);
		if (bufferevent_socket_connect(uc->bev, (const struct sockaddr *)&srv->addr, (int)srv->addr_len) != 0) {
			proxy_fail(ex, REASON_UPSTREAM_CONNECT_FAILED, 502);
			return;
		}
		int fd = bufferevent_getfd(uc->bev);
		int one = 1;
		if (fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
			log_msg(LOG_DEBUG, "TCP_NODELAY failed on an upstream socket");
	}
	proxy_build_head(ex, bufferevent_get_output(uc->bev));
	/* a pooled plain connection writes through its flusher (io.h): arming the
	 * write event here would cost the epoll_ctl pair the flusher saves */
	bool want_write = !io_flusher_active(&uc->flusher);
	if ((want_write && !(bufferevent_get_enabled(uc->bev) & EV_WRITE) && bufferevent_enable(uc->bev, EV_WRITE) != 0) ||
	    pool_conn_read(uc, true) != 0) {
		proxy_fail(ex, REASON_UPSTREAM_CONNECT_FAILED, 502);
		return;
	}
	proxy_pump_request(ex);
}

/* ---- request body: client input -> upstream output ---- */

static void proxy_request_body_error(struct exchange *ex, int status, enum reason reason)
{
	proxy_end_txn(ex, false);
	ex->body_done = false; /* the rest of the body is not read: close after answering */
	if (!ex->response_started)
		ex->pipe->respond_error(ex, status, reason, NULL);
	else
		ex->pipe->abort(ex, reason);
}

/* Request body fully handed to the upstream output: the response timeout
 * starts now (proxy_up_deadline measures it from the last progress). */
static void proxy_request_sent(struct exchange *ex)
{
	struct proxy_txn *txn = &ex->txn;
	txn->req_done = true;
	/* a head alone leaves with the attempt or the connect, which just stamped the time */
	if (!txn->connecting && txn->uc && ex->body != EX_BODY_NONE)
		txn->uc->active_us = clock_mono_us();
}

/* Request body bytes read before the access phase (routes[N].request_buffering)
 * and not yet moved to the upstream. */
static size_t proxy_body_held(const struct exchange *ex)
{
	return ex->body_buf ? evbuffer_get_length(ex->body_buf) : 0;
}

static void proxy_pump_request(struct exchange *ex)
{
	struct proxy_txn *txn = &ex->txn;
	if (!txn->uc || txn->req_done)
		return;
	/* the body stays with the protocol until the connection is up, so a
	 * failed connect leaves it there for a retry on another server */
	if (txn->connecting)
		return;
	struct evbuffer *out = bufferevent_get_output(txn->uc->bev);
	/* the flusher does not watch the output (an evbuffer callback on every
	 * add and drain): what this adds is written once the callbacks are done */
	if (evbuffer_get_length(out) > 0 || !ex->body_done || proxy_body_held(ex))
		io_flusher_schedule(&txn->uc->flusher);
	const struct conf_limits *lim = &ex->req.snap->conf->limits;
	bool chunked = ex->body == EX_BODY_STREAM;

	while ((!ex->body_done || proxy_body_held(ex)) && evbuffer_get_length(out) < PROXY_HIGH_WATER) {
		struct evbuffer *dst = out;
		if (chunked) {
			/* a chunk's size goes before its data: read into a scratch buffer (chains move, bytes do not) */
			if (!txn->req_chunk && !(txn->req_chunk = evbuffer_new())) {
				proxy_request_body_error(ex, 500, REASON_NONE);
				return;
			}
			dst = txn->req_chunk;
		}
		size_t room = PROXY_HIGH_WATER - evbuffer_get_length(out);
		size_t held = proxy_body_held(ex);
		ssize_t n;
		if (held) {
			/* read before the access phase (request_buffering): counted then */
			size_t take = held < room ? held : room;
			if (evbuffer_remove_buffer(ex->body_buf, dst, take) != (int)take) {
				proxy_request_body_error(ex, 500, REASON_NONE);
				return;
			}
			n = (ssize_t)take;
		} else {
			int status = 400;
			enum reason reason = REASON_BAD_REQUEST;
			n = ex->ops->read_body(ex, dst, room, &status, &reason);
			if (n < 0) {
				proxy_request_body_error(ex, status, reason);
				return;
			}
			if (n == 0) {
				if (!ex->body_done)
					break;
				continue;
			}
			ex->req.bytes_in += (uint64_t)n;
		}
		if (chunked) {
			if (lim->body_bytes && ex->req.bytes_in > lim->body_bytes) {
				proxy_request_body_error(ex, 413, REASON_REQUEST_TOO_LARGE);
				return;
			}
			proxy_add_chunk_size(out, (size_t)n);
			if (evbuffer_add_buffer(out, dst) != 0 || evbuffer_add(out, "\r\n", 2) != 0) {
				proxy_request_body_error(ex, 500, REASON_NONE);
				return;
			}
		}
		txn->req_body_sent += (uint64_t)n;
	}
	if (ex->body_done && !proxy_body_held(ex)) {
		if (chunked) {
			/* the last chunk, the client's trailers, the end */
			const struct fields *t = &ex->trailers;
			evbuffer_add(out, "0\r\n", 3);
			for (size_t i = 0; i < t->n; i++) {
				if (!proxy_trailer_forwardable(ex, t->v[i].name, t->v[i].name_len))
					continue;
				evbuffer_add(out, t->v[i].name, t->v[i].name_len);
				evbuffer_add(out, ": ", 2);
				evbuffer_add(out, t->v[i].value, t->v[i].value_len);
				evbuffer_add(out, "\r\n", 2);
			}
			evbuffer_add(out, "\r\n", 2);
		}
		if (txn->req_paused) {
			txn->req_paused = false;
			ex->ops->pause_body(ex, false);
		}
		proxy_request_sent(ex);
		return;
	}
	if (evbuffer_get_length(out) >= PROXY_HIGH_WATER && !txn->req_paused) {
		txn->req_paused = true;
		ex->ops->pause_body(ex, true);
	}
}

void proxy_on_client_data(struct exchange *ex)
{
	proxy_pump_request(ex);
}

/* ---- response: upstream input -> client output ---- */

/* Whether the upstream response's field i goes to the client: not hop-by-hop
 * (but a HEAD response's Content-Length, which describes the GET body) and
 * not X-Request-Id (ours is sent). */
static bool proxy_response_field_kept(const struct exchange *ex, size_t i)
{
	const struct h1_response *resp = &ex->txn.resp;
	const struct http_header *f = &resp->headers[i];
	if (resp->header_flags[i] & H1_HDR_HOP)
		return ex->head_method && http_name_is(f, "content-length");
	return !http_name_is(f, "x-request-id");
}

/* The upstream's head as fields for the pipeline, which adds its own and the
 * modules' and hands them to the client's protocol. The kept fields are
 * moved up in the parser's own array (no copy, no allocation): they point
 * into the upstream input, which is drained only after the head went out. */
static void proxy_write_response_head(struct exchange *ex)
{
	struct proxy_txn *txn = &ex->txn;
	struct request *r = &ex->req;
	struct h1_response *resp = &txn->resp;

	txn->resp_body = resp->body;
	txn->resp_remaining = resp->body == H1_BODY_LENGTH ? resp->content_length : 0;
	if (resp->body == H1_BODY_CHUNKED)
		h1_chunked_init(&txn->resp_chunk, 4096, 64 * 1024);
	r->upstream_status = resp->status;
	r->upstream_header_us = clock_elapsed_us(r->start_mono_us, clock_mono_us());

	size_t kept = 0;
	for (size_t i = 0; i < resp->num_headers; i++)
		if (proxy_response_field_kept(ex, i))
			resp->headers[kept++] = resp->headers[i];
	struct fields f;
	fields_view(&f, &r->arena, resp->headers, NULL, kept, H1_MAX_HEADERS);
	enum ex_body body = EX_BODY_STREAM; /* chunked or close-delimited */
	if (resp->body == H1_BODY_NONE || (resp->body == H1_BODY_LENGTH && resp->content_length == 0))
		body = EX_BODY_NONE;
	else if (resp->body == H1_BODY_LENGTH)
		body = EX_BODY_LENGTH;
	if (resp->body == H1_BODY_LENGTH)
		fields_add(&f, "content-length", 14, txn->resp_length, fmt_u64(txn->resp_length, resp->content_length));
	if (!ex->pipe->send_head(ex, resp->status, resp->reason_len ? resp->reason : NULL, resp->reason_len, &f, body)) {
		log_msg(LOG_ERROR, "cannot send a response head");
		txn->resp_body = H1_BODY_NONE; /* the exchange ends at once, cut short (reset or close) */
		txn->resp_head_failed = true;
	}
	txn->resp_head_done = true;
}

/* Returns true when a complete head was consumed. */
static bool proxy_read_head(struct exchange *ex, struct evbuffer *in)
{
	struct proxy_txn *txn = &ex->txn;
	for (;;) {
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			return false;
		const struct conf_limits *lim = &ex->req.snap->conf->limits;
		struct h1_limits hl = {
		    .max_request_line = PROXY_MAX_RESPONSE_HEAD,
		    .max_head = PROXY_MAX_RESPONSE_HEAD,
		    .max_headers = H1_MAX_HEADERS,
		};
		(void)lim;
		size_t window = avail < PROXY_MAX_RESPONSE_HEAD + 1 ? avail : PROXY_MAX_RESPONSE_HEAD + 1;
		const char *why = NULL;
		/* the head is nearly always within the first chunk of the buffer:
		 * parse it in place, and make the buffer contiguous (a copy of the
		 * body read with it) only when it is not */
		struct evbuffer_iovec first;
		int rc = H1_INCOMPLETE;
		if (evbuffer_peek(in, -1, NULL, &first, 1) >= 1 && first.iov_len < window)
			rc = h1_parse_response(first.iov_base, first.iov_len, &hl, ex->head_method, &txn->resp, &why);
		if (rc == H1_INCOMPLETE) {
			const char *p = (const char *)evbuffer_pullup(in, (ssize_t)window);
			if (!p) {
				proxy_fail(ex, REASON_UPSTREAM_BAD_RESPONSE, 502);
				return false;
			}
			rc = h1_parse_response(p, window, &hl, ex->head_method, &txn->resp, &why);
		}
		if (rc == H1_INCOMPLETE)
			return false;
		if (rc == H1_ERROR || txn->resp.status == 101) {
			if (log_enabled(LOG_INFO)) {
				struct log_line l;
				log_begin(&l, LOG_WARN, "bad upstream response");
				log_str(&l, "upstream", ex->req.upstream);
				log_str(&l, "why", rc == H1_ERROR ? why : "unexpected 101 Switching Protocols");
				log_end(&l);
			}
			proxy_fail(ex, REASON_UPSTREAM_BAD_RESPONSE, 502);
			return false;
		}
		if (txn->resp.status < 200) {
			/* interim responses: we answered Expect ourselves and do not upgrade */
			evbuffer_drain(in, (size_t)rc);
			continue;
		}
		const struct conf_pool *pc = txn->pool->conf;
		bool failure = conf_pool_failure_status(pc, txn->resp.status);
		proxy_report(ex, failure ? BREAKER_FAILURE : BREAKER_SUCCESS);
		/* a retryable status is answered from another server if one may take
		 * it; when none can (or the budget says no), this response goes out */
		if (conf_retry_on_status(&pc->retry, txn->resp.status) &&
		    proxy_try_retry(ex, true, false) == PROXY_RETRY_STARTED)
			return false;
		proxy_write_response_head(ex);
		evbuffer_drain(in, (size_t)rc);
		return true;
	}
}

static void proxy_response_complete(struct exchange *ex)
{
	struct proxy_txn *txn = &ex->txn;
	txn->resp_done = true;
	bool reusable = txn->resp.keep_alive && txn->req_done && txn->resp_body != H1_BODY_CLOSE &&
	                evbuffer_get_length(bufferevent_get_input(txn->uc->bev)) == 0;
	bool head_failed = txn->resp_head_failed;
	proxy_end_txn(ex, reusable);
	if (head_failed)
		ex->pipe->abort(ex, REASON_NONE);
	else
		ex->pipe->end(ex);
}

/* Body bytes to the client through its protocol. */
static bool proxy_send(struct exchange *ex, struct evbuffer *in, size_t n)
{
	long k = ex->ops->send_data(ex, in, NULL, n);
	if (k < 0)
		return false;
	ex->req.bytes_out += (uint64_t)k;
	return true;
}

static void proxy_pump_response(struct exchange *ex)
{
	struct proxy_txn *txn = &ex->txn;
	struct evbuffer *in = bufferevent_get_input(txn->uc->bev);

	if (txn->resp_body == H1_BODY_NONE) {
		proxy_response_complete(ex);
		return;
	}
	while (ex->ops->buffered(ex) < PROXY_HIGH_WATER) {
		size_t avail = evbuffer_get_length(in);
		if (txn->resp_body == H1_BODY_LENGTH) {
			size_t n = avail < txn->resp_remaining ? avail : (size_t)txn->resp_remaining;
			if (n > 0 && !proxy_send(ex, in, n)) {
				proxy_fail(ex, REASON_UPSTREAM_RESET, 502);
				return;
			}
			txn->resp_remaining -= n;
			if (txn->resp_remaining == 0) {
				proxy_response_complete(ex);
				return;
			}
			if (n == 0 || evbuffer_get_length(in) == 0)
				break;
			continue;
		}
		if (avail == 0)
			break;
		if (txn->resp_body == H1_BODY_CLOSE) {
			if (!proxy_send(ex, in, avail)) {
				proxy_fail(ex, REASON_UPSTREAM_RESET, 502);
				return;
			}
			continue;
		}
		/* chunked: decoded here; the client's protocol frames it its own way */
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		enum h1_chunk_event ev;
		const char *line = NULL;
		size_t line_len = 0;
		ssize_t n = h1_chunked_feed(&txn->resp_chunk, v.iov_base, v.iov_len, &ev, &line, &line_len);
		if (n < 0) {
			proxy_fail(ex, REASON_UPSTREAM_BAD_RESPONSE, 502);
			return;
		}
		if (ev == H1_CHUNK_NEED_MORE) {
			if (v.iov_len >= avail)
				break;
			size_t want = avail < 65536 ? avail : 65536;
			if (!evbuffer_pullup(in, (ssize_t)want)) {
				proxy_fail(ex, REASON_UPSTREAM_BAD_RESPONSE, 502);
				return;
			}
			if (want <= v.iov_len)
				break;
			continue;
		}
		switch (ev) {
		case H1_CHUNK_DATA:
			if (!proxy_send(ex, in, (size_t)n)) {
				proxy_fail(ex, REASON_UPSTREAM_RESET, 502);
				return;
			}
			break;
		case H1_CHUNK_TRAILER: {
			/* kept as a field (copied: the input is drained before they go out) */
			const char *colon = memchr(line, ':', line_len);
			if (colon && proxy_trailer_forwardable(ex, line, (size_t)(colon - line))) {
				if (!txn->resp_in_trailers) {
					txn->resp_in_trailers = true;
					fields_init(&txn->resp_trailers, &ex->req.arena);
				}
				fields_add_line(&txn->resp_trailers, line, line_len);
			}
			evbuffer_drain(in, (size_t)n);
			break;
		}
		case H1_CHUNK_DONE:
			evbuffer_drain(in, (size_t)n);
			if (txn->resp_in_trailers) {
				long k = ex->ops->send_trailers(ex, &txn->resp_trailers);
				if (k > 0)
					ex->req.bytes_out += (uint64_t)k;
			}
			proxy_response_complete(ex);
			return;
		case H1_CHUNK_NONE:
		default:
			evbuffer_drain(in, (size_t)n);
			break;
		}
	}
	if (txn->resp_body == H1_BODY_CLOSE && txn->resp_eof && evbuffer_get_length(in) == 0) {
		proxy_response_complete(ex);
		return;
	}
	if (ex->ops->buffered(ex) >= PROXY_HIGH_WATER && !txn->resp_paused) {
		/* the client is slower than the upstream: stop reading it until the client catches up */
		txn->resp_paused = true;
		(void)pool_conn_read(txn->uc, false);
	}
}

void proxy_on_client_drained(struct exchange *ex)
{
	struct proxy_txn *txn = &ex->txn;
	if (!txn->uc)
		return;
	if (txn->resp_paused) {
		txn->resp_paused = false;
		txn->uc->active_us = clock_mono_us(); /* the upstream's turn again, with a full response timeout */
		(void)pool_conn_read(txn->uc, true);
		if (txn->resp_head_done)
			proxy_pump_response(ex);
	}
}

/* ---- upstream callbacks ---- */

static void up_read_cb(struct bufferevent *bev, void *arg)
{
	struct exchange *ex = arg;
	struct proxy_txn *txn = &ex->txn;
	struct evbuffer *in = bufferevent_get_input(bev);
	/* libevent reads 4 KiB per wakeup: take the rest of a larger response now,
	 * so that it leaves in one write instead of one per wakeup (own reads,
	 * pool.h, already read what the socket held) */
	if (evbuffer_get_length(in) >= 4096 && txn->uc && !txn->uc->rev && io_flusher_active(&txn->uc->flusher) &&
	    !txn->resp_paused)
		io_read_more(bev, PROXY_UPSTREAM_READ_HIGH);
	txn->resp_bytes_seen += evbuffer_get_length(in);
	if (txn->uc)
		txn->uc->active_us = clock_mono_us();
	if (!txn->resp_head_done && !proxy_read_head(ex, in))
		return;
	proxy_pump_response(ex);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
	struct exchange *ex = arg;
	struct proxy_txn *txn = &ex->txn;
	if (txn->uc) {
		/* the upstream took bytes that had waited for it (a direct write right
		 * after queueing them, the usual case, is no news for the response timeout) */
		if (bufferevent_get_enabled(bev) & EV_WRITE)
			txn->uc->active_us = clock_mono_us();
		io_flusher_drained(&txn->uc->flusher);
	}
	if (txn->req_paused) {
		txn->req_paused = false;
		ex->ops->pause_body(ex, false);
		proxy_pump_request(ex);
	}
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct exchange *ex = arg;
	struct proxy_txn *txn = &ex->txn;
	if (what & BEV_EVENT_CONNECTED) {
		txn->connecting = false;
		if (txn->pending) {
			txn->pending = false;
			atomic_fetch_sub_explicit(&txn->pool->rt->pending, 1, memory_order_relaxed);
		}
		uint64_t now = clock_mono_us();
		ex->req.upstream_connect_us = clock_elapsed_us(txn->connect_start_us, now);
		txn->uc->active_us = now;
		txn->uc->out_seen = evbuffer_get_length(bufferevent_get_output(bev));
		pool_conn_deadline(txn->uc, POOL_DL_RESPONSE, now);
		/* plain sockets write directly from now on (io.h); the request head queued
		 * while connecting goes out through the flusher */
		if (!txn->pool->conf->tls &&
		    io_flusher_init_explicit(&txn->uc->flusher, &ex->req.worker->flush_queue, bev) != 0)
			log_msg(LOG_DEBUG, "direct writes unavailable on an upstream connection");
		/* and read with a plain read(2), without libevent's ioctl(FIONREAD) per read */
		if (!txn->pool->conf->tls && pool_conn_own_reads(txn->uc) != 0)
			log_msg(LOG_DEBUG, "own reads unavailable on an upstream connection");
		proxy_pump_request(ex);
		return;
	}
	if (txn->connecting) {
		proxy_fail(ex, REASON_UPSTREAM_CONNECT_FAILED, 502);
		return;
	}
	if ((what & BEV_EVENT_EOF) && txn->resp_head_done && txn->resp_body == H1_BODY_CLOSE) {
		/* a close-delimited body ends here; what is still queued is flushed
		 * first (now, or when a slow client has drained its output) */
		txn->resp_eof = true;
		proxy_pump_response(ex);
		return;
	}
	proxy_fail(ex, REASON_UPSTREAM_RESET, 502);
}
