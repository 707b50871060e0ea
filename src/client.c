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
#include <errno.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "clock.h"
#include "conn_sock.h"
#include "counters.h"
#include "exchange.h"
#include "log.h"
#include "pipeline.h"
#include "snapshot.h"
#include "tls_io.h"
#include "worker.h"

/* How long a closing connection keeps reading (and discarding) after our last
 * byte, so that unread request bytes do not turn our close into a reset that
 * destroys the response before the client read it. */
#define CLIENT_LINGER_MS 2000

/* A response sent before its request body was read (a refusal: 429, 403,
 * 503): the rest of a Content-Length body up to this size is read and
 * dropped and the connection kept, as nginx and HAProxy do. A client
 * refused at overload then keeps its connection instead of reconnecting
 * (one more TCP and TLS handshake per refusal, and a client that cannot
 * tell a close after a refusal from a lost connection). */
#define CLIENT_DISCARD_MAX (64 * 1024)

_Static_assert(FIELD_HOP == H1_HDR_HOP, "the parser's flags are the request fields' flags");

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);
static void client_handle_input(struct client_conn *cc);
static void client_close_soon(struct client_conn *cc, bool flush_first);
static void client_free(struct client_conn *cc, enum reason reason);
static void client_sock_read_cb(evutil_socket_t fd, short what, void *arg);
static void client_on_drained(struct client_conn *cc);
static void client_sock_write_cb(evutil_socket_t fd, short what, void *arg);
static void client_begin(struct client_conn *cc, struct exchange *ex);
static bool client_discard(struct client_conn *cc);

static const struct conf *client_conf(const struct client_conn *cc)
{
	return cc->w->snap->conf;
}

/* ---- deadlines ---- */

/* A connection has one deadline at a time, on the queue of its kind (all
 * deadlines of a kind have the same duration: conn_timer.h). */
enum client_deadline {
	CLIENT_DL_HEAD,   /* limits.client_header_timeout, from the head's first byte */
	CLIENT_DL_IDLE,   /* limits.keepalive_timeout */
	CLIENT_DL_BODY,   /* limits.client_body_timeout between reads (own socket; a bufferevent has its own) */
	CLIENT_DL_LINGER, /* CLIENT_LINGER_MS */
	CLIENT_DL_NOW,    /* close from a safe point */
	CLIENT_DL_KINDS
};

/* Per worker (w->client), made with its first connection. */
struct client_worker {
	struct conn_timer_queue q[CLIENT_DL_KINDS];
	struct conn_sock_pool bufs;
	/* an idle connection's next head is read here and parsed in place
	 * (client_sock_read_cb): no input buffer for the common request that
	 * is a head alone */
	char scratch[16 * 1024];
};

static size_t client_in_len(const struct client_conn *cc)
{
	return cc->in ? evbuffer_get_length(cc->in) : 0;
}

static size_t client_out_len(const struct client_conn *cc)
{
	return cc->out ? evbuffer_get_length(cc->out) : 0;
}

static void client_arm_timer(struct client_conn *cc, enum client_deadline kind, conf_msec ms)
{
	conn_timer_set(&cc->w->client->q[kind], &cc->timer, clock_mono_us() + ms * 1000);
}

static void client_clear_timer(struct client_conn *cc)
{
	conn_timer_clear(&cc->timer);
}

static bool client_timer_is(const struct client_conn *cc, enum client_deadline kind)
{
	return cc->timer.q == &cc->w->client->q[kind];
}

static void client_deadline(struct client_conn *cc, enum client_deadline kind)
{
	switch (kind) {
	case CLIENT_DL_HEAD:
	case CLIENT_DL_IDLE: {
		if (cc->state != CLIENT_WAIT_HEAD || client_in_len(cc) == 0) {
			/* idle keep-alive connection: close quietly */
			client_free(cc, REASON_NONE);
			return;
		}
		/* a head that did not complete in time */
		struct exchange *ex = pipeline_exchange_new(cc->w);
		if (!ex) {
			client_free(cc, REASON_NONE);
			return;
		}
		client_begin(cc, ex);
		evbuffer_drain(cc->in, evbuffer_get_length(cc->in));
		pipeline_start(ex, 408);
		return;
	}
	case CLIENT_DL_BODY: {
		struct exchange *ex = cc->ex;
		if (cc->state == CLIENT_BUSY && ex && (ex->phase == EX_PHASE_PROXY || ex->phase == EX_PHASE_BODY) &&
		    !ex->body_done && !ex->response_started) {
			/* the client stopped sending its body */
			pipeline_body_timeout(ex);
			return;
		}
		client_free(cc, REASON_CLIENT_TIMEOUT);
		return;
	}
	case CLIENT_DL_LINGER:
	case CLIENT_DL_NOW:
	default:
		client_free(cc, REASON_NONE);
		return;
	}
}

#define CLIENT_DEADLINE_CB(name, kind)                                                                             \
	static void name(struct conn_timer *t)                                                                    \
	{                                                                                                          \
		client_deadline((struct client_conn *)((char *)t - offsetof(struct client_conn, timer)), kind);         \
	}
CLIENT_DEADLINE_CB(client_head_expired, CLIENT_DL_HEAD)
CLIENT_DEADLINE_CB(client_idle_expired, CLIENT_DL_IDLE)
CLIENT_DEADLINE_CB(client_body_expired, CLIENT_DL_BODY)
CLIENT_DEADLINE_CB(client_linger_expired, CLIENT_DL_LINGER)
CLIENT_DEADLINE_CB(client_now_expired, CLIENT_DL_NOW)

static struct client_worker *client_worker_get(struct worker *w)
{
	if (w->client)
		return w->client;
	struct client_worker *cw = calloc(1, sizeof(*cw));
	if (!cw)
		return NULL;
	static const conn_timer_cb cbs[CLIENT_DL_KINDS] = {
	    client_head_expired, client_idle_expired, client_body_expired, client_linger_expired, client_now_expired};
	for (int i = 0; i < CLIENT_DL_KINDS; i++) {
		if (conn_timer_queue_init(&cw->q[i], w->base, cbs[i]) != 0) {
			for (int j = 0; j <= i; j++)
				conn_timer_queue_free(&cw->q[j]);
			free(cw);
			return NULL;
		}
	}
	w->client = cw;
	return cw;
}

void client_worker_free(struct worker *w)
{
	struct client_worker *cw = w->client;
	if (!cw)
		return;
	for (int i = 0; i < CLIENT_DL_KINDS; i++)
		conn_timer_queue_free(&cw->q[i]);
	conn_sock_pool_free(&cw->bufs);
	free(cw);
	w->client = NULL;
}

/* ---- connection lifecycle ---- */

/* The protocol a connection is counted under (counters.h). */
static enum ctr_protocol client_protocol(const struct client_conn *cc)
{
	return cc->origin.scheme && strcmp(cc->origin.scheme, "https") == 0 ? CTR_PROTO_HTTPS : CTR_PROTO_HTTP1;
}

/* inet_ntop's text for an IPv4 address: glibc's goes through sprintf, about
 * 1,700 instructions, and every accepted connection is formatted once or
 * twice (callgrind: 7% of a connection-per-request's). */
static void client_ipv4_text(const struct in_addr *a, char *out)
{
	const unsigned char *b = (const unsigned char *)&a->s_addr; /* network order: first byte first */
	for (int i = 0; i < 4; i++) {
		unsigned v = b[i];
		if (v >= 100)
			*out++ = (char)('0' + v / 100);
		if (v >= 10)
			*out++ = (char)('0' + v / 10 % 10);
		*out++ = (char)('0' + v % 10);
		*out++ = i < 3 ? '.' : '\0';
	}
}

void client_origin_from_sockaddr(struct client_origin *o, const struct sockaddr *sa)
{
	memset(o, 0, sizeof(*o));
	o->scheme = "http";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		client_ipv4_text(&in->sin_addr, o->ip);
		o->port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, o->ip, sizeof(o->ip));
		o->port = ntohs(in6->sin6_port);
	}
}

/* The input's bound: a pipelining client is paused by the kernel's window,
 * not by our memory (one maximal head or one body step). */
static size_t client_read_high(const struct client_conn *cc)
{
	const struct conf_limits *lim = &client_conf(cc)->limits;
	return lim->header_bytes + 1 > PROXY_HIGH_WATER ? lim->header_bytes + 1 : PROXY_HIGH_WATER;
}

/* Own socket: the read event is added exactly while reading is wanted. */
static void client_sock_update_reading(struct client_conn *cc)
{
	bool want = !cc->read_paused && !cc->read_full && !cc->close_now;
	if (want == cc->reading)
		return;
	if ((want ? event_add(cc->ev, NULL) : event_del(cc->ev)) != 0) {
		log_msg(LOG_ERROR, "cannot change a client socket's read watch");
		return;
	}
	cc->reading = want;
}

/* Own socket: after input was taken, give an empty buffer back and resume
 * reading stopped at the bound. */
static void client_sock_input_taken(struct client_conn *cc)
{
	if (cc->bev)
		return;
	conn_sock_buf_put(&cc->w->client->bufs, &cc->in);
	if (cc->read_full && client_in_len(cc) < client_read_high(cc)) {
		cc->read_full = false;
		client_sock_update_reading(cc);
	}
}

/* Own socket: the input buffer, taken from the pool on the first byte. */
static struct evbuffer *client_in(struct client_conn *cc)
{
	if (!cc->in && !cc->bev)
		cc->in = conn_sock_buf_get(&cc->w->client->bufs);
	return cc->in;
}

/* Own socket: the output buffer, taken from the pool on the first byte. */
static struct evbuffer *client_out(struct client_conn *cc)
{
	if (!cc->out && !cc->bev)
		cc->out = conn_sock_buf_get(&cc->w->client->bufs);
	return cc->out;
}

static void client_sock_flush(struct io_flusher *f, void *arg);

/* Common to both transports: registered, in the worker's list, with the
 * header deadline running. */
static void client_start(struct client_conn *cc)
{
	struct worker *w = cc->w;
	cc->next = w->conns;
	if (w->conns)
		w->conns->prev = cc;
	w->conns = cc;
	w->num_conns++;
	worker_conn_hold_take(w, cc->origin.ip);
	counters_connection(w->counters, client_protocol(cc), true);
	cc->head_timer_armed = true;
	client_arm_timer(cc, CLIENT_DL_HEAD, client_conf(cc)->limits.client_header_timeout);
}

void client_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa, int salen)
{
	(void)salen;
	int one = 1;
	/* responses go out as soon as they are complete; latency beats packet count here */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 && sa->sa_family != AF_UNIX)
		log_msg(LOG_DEBUG, "TCP_NODELAY failed on a client socket");
	/* already non-blocking: the worker accepts with SOCK_NONBLOCK */
	struct client_conn *cc = client_worker_get(w) ? calloc(1, sizeof(*cc)) : NULL;
	if (!cc) {
		close(fd);
		return;
	}
	cc->w = w;
	cc->listener = listener;
	cc->state = CLIENT_WAIT_HEAD;
	cc->keep_alive = true;
	client_origin_from_sockaddr(&cc->origin, sa);
	cc->origin.plain_socket = true;
	cc->fd = fd;
	cc->ev = event_new(w->base, fd, EV_READ | EV_PERSIST, client_sock_read_cb, cc);
	if (!cc->ev) {
		close(fd);
		free(cc);
		return;
	}
	io_flusher_init_cb(&cc->flusher, &w->flush_queue, client_sock_flush, cc);
	client_sock_update_reading(cc);
	client_start(cc);
}

struct client_conn *client_accept_bev(struct worker *w, size_t listener, struct bufferevent *bev,
                                      const struct client_origin *o)
{
	struct client_conn *cc = client_worker_get(w) ? calloc(1, sizeof(*cc)) : NULL;
	if (!cc) {
		bufferevent_free(bev);
		return NULL;
	}
	cc->w = w;
	cc->listener = listener;
	cc->state = CLIENT_WAIT_HEAD;
	cc->keep_alive = true;
	cc->origin = *o;
	cc->fd = -1;
	cc->bev = bev;
	cc->in = bufferevent_get_input(bev);
	cc->out = bufferevent_get_output(bev);
	const struct conf *c = client_conf(cc);
	/* the read high-water mark is installed when the input first reaches it
	 * (client_bound_input) */
	bufferevent_setwatermark(cc->bev, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
	bufferevent_setcb(cc->bev, client_read_cb, client_write_cb, client_event_cb, cc);
	struct timeval send_tv = worker_timeval(w, c->limits.send_timeout);
	if (bufferevent_set_timeouts(cc->bev, NULL, &send_tv) != 0 || bufferevent_enable(cc->bev, EV_READ) != 0) {
		bufferevent_free(cc->bev);
		free(cc);
		return NULL;
	}
	/* without a flusher the bufferevent writes as usual: slower, still correct */
	if (o->plain_socket && io_flusher_init_explicit(&cc->flusher, &w->flush_queue, cc->bev) != 0)
		log_msg(LOG_DEBUG, "direct writes unavailable on a client connection");
	client_start(cc);
	/* bytes may already be waiting (an internal stream written before we got it) */
	if (evbuffer_get_length(cc->in) > 0)
		client_handle_input(cc);
	return cc;
}

/* Ends the connection now; an exchange still in the pipeline is cancelled
 * (a suspended module told, the proxy released) and logged with reason. */
static void client_free(struct client_conn *cc, enum reason reason)
{
	struct worker *w = cc->w;
	if (cc->ex) {
		struct exchange *ex = cc->ex;
		cc->ex = NULL;
		pipeline_cancel(ex, reason);
	}
	if (cc->prev)
		cc->prev->next = cc->next;
	else
		w->conns = cc->next;
	if (cc->next)
		cc->next->prev = cc->prev;
	client_clear_timer(cc);
	io_flusher_free(&cc->flusher);
	if (cc->bev) {
		bufferevent_free(cc->bev);
	} else {
		event_free(cc->ev);
		if (cc->wev)
			event_free(cc->wev);
		close(cc->fd);
		struct conn_sock_pool *bufs = &w->client->bufs;
		if (cc->in)
			evbuffer_drain(cc->in, evbuffer_get_length(cc->in));
		if (cc->out)
			evbuffer_drain(cc->out, evbuffer_get_length(cc->out));
		conn_sock_buf_put(bufs, &cc->in);
		conn_sock_buf_put(bufs, &cc->out);
	}
	worker_conn_hold_release(w, cc->origin.ip);
	counters_connection(w->counters, client_protocol(cc), false);
	free(cc);
	worker_conn_closed(w);
}

/* Close from a safe point: never free cc inside a call chain that may still
 * use it; the timer fires at once (or after the flush and linger). */
static void client_close_soon(struct client_conn *cc, bool flush_first)
{
	cc->state = CLIENT_CLOSING;
	cc->keep_alive = false;
	if (flush_first && client_out_len(cc) > 0) {
		/* the write callback takes it from here once the output is flushed.
		 * Reading stays on (CLOSING drops what arrives): switching it off and
		 * on again for the linger costs two epoll_ctl per closed connection */
		client_clear_timer(cc);
		return;
	}
	if (flush_first) {
		client_on_drained(cc);
		return;
	}
	cc->close_now = true;
	if (cc->bev)
		bufferevent_disable(cc->bev, EV_READ | EV_WRITE);
	else
		client_sock_update_reading(cc);
	conn_timer_set(&cc->w->client->q[CLIENT_DL_NOW], &cc->timer, 0);
}

/* Arm (reading_body) or clear the body read timeout; the send timeout stays. */
static void client_body_timer(struct client_conn *cc, bool reading_body)
{
	/* re-adding the events costs more than the check: only change what changes */
	if (cc->body_timer_on == reading_body)
		return;
	cc->body_timer_on = reading_body;
	const struct conf *c = client_conf(cc);
	if (!cc->bev) {
		if (reading_body && !cc->read_paused)
			client_arm_timer(cc, CLIENT_DL_BODY, c->limits.client_body_timeout);
		else if (!reading_body && client_timer_is(cc, CLIENT_DL_BODY))
			client_clear_timer(cc);
		return;
	}
	struct timeval send_tv = worker_timeval(cc->w, c->limits.send_timeout);
	struct timeval body_tv = worker_timeval(cc->w, c->limits.client_body_timeout);
	bufferevent_set_timeouts(cc->bev, reading_body ? &body_tv : NULL, &send_tv);
}

/* ---- the exchange's operations, as HTTP/1.1 ---- */

/* Every add to the output goes through here: the flusher (plain sockets)
 * does not watch the output with an evbuffer callback, which would run on
 * every add and drain and cost a callback entry per connection. On a TLS
 * connection the flusher is not installed (no-op): the filter writes. */
static int client_out_add(struct client_conn *cc, const void *bytes, size_t n)
{
	struct evbuffer *out = client_out(cc);
	if (!out || evbuffer_add(out, bytes, n) != 0)
		return -1;
	io_flusher_schedule(&cc->flusher);
	return 0;
}

/* A response head whose body has not arrived yet (the upstream's head came
 * in a read of its own, as nginx's sendfile path sends it) waits for the
 * body's first bytes, or the end, and leaves with them in one write (over
 * TLS: one record) instead of a write of its own; nginx's postpone_output.
 * Only for a body of known length: a streamed one (events, long polls) may
 * wait upstream for a while, and its head goes out at once. */
static void client_hold_head(struct client_conn *cc, bool hold)
{
	if (cc->head_held == hold)
		return;
	cc->head_held = hold;
	if (cc->bev)
		tls_bev_hold(cc->bev, hold);
	else if (!hold && client_out_len(cc) > 0)
		io_flusher_schedule(&cc->flusher);
}

/* Whether the connection may go on after this response although the request
 * body is not read to its end: its rest is small and framed by
 * Content-Length, so it can be dropped (client_discard). Not when the client
 * may still wait for 100-continue before sending it (it may never come), nor
 * after an answer about the request's own shape (nginx closes after those). */
static bool client_can_discard(const struct exchange *ex, int status)
{
	if (ex->h1_body != H1_BODY_LENGTH || ex->h1_body_remaining > CLIENT_DISCARD_MAX || ex->h1.expect_continue)
		return false;
	return status != 400 && status != 408 && status != 413 && status != 414 && status != 431;
}

static long client_send_head(struct exchange *ex, const struct ex_head *h)
{
	struct client_conn *cc = ex->conn;
	const struct fields *f = h->fields;
	/* the connection can only continue if this response has a known end and
	 * the request body has been read in full (unread bytes would be taken
	 * for the next request) */
	if ((!ex->body_done && !client_can_discard(ex, h->status)) || cc->w->draining || cc->drain)
		cc->keep_alive = false;
	cc->chunked_out = false;
	cc->trailers_out = false;
	if (h->body == EX_BODY_STREAM) {
		if (cc->http10)
			cc->keep_alive = false; /* HTTP/1.0 has no chunking: the close ends the body */
		else
			cc->chunked_out = true;
	}
	const char *phrase = h->phrase;
	size_t phrase_len = h->phrase_len;
	if (!phrase) {
		phrase = http_status_text(h->status);
		phrase_len = strlen(phrase);
	}
	/* built in the arena and added to the output once: every evbuffer_add
	 * runs the buffer's callbacks */
	size_t cap = 96 + phrase_len;
	for (size_t i = 0; i < f->n; i++)
		cap += f->v[i].name_len + f->v[i].value_len + 4;
	char *buf = arena_alloc(&ex->req.arena, cap), *p = buf;
	int status = h->status < 100 || h->status > 999 ? 500 : h->status;
	memcpy(p, "HTTP/1.1 ", 9);
	p += 9;
	*p++ = (char)('0' + status / 100);
	*p++ = (char)('0' + status / 10 % 10);
	*p++ = (char)('0' + status % 10);
	*p++ = ' ';
	memcpy(p, phrase, phrase_len);
	p += phrase_len;
	*p++ = '\r';
	*p++ = '\n';
	for (size_t i = 0; i < f->n; i++) {
		memcpy(p, f->v[i].name, f->v[i].name_len);
		p += f->v[i].name_len;
		*p++ = ':';
		*p++ = ' ';
		memcpy(p, f->v[i].value, f->v[i].value_len);
		p += f->v[i].value_len;
		*p++ = '\r';
		*p++ = '\n';
	}
	static const char te[] = "transfer-encoding: chunked\r\n";
	static const char close_hdr[] = "connection: close\r\n\r\n";
	static const char ka_hdr[] = "connection: keep-alive\r\n\r\n";
	if (cc->chunked_out) {
		memcpy(p, te, sizeof te - 1);
		p += sizeof te - 1;
	}
	const char *end = !cc->keep_alive ? close_hdr : cc->http10 ? ka_hdr : "\r\n";
	size_t end_len = !cc->keep_alive ? sizeof close_hdr - 1 : cc->http10 ? sizeof ka_hdr - 1 : 2;
	memcpy(p, end, end_len);
	p += end_len;
	if (h->body == EX_BODY_LENGTH) {
		client_hold_head(cc, true);
		struct evbuffer *out = client_out(cc);
		if (!out || evbuffer_add(out, buf, (size_t)(p - buf)) != 0)
			return -1;
	} else if (client_out_add(cc, buf, (size_t)(p - buf)) != 0) {
		return -1;
	}
	return (long)(p - buf);
}

static long client_send_data(struct exchange *ex, struct evbuffer *src, const char *bytes, size_t n)
{
	struct client_conn *cc = ex->conn;
	long queued = (long)n;
	if (n == 0)
		return 0;
	client_hold_head(cc, false); /* the flush it schedules comes after the add below */
	struct evbuffer *out = client_out(cc);
	if (!out)
		return -1;
	if (cc->chunked_out) {
		char line[H1_CHUNK_LINE_MAX];
		size_t k = h1_chunk_size_line(line, n);
		if (evbuffer_add(out, line, k) != 0)
			return -1;
		queued += (long)k + 2;
	}
	if (src ? evbuffer_remove_buffer(src, out, n) != (int)n : evbuffer_add(out, bytes, n) != 0)
		return -1;
	if (cc->chunked_out && evbuffer_add(out, "\r\n", 2) != 0)
		return -1;
	io_flusher_schedule(&cc->flusher);
	return queued;
}

static long client_send_trailers(struct exchange *ex, const struct fields *t)
{
	struct client_conn *cc = ex->conn;
	if (!cc->chunked_out || cc->trailers_out)
		return 0; /* a close-delimited body (HTTP/1.0) has nowhere to put them */
	struct evbuffer *out = client_out(cc);
	if (!out)
		return -1;
	size_t before = evbuffer_get_length(out);
	cc->trailers_out = true;
	evbuffer_add(out, "0\r\n", 3);
	for (size_t i = 0; i < t->n; i++) {
		evbuffer_add(out, t->v[i].name, t->v[i].name_len);
		evbuffer_add(out, ": ", 2);
		evbuffer_add(out, t->v[i].value, t->v[i].value_len);
		evbuffer_add(out, "\r\n", 2);
	}
	io_flusher_schedule(&cc->flusher);
	return (long)(evbuffer_get_length(out) - before);
}

static size_t client_buffered(const struct exchange *ex)
{
	const struct client_conn *cc = ex->conn;
	return client_out_len(cc);
}

static long client_finish(struct exchange *ex, enum ex_end how)
{
	struct client_conn *cc = ex->conn;
	client_hold_head(cc, false);
	/* what is left of the request body, dropped before the next head if the connection goes on */
	cc->discard = ex->body_done || ex->h1_body != H1_BODY_LENGTH ? 0 : ex->h1_body_remaining;
	if (how != EX_END_COMPLETE || !cc->chunked_out)
		return 0;
	/* the last chunk (after trailers: only the blank line) */
	if (cc->trailers_out)
		return client_out_add(cc, "\r\n", 2) == 0 ? 2 : -1;
	return client_out_add(cc, "0\r\n\r\n", 5) == 0 ? 5 : -1;
}

static void client_release(void *conn, enum ex_end how, bool body_unread)
{
	struct client_conn *cc = conn;
	cc->ex = NULL;
	cc->requests++;
	if (how != EX_END_COMPLETE) {
		client_close_soon(cc, false);
		return;
	}
	/* nothing unread (the body, a pipelined request): the client is done
	 * sending, so the socket may close as soon as the response is out, the
	 * way nginx decides; a close with unread bytes would reset the
	 * connection and could destroy the response before the client reads it */
	cc->linger = body_unread || client_in_len(cc) > 0;
	if (!cc->keep_alive) {
		client_close_soon(cc, true);
		return;
	}
	cc->state = CLIENT_WAIT_HEAD;
	if (!cc->bev) {
		cc->read_paused = false;
		client_sock_update_reading(cc);
	} else if (!(bufferevent_get_enabled(cc->bev) & EV_READ)) {
		/* reading is nearly always still on (only a paused body turns it
		 * off): bufferevent_enable re-adds the read event even then, ~180
		 * instructions per keep-alive request */
		bufferevent_enable(cc->bev, EV_READ);
	}
	/* the rest of a refused request's body is read under the body's read timeout */
	client_body_timer(cc, cc->discard > 0);
	if (cc->discard > 0 && !cc->bev)
		client_arm_timer(cc, CLIENT_DL_BODY, client_conf(cc)->limits.client_body_timeout);
	if (client_in_len(cc) > 0) {
		if (!cc->in_input_loop)
			client_handle_input(cc);
		return;
	}
	if (cc->discard == 0)
		client_arm_timer(cc, CLIENT_DL_IDLE, client_conf(cc)->limits.keepalive_timeout);
}

static void client_start_body(struct exchange *ex)
{
	struct client_conn *cc = ex->conn;
	if (ex->h1.expect_continue && client_in_len(cc) == 0) {
		/* the client waits for our word before sending the body; the upstream
		 * never sees Expect (we answered it) */
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		if (client_out_add(cc, cont, sizeof(cont) - 1) != 0)
			log_msg(LOG_ERROR, "out of memory answering Expect: 100-continue");
	}
	client_body_timer(cc, true);
}

/* The request body, decoded from its HTTP/1 framing: a Content-Length body
 * moves chain by chain (no copy); a chunked one is unchunked here (its data
 * runs move in place, its trailers become fields). */
static ssize_t client_read_body(struct exchange *ex, struct evbuffer *dst, size_t max, int *status,
                                enum reason *reason)
{
	struct client_conn *cc = ex->conn;
	struct evbuffer *in = cc->in;
	size_t moved = 0;
	while (in && !ex->body_done && moved < max) {
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			break;
		if (ex->h1_body == H1_BODY_LENGTH) {
			size_t n = avail < ex->h1_body_remaining ? avail : (size_t)ex->h1_body_remaining;
			if (n > max - moved)
				n = max - moved;
			if (evbuffer_remove_buffer(in, dst, n) != (int)n) {
				*status = 400;
				*reason = REASON_CLIENT_RESET;
				return -1;
			}
			ex->h1_body_remaining -= n;
			moved += n;
			if (ex->h1_body_remaining == 0)
				ex->body_done = true;
			continue;
		}
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		enum h1_chunk_event ev;
		const char *line = NULL;
		size_t line_len = 0;
		ssize_t n = h1_chunked_feed(&ex->h1_chunk, v.iov_base, v.iov_len, &ev, &line, &line_len);
		if (n < 0) {
			*status = 400;
			*reason = REASON_BAD_REQUEST;
			return -1;
		}
		if (ev == H1_CHUNK_NEED_MORE) {
			if (v.iov_len >= avail)
				break;
			/* a line straddles buffer chunks: make it contiguous (bounded by the line limits) */
			size_t want = avail < 65536 ? avail : 65536;
			if (!evbuffer_pullup(in, (ssize_t)want)) {
				*status = 400;
				*reason = REASON_BAD_REQUEST;
				return -1;
			}
			if (want <= v.iov_len)
				break;
			continue;
		}
		switch (ev) {
		case H1_CHUNK_DATA:
			if (evbuffer_remove_buffer(in, dst, (size_t)n) != (int)n) {
				*status = 400;
				*reason = REASON_CLIENT_RESET;
				return -1;
			}
			moved += (size_t)n;
			break;
		case H1_CHUNK_TRAILER:
			fields_add_line(&ex->trailers, line, line_len); /* copied: the input moves on */
			evbuffer_drain(in, (size_t)n);
			break;
		case H1_CHUNK_DONE:
			evbuffer_drain(in, (size_t)n);
			ex->body_done = true;
			break;
		case H1_CHUNK_NONE:
		default:
			evbuffer_drain(in, (size_t)n);
			break;
		}
	}
	/* the body is complete: stop the body timer, keep reading for the next request or EOF */
	if (ex->body_done)
		client_body_timer(cc, false);
	client_sock_input_taken(cc);
	return (ssize_t)moved;
}

static void client_pause_body(struct exchange *ex, bool paused)
{
	struct client_conn *cc = ex->conn;
	if (cc->bev) {
		if (paused)
			bufferevent_disable(cc->bev, EV_READ);
		else
			bufferevent_enable(cc->bev, EV_READ);
		return;
	}
	cc->read_paused = paused;
	client_sock_update_reading(cc);
	/* the body's read timeout runs only while reading, as a bufferevent's does */
	if (cc->body_timer_on && paused && client_timer_is(cc, CLIENT_DL_BODY))
		client_clear_timer(cc);
	else if (cc->body_timer_on && !paused)
		client_arm_timer(cc, CLIENT_DL_BODY, client_conf(cc)->limits.client_body_timeout);
}

static bool client_tls_info(const struct exchange *ex, struct tls_info *out)
{
	const struct client_conn *cc = ex->conn;
	return cc->bev && strcmp(cc->origin.scheme, "https") == 0 && tls_bev_info(cc->bev, out);
}

static const struct ex_ops client_ops = {
    .send_head = client_send_head,
    .send_data = client_send_data,
    .send_trailers = client_send_trailers,
    .buffered = client_buffered,
    .finish = client_finish,
    .release = client_release,
    .start_body = client_start_body,
    .read_body = client_read_body,
    .pause_body = client_pause_body,
    .tls_info = client_tls_info,
};

/* ---- requests ---- */

/* The exchange for the next request on cc, in the pipeline from here on. */
static void client_begin(struct client_conn *cc, struct exchange *ex)
{
	struct pipeline_peer peer = {
	    .scheme = cc->origin.scheme, .ip = cc->origin.ip, .port = cc->origin.port, .listener = cc->listener};
	pipeline_begin(ex, cc->w, &client_ops, cc, &peer);
	cc->ex = ex;
	cc->state = CLIENT_BUSY;
	cc->http10 = false;
	ex->h1_body = H1_BODY_NONE;
	ex->h1_body_remaining = 0;
}

static const char *rebase(const char *p, const char *old_base, size_t len, const char *new_base)
{
	/* a pointer outside the head (the parser's static "/") stays as it is */
	return p && p >= old_base && p < old_base + len ? new_base + (p - old_base) : p;
}

/* Keep the head in the request's arena so that the input buffer can move on
 * (to the body and the next request) while the request still reads its fields. */
static void client_keep_head(struct exchange *ex, const char *buf, size_t head_len)
{
	char *copy = arena_alloc(&ex->req.arena, head_len + 1);
	memcpy(copy, buf, head_len);
	copy[head_len] = '\0';
	struct h1_request *h = &ex->h1;
	h->method = rebase(h->method, buf, head_len, copy);
	h->target = rebase(h->target, buf, head_len, copy);
	h->path = rebase(h->path, buf, head_len, copy);
	h->authority = rebase(h->authority, buf, head_len, copy);
	for (size_t i = 0; i < h->num_headers; i++) {
		h->headers[i].name = rebase(h->headers[i].name, buf, head_len, copy);
		h->headers[i].value = rebase(h->headers[i].value, buf, head_len, copy);
	}
}

/* The request as the pipeline reads it, from the parsed head. */
static void client_fill_from_head(struct client_conn *cc, struct exchange *ex)
{
	struct request *r = &ex->req;
	struct h1_request *h = &ex->h1;
	cc->http10 = h->minor_version == 0;
	r->protocol = cc->http10 ? "HTTP/1.0" : "HTTP/1.1";
	/* The head is our copy (client_keep_head) and its request line is parsed:
	 * the space after the method and after the target, and the line end
	 * after a Host value, may become the strings' ends (no copies). */
	char *method = (char *)h->method, *target = (char *)h->target;
	const char *t_end = target + h->target_len;
	method[h->method_len] = '\0';
	target[h->target_len] = '\0';
	r->method = method;
	r->target = target;
	r->path = h->path == h->target && h->path_len == h->target_len ? r->target
	                                                               : arena_strndup(&r->arena, h->path, h->path_len);
	r->origin_target = r->target;
	if (h->target_len > 0 && h->target[0] != '/' && h->target[0] != '*') {
		/* absolute-form: the upstream gets origin-form (path and query) */
		r->origin_target = h->path >= h->target && h->path < t_end ? h->path : "/";
	}
	if (h->authority && h->authority >= h->target && h->authority < t_end) {
		r->authority = arena_strndup(&r->arena, h->authority, h->authority_len); /* inside the target */
	} else if (h->authority) {
		char *a = (char *)h->authority;
		a[h->authority_len] = '\0';
		r->authority = a;
	}
	fields_view(&r->headers, &r->arena, h->headers, h->header_flags, h->num_headers, H1_MAX_HEADERS);
	ex->head_method = h->method_len == 4 && memcmp(h->method, "HEAD", 4) == 0;
	ex->h1_body = h->body;
	ex->h1_body_remaining = h->body == H1_BODY_LENGTH ? h->content_length : 0;
	ex->body = h->body == H1_BODY_LENGTH ? EX_BODY_LENGTH : h->body == H1_BODY_CHUNKED ? EX_BODY_STREAM : EX_BODY_NONE;
	ex->body_length = ex->h1_body_remaining;
	ex->body_done = h->body == H1_BODY_NONE || (h->body == H1_BODY_LENGTH && h->content_length == 0);
	if (h->body == H1_BODY_CHUNKED)
		h1_chunked_init(&ex->h1_chunk, 4096, r->snap->conf->limits.header_bytes);
}

/* Parse and start the next request if its head is complete. Returns false
 * when nothing more can be done until more bytes arrive. */
/* Parse and start the request whose bytes are p (avail of them): the
 * input's first bytes (from_in), or a read into the worker's scratch buffer
 * while the input was empty, of which whatever is not the head goes into the
 * input (the body, pipelined requests), as does all of it when it is not a
 * complete, valid head. */
static bool client_parse_head(struct client_conn *cc, const char *p, size_t avail, bool from_in)
{
	struct worker *w = cc->w;
	const struct conf_limits *lim = &client_conf(cc)->limits;
	struct h1_limits hl = {
	    .max_request_line = lim->request_line_bytes,
	    .max_head = lim->header_bytes,
	    .max_headers = lim->max_headers < H1_MAX_HEADERS ? lim->max_headers : H1_MAX_HEADERS,
	};
	size_t window = avail < hl.max_head + 1 ? avail : hl.max_head + 1;
	struct exchange *ex = pipeline_exchange_new(w);
	if (!ex) {
		client_close_soon(cc, false);
		return false;
	}
	int status = 0;
	const char *why = NULL;
	int rc = h1_parse_request(p, window, &hl, &ex->h1, &status, &why);
	if (rc < 0 && !from_in) {
		/* incomplete or bad: on as if it had been read into the input */
		struct evbuffer *in = client_in(cc);
		if (!in || evbuffer_add(in, p, avail) != 0) {
			pipeline_exchange_discard(w, ex);
			client_close_soon(cc, false);
			return false;
		}
	}
	if (rc == H1_INCOMPLETE) {
		pipeline_exchange_discard(w, ex);
		if (!cc->head_timer_armed) {
			cc->head_timer_armed = true;
			client_arm_timer(cc, CLIENT_DL_HEAD, lim->client_header_timeout);
		}
		return false;
	}
	client_clear_timer(cc);
	cc->head_timer_armed = false;
	client_begin(cc, ex);
	if (rc == H1_ERROR) {
		if (log_enabled(LOG_DEBUG)) {
			struct log_line l;
			log_begin(&l, LOG_DEBUG, "bad request");
			log_str(&l, "client_ip", cc->origin.ip);
			log_int(&l, "status", status);
			log_str(&l, "why", why);
			log_end(&l);
		}
		/* whatever follows is not trusted: the body stays unread, so the connection closes after the answer */
		pipeline_start(ex, status ? status : 400);
		return false;
	}
	client_keep_head(ex, p, (size_t)rc);
	int moved;
	if (from_in) {
		moved = evbuffer_drain(cc->in, (size_t)rc);
	} else if ((size_t)rc < avail) {
		struct evbuffer *in = client_in(cc);
		moved = in ? evbuffer_add(in, p + rc, avail - (size_t)rc) : -1;
	} else {
		moved = 0;
	}
	if (moved != 0) {
		cc->ex = NULL;
		pipeline_cancel(ex, REASON_NONE);
		client_close_soon(cc, false);
		return false;
	}
	client_fill_from_head(cc, ex);
	if (!ex->h1.keep_alive || w->draining || cc->drain)
		cc->keep_alive = false;
	pipeline_start(ex, 0);
	return cc->state == CLIENT_WAIT_HEAD;
}

static bool client_try_head(struct client_conn *cc)
{
	size_t avail = client_in_len(cc);
	if (avail == 0)
		return false;
	size_t max_head = client_conf(cc)->limits.header_bytes;
	size_t window = avail < max_head + 1 ? avail : max_head + 1;
	const char *p = (const char *)evbuffer_pullup(cc->in, (ssize_t)window);
	if (!p) {
		client_close_soon(cc, false);
		return false;
	}
	return client_parse_head(cc, p, avail, true);
}

/* Drop what the input holds of the previous request's unread body
 * (client_can_discard). True when nothing is left to drop: the next head
 * may be parsed. */
static bool client_discard(struct client_conn *cc)
{
	if (cc->discard == 0)
		return true;
	size_t avail = client_in_len(cc);
	size_t n = avail < cc->discard ? avail : (size_t)cc->discard;
	if (n > 0 && evbuffer_drain(cc->in, n) != 0) {
		client_close_soon(cc, false);
		return false;
	}
	cc->discard -= n;
	if (cc->discard > 0) {
		/* the body's read timeout runs between reads (a bufferevent restarts its own) */
		if (n > 0 && !cc->bev)
			client_arm_timer(cc, CLIENT_DL_BODY, client_conf(cc)->limits.client_body_timeout);
		return false;
	}
	client_body_timer(cc, false);
	if (client_in_len(cc) == 0) {
		client_arm_timer(cc, CLIENT_DL_IDLE, client_conf(cc)->limits.keepalive_timeout);
		return false;
	}
	return true;
}

static void client_handle_input(struct client_conn *cc)
{
	/* a loop, not recursion: a client may pipeline thousands of small requests */
	if (cc->in_input_loop)
		return;
	cc->in_input_loop = true;
	while (cc->state == CLIENT_WAIT_HEAD && client_discard(cc) && client_try_head(cc))
		;
	cc->in_input_loop = false;
	client_sock_input_taken(cc);
}

/* ---- what the transport reports ---- */

/* New input (either transport). */
static void client_on_input(struct client_conn *cc)
{
	switch (cc->state) {
	case CLIENT_WAIT_HEAD:
		client_handle_input(cc);
		break;
	case CLIENT_BUSY:
		if (cc->ex && !cc->ex->body_done)
			pipeline_on_body(cc->ex);
		/* otherwise bytes of the next request wait in the input buffer (bounded) */
		break;
	case CLIENT_CLOSING:
		/* lingering: whatever the client still sends is read and dropped */
		if (cc->in)
			evbuffer_drain(cc->in, evbuffer_get_length(cc->in));
		client_sock_input_taken(cc);
		break;
	default:
		break;
	}
}

/* The output drained to the write low-water mark (either transport). */
static void client_on_drained(struct client_conn *cc)
{
	if (!cc->bev && cc->out && !cc->write_blocked)
		conn_sock_buf_put(&cc->w->client->bufs, &cc->out); /* kept while not empty */
	if (cc->state == CLIENT_CLOSING) {
		if (client_out_len(cc) > 0 || cc->lingering)
			return;
		/* all sent (after a TLS close_notify): close, or half-close and
		 * linger so that the client can read it all while it still sends */
		int half_closed;
		if (cc->bev)
			half_closed = tls_bev_shutdown(cc->bev, cc->linger);
		else
			half_closed = !cc->linger ? 1 : shutdown(cc->fd, SHUT_WR) == 0 ? 1 : -1;
		if (half_closed == 0)
			return; /* TLS records still on their way to the socket: called again */
		cc->lingering = true;
		if (half_closed < 0 || !cc->linger) {
			cc->close_now = true;
			conn_timer_set(&cc->w->client->q[CLIENT_DL_NOW], &cc->timer, 0);
			return;
		}
		if (cc->in)
			evbuffer_drain(cc->in, evbuffer_get_length(cc->in));
		if (cc->bev) {
			bufferevent_set_timeouts(cc->bev, NULL, NULL);
			bufferevent_enable(cc->bev, EV_READ);
		} else {
			client_sock_input_taken(cc);
			cc->read_paused = false;
			client_sock_update_reading(cc);
		}
		client_arm_timer(cc, CLIENT_DL_LINGER, CLIENT_LINGER_MS);
		return;
	}
	if (cc->state == CLIENT_BUSY && cc->ex)
		pipeline_on_drained(cc->ex);
}

/* EOF, an error or a bufferevent timeout (BEV_EVENT_* bits). */
static void client_on_event(struct client_conn *cc, short what)
{
	if (cc->state == CLIENT_CLOSING) {
		client_free(cc, REASON_NONE);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		struct exchange *ex = cc->ex;
		if ((what & BEV_EVENT_READING) && ex && (ex->phase == EX_PHASE_PROXY || ex->phase == EX_PHASE_BODY) &&
		    !ex->body_done &&
		    !ex->response_started) {
			/* the client stopped sending its body */
			pipeline_body_timeout(ex);
			return;
		}
		client_free(cc, REASON_CLIENT_TIMEOUT);
		return;
	}
	/* EOF or error from the client */
	client_free(cc, REASON_CLIENT_RESET);
}

/* ---- the own socket's events ---- */

static void client_sock_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct client_conn *cc = arg;
	if (cc->state == CLIENT_WAIT_HEAD && !cc->in && cc->discard == 0) {
		char *scratch = cc->w->client->scratch;
		ssize_t n = read(fd, scratch, sizeof(cc->w->client->scratch));
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			client_on_event(cc, n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR);
			return;
		}
		/* as in client_handle_input: a response completed at once goes on
		 * with pipelined bytes here, not from inside the pipeline */
		cc->in_input_loop = true;
		bool more = client_parse_head(cc, scratch, (size_t)n, false);
		cc->in_input_loop = false;
		if (more)
			client_handle_input(cc);
		else
			client_sock_input_taken(cc);
		return;
	}
	if (!cc->in && !(cc->in = conn_sock_buf_get(&cc->w->client->bufs))) {
		client_free(cc, REASON_NONE);
		return;
	}
	size_t high = client_read_high(cc);
	/* a head usually fits one read of just under 4 KiB (one buffer chain of 4 KiB) */
	ssize_t n = conn_sock_read(fd, cc->in, 4096 - 128, high);
	if (n == -2) {
		client_sock_input_taken(cc);
		return;
	}
	if (n <= 0) {
		client_on_event(cc, n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR);
		return;
	}
	if (evbuffer_get_length(cc->in) >= high) {
		/* resumes once the input drains below it (client_sock_input_taken) */
		cc->read_full = true;
		client_sock_update_reading(cc);
	}
	if (cc->body_timer_on && cc->state == CLIENT_BUSY)
		client_arm_timer(cc, CLIENT_DL_BODY, client_conf(cc)->limits.client_body_timeout);
	client_on_input(cc);
}

/* Write what the output holds; the write event takes over when the socket is full. */
static void client_sock_write(struct client_conn *cc)
{
	if (!cc->out)
		return;
	ssize_t left = conn_sock_write(cc->fd, cc->out);
	if (left < 0) {
		client_on_event(cc, BEV_EVENT_ERROR | BEV_EVENT_WRITING);
		return;
	}
	if (left > 0) {
		if (!cc->wev && !(cc->wev = event_new(cc->w->base, cc->fd, EV_WRITE, client_sock_write_cb, cc))) {
			client_on_event(cc, BEV_EVENT_ERROR | BEV_EVENT_WRITING);
			return;
		}
		/* (re-)added on every progress: the send timeout is the time without one */
		struct timeval send_tv = worker_timeval(cc->w, client_conf(cc)->limits.send_timeout);
		if (event_add(cc->wev, &send_tv) != 0) {
			client_on_event(cc, BEV_EVENT_ERROR | BEV_EVENT_WRITING);
			return;
		}
		cc->write_blocked = true;
		if ((size_t)left > PROXY_HIGH_WATER / 2)
			return;
	}
	client_on_drained(cc);
}

static void client_sock_write_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	struct client_conn *cc = arg;
	cc->write_blocked = false;
	if (what & EV_TIMEOUT) {
		client_on_event(cc, BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING);
		return;
	}
	client_sock_write(cc);
}

static void client_sock_flush(struct io_flusher *f, void *arg)
{
	(void)f;
	struct client_conn *cc = arg;
	if (!cc->write_blocked) /* otherwise the write event has it */
		client_sock_write(cc);
}

/* ---- a bufferevent's callbacks ---- */

/* The input buffer never holds much more than one maximal head or one
 * body step: a pipelining client is paused by the kernel's window, not by
 * our memory. libevent's read high-water mark does that, but once set it
 * runs a callback on every change of the input (each read, each drain),
 * ~2 per request, and holds a callback entry on every idle connection; it
 * is therefore installed only when the input first reaches it (one read
 * past the mark at most, at most libevent's single read step). */
static void client_bound_input(struct client_conn *cc, struct evbuffer *in)
{
	if (cc->read_high_on)
		return;
	size_t read_high = client_read_high(cc);
	if (evbuffer_get_length(in) < read_high)
		return;
	/* suspends reading at once, resumes when the input drains below it */
	bufferevent_setwatermark(cc->bev, EV_READ, 0, read_high);
	cc->read_high_on = true;
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	struct client_conn *cc = arg;
	client_bound_input(cc, bufferevent_get_input(bev));
	/* a large body: take what the socket holds beyond libevent's 4 KiB step */
	if (cc->state == CLIENT_BUSY && cc->ex && !cc->ex->body_done && cc->origin.plain_socket &&
	    evbuffer_get_length(bufferevent_get_input(bev)) >= 4096)
		io_read_more(bev, PROXY_HIGH_WATER);
	client_on_input(cc);
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct client_conn *cc = arg;
	io_flusher_drained(&cc->flusher);
	client_on_drained(cc);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	client_on_event(arg, what);
}

/* ---- worker-wide ---- */

static void client_drain_where(struct worker *w, bool all, size_t listener, bool close_idle)
{
	struct client_conn *cc = w->conns;
	while (cc) {
		struct client_conn *next = cc->next;
		if (!all && cc->listener != listener) {
			cc = next;
			continue;
		}
		if (close_idle && cc->state == CLIENT_WAIT_HEAD && client_in_len(cc) == 0)
			client_free(cc, REASON_NONE);
		else if (all)
			cc->keep_alive = false;
		else
			cc->drain = true;
		cc = next;
	}
}

void client_drain_all(struct worker *w)
{
	client_drain_where(w, true, 0, true);
}

void client_drain_listener(struct worker *w, size_t listener, bool close_idle)
{
	client_drain_where(w, false, listener, close_idle);
}

void client_close_all(struct worker *w)
{
	while (w->conns)
		client_free(w->conns, REASON_DRAINING);
}
