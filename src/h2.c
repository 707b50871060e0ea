#include "h2.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "addrcount.h"
#include "client.h"
#include "clock.h"
#include "counters.h"
#include "conf_tls.h"
#include "exchange.h"
#include "h2_mem.h"
#include "h2_scan.h"
#include "log.h"
#include "pipeline.h"
#include "snapshot.h"
#include "tls_io.h"
#include "worker.h"

/* nghttp2 output is produced only while the transport holds less than this:
 * a client that does not read stops us pulling response data. */
#define H2_OUT_HIGH (64 * 1024)
#define H2_MAX_NV 130
/* DATA payloads from this size on are copied once, beside their frame header,
 * straight into the transport's output (send_data_cb), not through nghttp2. */
#define H2_NO_COPY_MIN 4096
/* Over TLS, a DATA frame's header and payload fill one 16 KiB record exactly:
 * a 16 KiB payload would make a record and a second one of 9 bytes, each
 * with its own encryption and framing on both sides. */
#define H2_TLS_DATA_MAX (16384 - 9)
/* A graceful drain's final GOAWAY goes this long after the first at most
 * (sooner when the client answers the PING sent with it). */
#define H2_DRAIN_NOTICE_MS 1000
/* A binary upgrade: a session without a stream for this long goes (h2_handover). */
#define H2_HANDOVER_IDLE_MS 1000

/* the close reasons (h2_scan.h) are a fixed label set of the counter registry (counters.h) */
static const char *const h2_close_names[] = {
#define H2_CLOSE_STR(sym, str) str,
    H2_CLOSE_LIST(H2_CLOSE_STR)
#undef H2_CLOSE_STR
};

/* Streams kept for reuse per worker, each with its (empty) response buffer:
 * a burst of streams (and of refusals) then costs no malloc for them. */
#define H2_MAX_FREE_STREAMS 256

struct h2_worker {
	struct h2_session *sessions;
	struct h2_stream *free_streams; /* linked through ->next */
	unsigned num_free_streams;
	struct h2_mem *mem; /* nghttp2's allocator for the worker's sessions */
};

struct h2_stream {
	struct h2_session *s;
	int32_t id;
	struct h2_stream *prev, *next;
	/* request */
	struct exchange *ex;  /* its head filled here until the start; the pipeline's until released; then NULL */
	bool started;         /* ex went to the pipeline */
	struct evbuffer *in;  /* request DATA towards the pipeline (NULL: no body) */
	struct evbuffer *out; /* response body from the pipeline */
	const char *method, *target, *authority, *host; /* in ex's arena */
	size_t target_len, path_len, authority_len, host_len;
	int cookie_field;     /* index of the joined cookie field, -1: none yet */
	int early_status;     /* answered at once by the pipeline (431, 501) */
	bool have_length;     /* content-length given */
	bool bad;             /* a field we refuse: the stream is reset */
	bool glitched;        /* already counted as a glitch */
	bool uploading;       /* counted in the session's uploading streams */
	bool req_ended;
	uint64_t content_length;
	uint64_t body_remaining; /* a content-length body: bytes the pipeline has not taken */
	uint64_t req_unacked; /* DATA bytes received and not yet given back to the window */
	struct event *body_timer; /* client_body_timeout while the pipeline waits for the body */
	uint64_t body_deadline_us;   /* 0: no body timeout running */
	uint64_t body_timer_at_us;   /* when the pending body_timer fires; 0: not pending */
	/* response */
	bool resp_submitted;  /* the HEADERS are submitted */
	bool finished;        /* the pipeline is done with the stream */
	bool complete;        /* ... and the whole body is in out */
	bool deferred;        /* the data provider waits for bytes */
	bool drained;         /* out fell below the proxy's resume mark: tell the pipeline */
	struct evbuffer *resp_trailers; /* "name: value" lines, each ending in "\n" */
};

struct h2_session {
	struct worker *w;
	struct snapshot *snap; /* one reference: cfg and limits belong to it */
	size_t listener;
	const struct conf_http2 *cfg;
	struct bufferevent *bev;
	nghttp2_session *ng;
	struct client_origin origin;
	struct h2_session *prev, *next;
	struct h2_stream *streams;
	unsigned num_streams;
	unsigned uploading;   /* streams whose exchange runs and whose request body is still arriving */
	struct event *timer;
	struct event *flush_ev; /* session_flush once the current callbacks are done */
	struct event *resume_ev; /* the next read turn (H2_STREAMS_PER_TURN); made at the first */
	bool read_paused;       /* socket reading stopped until resume_ev */
	struct h2_scan scan;    /* our own look at the frames (flood counts, turns) */
	size_t block_bytes;   /* decoded header bytes of the current block */
	unsigned block_conts; /* CONTINUATION frames of the block nghttp2 is decoding */
	/* RFC 9113 5.1.1: new streams must have increasing odd ids */
	int32_t max_stream_id;      /* highest id that opened a stream */
	int32_t cut_ids[16];        /* streams closed before the client ended its side: frames */
	unsigned cut_next;          /* ... it sent before it knew may still arrive (ring) */
	int last_invalid;           /* nghttp2's error for the last invalid frame (0: none) */
	bool closing;   /* fatal: GOAWAY queued, close once flushed */
	bool draining;  /* graceful: the final GOAWAY sent, close when no stream is left */
	bool notified;  /* graceful, first step: GOAWAY (2^31-1) and a PING sent (session_drain) */
	struct event *drain_ev; /* the final GOAWAY if the PING's answer is late */
	bool in_io;     /* inside mem_recv/mem_send: freeing waits */
	bool dead;      /* free at the end of the current I/O */
	bool flush_scheduled;
	enum reason cut_reason; /* logged for requests still in progress when their stream goes */
	bool drained;   /* some stream's response buffer drained (st->drained) */
	size_t data_max; /* DATA payload per frame: H2_TLS_DATA_MAX over TLS, else what nghttp2 allows */
};

static void session_free(struct h2_session *s);
static void session_drain_final(struct h2_session *s);
static void session_drain(struct h2_session *s);
static void session_flush(struct h2_session *s);

static struct h2_worker *h2w(struct worker *w)
{
	if (!w->h2) {
		struct h2_worker *hw = calloc(1, sizeof(struct h2_worker));
		if (hw && !(hw->mem = h2_mem_new())) {
			free(hw);
			hw = NULL;
		}
		w->h2 = hw;
	}
	return w->h2;
}

/* ---- defences ---- */

/* Counts and logs why the session ends; detail: nghttp2's words, or NULL. */
static void session_closed_because(struct h2_session *s, enum h2_close why, const char *detail)
{
	s->closing = true;
	CTR_GLOBAL_ADD(s->w->counters, H2_CLOSED, why, 1);
	struct log_line l;
	log_begin(&l, why == H2_CLOSE_IDLE_TIMEOUT ? LOG_DEBUG : LOG_WARN, "HTTP/2 connection closed");
	log_str(&l, "reason", h2_close_names[why]);
	log_str(&l, "client_ip", s->origin.ip);
	if (detail)
		log_str(&l, "detail", detail);
	log_end(&l);
}

static void session_fail(struct h2_session *s, enum h2_close why, uint32_t code)
{
	if (s->closing)
		return;
	session_closed_because(s, why, NULL);
	nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng), code, NULL, 0);
	/* read no more: whatever the peer still sends is not worth parsing */
	bufferevent_disable(s->bev, EV_READ);
}

static void glitch(struct h2_session *s)
{
	if (h2_scan_glitch(&s->scan, s->cfg, clock_mono_us()))
		session_fail(s, H2_CLOSE_GLITCHES, NGHTTP2_ENHANCE_YOUR_CALM);
}

static struct h2_stream *stream_of(struct h2_session *s, int32_t id);

/* A stream the client made us reset (by nghttp2 or by us): one glitch per stream. */
static void stream_glitch(struct h2_session *s, int32_t id)
{
	struct h2_stream *st = id ? stream_of(s, id) : NULL;
	if (st) {
		if (st->glitched)
			return;
		st->glitched = true;
	}
	glitch(s);
}

/* ---- streams: request side ---- */

static struct h2_stream *stream_of(struct h2_session *s, int32_t id)
{
	return nghttp2_session_get_stream_user_data(s->ng, id);
}

/* Run the session's flush once the current callbacks are done: the pipeline
 * calls into this file from its own call chains, where nghttp2 must not run. */
static void session_schedule(struct h2_session *s)
{
	if (!s->flush_scheduled) {
		s->flush_scheduled = true;
		event_active(s->flush_ev, EV_TIMEOUT, 1);
	}
}

/* The stream no longer holds an upstream exchange open for its request body. */
static void stream_upload_done(struct h2_stream *st)
{
	if (st->uploading) {
		st->uploading = false;
		st->s->uploading--;
		addrcount_shared_release(st->s->w->uploads_by_addr, st->s->origin.ip);
	}
}

/* May stream st of s start one more upload? Counts it for its address when
 * so. Refused when the connection, or the client (its address's key: IPv4
 * as itself, IPv6 by /64) over all its connections to every worker of the
 * process, already has as many as configured. */
static bool stream_upload_admit(struct h2_session *s)
{
	if (s->uploading >= s->cfg->max_uploading_streams) {
		CTR_GLOBAL_ADD(s->w->counters, H2_UPLOADS_REFUSED, CTR_UPLOAD_CONNECTION, 1);
		return false;
	}
	if (!addrcount_shared_acquire(s->w->uploads_by_addr, s->origin.ip, s->cfg->max_uploading_streams_per_client)) {
		CTR_GLOBAL_ADD(s->w->counters, H2_UPLOADS_REFUSED, CTR_UPLOAD_CLIENT, 1);
		return false;
	}
	return true;
}

static void stream_free(struct h2_stream *st)
{
	struct h2_session *s = st->s;
	stream_upload_done(st);
	if (st->ex) {
		struct exchange *ex = st->ex;
		st->ex = NULL;
		if (st->started)
			pipeline_cancel(ex, st->s->cut_reason);
		else
			pipeline_exchange_discard(s->w, ex);
	}
	if (st->prev)
		st->prev->next = st->next;
	else
		s->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	s->num_streams--;
	CTR_GAUGE_DOWN(s->w->counters, H2_STREAMS_ACTIVE, 0);
	if (st->body_timer)
		event_free(st->body_timer);
	if (st->in)
		evbuffer_free(st->in);
	if (st->resp_trailers)
		evbuffer_free(st->resp_trailers);
	struct h2_worker *hw = s->w->h2;
	size_t left = st->out ? evbuffer_get_length(st->out) : 0;
	if (st->out && hw->num_free_streams < H2_MAX_FREE_STREAMS && (left == 0 || evbuffer_drain(st->out, left) == 0)) {
		st->next = hw->free_streams;
		hw->free_streams = st;
		hw->num_free_streams++;
		return;
	}
	if (st->out)
		evbuffer_free(st->out);
	free(st);
}

/* A cleared stream, with an empty response buffer (st->out) when one was kept. */
static struct h2_stream *stream_new(struct h2_worker *hw)
{
	struct h2_stream *st = hw->free_streams;
	if (!st)
		return calloc(1, sizeof(*st));
	hw->free_streams = st->next;
	hw->num_free_streams--;
	struct evbuffer *out = st->out;
	memset(st, 0, sizeof(*st));
	st->out = out;
	return st;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2_session *s = arg;
	s->block_bytes = 0;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct h2_worker *hw = s->w->h2;
	struct h2_stream *st = stream_new(hw);
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (!(st->ex = pipeline_exchange_new(s->w))) {
		if (st->out)
			evbuffer_free(st->out);
		free(st);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	st->s = s;
	st->id = frame->hd.stream_id;
	st->cookie_field = -1;
	st->next = s->streams;
	if (s->streams)
		s->streams->prev = st;
	s->streams = st;
	s->num_streams++;
	CTR_GLOBAL_ADD(s->w->counters, H2_STREAMS, 0, 1);
	CTR_GAUGE_UP(s->w->counters, H2_STREAMS_ACTIVE, 0);
	if (nghttp2_session_set_stream_user_data(ng, st->id, st) != 0) {
		stream_free(st);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return 0;
}

/* nghttp2 refuses these too (RFC 9113 8.2.1); checked again here, whatever
 * its version does, since they would split an HTTP/1.1 head. One comparison
 * per byte for the usual (printable) ones. */
static bool field_ok(const uint8_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] <= '\r' && (v[i] == '\r' || v[i] == '\n' || v[i] == '\0'))
			return false;
	return true;
}

/* What may stand in an HTTP/1.1 request-target: it goes into the upstream request line. */
static bool target_ok(const uint8_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] <= 0x20 || v[i] >= 0x7f)
			return false;
	return n > 0;
}

static const char *arena_copy(struct arena *a, const uint8_t *v, size_t n)
{
	return arena_strndup(a, (const char *)v, n);
}

/* One regular request field into the exchange's fields (copied into its arena). */
static int stream_add_field(struct h2_stream *st, const uint8_t *name, size_t namelen, const uint8_t *value,
                            size_t valuelen)
{
	struct fields *f = &st->ex->req.headers;
	struct arena *a = &st->ex->req.arena;
	const struct conf_limits *lim = &st->s->snap->conf->limits;
	size_t max = lim->max_headers < H1_MAX_HEADERS ? lim->max_headers : H1_MAX_HEADERS;
	if (namelen == 6 && memcmp(name, "cookie", 6) == 0 && st->cookie_field >= 0) {
		/* RFC 9113 8.2.3: crumbs are joined back into one field for HTTP/1.1 */
		struct http_header *h = &f->v[st->cookie_field];
		char *joined = arena_alloc(a, h->value_len + 2 + valuelen + 1);
		memcpy(joined, h->value, h->value_len);
		memcpy(joined + h->value_len, "; ", 2);
		memcpy(joined + h->value_len + 2, value, valuelen);
		joined[h->value_len + 2 + valuelen] = '\0';
		h->value = joined;
		h->value_len += 2 + valuelen;
		return 0;
	}
	if (f->n >= max) {
		st->early_status = 431;
		return 0;
	}
	if (namelen == 6 && memcmp(name, "cookie", 6) == 0)
		st->cookie_field = (int)f->n;
	fields_add(f, arena_copy(a, name, namelen), namelen, arena_copy(a, value, valuelen), valuelen);
	return 0;
}

/* A request trailer field: the exchange's trailers, while it is in the pipeline. */
static void stream_add_trailer(struct h2_stream *st, const uint8_t *name, size_t namelen, const uint8_t *value,
                               size_t valuelen)
{
	if (!st->ex || !st->started)
		return;
	struct arena *a = &st->ex->req.arena;
	fields_add(&st->ex->trailers, arena_copy(a, name, namelen), namelen, arena_copy(a, value, valuelen), valuelen);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *arg)
{
	(void)ng;
	(void)flags;
	struct h2_session *s = arg;
	/* RFC 7541 4.1 sizes: what SETTINGS_MAX_HEADER_LIST_SIZE announces; the
	 * decoded size is what an HPACK bomb inflates, whatever the wire size */
	s->block_bytes += namelen + valuelen + 32;
	if (s->block_bytes > s->cfg->max_header_list_size) {
		/* a block that grew past the limit over CONTINUATION frames is the
		 * CVE-2024-27316 flood, whichever of the two limits it hit first */
		session_fail(s, s->block_conts ? H2_CLOSE_CONTINUATION_FLOOD : H2_CLOSE_HEADER_LIST_TOO_LARGE,
		             NGHTTP2_ENHANCE_YOUR_CALM);
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	struct h2_stream *st = stream_of(s, frame->hd.stream_id);
	if (!st || st->bad)
		return 0;
	if (!field_ok(name, namelen) || !field_ok(value, valuelen)) {
		st->bad = true;
		return 0;
	}
	if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
		/* trailers (pseudo-headers are refused by nghttp2) */
		stream_add_trailer(st, name, namelen, value, valuelen);
		return 0;
	}
	if (!st->ex || st->started)
		return 0;
	struct arena *a = &st->ex->req.arena;
	if (namelen > 0 && name[0] == ':') {
		const char **slot;
		if (namelen == 7 && memcmp(name, ":method", 7) == 0)
			slot = &st->method;
		else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
			slot = &st->target;
		else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
			slot = &st->authority;
		else
			return 0; /* :scheme (the listener decides it) */
		/* a repeated one, or a target or authority that cannot go into an HTTP/1.1 head */
		if (*slot || (slot != &st->method && !target_ok(value, valuelen))) {
			st->bad = true;
			return 0;
		}
		*slot = arena_copy(a, value, valuelen);
		if (slot == &st->target) {
			const char *q = memchr(st->target, '?', valuelen);
			st->target_len = valuelen;
			st->path_len = q ? (size_t)(q - st->target) : valuelen;
		} else if (slot == &st->authority) {
			st->authority_len = valuelen;
		}
		return 0;
	}
	if (namelen == 4 && memcmp(name, "host", 4) == 0) {
		if (st->host || !target_ok(value, valuelen)) {
			st->bad = true;
			return 0;
		}
		st->host = arena_copy(a, value, valuelen);
		st->host_len = valuelen;
		return 0;
	}
	if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
		/* the proxy sends its own from the body it forwards */
		uint64_t v = 0;
		if (st->have_length || valuelen == 0 || valuelen > 18) {
			st->bad = true;
			return 0;
		}
		for (size_t i = 0; i < valuelen; i++) {
			if (value[i] < '0' || value[i] > '9') {
				st->bad = true;
				return 0;
			}
			v = v * 10 + (uint64_t)(value[i] - '0');
		}
		st->have_length = true;
		st->content_length = v;
		return 0;
	}
	if (namelen == 2 && memcmp(name, "te", 2) == 0)
		return 0; /* only "trailers" gets past nghttp2, and it is hop-by-hop */
	return stream_add_field(st, name, namelen, value, valuelen) == 0 ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_invalid_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                             const uint8_t *value, size_t valuelen, uint8_t flags, void *arg)
{
	(void)ng;
	(void)frame;
	(void)name;
	(void)namelen;
	(void)value;
	(void)valuelen;
	(void)flags;
	stream_glitch(arg, frame->hd.stream_id);
	/* the stream is reset by nghttp2 (RST_STREAM PROTOCOL_ERROR) */
	return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* Gives back the window of the body bytes the pipeline took from st->in. */
static void stream_ack(struct h2_stream *st)
{
	if (st->req_unacked == 0)
		return;
	size_t queued = st->in ? evbuffer_get_length(st->in) : 0;
	if (queued >= st->req_unacked)
		return;
	uint64_t n = st->req_unacked - queued;
	st->req_unacked -= n;
	nghttp2_session_consume(st->s->ng, st->id, (size_t)n);
	session_schedule(st->s);
}


/* ---- the body timeout: a lazy deadline, like a client connection's ---- */

static void stream_body_timer_cb(evutil_socket_t fd, short what, void *arg);

static void stream_body_timer_at(struct h2_stream *st, uint64_t at_us)
{
	struct worker *w = st->s->w;
	uint64_t now = clock_mono_us();
	uint64_t ms = at_us > now ? (at_us - now + 999) / 1000 : 0;
	struct timeval tv = worker_timeval(w, ms);
	if (!st->body_timer && !(st->body_timer = evtimer_new(w->base, stream_body_timer_cb, st))) {
		log_msg(LOG_ERROR, "cannot create an HTTP/2 body timer");
		return;
	}
	if (evtimer_add(st->body_timer, &tv) != 0) {
		log_msg(LOG_ERROR, "cannot arm an HTTP/2 body timer");
		return;
	}
	st->body_timer_at_us = now + ms * 1000;
}

/* (Re)start the body timeout: every DATA frame pushes it back without touching the event loop. */
static void stream_body_deadline(struct h2_stream *st)
{
	st->body_deadline_us = clock_mono_us() + st->s->w->snap->conf->limits.client_body_timeout * 1000;
	if (st->body_timer_at_us == 0 || st->body_timer_at_us > st->body_deadline_us)
		stream_body_timer_at(st, st->body_deadline_us);
}

static void stream_body_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct h2_stream *st = arg;
	st->body_timer_at_us = 0;
	if (!st->body_deadline_us)
		return;
	if (clock_mono_us() < st->body_deadline_us) {
		stream_body_timer_at(st, st->body_deadline_us);
		return;
	}
	st->body_deadline_us = 0;
	if (st->ex && st->started && !st->finished)
		pipeline_body_timeout(st->ex);
}

/* ---- the exchange's operations, as an HTTP/2 stream ---- */

static const struct ex_ops h2_ops;

/* The request head is complete: hand the stream to the pipeline. */
static int stream_start(struct h2_session *s, struct h2_stream *st, bool end_stream)
{
	struct exchange *ex = st->ex;
	if (!ex || st->started)
		return 0;
	const char *auth = st->authority ? st->authority : st->host;
	size_t auth_len = st->authority ? st->authority_len : st->host_len;
	bool connect = st->method && strcmp(st->method, "CONNECT") == 0;
	if (st->bad || !st->method || !auth || auth_len == 0 ||
	    (!connect && (!st->target || (st->target[0] != '/' && !(st->target_len == 1 && st->target[0] == '*'))))) {
		stream_glitch(s, st->id);
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
		return 0;
	}
	st->req_ended = end_stream;
	if (!st->out)
		st->out = evbuffer_new();
	if (!end_stream)
		st->in = evbuffer_new();
	if (!st->out || (!end_stream && !st->in)) {
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
		return 0;
	}
	if (!end_stream && !stream_upload_admit(s)) {
		/* each such stream holds an upstream request open for as long as
		 * its client takes to send the body: refused (not processed, so a
		 * client may retry it) rather than letting one connection, or one
		 * address over many connections, hold many */
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	struct pipeline_peer peer = {
	    .scheme = s->origin.scheme, .ip = s->origin.ip, .port = s->origin.port, .listener = s->listener};
	pipeline_begin(ex, s->w, &h2_ops, st, &peer);
	st->started = true;
	if (!end_stream) {
		st->uploading = true;
		s->uploading++;
	}
	struct request *r = &ex->req;
	r->protocol = "HTTP/2.0";
	r->stream_id = (uint32_t)st->id;
	r->method = st->method;
	if (connect) {
		st->early_status = 501; /* no tunnels */
		r->target = r->origin_target = r->path = auth;
	} else {
		r->target = r->origin_target = st->target;
		r->path = st->path_len == st->target_len ? st->target : arena_strndup(&r->arena, st->target, st->path_len);
	}
	r->authority = auth;
	ex->head_method = strcmp(st->method, "HEAD") == 0;
	if (end_stream) {
		ex->body = EX_BODY_NONE;
	} else if (st->have_length) {
		ex->body = EX_BODY_LENGTH;
		ex->body_length = st->body_remaining = st->content_length;
	} else {
		ex->body = EX_BODY_STREAM; /* DATA until END_STREAM: the proxy frames it as chunked upstream */
	}
	ex->body_done = ex->body == EX_BODY_NONE || (ex->body == EX_BODY_LENGTH && st->content_length == 0);
	pipeline_start(ex, st->early_status);
	return 0;
}

static void stream_end_request(struct h2_stream *st)
{
	if (st->req_ended)
		return;
	st->req_ended = true;
	stream_upload_done(st);
	if (st->ex && st->started && !st->finished && st->in)
		pipeline_on_body(st->ex);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	(void)ng;
	struct h2_session *s = arg;
	struct h2_stream *st = frame->hd.stream_id ? stream_of(s, frame->hd.stream_id) : NULL;
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (!st)
			return 0;
		if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
			return stream_start(s, st, frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
		if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
			stream_end_request(st);
		return 0;
	case NGHTTP2_DATA:
		if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
			stream_end_request(st);
		return 0;
	case NGHTTP2_PING:
		/* the answer to session_drain's PING: every stream the client sent
		 * before it saw the first GOAWAY has arrived */
		if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && s->notified)
			session_drain_final(s);
		return 0;
	default:
		return 0;
	}
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *arg)
{
	(void)flags;
	struct h2_session *s = arg;
	struct h2_stream *st = stream_of(s, stream_id);
	if (!st || !st->ex || !st->started || !st->in || st->req_ended || st->finished) {
		/* nobody reads it: give the connection window back at once */
		nghttp2_session_consume_connection(ng, len);
		return 0;
	}
	st->req_unacked += len;
	if (evbuffer_add(st->in, data, len) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (st->body_deadline_us)
		stream_body_deadline(st);
	pipeline_on_body(st->ex);
	return 0;
}

/* A stream closed while the client may still be sending on it (on_begin_frame). */
static void remember_cut(struct h2_session *s, int32_t id)
{
	s->cut_ids[s->cut_next] = id;
	s->cut_next = (s->cut_next + 1) % (sizeof s->cut_ids / sizeof s->cut_ids[0]);
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *arg)
{
	(void)error_code;
	struct h2_session *s = arg;
	struct h2_stream *st = stream_of(s, stream_id);
	if (!st)
		return 0;
	if (!st->req_ended)
		remember_cut(s, stream_id);
	nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
	stream_free(st);
	return 0;
}

/* RFC 9113 5.1.1: a HEADERS frame that would open a stream must carry an odd
 * id above every id the client used before, else the connection ends with
 * PROTOCOL_ERROR. nghttp2 ignores such a frame when it no longer knows the
 * stream; the exception is a stream closed before the client finished
 * sending (reset, or answered early): RFC 9113 5.1 lets frames the client
 * sent before it learnt that arrive, and nghttp2 deals with them. */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *arg)
{
	(void)ng;
	struct h2_session *s = arg;
	int32_t id = hd->stream_id;
	if (s->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE; /* a defence fired: nothing more is processed */
	if (hd->type == NGHTTP2_CONTINUATION)
		s->block_conts++;
	if (hd->type != NGHTTP2_HEADERS)
		return 0;
	s->block_conts = 0;
	if (id == 0 || stream_of(s, id))
		return 0;
	if ((id & 1) && id > s->max_stream_id) {
		s->max_stream_id = id;
		return 0;
	}
	for (size_t i = 0; i < sizeof s->cut_ids / sizeof s->cut_ids[0]; i++)
		if (s->cut_ids[i] == id)
			return 0;
	session_fail(s, H2_CLOSE_INVALID_STREAM_ID, NGHTTP2_PROTOCOL_ERROR);
	return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* nghttp2 found a frame invalid and resets its stream (or ends the session):
 * a malformed request (no :path, bad pseudo-header, a body longer than its
 * content-length...) counts as a glitch like the ones we find ourselves. */
static int on_invalid_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, int lib_error_code, void *arg)
{
	(void)ng;
	struct h2_session *s = arg;
	s->last_invalid = lib_error_code;
	/* a stream over the limit is refused; a glitch only once the client knew the limit */
	bool refused = lib_error_code == NGHTTP2_ERR_REFUSED_STREAM;
	if (refused)
		remember_cut(s, frame->hd.stream_id); /* its body and trailers may be on their way */
	if (frame->hd.stream_id != 0 && (!refused || h2_scan_limit_known(&s->scan)))
		stream_glitch(s, frame->hd.stream_id);
	return s->closing ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/* ---- streams: response side ---- */

/* Connection-specific fields (RFC 9113 8.2.2) and Content-Length, which
 * HTTP/2 frames itself. This runs for every response field: the length
 * decides before any comparison. */
static bool hop_by_hop(const char *name, size_t n)
{
	const char *want;
	switch (n) {
	case 2: want = "te"; break;
	case 7: want = name[0] == 'u' || name[0] == 'U' ? "upgrade" : "trailer"; break;
	case 10: want = name[0] == 'k' || name[0] == 'K' ? "keep-alive" : "connection"; break;
	case 14: want = name[0] == 'h' || name[0] == 'H' ? "http2-settings" : "content-length"; break;
	case 16: want = "proxy-connection"; break;
	case 17: want = "transfer-encoding"; break;
	default: return false;
	}
	return strncasecmp(want, name, n) == 0;
}

static ssize_t data_read(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                         nghttp2_data_source *source, void *arg)
{
	struct h2_session *s = arg;
	struct h2_stream *st = source->ptr;
	size_t avail = st->out ? evbuffer_get_length(st->out) : 0;
	size_t n = avail < length ? avail : length;
	if (n > s->data_max)
		n = s->data_max;
	/* large payloads: send_data_cb copies the bytes from st->out to the
	 * transport itself. Small ones go through nghttp2's buffer, so that a
	 * frame's header and payload reach the transport as one piece (the TLS
	 * layer would otherwise gather the pieces again with a copy of its own). */
	if (n >= H2_NO_COPY_MIN)
		*data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	else if (n && evbuffer_remove(st->out, buf, n) != (int)n)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	size_t left = avail - n;
	if (avail >= PROXY_HIGH_WATER / 2 && left < PROXY_HIGH_WATER / 2 && st->started && !st->finished) {
		/* the proxy may have stopped reading the upstream: tell it after this send */
		st->drained = true;
		s->drained = true;
	}
	if (left == 0 && st->finished) {
		if (!st->complete)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* cut short: the stream is reset */
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		size_t tl = st->resp_trailers ? evbuffer_get_length(st->resp_trailers) : 0;
		if (tl) {
			nghttp2_nv nv[64];
			size_t k = 0;
			char *t = (char *)evbuffer_pullup(st->resp_trailers, (ev_ssize_t)tl);
			char *end = t + tl;
			while (t && t < end && k < 64) {
				char *nl = memchr(t, '\n', (size_t)(end - t));
				char *colon = memchr(t, ':', (size_t)(nl - t));
				if (!colon)
					break;
				for (char *c = t; c < colon; c++)
					*c = (char)tolower((unsigned char)*c);
				char *v = colon + 1;
				while (v < nl && (*v == ' ' || *v == '\t'))
					v++;
				char *ve = nl;
				while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
					ve--;
				nv[k++] = (nghttp2_nv){(uint8_t *)t, (uint8_t *)v, (size_t)(colon - t), (size_t)(ve - v),
				                       NGHTTP2_NV_FLAG_NONE};
				t = nl + 1;
			}
			if (k && nghttp2_submit_trailer(ng, stream_id, nv, k) == 0)
				*data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		}
		return (ssize_t)n;
	}
	if (n == 0) {
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

/* A DATA frame whose payload data_read left in st->out: header and payload
 * are copied once, side by side, into the transport's output, instead of
 * into nghttp2 and out again; as one contiguous piece of at most 16 KiB over
 * TLS (H2_TLS_DATA_MAX) the frame becomes exactly one record with one
 * SSL_write(). */
static int send_data_cb(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *arg)
{
	(void)ng;
	struct h2_session *s = arg;
	struct h2_stream *st = source->ptr;
	struct evbuffer *out = bufferevent_get_output(s->bev);
	struct evbuffer_iovec v;
	if (frame->data.padlen > 0 || evbuffer_reserve_space(out, (ev_ssize_t)(9 + length), &v, 1) != 1 ||
	    v.iov_len < 9 + length)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	memcpy(v.iov_base, framehd, 9);
	if (evbuffer_copyout(st->out, (char *)v.iov_base + 9, length) != (ev_ssize_t)length)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	v.iov_len = 9 + length;
	if (evbuffer_commit_space(out, &v, 1) != 0 || evbuffer_drain(st->out, length) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static bool lower_case(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] >= 'A' && s[i] <= 'Z')
			return false;
	return true;
}

/* Values that change with every response would only churn the HPACK dynamic
 * table (an insert and an eviction each time) and push out the fields that do
 * repeat: they are sent as literals that are never indexed. */
static uint8_t nv_index_flag(const char *name, size_t n)
{
	if ((n == 12 && memcmp(name, "x-request-id", 12) == 0) || (n == 4 && memcmp(name, "date", 4) == 0) ||
	    (n == 14 && memcmp(name, "content-length", 14) == 0))
		return NGHTTP2_NV_FLAG_NO_INDEX;
	return NGHTTP2_NV_FLAG_NONE;
}

static long h2_send_head(struct exchange *ex, const struct ex_head *h)
{
	struct h2_stream *st = ex->conn;
	struct h2_session *s = st->s;
	const struct fields *f = h->fields;
	if (st->resp_submitted || h->status < 100 || h->status > 999)
		return -1;
	nghttp2_nv nv[H2_MAX_NV];
	int status = h->status;
	char status_text[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10), (char)('0' + status % 10), 0};
	size_t k = 0;
	nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status_text, 7, 3, NGHTTP2_NV_FLAG_NONE};
	long head_bytes = 15; /* "HTTP/1.1 200 \r\n" ... "\r\n" */
	for (size_t i = 0; i < f->n && k < H2_MAX_NV; i++) {
		const struct http_header *fh = &f->v[i];
		/* connection-specific fields have no place in HTTP/2 (a module may have added one) */
		if (hop_by_hop(fh->name, fh->name_len) && !http_name_is(fh, "content-length"))
			continue;
		const char *name = fh->name;
		if (!lower_case(fh->name, fh->name_len)) {
			/* names must be lower case in HTTP/2: an upper-case one (an
			 * HTTP/1 upstream's) is copied, into the request's arena */
			char *low = arena_alloc(&ex->req.arena, fh->name_len);
			for (size_t j = 0; j < fh->name_len; j++)
				low[j] = (char)tolower((unsigned char)fh->name[j]);
			name = low;
		}
		nv[k++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)fh->value, fh->name_len, fh->value_len,
		                       nv_index_flag(name, fh->name_len)};
		head_bytes += (long)(fh->name_len + fh->value_len + 4);
	}
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
	/* nghttp2 copies the fields: they may go with the request's arena */
	int rc = nghttp2_submit_response(s->ng, st->id, nv, k, h->body != EX_BODY_NONE ? &prd : NULL);
	st->resp_submitted = rc == 0;
	session_schedule(s);
	return rc == 0 ? head_bytes : -1;
}

static long h2_send_data(struct exchange *ex, struct evbuffer *src, const char *bytes, size_t n)
{
	struct h2_stream *st = ex->conn;
	if (n == 0)
		return 0;
	/* no framing here: DATA frames are cut from st->out as the client's window allows */
	if (src ? evbuffer_remove_buffer(src, st->out, n) != (int)n : evbuffer_add(st->out, bytes, n) != 0)
		return -1;
	/* this is the only way bytes reach st->out: the data provider waiting
	 * for them is woken here (an evbuffer callback cost a calloc per stream
	 * and a call on every add and drain) */
	if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->s->ng, st->id);
		session_schedule(st->s);
	}
	return (long)n;
}

/* Kept as "name: value\n" lines in the stream's own buffer: nghttp2 asks for
 * them (data_read) after the exchange, and its arena, are gone. */
static long h2_send_trailers(struct exchange *ex, const struct fields *t)
{
	struct h2_stream *st = ex->conn;
	for (size_t i = 0; i < t->n; i++) {
		const struct http_header *f = &t->v[i];
		if (f->name_len == 0 || hop_by_hop(f->name, f->name_len))
			continue;
		if (!st->resp_trailers && !(st->resp_trailers = evbuffer_new()))
			return -1;
		if (evbuffer_add(st->resp_trailers, f->name, f->name_len) != 0 ||
		    evbuffer_add(st->resp_trailers, ": ", 2) != 0 ||
		    evbuffer_add(st->resp_trailers, f->value, f->value_len) != 0 ||
		    evbuffer_add(st->resp_trailers, "\n", 1) != 0) {
			log_msg(LOG_ERROR, "out of memory keeping an HTTP/2 response trailer");
			return -1;
		}
	}
	return 0;
}

static size_t h2_buffered(const struct exchange *ex)
{
	const struct h2_stream *st = ex->conn;
	return evbuffer_get_length(st->out);
}

/* The pipeline is done: complete (the whole body is in st->out: END_STREAM
 * once it is sent) or not (RST_STREAM). */
static long h2_finish(struct exchange *ex, enum ex_end how)
{
	struct h2_stream *st = ex->conn;
	struct h2_session *s = st->s;
	if (st->finished)
		return 0;
	st->finished = true;
	stream_upload_done(st);
	st->body_deadline_us = 0;
	st->complete = how == EX_END_COMPLETE && st->resp_submitted;
	/* a body nobody will read: its window goes back to the client */
	if (st->in && evbuffer_get_length(st->in))
		evbuffer_drain(st->in, evbuffer_get_length(st->in));
	if (st->req_unacked) {
		nghttp2_session_consume(s->ng, st->id, (size_t)st->req_unacked);
		st->req_unacked = 0;
	}
	if (!st->complete)
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
	else if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(s->ng, st->id);
	}
	session_schedule(s);
	return 0;
}

/* The exchange is recycled: the stream lives on until nghttp2 closes it. */
static void h2_release(void *conn, enum ex_end how, bool body_unread)
{
	(void)how;
	(void)body_unread;
	struct h2_stream *st = conn;
	st->ex = NULL;
}

static void h2_start_body(struct exchange *ex)
{
	stream_body_deadline(ex->conn);
}

/* Request DATA as it came: nothing to decode. Taking it from st->in gives its
 * window back to the client (stream_ack), so flow control follows the proxy. */
static ssize_t h2_read_body(struct exchange *ex, struct evbuffer *dst, size_t max, int *status, enum reason *reason)
{
	struct h2_stream *st = ex->conn;
	size_t n = st->in ? evbuffer_get_length(st->in) : 0;
	if (n > max)
		n = max;
	if (ex->body == EX_BODY_LENGTH && n > st->body_remaining)
		n = (size_t)st->body_remaining;
	if (n > 0 && evbuffer_remove_buffer(st->in, dst, n) != (int)n) {
		*status = 500;
		*reason = REASON_NONE;
		return -1;
	}
	if (n > 0)
		stream_ack(st); /* what the pipeline took goes back to the client's window */
	if (ex->body == EX_BODY_LENGTH) {
		st->body_remaining -= n;
		ex->body_done = st->body_remaining == 0;
	} else {
		ex->body_done = st->req_ended && evbuffer_get_length(st->in) == 0;
	}
	if (ex->body_done)
		st->body_deadline_us = 0;
	return (ssize_t)n;
}

static void h2_pause_body(struct exchange *ex, bool paused)
{
	/* flow control does it: DATA is acknowledged only as the pipeline takes it */
	(void)ex;
	(void)paused;
}

static bool h2_tls_info(const struct exchange *ex, struct tls_info *out)
{
	const struct h2_stream *st = ex->conn;
	return strcmp(st->s->origin.scheme, "https") == 0 && tls_bev_info(st->s->bev, out);
}

static const struct ex_ops h2_ops = {
    .send_head = h2_send_head,
    .send_data = h2_send_data,
    .send_trailers = h2_send_trailers,
    .buffered = h2_buffered,
    .finish = h2_finish,
    .release = h2_release,
    .start_body = h2_start_body,
    .read_body = h2_read_body,
    .pause_body = h2_pause_body,
    .tls_info = h2_tls_info,
};

/* ---- the session ---- */

/* The idle timer runs only while no stream has an exchange in progress (an
 * exchange has its own timeouts in the pipeline); it is armed once when the
 * session becomes idle, not pushed back by every flush. */
static void session_arm_timer(struct h2_session *s)
{
	bool active = false;
	for (struct h2_stream *st = s->streams; st && !active; st = st->next)
		active = st->started && !st->finished;
	if (active) {
		if (evtimer_pending(s->timer, NULL) && evtimer_del(s->timer) != 0)
			log_msg(LOG_WARN, "cannot stop the HTTP/2 idle timer");
		return;
	}
	if (evtimer_pending(s->timer, NULL))
		return;
	conf_msec ms = s->cfg->idle_timeout ? s->cfg->idle_timeout : s->snap->conf->limits.keepalive_timeout;
	if (s->w->handover && ms > H2_HANDOVER_IDLE_MS)
		ms = H2_HANDOVER_IDLE_MS;
	struct timeval tv = worker_timeval(s->w, ms);
	if (evtimer_add(s->timer, &tv) != 0)
		log_msg(LOG_WARN, "cannot arm the HTTP/2 idle timer: the connection will not time out when idle");
}

static void session_flush(struct h2_session *s)
{
	if (s->in_io)
		return;
	s->in_io = true;
	struct evbuffer *out = bufferevent_get_output(s->bev);
	for (;;) {
		while (evbuffer_get_length(out) < H2_OUT_HIGH) {
			const uint8_t *data = NULL;
			ssize_t n = nghttp2_session_mem_send(s->ng, &data);
			if (n < 0) {
				s->dead = true;
				break;
			}
			if (n == 0)
				break;
			if (evbuffer_add(out, data, (size_t)n) != 0) {
				s->dead = true;
				break;
			}
		}
		if (!s->drained || s->dead)
			break;
		/* outside nghttp2's callbacks: the proxy may read its upstream and add more */
		s->drained = false;
		for (struct h2_stream *st = s->streams; st; st = st->next) {
			if (st->drained) {
				st->drained = false;
				if (st->ex && st->started && !st->finished)
					pipeline_on_drained(st->ex);
			}
		}
	}
	s->in_io = false;
	bool idle = !nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng);
	if (s->draining && s->num_streams == 0)
		idle = true;
	if (s->dead || ((s->closing || idle) && evbuffer_get_length(out) == 0)) {
		session_free(s);
		return;
	}
	if (s->closing || idle) {
		/* wait for the write callback to drain the last frames */
		bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
		return;
	}
	session_arm_timer(s);
}

static void session_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct h2_session *s = arg;
	s->flush_scheduled = false;
	session_flush(s);
}

static void session_resume_cb(evutil_socket_t fd, short what, void *arg);

/* The turn took its share with input left: stop reading the socket (the
 * client's own TCP window holds it back, not our memory) and take the next
 * turn after the loop's next poll, where other connections and upstream
 * answers get their turn first. False: no timer, so no turns. */
static bool session_yield(struct h2_session *s)
{
	static const struct timeval now = {0, 0};
	if (!s->resume_ev && !(s->resume_ev = evtimer_new(s->w->base, session_resume_cb, s)))
		return false;
	if (evtimer_add(s->resume_ev, &now) != 0)
		return false;
	if (!s->read_paused) {
		s->read_paused = true;
		bufferevent_disable(s->bev, EV_READ);
	}
	return true;
}

/* Hands nghttp2 what the input holds, H2_STREAMS_PER_TURN new streams at
 * most (the scanner cuts there). True when input was left for another turn. */
static bool session_read_turn(struct h2_session *s, struct evbuffer *in)
{
	uint64_t now = clock_mono_us();
	h2_scan_turn(&s->scan);
	while (evbuffer_get_length(in) > 0 && !s->closing && !s->dead && !s->scan.turn_full) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		size_t drop;
		enum h2_close why;
		size_t ok = h2_scan_frames(&s->scan, s->cfg, v.iov_base, v.iov_len, now, &drop, &why);
		if (why != H2_CLOSE__COUNT)
			session_fail(s, why, NGHTTP2_ENHANCE_YOUR_CALM);
		if (s->closing)
			break;
		if (ok == 0 && drop == 0) {
			if (s->scan.turn_full)
				break;
			/* a frame header cut at the end of this piece: join it to the next */
			if (evbuffer_get_length(in) < 9 || !evbuffer_pullup(in, 9))
				break;
			continue;
		}
		if (ok == 0) {
			evbuffer_drain(in, drop);
			continue;
		}
		ssize_t r = nghttp2_session_mem_recv(s->ng, v.iov_base, ok);
		if (r < 0) {
			s->in_io = false;
			if (r == NGHTTP2_ERR_CALLBACK_FAILURE && s->closing)
				break; /* our own defence already queued GOAWAY */
			session_fail(s, H2_CLOSE_PROTOCOL_ERROR,
			             r == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
			s->in_io = true;
			break;
		}
		evbuffer_drain(in, (size_t)r + drop);
		if (!s->closing && s->last_invalid && !nghttp2_session_want_read(s->ng)) {
			/* nghttp2 ended the session itself (its GOAWAY is queued): say why */
			session_closed_because(s, H2_CLOSE_PROTOCOL_ERROR, nghttp2_strerror(s->last_invalid));
			bufferevent_disable(s->bev, EV_READ);
		}
	}
	return s->scan.turn_full && evbuffer_get_length(in) > 0 && !s->closing && !s->dead;
}

static void session_read_cb(struct bufferevent *bev, void *arg)
{
	struct h2_session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	s->in_io = true;
	while (session_read_turn(s, in) && !session_yield(s))
		; /* no timer for a next turn: all of it now */
	if (s->closing)
		evbuffer_drain(in, evbuffer_get_length(in));
	s->in_io = false;
	session_flush(s); /* one flush per turn: the answers of this turn's streams */
}

static void session_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct h2_session *s = arg;
	if (s->read_paused) {
		s->read_paused = false;
		/* before the turn, which may free s; a turn that fills pauses again */
		if (!s->closing && !s->dead)
			bufferevent_enable(s->bev, EV_READ);
	}
	session_read_cb(s->bev, s);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	session_flush(arg);
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	session_free(arg);
}

static void session_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct h2_session *s = arg;
	bool active = false;
	for (struct h2_stream *st = s->streams; st && !active; st = st->next)
		active = st->started && !st->finished;
	if (!active && s->num_streams == 0 && !s->closing) {
		session_fail(s, H2_CLOSE_IDLE_TIMEOUT, NGHTTP2_NO_ERROR);
	}
	session_flush(s);
}

static void session_free(struct h2_session *s)
{
	if (s->in_io) {
		s->dead = true;
		return;
	}
	struct worker *w = s->w;
	while (s->streams) {
		struct h2_stream *st = s->streams;
		nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
		stream_free(st);
	}
	nghttp2_session_del(s->ng);
	bufferevent_free(s->bev);
	event_free(s->timer);
	event_free(s->flush_ev);
	if (s->resume_ev)
		event_free(s->resume_ev);
	if (s->drain_ev)
		event_free(s->drain_ev);
	struct h2_worker *hw = w->h2;
	if (s->prev)
		s->prev->next = s->next;
	else if (hw)
		hw->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	snapshot_unref(s->snap);
	worker_conn_hold_release(w, s->origin.ip);
	free(s);
	counters_connection(w->counters, CTR_PROTO_H2, false);
	worker_conn_closed(w);
}

void h2_session_start(struct worker *w, struct snapshot *snap, size_t listener, struct bufferevent *bev,
                      const struct client_origin *o)
{
	struct h2_worker *hw = h2w(w);
	const struct conf_listener *cl = conf_listener_by_id(snap->conf, (unsigned)listener, NULL);
	struct h2_session *s = hw && cl ? calloc(1, sizeof(*s)) : NULL;
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	if (!s || nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
		free(s);
		if (cbs)
			nghttp2_session_callbacks_del(cbs);
		bufferevent_free(bev);
		return;
	}
	s->w = w;
	s->listener = listener;
	s->cfg = cl->http2;
	s->bev = bev;
	s->origin = *o;
	s->data_max = strcmp(o->scheme, "https") == 0 ? H2_TLS_DATA_MAX : SIZE_MAX;
	s->cut_reason = REASON_CLIENT_RESET;
	h2_scan_init(&s->scan, clock_mono_us());
	nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame_recv);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_send_data_callback(cbs, send_data_cb);
	/* request bodies are acknowledged only as the pipeline takes them */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
	nghttp2_option_set_max_outbound_ack(opt, 100);
	nghttp2_mem mem;
	h2_mem_bind(hw->mem, &mem);
	int rc = nghttp2_session_server_new3(&s->ng, cbs, s, opt, &mem);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	s->timer = evtimer_new(w->base, session_timer_cb, s);
	s->flush_ev = event_new(w->base, -1, 0, session_flush_cb, s);
	if (rc != 0 || !s->timer || !s->flush_ev) {
		if (s->ng)
			nghttp2_session_del(s->ng);
		if (s->timer)
			event_free(s->timer);
		if (s->flush_ev)
			event_free(s->flush_ev);
		free(s);
		bufferevent_free(bev);
		return;
	}
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)s->cfg->initial_window_size},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)s->cfg->max_header_list_size},
	    {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096},
	    {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
	};
	/* The stream limit goes in a SETTINGS frame of its own whose ACK nghttp2
	 * never sees (h2_scan_frames): nghttp2 ends the connection with
	 * PROTOCOL_ERROR when an acknowledged limit is exceeded, and refuses the
	 * stream (REFUSED_STREAM, which a client may retry) while it is not
	 * acknowledged. RFC 9113 5.1.2 asks for a stream error. */
	nghttp2_settings_entry limit = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->cfg->max_concurrent_streams};
	if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
	    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, &limit, 1) != 0) {
		nghttp2_session_del(s->ng);
		event_free(s->timer);
		event_free(s->flush_ev);
		free(s);
		bufferevent_free(bev);
		return;
	}
	snapshot_ref(snap);
	s->snap = snap;
	s->next = hw->sessions;
	if (hw->sessions)
		hw->sessions->prev = s;
	hw->sessions = s;
	CTR_GLOBAL_ADD(w->counters, H2_SESSIONS, 0, 1);
	counters_connection(w->counters, CTR_PROTO_H2, true);
	w->num_conns++;
	worker_conn_hold_take(w, s->origin.ip);
	const struct conf *c = s->snap->conf;
	struct timeval send_tv = worker_timeval(w, c->limits.send_timeout);
	bufferevent_setwatermark(bev, EV_WRITE, H2_OUT_HIGH / 2, 0);
	bufferevent_setcb(bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_set_timeouts(bev, NULL, &send_tv);
	if (bufferevent_enable(bev, EV_READ | EV_WRITE) != 0) {
		session_free(s);
		return;
	}
	/* draining, or the handshake outlived its listener (a reload changed it) */
	if (w->draining || !conf_listener_by_id(w->snap->conf, (unsigned)listener, NULL)) {
		session_drain(s);
		session_flush(s);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		session_read_cb(bev, s);
	else
		session_flush(s);
}

/* The last step of a graceful drain: GOAWAY naming the last stream taken;
 * the session closes when the streams up to it are done. */
static void session_drain_final(struct h2_session *s)
{
	if (s->draining || s->closing)
		return;
	s->draining = true;
	if (s->drain_ev)
		evtimer_del(s->drain_ev);
	nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
	                      NULL, 0);
}

static void session_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct h2_session *s = arg;
	session_drain_final(s);
	session_flush(s);
}

/* Graceful drain in two steps (RFC 9113 6.8): a GOAWAY with the highest
 * stream id tells the client to open no more streams here, while streams it
 * already sent are still taken; a PING follows it, and its answer (or
 * H2_DRAIN_NOTICE_MS) proves they have arrived; then the final GOAWAY names
 * the last one. A single GOAWAY naming the last stream processed refused the
 * streams in flight towards us, which clients such as h2load count as
 * failed. */
static void session_drain(struct h2_session *s)
{
	if (s->notified || s->draining || s->closing)
		return;
	s->notified = true;
	struct timeval tv = {H2_DRAIN_NOTICE_MS / 1000, (H2_DRAIN_NOTICE_MS % 1000) * 1000};
	if (nghttp2_submit_shutdown_notice(s->ng) != 0 || nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, NULL) != 0 ||
	    !(s->drain_ev = evtimer_new(s->w->base, session_drain_cb, s)) || evtimer_add(s->drain_ev, &tv) != 0)
		session_drain_final(s);
}

static void h2_drain_where(struct worker *w, bool all, size_t listener)
{
	if (!w->h2)
		return;
	struct h2_session *s = w->h2->sessions;
	while (s) {
		struct h2_session *next = s->next;
		if (all || s->listener == listener) {
			session_drain(s);
			session_flush(s);
		}
		s = next;
	}
}

void h2_drain_all(struct worker *w)
{
	h2_drain_where(w, true, 0);
}

void h2_handover(struct worker *w)
{
	if (!w->h2)
		return;
	/* the idle timer, re-armed with the short value where it runs */
	for (struct h2_session *s = w->h2->sessions; s; s = s->next) {
		if (s->closing || s->notified || s->draining || !evtimer_pending(s->timer, NULL))
			continue;
		if (evtimer_del(s->timer) != 0)
			log_msg(LOG_WARN, "cannot stop the HTTP/2 idle timer");
		session_arm_timer(s);
	}
}

void h2_drain_listener(struct worker *w, size_t listener)
{
	h2_drain_where(w, false, listener);
}

void h2_close_all(struct worker *w)
{
	if (!w->h2)
		return;
	while (w->h2->sessions) {
		struct h2_session *s = w->h2->sessions;
		s->in_io = false;
		s->cut_reason = REASON_DRAINING; /* the drain time is over */
		session_free(s);
	}
}

void h2_worker_free(struct worker *w)
{
	struct h2_worker *hw = w->h2;
	if (!hw)
		return;
	h2_close_all(w);
	/* this worker's share of the registry's totals (ctl show counters has the sum) */
	uint64_t total = 0, sessions = w->counters ? ctr_global_own(w->counters, CTR_H2_SESSIONS) : 0;
	for (int i = 0; sessions && i < H2_CLOSE__COUNT; i++)
		if (i != H2_CLOSE_IDLE_TIMEOUT)
			total += ctr_global_own(w->counters, CTR_H2_CLOSED + (unsigned)i);
	if (sessions) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "HTTP/2 sessions");
		log_int(&l, "worker", w->id);
		log_int(&l, "sessions", (long long)sessions);
		log_int(&l, "closed_by_defence", (long long)total);
		for (int i = 0; i < H2_CLOSE__COUNT; i++) {
			uint64_t n = ctr_global_own(w->counters, CTR_H2_CLOSED + (unsigned)i);
			if (n)
				log_int(&l, h2_close_names[i], (long long)n);
		}
		log_end(&l);
	}
	uint64_t refused_conn = ctr_global_own(w->counters, CTR_H2_UPLOADS_REFUSED + CTR_UPLOAD_CONNECTION),
	         refused_addr = ctr_global_own(w->counters, CTR_H2_UPLOADS_REFUSED + CTR_UPLOAD_CLIENT);
	if (refused_conn || refused_addr) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "HTTP/2 uploads refused");
		log_int(&l, "worker", w->id);
		log_int(&l, "per_connection", (long long)refused_conn);
		log_int(&l, "per_client", (long long)refused_addr);
		log_end(&l);
	}
	while (hw->free_streams) {
		struct h2_stream *st = hw->free_streams;
		hw->free_streams = st->next;
		evbuffer_free(st->out);
		free(st);
	}
	h2_mem_free(hw->mem); /* after every session went (h2_close_all) */
	free(hw);
	w->h2 = NULL;
}
