/* admin_http.c - the admin HTTP listener (admin_http.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "admin_http.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "conf.h"
#include "h1.h"
#include "http.h"
#include "log.h"
#include "metrics.h"

#define ADMIN_HTTP_MAX_OUTPUT (1u << 20)

static const struct h1_limits admin_http_limits = {
	.max_request_line = 4096,
	.max_head = 8192,
	.max_headers = 32,
};

struct admin_http_conn {
	struct admin_http *h;
	struct bufferevent *bev;
	struct admin_http_conn *prev, *next;
	bool closing; /* answer queued with Connection: close: free once it is sent */
};

struct admin_http {
	struct evconnlistener *listener;
	struct metrics *m;
	char *token; /* NULL: none asked */
	size_t token_len;
	struct admin_http_conn *conns;
	unsigned num_conns;
};

bool admin_http_token_equal(const char *want, size_t want_len, const char *got, size_t got_len)
{
	/* every byte of want is compared whatever got holds: the time says
	 * nothing about where the first difference is */
	unsigned char diff = want_len != got_len || want_len == 0;
	for (size_t i = 0; i < want_len; i++)
		diff |= (unsigned char)want[i] ^ (unsigned char)(got_len ? got[i % got_len] : 0);
	return diff == 0;
}

static void conn_free(struct admin_http_conn *c)
{
	struct admin_http *h = c->h;
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	h->num_conns--;
	bufferevent_free(c->bev);
	free(c);
}

/* Queue one answer: body (moved out of its buffer) unless the request was HEAD. */
static void respond(struct admin_http_conn *c, int status, const char *type, struct evbuffer *body, bool head,
                    bool close, const char *extra)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t len = evbuffer_get_length(body);
	evbuffer_add_printf(out,
	                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
	                    "X-Content-Type-Options: nosniff\r\n%s%s\r\n",
	                    status, http_status_text(status), type, len, extra ? extra : "", close ? "Connection: close\r\n" : "");
	if (head)
		evbuffer_drain(body, len);
	else
		evbuffer_add_buffer(out, body);
	if (close)
		c->closing = true;
}

static void respond_text(struct admin_http_conn *c, int status, bool head, bool close, const char *extra,
                         const char *text)
{
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		c->closing = true;
		return;
	}
	evbuffer_add(b, text, strlen(text));
	evbuffer_add(b, "\n", 1);
	respond(c, status, "text/plain; charset=utf-8", b, head, close, extra);
	evbuffer_free(b);
}

static const struct http_header *find_header(const struct h1_request *req, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < req->num_headers; i++)
		if (req->headers[i].name_len == n && strncasecmp(req->headers[i].name, name, n) == 0)
			return &req->headers[i];
	return NULL;
}

static bool authorized(const struct admin_http *h, const struct h1_request *req)
{
	if (!h->token)
		return true;
	const struct http_header *a = find_header(req, "authorization");
	if (!a || a->value_len < 7 || strncasecmp(a->value, "bearer ", 7) != 0)
		return false;
	const char *t = a->value + 7;
	size_t n = a->value_len - 7;
	while (n > 0 && *t == ' ') {
		t++;
		n--;
	}
	return admin_http_token_equal(h->token, h->token_len, t, n);
}

static bool wants_openmetrics(const struct h1_request *req)
{
	static const char om[] = "application/openmetrics-text";
	for (size_t i = 0; i < req->num_headers; i++) {
		const struct http_header *f = &req->headers[i];
		if (f->name_len != 6 || strncasecmp(f->name, "accept", 6) != 0)
			continue;
		for (size_t j = 0; j + sizeof(om) - 1 <= f->value_len; j++)
			if (strncasecmp(f->value + j, om, sizeof(om) - 1) == 0)
				return true;
	}
	return false;
}

static bool path_is(const struct h1_request *req, const char *p)
{
	return req->path_len == strlen(p) && memcmp(req->path, p, req->path_len) == 0;
}

/* "/?json" or "/?format=json": the query part of the target */
static bool query_json(const struct h1_request *req)
{
	const char *q = memchr(req->target, '?', req->target_len);
	if (!q)
		return false;
	size_t n = req->target_len - (size_t)(q + 1 - req->target);
	return (n == 4 && memcmp(q + 1, "json", 4) == 0) || (n == 11 && memcmp(q + 1, "format=json", 11) == 0);
}

static void serve(struct admin_http_conn *c, const struct h1_request *req)
{
	struct admin_http *h = c->h;
	bool head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
	bool get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
	bool close = !req->keep_alive;
	bool metrics = path_is(req, "/metrics"), healthz = path_is(req, "/healthz"), readyz = path_is(req, "/readyz"),
	     root = path_is(req, "/");
	/* Health and readiness answer without the token: kubelets and load
	 * balancers probe them and cannot hold a secret, and they tell nothing
	 * beyond "ok", "ready" or why not (starting, draining). */
	if (!healthz && !readyz && !authorized(h, req)) {
		respond_text(c, 401, head, close, "WWW-Authenticate: Bearer realm=\"sluice admin\"\r\n",
		             "unauthorized: send Authorization: Bearer TOKEN (the token in admin.http_token_file)");
		return;
	}
	if (!metrics && !healthz && !readyz && !root) {
		respond_text(c, 404, head, close, NULL, "not found: this listener serves /metrics, /healthz, /readyz and /");
		return;
	}
	if (!get && !head) {
		respond_text(c, 405, false, close, "Allow: GET, HEAD\r\n", "method not allowed: use GET or HEAD");
		return;
	}
	if (healthz) {
		respond_text(c, 200, head, close, NULL, "ok");
		return;
	}
	if (readyz) {
		const char *why = metrics_not_ready(h->m);
		if (why) {
			char text[64];
			snprintf(text, sizeof text, "not ready: %s", why);
			respond_text(c, 503, head, close, NULL, text);
		} else {
			respond_text(c, 200, head, close, NULL, "ready");
		}
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		c->closing = true;
		return;
	}
	if (metrics) {
		bool om = wants_openmetrics(req);
		metrics_write(h->m, b, om);
		respond(c, 200,
		        om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
		           : "text/plain; version=0.0.4; charset=utf-8",
		        b, head, close, NULL);
	} else {
		bool json = query_json(req);
		metrics_status(h->m, b, json);
		respond(c, 200, json ? "application/json" : "text/html; charset=utf-8", b, head, close, NULL);
	}
	evbuffer_free(b);
}

/* Answers every complete request in the input, in order. False: c was freed. */
static bool conn_process(struct admin_http_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	while (!c->closing && evbuffer_get_length(in) > 0) {
		if (evbuffer_get_length(out) > ADMIN_HTTP_MAX_OUTPUT) {
			bufferevent_disable(c->bev, EV_READ);
			return true;
		}
		size_t len = evbuffer_get_length(in);
		if (len > admin_http_limits.max_head + 1)
			len = admin_http_limits.max_head + 1;
		const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)len);
		if (!buf) {
			conn_free(c);
			return false;
		}
		struct h1_request req;
		int status = 0;
		const char *why = NULL;
		int n = h1_parse_request(buf, len, &admin_http_limits, &req, &status, &why);
		if (n == H1_INCOMPLETE)
			break;
		if (n == H1_ERROR) {
			char text[160];
			snprintf(text, sizeof text, "bad request: %s", why ? why : "malformed");
			respond_text(c, status ? status : 400, false, true, NULL, text);
			break;
		}
		if (req.body != H1_BODY_NONE && !(req.body == H1_BODY_LENGTH && req.content_length == 0)) {
			respond_text(c, 413, false, true, NULL, "request bodies are not accepted here");
			break;
		}
		serve(c, &req);
		evbuffer_drain(in, (size_t)n);
	}
	if (c->closing) {
		bufferevent_disable(c->bev, EV_READ);
		if (evbuffer_get_length(out) == 0) {
			conn_free(c);
			return false;
		}
	}
	return true;
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_process(arg);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct admin_http_conn *c = arg;
	if (c->closing) {
		conn_free(c);
		return;
	}
	/* answers drained: read (and answer) what waited behind them */
	if (bufferevent_enable(bev, EV_READ) != 0) {
		conn_free(c);
		return;
	}
	conn_process(c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	conn_free(arg); /* EOF, error or idle timeout */
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	struct admin_http *h = arg;
	if (h->num_conns >= ADMIN_HTTP_MAX_CONNECTIONS) {
		evutil_closesocket(fd);
		return;
	}
	struct admin_http_conn *c = calloc(1, sizeof(*c));
	struct event_base *base = evconnlistener_get_base(h->listener);
	if (!c || !(c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE))) {
		free(c);
		evutil_closesocket(fd);
		return;
	}
	c->h = h;
	c->next = h->conns;
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	h->num_conns++;
	struct timeval idle = { ADMIN_HTTP_IDLE_SECONDS, 0 };
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	if (bufferevent_enable(c->bev, EV_READ) != 0)
		conn_free(c);
}

struct admin_http *admin_http_start(struct event_base *base, const struct conf_admin *conf, struct metrics *m,
                                    int fd)
{
	struct admin_http *h = calloc(1, sizeof(*h));
	if (!h) {
		if (fd >= 0)
			close(fd);
		log_msg(LOG_ERROR, "out of memory starting the admin HTTP listener");
		return NULL;
	}
	h->m = m;
	if (conf->http_token) {
		h->token = malloc(conf->http_token_len);
		if (!h->token) {
			free(h);
			if (fd >= 0)
				close(fd);
			log_msg(LOG_ERROR, "out of memory starting the admin HTTP listener");
			return NULL;
		}
		memcpy(h->token, conf->http_token, conf->http_token_len);
		h->token_len = conf->http_token_len;
	}
	if (fd >= 0 && !(h->listener = evconnlistener_new(base, accept_cb, h, LEV_OPT_CLOSE_ON_FREE, -1, fd)))
		close(fd);
	else if (fd < 0)
		h->listener = evconnlistener_new_bind(base, accept_cb, h,
		                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
		                                      (const struct sockaddr *)&conf->http_addr, (int)conf->http_addr_len);
	if (!h->listener) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "admin HTTP listener: cannot listen");
		log_str(&l, "address", conf->http);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
		admin_http_stop(h);
		return NULL;
	}
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin HTTP listener");
	log_str(&l, "address", conf->http);
	log_str(&l, "token", h->token ? "required" : "none");
	log_end(&l);
	return h;
}

int admin_http_set_token(struct admin_http *h, const struct conf_admin *conf)
{
	char *token = NULL;
	if (conf->http_token && !(token = malloc(conf->http_token_len)))
		return -1;
	if (token)
		memcpy(token, conf->http_token, conf->http_token_len);
	if (h->token) {
		memset(h->token, 0, h->token_len);
		free(h->token);
	}
	h->token = token;
	h->token_len = token ? conf->http_token_len : 0;
	return 0;
}

int admin_http_fd(const struct admin_http *h)
{
	return evconnlistener_get_fd(h->listener);
}

void admin_http_stop(struct admin_http *h)
{
	if (!h)
		return;
	while (h->conns)
		conn_free(h->conns);
	if (h->listener)
		evconnlistener_free(h->listener);
	if (h->token) {
		memset(h->token, 0, h->token_len);
		free(h->token);
	}
	free(h);
}
