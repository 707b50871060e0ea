#include "pipeline.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "clock.h"
#include "counters.h"
#include "log.h"
#include "module.h"
#include "proxy.h"
#include "route.h"
#include "route_path.h"
#include "snapshot.h"
#include "tls_io.h"
#include "worker.h"

/* Recycled exchanges kept per worker. */
#define PIPELINE_MAX_FREE 256

static void pipeline_access(struct exchange *ex);
static void pipeline_resumed(struct exchange *ex, int result, const struct phase_deny *deny);
static void pipeline_suspend_timeout(evutil_socket_t fd, short what, void *arg);
static void pipeline_pace_start(struct exchange *ex);
static void pipeline_body_failed(struct exchange *ex, enum reason reason);
static void pipeline_body_start(struct exchange *ex);
static void pipeline_buffer_body(struct exchange *ex);

/* ---- exchange objects ---- */

struct exchange *pipeline_exchange_new(struct worker *w)
{
	struct exchange *ex = w->free_reqs;
	if (ex) {
		w->free_reqs = ex->next_free;
		w->num_free_reqs--;
		struct arena keep = ex->req.arena;
		struct event *timer = ex->suspend_timer;
		struct evbuffer *body_buf = ex->body_buf;
		/* the HTTP/1 head (~5 KiB) is rewritten by its parser, so only the
		 * small state above the transaction is cleared per request */
		memset(ex, 0, offsetof(struct exchange, txn));
		ex->req.arena = keep;
		ex->suspend_timer = timer;
		ex->body_buf = body_buf;
	} else {
		/* ~7 KiB, nearly all of it parser output that is written before it is
		 * read: clearing all of it cost more than the rest of an HTTP/2 stream's
		 * setup. What is cleared is what a recycled exchange clears, plus the
		 * transaction's small part (proxy_start clears it again). */
		ex = malloc(sizeof(*ex));
		if (!ex)
			return NULL;
		memset(ex, 0, offsetof(struct exchange, txn) + offsetof(struct proxy_txn, resp));
		arena_init(&ex->req.arena, 8192);
	}
	fields_init(&ex->req.headers, &ex->req.arena);
	fields_init(&ex->trailers, &ex->req.arena);
	return ex;
}

static void pipeline_exchange_free(struct exchange *ex)
{
	if (ex->suspend_timer)
		event_free(ex->suspend_timer);
	if (ex->body_buf)
		evbuffer_free(ex->body_buf);
	arena_free(&ex->req.arena);
	free(ex);
}

void pipeline_exchange_discard(struct worker *w, struct exchange *ex)
{
	arena_reset(&ex->req.arena);
	if (w->num_free_reqs < PIPELINE_MAX_FREE) {
		ex->next_free = w->free_reqs;
		w->free_reqs = ex;
		w->num_free_reqs++;
	} else {
		pipeline_exchange_free(ex);
	}
}

void pipeline_free_exchanges(struct worker *w)
{
	while (w->free_reqs) {
		struct exchange *ex = w->free_reqs;
		w->free_reqs = ex->next_free;
		pipeline_exchange_free(ex);
	}
	w->num_free_reqs = 0;
}

/* Drop the snapshot reference and recycle. */
static void pipeline_release(struct exchange *ex)
{
	struct worker *w = ex->req.worker;
	if (ex->suspend_timer)
		evtimer_del(ex->suspend_timer); /* a pace check must not reach the next request */
	if (ex->body_buf)
		evbuffer_drain(ex->body_buf, evbuffer_get_length(ex->body_buf));
	if (ex->req.snap)
		worker_snap_leave(w, ex->req.snap);
	ex->req.snap = NULL;
	ex->conn = NULL;
	pipeline_exchange_discard(w, ex);
}

static const struct ex_pipeline pipeline_for_phases = {
    .send_head = pipeline_send_head,
    .respond_error = pipeline_respond_error,
    .end = pipeline_end,
    .abort = pipeline_abort,
    .resume = pipeline_resumed,
};

void pipeline_begin(struct exchange *ex, struct worker *w, const struct ex_ops *ops, void *conn,
                    const struct pipeline_peer *peer)
{
	struct request *r = &ex->req;
	ex->ops = ops;
	ex->pipe = &pipeline_for_phases;
	ex->conn = conn;
	r->worker = w;
	r->snap = worker_snap_enter(w);
	size_t n = strnlen(peer->ip, sizeof(r->client_ip) - 1);
	memcpy(r->client_ip, peer->ip, n);
	r->client_ip[n] = '\0';
	r->client_port = peer->port;
	/* a connection whose listener a reload removed may still start one (its
	 * answer closes it): its name stays, it counts under no listener */
	const struct conf_listener *cl = conf_listener_by_id(r->snap->conf, (unsigned)peer->listener, &r->listener_index);
	r->listener = cl ? cl->name : worker_listener_name(w, (unsigned)peer->listener);
	if (!cl)
		r->listener_index = SIZE_MAX;
	r->scheme = peer->scheme ? peer->scheme : "http";
	r->protocol = "HTTP/1.1";
	r->method = "";
	r->target = "";
	r->origin_target = "";
	r->path = "";
	r->host = "";
	r->route = -1;
	r->route_name = "";
	r->service = -1;
	r->pool = -1;
	r->server = -1;
	/* the wall time is only the access log's timestamp; durations use the monotonic start */
	r->start_wall_us = clock_wall_us();
	r->start_mono_us = clock_mono_us();
}

/* ---- respond and log ---- */

bool pipeline_send_head(struct exchange *ex, int status, const char *phrase, size_t phrase_len,
                        struct fields *fields, enum ex_body body)
{
	struct request *r = &ex->req;
	struct worker *w = r->worker;
	struct fields none;
	if (!fields) {
		fields_init(&none, &r->arena);
		fields = &none;
	}
	fields_add(fields, "x-request-id", 12, r->request_id, strlen(r->request_id));
	r->status = status; /* the respond phase may read it */
	/* the respond phase: modules read and change the fields */
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i]->response_headers)
			module_list[i]->response_headers(r, r->snap->module_state[i], w->module_state[i], fields);
	r->status = status;
	ex->response_started = true;
	struct ex_head h = {.status = status, .phrase = phrase, .phrase_len = phrase_len, .fields = fields, .body = body};
	long n = ex->ops->send_head(ex, &h);
	if (n < 0)
		return false;
	r->bytes_out += (uint64_t)n;
	return true;
}

void pipeline_respond(struct exchange *ex, int status, enum reason reason, const char *content_type,
                      const char *body, size_t body_len, const struct fields *extra)
{
	struct request *r = &ex->req;
	if (reason != REASON_NONE)
		r->reason = reason;
	ex->phase = EX_PHASE_DONE;
	struct fields f;
	fields_init(&f, &r->arena);
	const char *ct = content_type ? content_type : "text/plain";
	fields_add(&f, "content-type", 12, ct, strlen(ct));
	fields_add_u64(&f, "content-length", body_len);
	if (extra)
		fields_append(&f, extra);
	bool send_body = body_len > 0 && !ex->head_method;
	if (!pipeline_send_head(ex, status, NULL, 0, &f, send_body ? EX_BODY_LENGTH : EX_BODY_NONE)) {
		pipeline_abort(ex, REASON_NONE);
		return;
	}
	if (send_body) {
		long n = ex->ops->send_data(ex, NULL, body, body_len);
		if (n < 0) {
			pipeline_abort(ex, REASON_NONE);
			return;
		}
		r->bytes_out += (uint64_t)n;
	}
	pipeline_end(ex);
}

void pipeline_respond_error(struct exchange *ex, int status, enum reason reason, const struct fields *extra)
{
	char body[128];
	size_t n = 0;
	/* "NNN Reason\n" */
	const char *text = http_status_text(status);
	body[n++] = (char)('0' + status / 100 % 10);
	body[n++] = (char)('0' + status / 10 % 10);
	body[n++] = (char)('0' + status % 10);
	body[n++] = ' ';
	size_t k = strnlen(text, sizeof(body) - 5);
	memcpy(body + n, text, k);
	n += k;
	body[n++] = '\n';
	pipeline_respond(ex, status, reason, "text/plain", body, n, extra);
}

static void pipeline_log(struct exchange *ex)
{
	struct request *r = &ex->req;
	struct worker *w = r->worker;
	const struct snapshot *s = r->snap;
	r->end_mono_us = clock_mono_us();
	counters_request_done(w->counters, r);
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i]->log)
			module_list[i]->log(r, s->module_state[i], w->module_state[i]);
}

static void pipeline_done(struct exchange *ex, enum ex_end how)
{
	const struct ex_ops *ops = ex->ops;
	void *conn = ex->conn;
	bool body_unread = !ex->body_done;
	ex->phase = EX_PHASE_DONE;
	long n = ops->finish(ex, how);
	if (n < 0)
		how = EX_END_ABORT;
	else
		ex->req.bytes_out += (uint64_t)n;
	pipeline_log(ex);
	pipeline_release(ex);
	ops->release(conn, how, body_unread);
}

void pipeline_end(struct exchange *ex)
{
	pipeline_done(ex, EX_END_COMPLETE);
}

void pipeline_abort(struct exchange *ex, enum reason reason)
{
	if (reason != REASON_NONE && ex->req.reason == REASON_NONE)
		ex->req.reason = reason;
	pipeline_done(ex, EX_END_ABORT);
}

/* ---- access ---- */

static void pipeline_cancel_module(struct exchange *ex)
{
	struct request *r = &ex->req;
	ex->suspended = false;
	if (ex->suspend_timer)
		evtimer_del(ex->suspend_timer);
	size_t i = ex->access_next - 1;
	const struct module *m = module_list[i];
	if (m->access_cancel)
		m->access_cancel(r, r->snap->module_state[i], r->worker->module_state[i]);
}

static void pipeline_deny(struct exchange *ex, const struct phase_deny *deny)
{
	if (deny && deny->body) {
		pipeline_respond(ex, deny->status, deny->reason, deny->content_type, deny->body, deny->body_len,
		                 deny->headers.n ? &deny->headers : NULL);
		return;
	}
	pipeline_respond_error(ex, deny ? deny->status : 403, deny ? deny->reason : REASON_POLICY_ERROR,
	                       deny && deny->headers.n ? &deny->headers : NULL);
}

static void pipeline_access(struct exchange *ex)
{
	struct request *r = &ex->req;
	struct worker *w = r->worker;
	const struct snapshot *s = r->snap;
	ex->phase = EX_PHASE_ACCESS;
	while (ex->access_next < module_count) {
		size_t i = ex->access_next++;
		const struct module *m = module_list[i];
		if (!m->access)
			continue;
		struct phase_deny deny;
		phase_deny_init(&deny, r, 403, REASON_POLICY_ERROR);
		switch (m->access(r, s->module_state[i], w->module_state[i], &deny)) {
		case PHASE_CONTINUE:
			continue;
		case PHASE_SUSPEND: {
			ex->suspended = true;
			if (!ex->suspend_timer &&
			    !(ex->suspend_timer = evtimer_new(w->base, pipeline_suspend_timeout, ex))) {
				log_msg(LOG_ERROR, "cannot create a suspension timer");
				pipeline_cancel_module(ex);
				pipeline_respond_error(ex, 500, REASON_POLICY_ERROR, NULL);
				return;
			}
			struct timeval tv = worker_timeval(w, PIPELINE_SUSPEND_TIMEOUT_MS);
			if (evtimer_add(ex->suspend_timer, &tv) != 0)
				log_msg(LOG_ERROR, "cannot arm a suspension timer");
			return;
		}
		case PHASE_DENY:
			pipeline_deny(ex, &deny);
			return;
		case PHASE_ERROR:
		default:
			pipeline_respond_error(ex, 500, REASON_POLICY_ERROR, NULL);
			return;
		}
	}
	ex->phase = EX_PHASE_PROXY;
	if (!ex->body_done)
		pipeline_body_start(ex);
	proxy_start(ex);
}

/* The body is wanted now (HTTP/1 answers Expect: 100-continue), once; its
 * pace is measured from here, and again from the proxy phase's start after
 * a buffering phase (the access phase between them may wait on a module). */
static void pipeline_body_start(struct exchange *ex)
{
	if (!ex->body_started) {
		ex->body_started = true;
		ex->ops->start_body(ex);
	}
	pipeline_pace_start(ex);
}

/* ---- request buffering (routes[N].request_buffering) ---- */

/* Read the body into body_buf until it ends or the route's size is reached,
 * then run the access phase: a body no larger than that size is whole before
 * any upstream connection is taken, so a slow client holds a buffer, not
 * upstream capacity. Called again by pipeline_on_body as bytes arrive. */
static void pipeline_buffer_body(struct exchange *ex)
{
	struct request *r = &ex->req;
	const struct conf *c = r->snap->conf;
	uint64_t cap = c->routes[r->route].request_buffering;
	if (!ex->body_buf && !(ex->body_buf = evbuffer_new())) {
		pipeline_respond_error(ex, 500, REASON_NONE, NULL);
		return;
	}
	while (!ex->body_done) {
		size_t have = evbuffer_get_length(ex->body_buf);
		if (have >= cap)
			break;
		int status = 400;
		enum reason reason = REASON_BAD_REQUEST;
		ssize_t n = ex->ops->read_body(ex, ex->body_buf, (size_t)(cap - have), &status, &reason);
		if (n < 0) {
			pipeline_respond_error(ex, status, reason, NULL);
			return;
		}
		if (n == 0) {
			if (ex->body_done)
				break;
			return; /* more comes through pipeline_on_body */
		}
		r->bytes_in += (uint64_t)n;
		if (ex->body == EX_BODY_STREAM && c->limits.body_bytes && r->bytes_in > c->limits.body_bytes) {
			pipeline_respond_error(ex, 413, REASON_REQUEST_TOO_LARGE, NULL);
			return;
		}
	}
	if (ex->suspend_timer)
		evtimer_del(ex->suspend_timer); /* the pace is measured again in the proxy phase */
	pipeline_access(ex);
}

/* ---- the request body's pace ---- */

/* A body's first moments are free of the minimum rate: a client may take a
 * moment to start. The grace outlasts client_body_timeout by a second when
 * that is at most 10 s, so a client that sends nothing at all always meets
 * the idle timeout first (reason client_timeout, not a race between the two
 * timers); a longer client_body_timeout gets 10 s. */
#define PIPELINE_BODY_RATE_GRACE_MS 10000
#define PIPELINE_BODY_RATE_GRACE_OVER_IDLE_MS 1000

/* When the request body falls behind: the total deadline, or the moment the
 * bytes received since the rate's measure began stop covering
 * client_body_min_rate (after the grace). 0: no limit applies. */
static uint64_t pipeline_pace_due(const struct exchange *ex)
{
	const struct conf_limits *lim = &ex->req.snap->conf->limits;
	uint64_t due = lim->client_body_deadline ? ex->body_start_us + lim->client_body_deadline * 1000 : 0;
	uint64_t rate = lim->client_body_min_rate;
	if (rate) {
		conf_msec grace = lim->client_body_timeout <= PIPELINE_BODY_RATE_GRACE_MS
		                      ? lim->client_body_timeout + PIPELINE_BODY_RATE_GRACE_OVER_IDLE_MS
		                      : PIPELINE_BODY_RATE_GRACE_MS;
		uint64_t got = ex->req.bytes_in - ex->rate_base;
		uint64_t earned_us = got / rate * 1000000 + got % rate * 1000000 / rate;
		uint64_t at = ex->rate_start_us + grace * 1000 + earned_us;
		if (!due || at < due)
			due = at;
	}
	return due;
}

/* The timer is checked only when a limit could have been passed, not per read. */
static void pipeline_pace_arm(struct exchange *ex, uint64_t due, uint64_t now)
{
	struct worker *w = ex->req.worker;
	if (!ex->suspend_timer && !(ex->suspend_timer = evtimer_new(w->base, pipeline_suspend_timeout, ex))) {
		log_msg(LOG_ERROR, "cannot create a request body timer: its pace is not checked");
		return;
	}
	struct timeval tv = worker_timeval(w, (due - now + 999) / 1000);
	if (evtimer_add(ex->suspend_timer, &tv) != 0)
		log_msg(LOG_ERROR, "cannot arm a request body timer: its pace is not checked");
}

static void pipeline_pace_start(struct exchange *ex)
{
	uint64_t now = clock_mono_us();
	if (!ex->body_start_us)
		ex->body_start_us = now; /* the total deadline runs from the body's first want */
	ex->rate_start_us = now;
	ex->rate_base = ex->req.bytes_in;
	uint64_t due = pipeline_pace_due(ex);
	if (due)
		pipeline_pace_arm(ex, due, now);
}

/* The body's pace check is due. Time in which the gateway itself did not take
 * the body (no upstream connection yet, or the upstream reads slower than the
 * client sends, so the client is held back) is not held against the client:
 * the rate's measure restarts then. */
static void pipeline_pace_check(struct exchange *ex)
{
	if ((ex->phase != EX_PHASE_PROXY && ex->phase != EX_PHASE_BODY) || ex->body_done)
		return;
	uint64_t now = clock_mono_us();
	const struct proxy_txn *txn = &ex->txn;
	if (ex->phase == EX_PHASE_PROXY && (txn->req_paused || txn->connecting || !txn->uc)) {
		ex->rate_start_us = now;
		ex->rate_base = ex->req.bytes_in;
	}
	uint64_t due = pipeline_pace_due(ex);
	if (due > now) {
		pipeline_pace_arm(ex, due, now);
		return;
	}
	pipeline_body_failed(ex, REASON_CLIENT_BODY_TOO_SLOW);
}

/* The exchange's timer: a module's suspension ran out, or the body's pace is due. */
static void pipeline_suspend_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct exchange *ex = arg;
	if (!ex->conn)
		return;
	if (!ex->suspended) {
		pipeline_pace_check(ex);
		return;
	}
	pipeline_cancel_module(ex);
	pipeline_respond_error(ex, 503, REASON_POLICY_ERROR, NULL);
}

static void pipeline_resumed(struct exchange *ex, int result, const struct phase_deny *deny)
{
	if (!ex->suspended || !ex->conn)
		return;
	ex->suspended = false;
	evtimer_del(ex->suspend_timer);
	switch (result) {
	case PHASE_CONTINUE:
		pipeline_access(ex);
		break;
	case PHASE_DENY:
		pipeline_deny(ex, deny);
		break;
	case PHASE_SUSPEND:
	case PHASE_ERROR:
	default:
		pipeline_respond_error(ex, 500, REASON_POLICY_ERROR, NULL);
		break;
	}
}

/* ---- route ---- */

static bool request_id_valid(const char *s, size_t n)
{
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

static void pipeline_set_request_id(struct exchange *ex)
{
	struct request *r = &ex->req;
	size_t n = 0;
	const char *v = fields_value(&r->headers, "x-request-id", &n);
	if (v && request_id_valid(v, n)) {
		memcpy(r->request_id, v, n);
		r->request_id[n] = '\0';
		return;
	}
	static const char hex[] = "0123456789abcdef";
	uint64_t hi = worker_random(r->worker), lo = worker_random(r->worker);
	for (int i = 15; i >= 0; i--, hi >>= 4, lo >>= 4) {
		r->request_id[i] = hex[hi & 15];
		r->request_id[16 + i] = hex[lo & 15];
	}
	r->request_id[32] = '\0';
}

static void pipeline_route(struct exchange *ex)
{
	struct request *r = &ex->req;
	const struct snapshot *s = r->snap;
	const struct conf *c = s->conf;
	/* routes match the normalized path (route_path.h says why); the target goes upstream unchanged */
	size_t raw_len = strlen(r->path);
	char *path = arena_alloc(&r->arena, raw_len + 1); /* never longer than the raw path */
	struct route_input in = {
	    .host = r->host,
	    .host_len = strlen(r->host),
	    .path = path,
	    .path_len = route_path_normalize(r->path, raw_len, path),
	    .method = r->method,
	    .method_len = strlen(r->method),
	    .headers = r->headers.v,
	    .num_headers = r->headers.n,
	};
	/* the TLS lookup only when a route asks for the client certificate's subject */
	struct tls_info ti;
	if (route_table_uses_client_subject(s->routes) && ex->ops->tls_info(ex, &ti))
		in.client_subject = ti.client_subject;
	int idx = route_match(s->routes, r->worker->route_scratch, &in);
	if (idx < 0) {
		pipeline_respond_error(ex, 404, REASON_NO_ROUTE, NULL);
		return;
	}
	const struct conf_route *route = &c->routes[idx];
	r->route = idx;
	r->route_name = route->name;
	if (route->action == CONF_ROUTE_RESPOND) {
		pipeline_respond(ex, route->respond_status, REASON_NONE, route->respond_content_type, route->respond_body,
		                 route->respond_body_len, NULL);
		return;
	}
	r->service = (int)route->service;
	if (ex->body == EX_BODY_LENGTH && c->limits.body_bytes && ex->body_length > c->limits.body_bytes) {
		pipeline_respond_error(ex, 413, REASON_REQUEST_TOO_LARGE, NULL);
		return;
	}
	if (route->request_buffering && !ex->body_done) {
		ex->phase = EX_PHASE_BODY;
		pipeline_body_start(ex);
		pipeline_buffer_body(ex);
		return;
	}
	pipeline_access(ex);
}

static enum reason reason_for_early_status(int status)
{
	if (status == 408)
		return REASON_CLIENT_TIMEOUT;
	return status == 413 || status == 414 || status == 431 ? REASON_REQUEST_TOO_LARGE : REASON_BAD_REQUEST;
}

/* The authority's host without port, lower-cased: what routing compares. */
static const char *pipeline_host(struct arena *a, const char *authority)
{
	size_t n = strlen(authority);
	if (n > 0 && authority[0] == '[') {
		const char *end = memchr(authority, ']', n);
		if (end)
			n = (size_t)(end - authority) + 1;
	} else {
		const char *colon = memchr(authority, ':', n);
		if (colon)
			n = (size_t)(colon - authority);
	}
	char *host = arena_strndup(a, authority, n);
	for (size_t i = 0; i < n; i++)
		host[i] = (char)tolower((unsigned char)host[i]);
	return host;
}

void pipeline_start(struct exchange *ex, int early_status)
{
	struct request *r = &ex->req;
	if (r->authority)
		r->host = pipeline_host(&r->arena, r->authority);
	pipeline_set_request_id(ex);
	if (early_status) {
		pipeline_respond_error(ex, early_status, reason_for_early_status(early_status), NULL);
		return;
	}
	pipeline_route(ex);
}

/* ---- events from the protocol ---- */

void pipeline_on_body(struct exchange *ex)
{
	if (ex->phase == EX_PHASE_BODY) {
		pipeline_buffer_body(ex);
		return;
	}
	if (ex->phase == EX_PHASE_PROXY && !ex->body_done)
		proxy_on_client_data(ex);
}

void pipeline_on_drained(struct exchange *ex)
{
	if (ex->phase == EX_PHASE_PROXY)
		proxy_on_client_drained(ex);
}

/* The client stopped sending its body, or sends it too slowly. */
static void pipeline_body_failed(struct exchange *ex, enum reason reason)
{
	if ((ex->phase != EX_PHASE_PROXY && ex->phase != EX_PHASE_BODY) || ex->body_done)
		return;
	if (ex->phase == EX_PHASE_PROXY)
		proxy_abort(ex);
	if (!ex->response_started)
		pipeline_respond_error(ex, 408, reason, NULL);
	else
		pipeline_abort(ex, reason);
}

void pipeline_body_timeout(struct exchange *ex)
{
	pipeline_body_failed(ex, REASON_CLIENT_TIMEOUT);
}

void pipeline_cancel(struct exchange *ex, enum reason reason)
{
	if (ex->phase == EX_PHASE_ACCESS && ex->suspended)
		pipeline_cancel_module(ex);
	if (ex->phase == EX_PHASE_PROXY)
		proxy_abort(ex);
	if (ex->req.reason == REASON_NONE)
		ex->req.reason = reason;
	ex->phase = EX_PHASE_DONE;
	pipeline_log(ex);
	pipeline_release(ex);
}
