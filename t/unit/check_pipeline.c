/* Unit tests for the pipeline (src/pipeline.c), driven through a test
 * implementation of the exchange's operations table: the table IS the
 * interface between the pipeline and a client protocol, so a test protocol
 * is the legitimate way to watch what the pipeline asks of one.
 *
 * The worker, its event loop, the snapshot (a real config file through the
 * real loader), routing and the modules' interface are the real ones; the
 * module list is this program's own (modules/modules.c is the registration
 * list, a translation unit of its own for exactly this): one probe module
 * whose access result each test chooses. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "exchange.h"
#include "module.h"
#include "pipeline.h"
#include "pool.h"
#include "route.h"
#include "runtime.h"
#include "snapshot.h"
#include "worker.h"

/* ---- the probe module ---- */

static struct probe {
	enum phase_result access_result; /* what access returns */
	int deny_status;
	enum reason deny_reason;
	int access_calls, cancel_calls, log_calls, response_calls;
	struct request *suspended; /* a request whose access returned SUSPEND */
	enum reason logged_reason;
	int logged_status;
	char logged_header[64]; /* x-probe-req as the request carried it at the log phase */
	char logged_host[64];
} probe;

static enum phase_result probe_access(struct request *r, const void *ss, void *ws, struct phase_deny *deny)
{
	(void)ss;
	(void)ws;
	probe.access_calls++;
	/* a phase may change the request's fields before they go upstream */
	fields_set(&r->headers, "x-probe-req", "changed");
	if (probe.access_result == PHASE_DENY) {
		deny->status = probe.deny_status;
		deny->reason = probe.deny_reason;
		fields_add_u64(&deny->headers, "retry-after", 7);
	}
	if (probe.access_result == PHASE_SUSPEND)
		probe.suspended = r;
	return probe.access_result;
}

static void probe_cancel(struct request *r, const void *ss, void *ws)
{
	(void)ss;
	(void)ws;
	ck_assert_ptr_eq(r, probe.suspended);
	probe.cancel_calls++;
	probe.suspended = NULL;
}

static void probe_response_headers(struct request *r, const void *ss, void *ws, struct fields *resp)
{
	(void)r;
	(void)ss;
	(void)ws;
	probe.response_calls++;
	fields_add_copy(resp, "x-probe", "seen");
	fields_remove(resp, "content-type");
}

static void probe_log(const struct request *r, const void *ss, void *ws)
{
	(void)ss;
	(void)ws;
	probe.log_calls++;
	probe.logged_reason = r->reason;
	probe.logged_status = r->status;
	size_t n = 0;
	const char *v = fields_value(&r->headers, "x-probe-req", &n);
	snprintf(probe.logged_header, sizeof probe.logged_header, "%.*s", v ? (int)n : 0, v ? v : "");
	snprintf(probe.logged_host, sizeof probe.logged_host, "%s", r->host);
}

static const struct module probe_module = {
    .name = "probe",
    .access = probe_access,
    .access_cancel = probe_cancel,
    .response_headers = probe_response_headers,
    .log = probe_log,
};

/* The second module: what the access phase reaches after the probe said
 * CONTINUE. It answers 409 unless a test lets it through to the proxy. */
static int gate_calls;
static bool gate_open;

static enum phase_result gate_access(struct request *r, const void *ss, void *ws, struct phase_deny *deny)
{
	(void)r;
	(void)ss;
	(void)ws;
	gate_calls++;
	if (gate_open)
		return PHASE_CONTINUE;
	deny->status = 409;
	deny->reason = REASON_POLICY_ERROR;
	return PHASE_DENY;
}

static const struct module gate_module = {.name = "gate", .access = gate_access};

/* This program's registration list (module.h), in access order. */
const struct module *const module_list[] = {&probe_module, &gate_module};
const size_t module_count = 2;

/* ---- the test protocol: an implementation of the exchange's ops ---- */

struct fake {
	struct exchange *ex;
	int heads, status;
	enum ex_body body_kind;
	size_t n_fields;
	char names[16][32], values[16][64];
	struct evbuffer *body;
	int finishes, releases;
	enum ex_end how;
	bool body_unread;
	bool body_started;
};

static long fake_send_head(struct exchange *ex, const struct ex_head *h)
{
	struct fake *f = ex->conn;
	f->heads++;
	f->status = h->status;
	f->body_kind = h->body;
	f->n_fields = 0;
	for (size_t i = 0; i < h->fields->n && i < 16; i++, f->n_fields++) {
		snprintf(f->names[i], sizeof f->names[i], "%.*s", (int)h->fields->v[i].name_len, h->fields->v[i].name);
		snprintf(f->values[i], sizeof f->values[i], "%.*s", (int)h->fields->v[i].value_len, h->fields->v[i].value);
	}
	return 100;
}

static long fake_send_data(struct exchange *ex, struct evbuffer *src, const char *bytes, size_t n)
{
	struct fake *f = ex->conn;
	if (src)
		return evbuffer_remove_buffer(src, f->body, n) == (int)n ? (long)n : -1;
	return evbuffer_add(f->body, bytes, n) == 0 ? (long)n : -1;
}

static long fake_send_trailers(struct exchange *ex, const struct fields *t)
{
	(void)ex;
	(void)t;
	return 0;
}

static size_t fake_buffered(const struct exchange *ex)
{
	const struct fake *f = ex->conn;
	return evbuffer_get_length(f->body);
}

static long fake_finish(struct exchange *ex, enum ex_end how)
{
	struct fake *f = ex->conn;
	f->finishes++;
	f->how = how;
	return 0;
}

static void fake_release(void *conn, enum ex_end how, bool body_unread)
{
	struct fake *f = conn;
	ck_assert_int_eq(how, f->how);
	f->releases++;
	f->body_unread = body_unread;
	f->ex = NULL;
}

static void fake_start_body(struct exchange *ex)
{
	struct fake *f = ex->conn;
	f->body_started = true;
}

/* The request body the test protocol delivers, decoded, at most 5 bytes a
 * call (so that the proxy's framing of each read shows), then a trailer. */
static const char *body_src;
static size_t body_pos;

static ssize_t fake_read_body(struct exchange *ex, struct evbuffer *dst, size_t max, int *status, enum reason *reason)
{
	(void)status;
	(void)reason;
	size_t left = body_src ? strlen(body_src) - body_pos : 0;
	size_t n = left < 5 ? left : 5;
	if (n > max)
		n = max;
	ck_assert_int_eq(evbuffer_add(dst, body_src ? body_src + body_pos : "", n), 0);
	body_pos += n;
	if (body_pos == (body_src ? strlen(body_src) : 0)) {
		ex->body_done = true;
		fields_add(&ex->trailers, "x-t", 3, "1", 1);
		fields_add(&ex->trailers, "content-length", 14, "99", 2); /* not a trailer: dropped */
	}
	return (ssize_t)n;
}

static void fake_pause_body(struct exchange *ex, bool paused)
{
	(void)ex;
	(void)paused;
}

static bool fake_tls_info(const struct exchange *ex, struct tls_info *out)
{
	(void)ex;
	(void)out;
	return false;
}

static const struct ex_ops fake_ops = {
    .send_head = fake_send_head,
    .send_data = fake_send_data,
    .send_trailers = fake_send_trailers,
    .buffered = fake_buffered,
    .finish = fake_finish,
    .release = fake_release,
    .start_body = fake_start_body,
    .read_body = fake_read_body,
    .pause_body = fake_pause_body,
    .tls_info = fake_tls_info,
};

/* ---- a worker on a real snapshot ---- */

static struct worker w;
static struct worker_gen gen; /* the worker's current generation (worker.h) */
static struct fake fk;
static char conf_path[64];

/* ---- a real upstream on the worker's own loop ---- */

static struct evconnlistener *up_listener;
static struct runtime *up_runtime;
static struct evbuffer *up_request; /* what the upstream received */
static const char *up_end;          /* the request is complete once this is in it */
static int up_connections;
static struct bufferevent *up_bevs[8]; /* the upstream's side of each connection, freed by teardown */

static void up_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	evbuffer_add_buffer(up_request, bufferevent_get_input(bev));
	size_t n = evbuffer_get_length(up_request);
	const char *all = (const char *)evbuffer_pullup(up_request, (ev_ssize_t)n);
	if (n < strlen(up_end) || memcmp(all + n - strlen(up_end), up_end, strlen(up_end)) != 0)
		return;
	static const char resp[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/x\r\n"
	                           "x-up: 1\r\nconnection: keep-alive\r\n\r\nok";
	bufferevent_write(bev, resp, sizeof resp - 1);
}

static void up_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	for (int i = 0; i < 8; i++)
		if (up_bevs[i] == bev)
			up_bevs[i] = NULL;
	bufferevent_free(bev);
}

static void up_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	(void)arg;
	struct bufferevent *bev = bufferevent_socket_new(w.base, fd, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(bev);
	ck_assert_int_lt(up_connections, 8);
	up_bevs[up_connections++] = bev;
	bufferevent_setcb(bev, up_read, NULL, up_event, NULL);
	bufferevent_enable(bev, EV_READ);
}

static void setup_with(bool upstream)
{
	memset(&probe, 0, sizeof probe);
	memset(&fk, 0, sizeof fk);
	gate_calls = 0;
	gate_open = false;
	body_src = NULL;
	body_pos = 0;
	up_connections = 0;
	memset(&w, 0, sizeof w);
	w.base = event_base_new();
	ck_assert_ptr_nonnull(w.base);
	unsigned port = 9; /* discard: never reached without the upstream */
	if (upstream) {
		struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		up_listener = evconnlistener_new_bind(w.base, up_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
		                                      16, (struct sockaddr *)&sin, sizeof sin);
		ck_assert_ptr_nonnull(up_listener);
		socklen_t len = sizeof sin;
		ck_assert_int_eq(getsockname(evconnlistener_get_fd(up_listener), (struct sockaddr *)&sin, &len), 0);
		port = ntohs(sin.sin_port);
		up_request = evbuffer_new();
		up_end = "\r\n\r\n";
	}
	strcpy(conf_path, "/tmp/check_pipeline_XXXXXX");
	int fd = mkstemp(conf_path);
	ck_assert_int_ge(fd, 0);
	char cfg[1024];
	int k = snprintf(cfg, sizeof cfg,
	                 "return {\n"
	                 "  workers = 1,\n"
	                 "  listeners = { { name = \"t\", address = \"127.0.0.1:1\" } },\n"
	                 "  pools = { web = { servers = { \"127.0.0.1:%u\" } } },\n"
	                 "  routes = {\n"
	                 "    { name = \"direct\", match = { path = \"/direct\" }, respond = { status = 200, body = \"hi\" } },\n"
	                 "    { name = \"app\", match = { path_prefix = \"/app\" }, pool = \"web\" },\n"
	                 "  },\n"
	                 "}\n",
	                 port);
	ck_assert_int_eq(write(fd, cfg, (size_t)k), k);
	close(fd);
	struct conf_errors errs;
	conf_errors_init(&errs);
	struct snapshot *s = snapshot_build(conf_path, 1, &errs);
	for (size_t i = 0; i < errs.count; i++)
		fprintf(stderr, "%s\n", errs.msgs[i]);
	ck_assert_ptr_nonnull(s);
	conf_errors_free(&errs);
	w.snap = s; /* the build's reference, held by the generation requests enter */
	memset(&gen, 0, sizeof gen);
	gen.snap = s;
	gen.users = 1;
	w.gen = &gen;
	w.route_scratch = route_scratch_new();
	w.module_state = calloc(module_count, sizeof(void *));
	w.rng_state = 42;
	fk.body = evbuffer_new();
	if (upstream) {
		/* the proxy phase's worker state: the runtime tables and the pool set */
		ck_assert_int_eq(io_flush_queue_init(&w.flush_queue, w.base), 0);
		up_runtime = runtime_new();
		ck_assert_ptr_nonnull(up_runtime);
		ck_assert_int_eq(runtime_sync(up_runtime, s->conf), 0);
		gen.pools = pool_set_new(&w, up_runtime, s->conf);
		ck_assert_ptr_nonnull(gen.pools);
	}
}

static void setup(void)
{
	setup_with(false);
}

static void setup_upstream(void)
{
	setup_with(true);
}

static void teardown(void)
{
	if (gen.pools) {
		pool_set_free(gen.pools);
		gen.pools = NULL;
		io_flush_queue_free(&w.flush_queue);
		runtime_free(up_runtime);
		evconnlistener_free(up_listener);
		evbuffer_free(up_request);
		for (int i = 0; i < 8; i++)
			if (up_bevs[i])
				bufferevent_free(up_bevs[i]);
		memset(up_bevs, 0, sizeof up_bevs);
	}
	pipeline_free_exchanges(&w);
	route_scratch_free(w.route_scratch);
	free(w.module_state);
	event_base_free(w.base);
	snapshot_unref(w.snap);
	evbuffer_free(fk.body);
	unlink(conf_path);
}

/* A GET for path on the fake protocol, started through the pipeline. */
static struct exchange *start_request(const char *path)
{
	struct exchange *ex = pipeline_exchange_new(&w);
	ck_assert_ptr_nonnull(ex);
	struct pipeline_peer peer = {.scheme = "http", .ip = "192.0.2.7", .port = 4321, .listener = 0};
	fk.ex = ex;
	pipeline_begin(ex, &w, &fake_ops, &fk, &peer);
	struct request *r = &ex->req;
	r->method = "GET";
	r->target = r->origin_target = r->path = path;
	r->authority = "Example.COM:8080";
	fields_add(&r->headers, "x-probe-req", 11, "original", 8);
	ex->body = EX_BODY_NONE;
	ex->body_done = true;
	pipeline_start(ex, 0);
	return ex;
}

static const char *field(const char *name)
{
	for (size_t i = 0; i < fk.n_fields; i++)
		if (strcmp(fk.names[i], name) == 0)
			return fk.values[i];
	return NULL;
}

static void expect_answer(int status, enum reason reason)
{
	ck_assert_int_eq(fk.heads, 1);
	ck_assert_int_eq(fk.status, status);
	ck_assert_int_eq(fk.finishes, 1);
	ck_assert_int_eq(fk.how, EX_END_COMPLETE);
	ck_assert_int_eq(fk.releases, 1);
	ck_assert_int_eq(probe.log_calls, 1);
	ck_assert_int_eq(probe.logged_status, status);
	ck_assert_int_eq(probe.logged_reason, reason);
	/* the one place that writes a head: standard fields, then the respond phase */
	ck_assert_int_eq(probe.response_calls, 1);
	ck_assert_ptr_nonnull(field("x-request-id"));
	ck_assert_str_eq(field("x-probe"), "seen");
	ck_assert_ptr_null(field("content-type")); /* the module removed it */
	ck_assert_ptr_eq(fk.ex, NULL);
}

/* ---- the tests ---- */

START_TEST(route_miss_is_404_without_access)
{
	start_request("/nowhere");
	expect_answer(404, REASON_NO_ROUTE);
	ck_assert_int_eq(probe.access_calls, 0);
	char body[64] = {0};
	evbuffer_copyout(fk.body, body, sizeof body - 1);
	ck_assert_str_eq(body, "404 Not Found\n");
	ck_assert_str_eq(field("content-length"), "14");
}
END_TEST

START_TEST(respond_route_answers_directly)
{
	start_request("/direct");
	expect_answer(200, REASON_NONE);
	ck_assert_int_eq(probe.access_calls, 0);
	ck_assert_uint_eq(evbuffer_get_length(fk.body), 2);
	ck_assert_int_eq(fk.body_kind, EX_BODY_LENGTH);
}
END_TEST

START_TEST(early_status_answered_at_once)
{
	struct exchange *ex = pipeline_exchange_new(&w);
	struct pipeline_peer peer = {.scheme = "http", .ip = "192.0.2.7", .port = 1, .listener = 0};
	fk.ex = ex;
	pipeline_begin(ex, &w, &fake_ops, &fk, &peer);
	pipeline_start(ex, 431);
	expect_answer(431, REASON_REQUEST_TOO_LARGE);
	ck_assert_int_eq(probe.access_calls, 0);
	ck_assert(fk.body_unread); /* nothing was read past the head: the protocol closes */
}
END_TEST

START_TEST(continue_goes_on_to_the_next_module)
{
	probe.access_result = PHASE_CONTINUE;
	start_request("/app/x");
	ck_assert_int_eq(probe.access_calls, 1);
	ck_assert_int_eq(gate_calls, 1);
	expect_answer(409, REASON_POLICY_ERROR);
}
END_TEST

START_TEST(deny_answers_with_status_reason_and_fields)
{
	probe.access_result = PHASE_DENY;
	probe.deny_status = 429;
	probe.deny_reason = REASON_RATE_LIMITED;
	start_request("/app/x");
	expect_answer(429, REASON_RATE_LIMITED);
	ck_assert_int_eq(probe.access_calls, 1);
	ck_assert_int_eq(gate_calls, 0); /* a deny ends the phase */
	ck_assert_str_eq(field("retry-after"), "7");
	/* the access phase changed a request field, and the change stayed */
	ck_assert_str_eq(probe.logged_header, "changed");
	/* routing saw the authority's host, lower-cased, without the port */
	ck_assert_str_eq(probe.logged_host, "example.com");
	ck_assert_uint_eq(strlen(field("x-request-id")), 32);
}
END_TEST

START_TEST(error_is_500_policy_error)
{
	probe.access_result = PHASE_ERROR;
	start_request("/app/x");
	expect_answer(500, REASON_POLICY_ERROR);
}
END_TEST

START_TEST(suspend_then_resume_deny)
{
	probe.access_result = PHASE_SUSPEND;
	struct exchange *ex = start_request("/app/x");
	/* parked: nothing sent, nothing logged */
	ck_assert_ptr_eq(probe.suspended, &ex->req);
	ck_assert_int_eq(fk.heads, 0);
	ck_assert_int_eq(probe.log_calls, 0);
	ck_assert_int_eq(ex->phase, EX_PHASE_ACCESS);
	struct phase_deny deny;
	phase_deny_init(&deny, &ex->req, 403, REASON_WAF_DENIED);
	fields_add_copy(&deny.headers, "x-why", "rule 7");
	pipeline_resume(&ex->req, PHASE_DENY, &deny);
	expect_answer(403, REASON_WAF_DENIED);
	ck_assert_str_eq(field("x-why"), "rule 7");
	ck_assert_int_eq(probe.cancel_calls, 0);
}
END_TEST

START_TEST(suspend_then_resume_continue)
{
	probe.access_result = PHASE_SUSPEND;
	struct exchange *ex = start_request("/app/x");
	ck_assert_int_eq(gate_calls, 0);
	pipeline_resume(&ex->req, PHASE_CONTINUE, NULL);
	/* the phase goes on with the next module, the suspension timer is gone */
	ck_assert_int_eq(gate_calls, 1);
	expect_answer(409, REASON_POLICY_ERROR);
	ck_assert_int_eq(event_base_loop(w.base, EVLOOP_NONBLOCK), 1);
}
END_TEST

START_TEST(suspend_then_resume_error)
{
	probe.access_result = PHASE_SUSPEND;
	struct exchange *ex = start_request("/app/x");
	pipeline_resume(&ex->req, PHASE_ERROR, NULL);
	expect_answer(500, REASON_POLICY_ERROR);
}
END_TEST

START_TEST(cancel_while_suspended_tells_the_module)
{
	probe.access_result = PHASE_SUSPEND;
	struct exchange *ex = start_request("/app/x");
	ck_assert_ptr_nonnull(probe.suspended);
	/* the client went away: the protocol cancels its exchange */
	pipeline_cancel(ex, REASON_CLIENT_RESET);
	ck_assert_int_eq(probe.cancel_calls, 1);
	ck_assert_int_eq(probe.log_calls, 1);
	ck_assert_int_eq(probe.logged_reason, REASON_CLIENT_RESET);
	ck_assert_int_eq(probe.logged_status, 0);
	/* nothing more goes to the protocol, not even release */
	ck_assert_int_eq(fk.heads, 0);
	ck_assert_int_eq(fk.finishes, 0);
	ck_assert_int_eq(fk.releases, 0);
	/* the suspension timer went with it: the loop has nothing left to run */
	ck_assert_int_eq(event_base_loop(w.base, EVLOOP_NONBLOCK), 1);
}
END_TEST

START_TEST(suspension_deadline_cancels_and_answers_503)
{
	probe.access_result = PHASE_SUSPEND;
	start_request("/app/x");
	ck_assert_ptr_nonnull(probe.suspended);
	/* the real event loop runs until the pipeline's deadline fires */
	ck_assert_int_eq(event_base_dispatch(w.base), 1);
	ck_assert_int_eq(probe.cancel_calls, 1);
	expect_answer(503, REASON_POLICY_ERROR);
}
END_TEST

/* Run the worker's loop until the test protocol saw the exchange end. */
static void run_until_released(void)
{
	while (fk.releases == 0)
		ck_assert_int_ge(event_base_loop(w.base, EVLOOP_ONCE), 0);
}

static char *upstream_request(void)
{
	size_t n = evbuffer_get_length(up_request);
	char *s = calloc(1, n + 1);
	evbuffer_copyout(up_request, s, n);
	return s;
}

START_TEST(continue_through_the_proxy_phase)
{
	probe.access_result = PHASE_CONTINUE;
	gate_open = true;
	start_request("/app/x?q=1");
	run_until_released();
	ck_assert_int_eq(up_connections, 1);
	char *req = upstream_request();
	/* the upstream head is built from the fields as the access phase left them */
	ck_assert_ptr_nonnull(strstr(req, "GET /app/x?q=1 HTTP/1.1\r\nhost: Example.COM:8080\r\n"));
	ck_assert_ptr_nonnull(strstr(req, "\r\nx-probe-req: changed\r\n"));
	ck_assert_ptr_null(strstr(req, "original"));
	ck_assert_ptr_nonnull(strstr(req, "\r\nx-forwarded-for: 192.0.2.7\r\n"));
	ck_assert_ptr_null(strstr(req, "content-length"));
	ck_assert_ptr_null(strstr(req, "transfer-encoding"));
	free(req);
	expect_answer(200, REASON_NONE);
	/* the upstream's fields, the pipeline's and the module's, in one head */
	ck_assert_str_eq(field("x-up"), "1");
	ck_assert_str_eq(field("content-length"), "2");
	ck_assert_ptr_null(field("connection")); /* hop-by-hop: not the client's */
	ck_assert_int_eq(fk.body_kind, EX_BODY_LENGTH);
	char body[8] = {0};
	evbuffer_copyout(fk.body, body, sizeof body - 1);
	ck_assert_str_eq(body, "ok");
}
END_TEST

START_TEST(body_of_unknown_length_goes_upstream_chunked)
{
	probe.access_result = PHASE_CONTINUE;
	gate_open = true;
	body_src = "hello world";
	up_end = "\r\n0\r\nx-t: 1\r\n\r\n";
	struct exchange *ex = pipeline_exchange_new(&w);
	struct pipeline_peer peer = {.scheme = "https", .ip = "192.0.2.8", .port = 1, .listener = 0};
	fk.ex = ex;
	pipeline_begin(ex, &w, &fake_ops, &fk, &peer);
	struct request *r = &ex->req;
	r->method = "POST";
	r->target = r->origin_target = r->path = "/app/upload";
	r->authority = "example.com";
	ex->body = EX_BODY_STREAM; /* an HTTP/2 body without content-length, say */
	pipeline_start(ex, 0);
	ck_assert(fk.body_started); /* admitted: the protocol was told to start the body */
	run_until_released();
	char *req = upstream_request();
	/* the proxy frames each read itself; the trailer that may not be one is dropped */
	const char *body = strstr(req, "\r\n\r\n");
	ck_assert_ptr_nonnull(strstr(req, "\r\ntransfer-encoding: chunked\r\n"));
	ck_assert_ptr_nonnull(body);
	ck_assert_str_eq(body + 4, "5\r\nhello\r\n5\r\n worl\r\n1\r\nd\r\n0\r\nx-t: 1\r\n\r\n");
	free(req);
	expect_answer(200, REASON_NONE);
	ck_assert(!fk.body_unread);
}
END_TEST

START_TEST(body_of_known_length_goes_upstream_as_is)
{
	probe.access_result = PHASE_CONTINUE;
	gate_open = true;
	body_src = "hello";
	up_end = "\r\n\r\nhello";
	struct exchange *ex = pipeline_exchange_new(&w);
	struct pipeline_peer peer = {.scheme = "http", .ip = "192.0.2.9", .port = 1, .listener = 0};
	fk.ex = ex;
	pipeline_begin(ex, &w, &fake_ops, &fk, &peer);
	struct request *r = &ex->req;
	r->method = "PUT";
	r->target = r->origin_target = r->path = "/app/put";
	r->authority = "example.com";
	ex->body = EX_BODY_LENGTH;
	ex->body_length = 5;
	pipeline_start(ex, 0);
	run_until_released();
	char *req = upstream_request();
	ck_assert_ptr_nonnull(strstr(req, "\r\ncontent-length: 5\r\n\r\nhello"));
	ck_assert_ptr_null(strstr(req, "transfer-encoding"));
	free(req);
	expect_answer(200, REASON_NONE);
}
END_TEST

START_TEST(fields_api)
{
	struct arena a;
	arena_init(&a, 1024);
	struct fields f;
	fields_init(&f, &a);
	for (int i = 0; i < 40; i++) /* past the first array: it grows */
		fields_add_u64(&f, "n", (uint64_t)i);
	ck_assert_uint_eq(f.n, 40);
	ck_assert_uint_eq(fields_remove(&f, "N"), 40);
	fields_add_line(&f, "Via:  1.1 a \t", 13);
	fields_add_line(&f, ": no name", 9);
	ck_assert_uint_eq(f.n, 1);
	size_t n = 0;
	const char *v = fields_value(&f, "via", &n);
	ck_assert_ptr_nonnull(v);
	ck_assert_uint_eq(n, 5);
	ck_assert(memcmp(v, "1.1 a", 5) == 0);
	fields_set(&f, "via", "2 b");
	fields_add_copy(&f, "x", "1");
	ck_assert_int_eq(fields_find(&f, "via", 0), 0);
	ck_assert_int_eq(fields_find(&f, "x", 0), 1);
	ck_assert_str_eq(f.v[0].value, "2 b");
	arena_free(&a);
}
END_TEST

static Suite *pipeline_suite(void)
{
	Suite *s = suite_create("pipeline");
	TCase *tc = tcase_create("phases");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, route_miss_is_404_without_access);
	tcase_add_test(tc, respond_route_answers_directly);
	tcase_add_test(tc, early_status_answered_at_once);
	tcase_add_test(tc, continue_goes_on_to_the_next_module);
	tcase_add_test(tc, deny_answers_with_status_reason_and_fields);
	tcase_add_test(tc, error_is_500_policy_error);
	tcase_add_test(tc, suspend_then_resume_deny);
	tcase_add_test(tc, suspend_then_resume_continue);
	tcase_add_test(tc, suspend_then_resume_error);
	tcase_add_test(tc, cancel_while_suspended_tells_the_module);
	tcase_add_test(tc, suspension_deadline_cancels_and_answers_503);
	suite_add_tcase(s, tc);
	TCase *tp = tcase_create("proxy");
	tcase_add_checked_fixture(tp, setup_upstream, teardown);
	tcase_set_timeout(tp, 30);
	tcase_add_test(tp, continue_through_the_proxy_phase);
	tcase_add_test(tp, body_of_unknown_length_goes_upstream_chunked);
	tcase_add_test(tp, body_of_known_length_goes_upstream_as_is);
	suite_add_tcase(s, tp);
	TCase *tf = tcase_create("fields");
	tcase_add_test(tf, fields_api);
	suite_add_tcase(s, tf);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pipeline_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
