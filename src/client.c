#include "client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "log.h"
#include "pool.h"
#include "route.h"
#include "snapshot.h"
#include "h2.h"
#include "tls_io.h"
#include "worker.h"

/* How long a closing connection keeps reading (and discarding) after our last
 * byte, so that unread request bytes do not turn our close into a reset that
 * destroys the response before the client read it. */
#define CLIENT_LINGER_MS 2000
/* Recycled request objects kept per worker. */
#define CLIENT_MAX_FREE_REQS 256

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);
static void client_timer_cb(evutil_socket_t fd, short what, void *arg);
static void client_handle_input(struct client_conn *cc);
static void client_close_soon(struct client_conn *cc, bool flush_first);

static const struct conf *client_conf(const struct client_conn *cc)
{
	return cc->w->snap->conf;
}

/* The connection's one timer is lazy: a deadline is a number, and the libevent
 * timer is only moved when it would fire too late. On a keep-alive connection
 * the idle deadline is set and cleared once per request; re-adding and
 * deleting the timer each time cost more than the rest of the bookkeeping. A
 * timer that fires before the deadline re-arms itself for the remainder. */
static void client_timer_at(struct client_conn *cc, uint64_t at_us)
{
	uint64_t now = worker_mono_us(cc->w);
	uint64_t ms = at_us > now ? (at_us - now + 999) / 1000 : 0;
	struct timeval tv = worker_timeval(cc->w, ms);
	/* an HTTP/2 stream gets its timer only if it ever needs one */
	if (!cc->timer && !(cc->timer = evtimer_new(cc->w->base, client_timer_cb, cc))) {
		log_msg(LOG_ERROR, "cannot create a client timer");
		return;
	}
	if (evtimer_add(cc->timer, &tv) != 0) {
		log_msg(LOG_ERROR, "cannot arm a client timer");
		return;
	}
	cc->timer_at_us = now + ms * 1000;
}

static void client_arm_timer(struct client_conn *cc, conf_msec ms)
{
	cc->deadline_us = worker_mono_us(cc->w) + ms * 1000;
	if (cc->timer_at_us == 0 || cc->timer_at_us > cc->deadline_us)
		client_timer_at(cc, cc->deadline_us);
}

static void client_clear_timer(struct client_conn *cc)
{
	cc->deadline_us = 0;
}

/* ---- connection lifecycle ---- */

void client_origin_from_sockaddr(struct client_origin *o, const struct sockaddr *sa)
{
	memset(o, 0, sizeof(*o));
	o->scheme = "http";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, o->ip, sizeof(o->ip));
		o->port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, o->ip, sizeof(o->ip));
		o->port = ntohs(in6->sin6_port);
	}
}

void client_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa, int salen)
{
	(void)salen;
	int one = 1;
	/* responses go out as soon as they are complete; latency beats packet count here */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 && sa->sa_family != AF_UNIX)
		log_msg(LOG_DEBUG, "TCP_NODELAY failed on a client socket");
	/* already non-blocking: evconnlistener accepts with SOCK_NONBLOCK */
	struct bufferevent *bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		close(fd);
		return;
	}
	struct client_origin o;
	client_origin_from_sockaddr(&o, sa);
	o.plain_socket = true;
	client_accept_bev(w, listener, bev, &o);
}

struct client_conn *client_accept_bev(struct worker *w, size_t listener, struct bufferevent *bev,
                                      const struct client_origin *o)
{
	struct client_conn *cc = calloc(1, sizeof(*cc));
	if (!cc) {
		bufferevent_free(bev);
		return NULL;
	}
	cc->w = w;
	cc->listener = listener;
	cc->state = CLIENT_WAIT_HEAD;
	cc->keep_alive = true;
	cc->origin = *o;
	cc->bev = bev;
	cc->transport = bev;
	cc->in = bufferevent_get_input(bev);
	cc->out = bufferevent_get_output(bev);
	cc->timer = evtimer_new(w->base, client_timer_cb, cc);
	if (!cc->timer) {
		bufferevent_free(bev);
		free(cc);
		return NULL;
	}
	const struct conf *c = client_conf(cc);
	/* the input buffer never holds much more than one maximal head: a
	 * pipelining client is paused by the kernel's window, not by our memory */
	size_t read_high = c->limits.header_bytes + 1 > PROXY_HIGH_WATER ? c->limits.header_bytes + 1 : PROXY_HIGH_WATER;
	bufferevent_setwatermark(cc->bev, EV_READ, 0, read_high);
	bufferevent_setwatermark(cc->bev, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
	bufferevent_setcb(cc->bev, client_read_cb, client_write_cb, client_event_cb, cc);
	struct timeval send_tv = worker_timeval(w, c->limits.send_timeout);
	if (bufferevent_set_timeouts(cc->bev, NULL, &send_tv) != 0 || bufferevent_enable(cc->bev, EV_READ) != 0) {
		bufferevent_free(cc->bev);
		event_free(cc->timer);
		free(cc);
		return NULL;
	}
	/* without a flusher the bufferevent writes as usual: slower, still correct */
	if (o->plain_socket && io_flusher_init(&cc->flusher, &w->flush_queue, cc->bev) != 0)
		log_msg(LOG_DEBUG, "direct writes unavailable on a client connection");
	cc->next = w->conns;
	if (w->conns)
		w->conns->prev = cc;
	w->conns = cc;
	w->num_conns++;
	cc->head_timer_armed = true;
	client_arm_timer(cc, c->limits.client_header_timeout);
	/* bytes may already be waiting (an internal stream written before we got it) */
	if (evbuffer_get_length(cc->in) > 0)
		client_handle_input(cc);
	return cc;
}

/* Back to the worker's free list (or freed when the list is full). */
static void client_recycle_req(struct worker *w, struct client_req *cr)
{
	arena_reset(&cr->req.arena);
	if (w->num_free_reqs < CLIENT_MAX_FREE_REQS) {
		cr->next_free = w->free_reqs;
		w->free_reqs = cr;
		w->num_free_reqs++;
	} else {
		arena_free(&cr->req.arena);
		free(cr);
	}
}

static void client_release_req(struct client_conn *cc)
{
	struct client_req *cr = cc->cr;
	struct worker *w = cc->w;
	if (!cr)
		return;
	cc->cr = NULL;
	if (cr->req.snap)
		snapshot_unref((struct snapshot *)cr->req.snap);
	cr->req.snap = NULL;
	client_recycle_req(w, cr);
}

static void client_log(struct client_req *cr)
{
	struct request *r = &cr->req;
	const struct snapshot *s = r->snap;
	struct worker *w = cr->conn->w;
	r->end_mono_us = worker_wall_us(w);
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i]->log)
			module_list[i]->log(r, s->module_state[i], w->module_state[i]);
}

/* Ends the request on cc without a normal response: the access phase is
 * cancelled or the proxy released, the request logged, cc freed. */
static void client_free(struct client_conn *cc, enum reason reason)
{
	struct worker *w = cc->w;
	struct client_req *cr = cc->cr;
	if (cr) {
		if (cc->state == CLIENT_ACCESS && cr->suspended && cr->access_next > 0) {
			const struct module *m = module_list[cr->access_next - 1];
			if (m->access_cancel)
				m->access_cancel(&cr->req, cr->req.snap->module_state[cr->access_next - 1],
				                 w->module_state[cr->access_next - 1]);
		}
		if (cc->state == CLIENT_PROXY)
			proxy_abort(cr);
		if (cr->req.reason == REASON_NONE)
			cr->req.reason = reason;
		client_log(cr);
		client_release_req(cc);
	}
	if (cc->stream) {
		/* h2.c called us (client_stream_close) and forgets cc */
		if (cc->timer)
			event_free(cc->timer);
		free(cc);
		return;
	}
	if (cc->prev)
		cc->prev->next = cc->next;
	else
		w->conns = cc->next;
	if (cc->next)
		cc->next->prev = cc->prev;
	event_free(cc->timer);
	io_flusher_free(&cc->flusher);
	/* freeing one end of a pair unlinks it silently: tell the other end (an
	 * HTTP/2 stream) that this side is finished first */
	if (bufferevent_pair_get_partner(cc->bev))
		bufferevent_flush(cc->bev, EV_READ | EV_WRITE, BEV_FINISHED);
	bufferevent_free(cc->bev);
	free(cc);
	worker_conn_closed(w);
}

/* Close from a safe point: never free cc inside a call chain that may still
 * use it; the timer fires at once (or after the flush and linger). */
static void client_close_soon(struct client_conn *cc, bool flush_first)
{
	cc->state = CLIENT_CLOSING;
	cc->keep_alive = false;
	if (cc->stream) {
		/* h2.c ends the stream (a complete response, or a reset) and frees cc later */
		client_clear_timer(cc);
		h2_stream_finished(cc->stream, flush_first);
		return;
	}
	if (flush_first && evbuffer_get_length(cc->out) > 0) {
		/* the write callback takes it from here once the output is flushed.
		 * Reading stays on (CLOSING drops what arrives): switching it off and
		 * on again for the linger costs two epoll_ctl per closed connection */
		client_clear_timer(cc);
		return;
	}
	if (flush_first) {
		client_write_cb(cc->bev, cc);
		return;
	}
	bufferevent_disable(cc->bev, EV_READ | EV_WRITE);
	cc->close_now = true;
	event_active(cc->timer, EV_TIMEOUT, 1);
}

void client_pause_reading(struct client_conn *cc, bool paused)
{
	if (cc->stream)
		return; /* HTTP/2 flow control: h2.c acknowledges body bytes only as they leave cc->in */
	if (paused)
		bufferevent_disable(cc->bev, EV_READ);
	else
		bufferevent_enable(cc->bev, EV_READ);
}

/* ---- requests ---- */

static struct client_req *client_new_req(struct worker *w)
{
	struct client_req *cr = w->free_reqs;
	if (cr) {
		w->free_reqs = cr->next_free;
		w->num_free_reqs--;
		struct arena keep = cr->req.arena;
		/* the parsed head (~5 KiB) is rewritten by the parser, so only the
		 * small state above the transaction is cleared per request */
		memset(cr, 0, offsetof(struct client_req, txn));
		cr->req.arena = keep;
	} else {
		/* ~7 KiB, nearly all of it parser output that is written before it is
		 * read: clearing all of it cost more than the rest of an HTTP/2 stream's
		 * setup. What is cleared is what a recycled request clears, plus the
		 * transaction's small part (proxy_start clears it again). */
		cr = malloc(sizeof(*cr));
		if (!cr)
			return NULL;
		memset(cr, 0, offsetof(struct client_req, txn) + offsetof(struct proxy_txn, resp));
		arena_init(&cr->req.arena, 8192);
	}
	/* a request that never got a parsed head (timeouts) must still read sanely */
	cr->h1.minor_version = 1;
	cr->h1.num_headers = 0;
	return cr;
}

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

static void client_set_request_id(struct client_req *cr, struct worker *w)
{
	struct request *r = &cr->req;
	int found = http_find_header(cr->h1.headers, cr->h1.num_headers, "x-request-id");
	if (found >= 0 && request_id_valid(cr->h1.headers[found].value, cr->h1.headers[found].value_len)) {
		memcpy(r->request_id, cr->h1.headers[found].value, cr->h1.headers[found].value_len);
		r->request_id[cr->h1.headers[found].value_len] = '\0';
		return;
	}
	static const char hex[] = "0123456789abcdef";
	uint64_t hi = worker_random(w), lo = worker_random(w);
	for (int i = 15; i >= 0; i--, hi >>= 4, lo >>= 4) {
		r->request_id[i] = hex[hi & 15];
		r->request_id[16 + i] = hex[lo & 15];
	}
	r->request_id[32] = '\0';
}

/* Fill the request fields every request has, even one that failed to parse. */
static void client_begin_request(struct client_conn *cc, struct client_req *cr)
{
	struct worker *w = cc->w;
	struct request *r = &cr->req;
	cr->conn = cc;
	r->worker = w;
	snapshot_ref(w->snap);
	r->snap = w->snap;
	memcpy(r->client_ip, cc->origin.ip, sizeof(r->client_ip));
	r->client_port = cc->origin.port;
	r->listener = r->snap->conf->listeners[cc->listener].name;
	r->client_bev = cc->transport;
	r->scheme = cc->origin.scheme ? cc->origin.scheme : "http";
	r->protocol = "HTTP/1.1";
	r->method = "";
	r->target = "";
	r->path = "";
	r->host = "";
	r->route = -1;
	r->route_name = "";
	r->service = -1;
	r->pool = -1;
	r->start_wall_us = worker_wall_us(w);
	r->start_mono_us = r->start_wall_us;
	cc->cr = cr;
}

static const char *rebase(const char *p, const char *old_base, const char *new_base)
{
	return p ? new_base + (p - old_base) : NULL;
}

/* Keep the head in the request's arena so that the input buffer can move on
 * (to the body and the next request) while the request still reads its fields. */
static void client_keep_head(struct client_req *cr, const char *buf, size_t head_len)
{
	char *copy = arena_alloc(&cr->req.arena, head_len + 1);
	memcpy(copy, buf, head_len);
	copy[head_len] = '\0';
	struct h1_request *h = &cr->h1;
	h->method = rebase(h->method, buf, copy);
	h->target = rebase(h->target, buf, copy);
	h->path = rebase(h->path, buf, copy);
	h->authority = rebase(h->authority, buf, copy);
	for (size_t i = 0; i < h->num_headers; i++) {
		h->headers[i].name = rebase(h->headers[i].name, buf, copy);
		h->headers[i].value = rebase(h->headers[i].value, buf, copy);
	}
	cr->head_copy = copy;
	cr->head_len = head_len;
}

static void client_fill_from_head(struct client_req *cr)
{
	struct request *r = &cr->req;
	struct h1_request *h = &cr->h1;
	r->protocol = cr->conn->origin.protocol ? cr->conn->origin.protocol
	                                        : h->minor_version == 0 ? "HTTP/1.0" : "HTTP/1.1";
	r->method = arena_strndup(&r->arena, h->method, h->method_len);
	r->target = arena_strndup(&r->arena, h->target, h->target_len);
	r->path = arena_strndup(&r->arena, h->path, h->path_len);
	if (h->authority) {
		/* the host without port, lower-cased: what routing compares */
		size_t n = h->authority_len;
		const char *a = h->authority;
		if (n > 0 && a[0] == '[') {
			const char *end = memchr(a, ']', n);
			if (end)
				n = (size_t)(end - a) + 1;
		} else {
			const char *colon = memchr(a, ':', n);
			if (colon)
				n = (size_t)(colon - a);
		}
		char *host = arena_strndup(&r->arena, a, n);
		for (size_t i = 0; i < n; i++)
			host[i] = (char)tolower((unsigned char)host[i]);
		r->host = host;
	}
	r->headers = h->headers;
	r->num_headers = h->num_headers;
	cr->head_is_head_method = h->method_len == 4 && memcmp(h->method, "HEAD", 4) == 0;
	cr->body = h->body;
	cr->body_remaining = h->body == H1_BODY_LENGTH ? h->content_length : 0;
	cr->body_done = h->body == H1_BODY_NONE || (h->body == H1_BODY_LENGTH && h->content_length == 0);
	if (h->body == H1_BODY_CHUNKED)
		h1_chunked_init(&cr->body_chunk, 4096, r->snap->conf->limits.header_bytes);
}


const char *client_module_lines(struct client_req *cr, const char *extra)
{
	struct request *r = &cr->req;
	struct worker *w = cr->conn->w;
	const char *parts[16];
	size_t n = 0, total = 0;
	if (extra && *extra)
		parts[n++] = extra;
	for (size_t i = 0; i < module_count && n < sizeof parts / sizeof parts[0]; i++) {
		if (!module_list[i]->response_headers)
			continue;
		const char *lines = module_list[i]->response_headers(r, r->snap->module_state[i], w->module_state[i]);
		if (lines && *lines)
			parts[n++] = lines;
	}
	if (n == 0)
		return NULL;
	if (n == 1)
		return parts[0];
	for (size_t i = 0; i < n; i++)
		total += strlen(parts[i]);
	char *joined = arena_alloc(&r->arena, total + 1);
	char *p = joined;
	for (size_t i = 0; i < n; i++) {
		size_t k = strlen(parts[i]);
		memcpy(p, parts[i], k);
		p += k;
	}
	*p = '\0';
	return joined;
}

void client_add_module_headers(struct client_req *cr, struct evbuffer *out)
{
	const char *lines = client_module_lines(cr, NULL);
	if (lines && evbuffer_add(out, lines, strlen(lines)) != 0)
		log_msg(LOG_ERROR, "out of memory adding response headers");
}

/* client_respond for an HTTP/2 stream: the head goes to h2.c, the body to cc->out. */
static void client_respond_stream(struct client_req *cr, int status, const char *content_type, const char *body,
                                  size_t body_len, const char *extra_headers)
{
	struct client_conn *cc = cr->conn;
	struct request *r = &cr->req;
	char clen[24];
	int k = snprintf(clen, sizeof clen, "%zu", body_len);
	const char *ct = content_type ? content_type : "text/plain";
	struct http_header fields[3] = {
	    {"content-type", 12, ct, strlen(ct)},
	    {"content-length", 14, clen, (size_t)k},
	    {"x-request-id", 12, r->request_id, strlen(r->request_id)},
	};
	bool send_body = body_len > 0 && !cr->head_is_head_method;
	long head = h2_stream_respond(cc->stream, status, fields, 3, client_module_lines(cr, extra_headers), send_body);
	if (head < 0 || (send_body && evbuffer_add(cc->out, body, body_len) != 0)) {
		client_abort(cr, REASON_NONE);
		return;
	}
	r->bytes_out += (uint64_t)head + (send_body ? body_len : 0);
	cr->response_started = true;
	client_finish_request(cr);
}

void client_respond(struct client_req *cr, int status, enum reason reason, const char *content_type, const char *body,
                    size_t body_len, const char *extra_headers)
{
	struct client_conn *cc = cr->conn;
	struct request *r = &cr->req;
	struct evbuffer *out = cc->out;
	r->status = status;
	if (reason != REASON_NONE)
		r->reason = reason;
	if (cc->stream) {
		client_respond_stream(cr, status, content_type, body, body_len, extra_headers);
		return;
	}
	/* unread request bytes would be taken for the next request: close instead */
	if (!cr->body_done || cc->w->draining)
		cc->keep_alive = false;
	const char *conn_hdr = "";
	if (!cc->keep_alive)
		conn_hdr = "connection: close\r\n";
	else if (cr->h1.minor_version == 0)
		conn_hdr = "connection: keep-alive\r\n";
	size_t before = evbuffer_get_length(out);
	int n = evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\nx-request-id: %s\r\n%s%s",
	                            status, http_status_text(status), content_type ? content_type : "text/plain", body_len,
	                            r->request_id, conn_hdr, extra_headers ? extra_headers : "");
	if (n >= 0)
		client_add_module_headers(cr, out);
	if (n < 0 || evbuffer_add(out, "\r\n", 2) != 0 || (body_len > 0 && !cr->head_is_head_method && evbuffer_add(out, body, body_len) != 0)) {
		client_abort(cr, REASON_NONE);
		return;
	}
	r->bytes_out += evbuffer_get_length(out) - before;
	cr->response_started = true;
	client_finish_request(cr);
}

void client_respond_error(struct client_req *cr, int status, enum reason reason, const char *extra_headers)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "%d %s\n", status, http_status_text(status));
	client_respond(cr, status, reason, "text/plain", body, (size_t)n, extra_headers);
}

void client_body_timer(struct client_conn *cc, bool reading_body)
{
	/* re-adding the events costs more than the check: only change what changes */
	if (cc->body_timer_on == reading_body)
		return;
	const struct conf *c = client_conf(cc);
	if (cc->stream) {
		cc->body_timer_on = reading_body;
		if (reading_body)
			client_arm_timer(cc, c->limits.client_body_timeout);
		else
			client_clear_timer(cc);
		return;
	}
	struct timeval send_tv = worker_timeval(cc->w, c->limits.send_timeout);
	struct timeval body_tv = worker_timeval(cc->w, c->limits.client_body_timeout);
	bufferevent_set_timeouts(cc->bev, reading_body ? &body_tv : NULL, &send_tv);
	cc->body_timer_on = reading_body;
}

static void client_run_access(struct client_req *cr)
{
	struct client_conn *cc = cr->conn;
	struct worker *w = cc->w;
	const struct snapshot *s = cr->req.snap;
	cc->state = CLIENT_ACCESS;
	while (cr->access_next < module_count) {
		size_t i = cr->access_next++;
		const struct module *m = module_list[i];
		if (!m->access)
			continue;
		struct phase_deny deny = {.status = 403, .reason = REASON_POLICY_ERROR};
		switch (m->access(&cr->req, s->module_state[i], w->module_state[i], &deny)) {
		case PHASE_CONTINUE:
			continue;
		case PHASE_SUSPEND:
			cr->suspended = true;
			client_arm_timer(cc, PIPELINE_SUSPEND_TIMEOUT_MS);
			return;
		case PHASE_DENY:
			client_respond_error(cr, deny.status, deny.reason, deny.headers);
			return;
		case PHASE_ERROR:
		default:
			client_respond_error(cr, 500, REASON_POLICY_ERROR, NULL);
			return;
		}
	}
	cc->state = CLIENT_PROXY;
	if (cr->h1.expect_continue && !cr->body_done && !cc->stream &&
	    evbuffer_get_length(cc->in) == 0) {
		/* the client waits for our word before sending the body; the upstream
		 * never sees Expect (we answered it) */
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		if (evbuffer_add(cc->out, cont, sizeof(cont) - 1) != 0) {
			client_abort(cr, REASON_NONE);
			return;
		}
	}
	if (!cr->body_done)
		client_body_timer(cc, true);
	proxy_start(cr);
}

void pipeline_resume(struct request *r, enum phase_result result, const struct phase_deny *deny)
{
	struct client_req *cr = (struct client_req *)r; /* req is the first member */
	struct client_conn *cc = cr->conn;
	if (!cr->suspended || cc->cr != cr)
		return;
	cr->suspended = false;
	client_clear_timer(cc);
	switch (result) {
	case PHASE_CONTINUE:
		client_run_access(cr);
		break;
	case PHASE_DENY:
		client_respond_error(cr, deny ? deny->status : 403, deny ? deny->reason : REASON_POLICY_ERROR,
		                     deny ? deny->headers : NULL);
		break;
	case PHASE_SUSPEND:
	case PHASE_ERROR:
	default:
		client_respond_error(cr, 500, REASON_POLICY_ERROR, NULL);
		break;
	}
}

static void client_route(struct client_req *cr)
{
	struct client_conn *cc = cr->conn;
	struct request *r = &cr->req;
	const struct snapshot *s = r->snap;
	const struct conf *c = s->conf;
	struct route_input in = {
	    .host = r->host,
	    .host_len = strlen(r->host),
	    .path = cr->h1.path,
	    .path_len = cr->h1.path_len,
	    .method = cr->h1.method,
	    .method_len = cr->h1.method_len,
	    .headers = cr->h1.headers,
	    .num_headers = cr->h1.num_headers,
	};
	/* The TLS lookup only when a route asks for the client certificate's subject. */
	struct tls_info ti;
	if (route_table_uses_client_subject(s->routes) && tls_request_info(r, &ti))
		in.client_subject = ti.client_subject;
	int idx = route_match(s->routes, cc->w->route_scratch, &in);
	if (idx < 0) {
		client_respond_error(cr, 404, REASON_NO_ROUTE, NULL);
		return;
	}
	const struct conf_route *route = &c->routes[idx];
	r->route = idx;
	r->route_name = route->name;
	if (route->action == CONF_ROUTE_RESPOND) {
		client_respond(cr, route->respond_status, REASON_NONE, route->respond_content_type, route->respond_body,
		               route->respond_body_len, NULL);
		return;
	}
	r->service = (int)route->service;
	if (cr->body == H1_BODY_LENGTH && c->limits.body_bytes && cr->h1.content_length > c->limits.body_bytes) {
		client_respond_error(cr, 413, REASON_REQUEST_TOO_LARGE, NULL);
		return;
	}
	client_run_access(cr);
}

static enum reason reason_for_parse_status(int status)
{
	return status == 413 || status == 414 || status == 431 ? REASON_REQUEST_TOO_LARGE : REASON_BAD_REQUEST;
}

/* Parse and start the next request if its head is complete. Returns false
 * when nothing more can be done until more bytes arrive. */
static bool client_try_head(struct client_conn *cc)
{
	struct worker *w = cc->w;
	struct evbuffer *in = cc->in;
	size_t avail = evbuffer_get_length(in);
	if (avail == 0)
		return false;
	const struct conf_limits *lim = &client_conf(cc)->limits;
	struct h1_limits hl = {
	    .max_request_line = lim->request_line_bytes,
	    .max_head = lim->header_bytes,
	    .max_headers = lim->max_headers < H1_MAX_HEADERS ? lim->max_headers : H1_MAX_HEADERS,
	};
	size_t window = avail < hl.max_head + 1 ? avail : hl.max_head + 1;
	const char *p = (const char *)evbuffer_pullup(in, (ssize_t)window);
	struct client_req *cr = client_new_req(w);
	if (!p || !cr) {
		if (cr) {
			cc->cr = NULL;
			arena_free(&cr->req.arena);
			free(cr);
		}
		client_close_soon(cc, false);
		return false;
	}
	int status = 0;
	const char *why = NULL;
	int rc = h1_parse_request(p, window, &hl, &cr->h1, &status, &why);
	if (rc == H1_INCOMPLETE) {
		cr->next_free = w->free_reqs;
		w->free_reqs = cr;
		w->num_free_reqs++;
		if (!cc->head_timer_armed) {
			cc->head_timer_armed = true;
			client_arm_timer(cc, lim->client_header_timeout);
		}
		return false;
	}
	client_clear_timer(cc);
	cc->head_timer_armed = false;
	client_begin_request(cc, cr);
	if (rc == H1_ERROR) {
		if (log_enabled(LOG_DEBUG)) {
			struct log_line l;
			log_begin(&l, LOG_DEBUG, "bad request");
			log_str(&l, "client_ip", cc->origin.ip);
			log_int(&l, "status", status);
			log_str(&l, "why", why);
			log_end(&l);
		}
		client_set_request_id(cr, w);
		cr->body_done = false; /* whatever follows is not trusted: close after the answer */
		client_respond_error(cr, status ? status : 400, reason_for_parse_status(status), NULL);
		return false;
	}
	client_keep_head(cr, p, (size_t)rc);
	if (evbuffer_drain(in, (size_t)rc) != 0) {
		client_close_soon(cc, false);
		return false;
	}
	client_fill_from_head(cr);
	client_set_request_id(cr, w);
	if (!cr->h1.keep_alive || w->draining)
		cc->keep_alive = false;
	client_route(cr);
	return cc->state == CLIENT_WAIT_HEAD;
}

static void client_handle_input(struct client_conn *cc)
{
	/* a loop, not recursion: a client may pipeline thousands of small requests */
	if (cc->in_input_loop)
		return;
	cc->in_input_loop = true;
	while (cc->state == CLIENT_WAIT_HEAD && client_try_head(cc))
		;
	cc->in_input_loop = false;
}

void client_finish_request(struct client_req *cr)
{
	struct client_conn *cc = cr->conn;
	/* nothing unread (the body, a pipelined request): the client is done
	 * sending, so the socket may close as soon as the response is out, the
	 * way nginx decides; a close with unread bytes would reset the
	 * connection and could destroy the response before the client reads it */
	cc->linger = !cr->body_done || (cc->in && evbuffer_get_length(cc->in) > 0); /* a stream may have no in */
	client_log(cr);
	client_release_req(cc);
	cc->requests++;
	if (!cc->keep_alive) {
		client_close_soon(cc, true);
		return;
	}
	cc->state = CLIENT_WAIT_HEAD;
	client_body_timer(cc, false);
	bufferevent_enable(cc->bev, EV_READ);
	if (evbuffer_get_length(cc->in) > 0) {
		if (!cc->in_input_loop)
			client_handle_input(cc);
		return;
	}
	client_arm_timer(cc, client_conf(cc)->limits.keepalive_timeout);
}

void client_abort(struct client_req *cr, enum reason reason)
{
	struct client_conn *cc = cr->conn;
	if (reason != REASON_NONE && cr->req.reason == REASON_NONE)
		cr->req.reason = reason;
	client_log(cr);
	client_release_req(cc);
	client_close_soon(cc, false);
}

/* ---- libevent callbacks ---- */

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	struct client_conn *cc = arg;
	switch (cc->state) {
	case CLIENT_WAIT_HEAD:
		client_handle_input(cc);
		break;
	case CLIENT_PROXY:
		if (cc->cr && !cc->cr->body_done) {
			/* a large body: take what the socket holds beyond libevent's 4 KiB step */
			if (cc->origin.plain_socket && evbuffer_get_length(bufferevent_get_input(bev)) >= 4096)
				io_read_more(bev, PROXY_HIGH_WATER);
			proxy_on_client_data(cc->cr);
		}
		break;
	case CLIENT_CLOSING: {
		/* lingering: whatever the client still sends is read and dropped */
		struct evbuffer *in = bufferevent_get_input(bev);
		evbuffer_drain(in, evbuffer_get_length(in));
		break;
	}
	case CLIENT_ACCESS:
	default:
		/* bytes of the next request wait in the input buffer (bounded by its high-water mark) */
		break;
	}
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
	struct client_conn *cc = arg;
	io_flusher_drained(&cc->flusher);
	if (cc->state == CLIENT_CLOSING) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) > 0 || cc->lingering)
			return;
		/* all sent (after a TLS close_notify): close, or half-close and
		 * linger so that the client can read it all while it still sends */
		int half_closed = tls_bev_shutdown(bev, cc->linger);
		if (half_closed == 0)
			return; /* TLS records still on their way to the socket: called again */
		cc->lingering = true;
		if (half_closed < 0 || !cc->linger) {
			cc->close_now = true;
			event_active(cc->timer, EV_TIMEOUT, 1);
			return;
		}
		struct evbuffer *in = bufferevent_get_input(bev);
		evbuffer_drain(in, evbuffer_get_length(in));
		bufferevent_set_timeouts(bev, NULL, NULL);
		bufferevent_enable(bev, EV_READ);
		client_arm_timer(cc, CLIENT_LINGER_MS);
		return;
	}
	if (cc->state == CLIENT_PROXY && cc->cr)
		proxy_on_client_drained(cc->cr);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct client_conn *cc = arg;
	if (cc->state == CLIENT_CLOSING) {
		client_free(cc, REASON_NONE);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		struct client_req *cr = cc->cr;
		if ((what & BEV_EVENT_READING) && cr && cc->state == CLIENT_PROXY && !cr->response_started) {
			/* the client stopped sending its body */
			proxy_abort(cr);
			cc->state = CLIENT_ACCESS; /* no longer proxying: respond normally */
			cr->body_done = false;
			client_respond_error(cr, 408, REASON_CLIENT_TIMEOUT, NULL);
			return;
		}
		client_free(cc, REASON_CLIENT_TIMEOUT);
		return;
	}
	/* EOF or error from the client */
	client_free(cc, REASON_CLIENT_RESET);
}

static void client_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct client_conn *cc = arg;
	cc->timer_at_us = 0; /* a non-persistent timer is no longer pending once it runs */
	if (cc->deadline_us) {
		if (worker_mono_us(cc->w) < cc->deadline_us) {
			client_timer_at(cc, cc->deadline_us);
			return;
		}
		cc->deadline_us = 0;
	} else if (!(cc->state == CLIENT_CLOSING && cc->close_now)) {
		return; /* a timer left from an earlier deadline: nothing is due */
	}
	switch (cc->state) {
	case CLIENT_CLOSING:
		client_free(cc, REASON_NONE);
		return;
	case CLIENT_ACCESS:
		if (cc->cr && cc->cr->suspended) {
			struct client_req *cr = cc->cr;
			const struct module *m = module_list[cr->access_next - 1];
			cr->suspended = false;
			if (m->access_cancel)
				m->access_cancel(&cr->req, cr->req.snap->module_state[cr->access_next - 1],
				                 cc->w->module_state[cr->access_next - 1]);
			client_respond_error(cr, 503, REASON_POLICY_ERROR, NULL);
		}
		return;
	case CLIENT_WAIT_HEAD: {
		struct evbuffer *in = cc->in;
		if (evbuffer_get_length(in) == 0) {
			/* idle keep-alive connection: close quietly */
			client_free(cc, REASON_NONE);
			return;
		}
		/* a head that did not complete in time */
		struct client_req *cr = client_new_req(cc->w);
		if (!cr) {
			client_free(cc, REASON_NONE);
			return;
		}
		client_begin_request(cc, cr);
		client_set_request_id(cr, cc->w);
		cr->body_done = false;
		evbuffer_drain(in, evbuffer_get_length(in));
		client_respond_error(cr, 408, REASON_CLIENT_TIMEOUT, NULL);
		return;
	}
	case CLIENT_PROXY:
		/* an HTTP/2 stream's body stopped coming (a connection has its bufferevent read timeout) */
		if (cc->stream && cc->cr && !cc->cr->body_done) {
			struct client_req *cr = cc->cr;
			proxy_abort(cr);
			if (!cr->response_started) {
				cc->state = CLIENT_ACCESS; /* no longer proxying: respond normally */
				client_respond_error(cr, 408, REASON_CLIENT_TIMEOUT, NULL);
			} else {
				client_abort(cr, REASON_CLIENT_TIMEOUT);
			}
		}
		return;
	default:
		return;
	}
}

/* ---- worker-wide ---- */

void client_drain_all(struct worker *w)
{
	struct client_conn *cc = w->conns;
	while (cc) {
		struct client_conn *next = cc->next;
		if (cc->state == CLIENT_WAIT_HEAD && evbuffer_get_length(cc->in) == 0)
			client_free(cc, REASON_NONE);
		else
			cc->keep_alive = false;
		cc = next;
	}
}

void client_close_all(struct worker *w)
{
	while (w->conns)
		client_free(w->conns, REASON_DRAINING);
}

void client_free_reqs(struct worker *w)
{
	while (w->free_reqs) {
		struct client_req *cr = w->free_reqs;
		w->free_reqs = cr->next_free;
		arena_free(&cr->req.arena);
		free(cr);
	}
	w->num_free_reqs = 0;
}

/* ---- HTTP/2 streams ---- */

struct client_req *client_stream_req(struct worker *w)
{
	struct client_req *cr = client_new_req(w);
	if (!cr)
		return NULL;
	struct h1_request *h = &cr->h1;
	h->method = h->target = h->path = h->authority = NULL;
	h->method_len = h->target_len = h->path_len = h->authority_len = 0;
	h->body = H1_BODY_NONE;
	h->content_length = 0;
	h->keep_alive = false;
	h->expect_continue = false;
	h->upgrade = false;
	return cr;
}

void client_stream_discard_req(struct worker *w, struct client_req *cr)
{
	client_recycle_req(w, cr);
}

struct client_conn *client_stream_new(struct worker *w, size_t listener, const struct client_origin *o,
                                      struct bufferevent *transport, struct h2_stream *st, struct evbuffer *in,
                                      struct evbuffer *out)
{
	struct client_conn *cc = calloc(1, sizeof(*cc));
	if (!cc)
		return NULL;
	cc->w = w;
	cc->listener = listener;
	cc->origin = *o;
	cc->transport = transport;
	cc->stream = st;
	cc->in = in;
	cc->out = out;
	cc->state = CLIENT_WAIT_HEAD;
	cc->keep_alive = false; /* one request per stream */
	return cc;
}

void client_stream_begin(struct client_conn *cc, struct client_req *cr, int early_status)
{
	client_begin_request(cc, cr);
	client_fill_from_head(cr);
	client_set_request_id(cr, cc->w);
	if (early_status) {
		client_respond_error(cr, early_status, reason_for_parse_status(early_status), NULL);
		return;
	}
	client_route(cr);
}

void client_stream_body(struct client_conn *cc)
{
	struct client_req *cr = cc->cr;
	if (cc->state != CLIENT_PROXY || !cr || cr->body_done)
		return;
	if (cc->body_timer_on)
		client_arm_timer(cc, client_conf(cc)->limits.client_body_timeout);
	proxy_on_client_data(cr);
}

void client_stream_drained(struct client_conn *cc)
{
	if (cc->state == CLIENT_PROXY && cc->cr)
		proxy_on_client_drained(cc->cr);
}

void client_stream_close(struct client_conn *cc, enum reason reason)
{
	client_free(cc, reason);
}
