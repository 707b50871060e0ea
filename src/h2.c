#include "h2.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "client.h"
#include "conf_tls.h"
#include "h1.h"
#include "log.h"
#include "snapshot.h"
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

#define H2_CLOSE_LIST(X)                                                                                               \
	X(RAPID_RESET, "rapid_reset")                                                                                  \
	X(CONTINUATION_FLOOD, "continuation_flood")                                                                    \
	X(SETTINGS_FLOOD, "settings_flood")                                                                            \
	X(PING_FLOOD, "ping_flood")                                                                                    \
	X(EMPTY_FRAME_FLOOD, "empty_frame_flood")                                                                      \
	X(HEADER_LIST_TOO_LARGE, "header_list_too_large")                                                              \
	X(GLITCHES, "glitches")                                                                                        \
	X(INVALID_STREAM_ID, "invalid_stream_id")                                                                      \
	X(PROTOCOL_ERROR, "protocol_error")                                                                            \
	X(IDLE_TIMEOUT, "idle_timeout")

enum h2_close {
#define H2_CLOSE_ENUM(sym, str) H2_CLOSE_##sym,
	H2_CLOSE_LIST(H2_CLOSE_ENUM)
#undef H2_CLOSE_ENUM
	H2_CLOSE__COUNT
};

static const char *const h2_close_names[] = {
#define H2_CLOSE_STR(sym, str) str,
    H2_CLOSE_LIST(H2_CLOSE_STR)
#undef H2_CLOSE_STR
};

struct h2_worker {
	struct h2_session *sessions;
	uint64_t sessions_total;
	uint64_t closed[H2_CLOSE__COUNT];
};

struct h2_stream {
	struct h2_session *s;
	int32_t id;
	struct h2_stream *prev, *next;
	/* request */
	struct client_req *cr;  /* its head filled here until the start; then the pipeline's */
	struct client_conn *cc; /* the pipeline's side; NULL before the start and once freed */
	struct evbuffer *in;    /* request body towards the pipeline (NULL: none) */
	struct evbuffer *out;   /* response body from the pipeline */
	const char *authority, *host; /* in cr's arena */
	size_t authority_len, host_len;
	size_t head_bytes;    /* of the fields, for the upstream head's buffer */
	int cookie_field;     /* index of the joined cookie field, -1: none yet */
	int early_status;     /* answered at once by the pipeline (431, 501) */
	bool have_length;     /* content-length given */
	bool bad;             /* a field we refuse: the stream is reset */
	bool glitched;        /* already counted as a glitch */
	bool req_chunked;
	bool req_ended;
	uint64_t req_unacked; /* DATA bytes received and not yet given back to the window */
	struct evbuffer *req_trailers;
	/* response */
	bool resp_submitted;  /* the HEADERS are submitted */
	bool finished;        /* the pipeline is done with the stream */
	bool complete;        /* ... and the whole body is in out */
	bool deferred;        /* the data provider waits for bytes */
	bool drained;         /* out fell below the proxy's resume mark: tell the pipeline */
	struct evbuffer *resp_trailers; /* "name: value\n" lines */
};

struct h2_session {
	struct worker *w;
	size_t listener;
	const struct conf_http2 *cfg;
	struct bufferevent *bev;
	nghttp2_session *ng;
	struct client_origin origin;
	struct h2_session *prev, *next;
	struct h2_stream *streams;
	unsigned num_streams;
	struct event *timer;
	struct event *flush_ev; /* session_flush once the current callbacks are done */
	/* our own frame scanner (independent of what nghttp2 version does) */
	size_t preface_left;
	unsigned settings_acks; /* SETTINGS ACKs from the client (the second is not nghttp2's) */
	uint32_t frame_left;
	unsigned cont_frames; /* CONTINUATION frames in the current header block */
	size_t block_bytes;   /* decoded header bytes of the current block */
	unsigned block_conts; /* CONTINUATION frames of the block nghttp2 is decoding */
	/* counts in the current one-second window */
	uint64_t window_start_us;
	unsigned resets, pings, settings, empty, glitches;
	/* RFC 9113 5.1.1: new streams must have increasing odd ids */
	int32_t max_stream_id;      /* highest id that opened a stream */
	int32_t cut_ids[16];        /* streams closed before the client ended its side: frames */
	unsigned cut_next;          /* ... it sent before it knew may still arrive (ring) */
	int last_invalid;           /* nghttp2's error for the last invalid frame (0: none) */
	bool closing;   /* fatal: GOAWAY queued, close once flushed */
	bool draining;  /* graceful: GOAWAY sent, close when no stream is left */
	bool in_io;     /* inside mem_recv/mem_send: freeing waits */
	bool dead;      /* free at the end of the current I/O */
	bool flush_scheduled;
	enum reason cut_reason; /* logged for requests still in progress when their stream goes */
	bool drained;   /* some stream's response buffer drained (st->drained) */
	size_t data_max; /* DATA payload per frame: H2_TLS_DATA_MAX over TLS, else what nghttp2 allows */
};

static void session_free(struct h2_session *s);
static void session_flush(struct h2_session *s);

static struct h2_worker *h2w(struct worker *w)
{
	if (!w->h2)
		w->h2 = calloc(1, sizeof(struct h2_worker));
	return w->h2;
}

/* ---- defences ---- */

/* Counts and logs why the session ends; detail: nghttp2's words, or NULL. */
static void session_closed_because(struct h2_session *s, enum h2_close why, const char *detail)
{
	s->closing = true;
	struct h2_worker *hw = h2w(s->w);
	if (hw)
		hw->closed[why]++;
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

static void window_roll(struct h2_session *s)
{
	uint64_t now = worker_wall_us(s->w);
	if (now - s->window_start_us >= 1000000) {
		s->window_start_us = now;
		s->resets = s->pings = s->settings = s->empty = s->glitches = 0;
	}
}

static void glitch(struct h2_session *s)
{
	window_roll(s);
	if (++s->glitches > s->cfg->max_glitches_per_s)
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

/* Looks at every frame header before nghttp2 does. Returns how many of the
 * n bytes nghttp2 may take now: all, or fewer when a frame header is cut at
 * the end (it is judged once whole) or when the frame starting there is not
 * nghttp2's: *drop is then its size, for the caller to discard. */
static size_t scan_frames(struct h2_session *s, const uint8_t *p, size_t n, size_t *drop)
{
	size_t off = 0;
	*drop = 0;
	while (off < n && !s->closing) {
		if (s->preface_left) {
			size_t k = n - off < s->preface_left ? n - off : s->preface_left;
			s->preface_left -= k;
			off += k;
			continue;
		}
		if (s->frame_left) {
			size_t k = n - off < s->frame_left ? n - off : s->frame_left;
			s->frame_left -= (uint32_t)k;
			off += k;
			continue;
		}
		if (n - off < 9)
			break;
		const uint8_t *fh = p + off;
		uint32_t len = (uint32_t)fh[0] << 16 | (uint32_t)fh[1] << 8 | fh[2];
		uint8_t type = fh[3], flags = fh[4];
		if (type == NGHTTP2_SETTINGS && (flags & NGHTTP2_FLAG_ACK) && len == 0 && ++s->settings_acks == 2) {
			/* the ACK of the SETTINGS that announced max_concurrent_streams
			 * (h2_session_start): nghttp2 never sees it, so it keeps refusing
			 * excess streams with REFUSED_STREAM, as it does before an ACK,
			 * instead of ending the connection with PROTOCOL_ERROR */
			*drop = 9;
			return off;
		}
		off += 9;
		s->frame_left = len;
		window_roll(s);
		switch (type) {
		case NGHTTP2_DATA:
			if (len == 0 && !(flags & NGHTTP2_FLAG_END_STREAM) && ++s->empty > s->cfg->max_empty_frames_per_s)
				session_fail(s, H2_CLOSE_EMPTY_FRAME_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
			break;
		case NGHTTP2_HEADERS:
			s->cont_frames = 0;
			break;
		case NGHTTP2_CONTINUATION:
			if (++s->cont_frames > s->cfg->max_continuation_frames)
				session_fail(s, H2_CLOSE_CONTINUATION_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
			else if (len == 0 && !(flags & NGHTTP2_FLAG_END_HEADERS) &&
			         ++s->empty > s->cfg->max_empty_frames_per_s)
				session_fail(s, H2_CLOSE_EMPTY_FRAME_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
			break;
		case NGHTTP2_SETTINGS:
			if (!(flags & NGHTTP2_FLAG_ACK) && ++s->settings > s->cfg->max_settings_per_s)
				session_fail(s, H2_CLOSE_SETTINGS_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
			break;
		case NGHTTP2_PING:
			if (!(flags & NGHTTP2_FLAG_ACK) && ++s->pings > s->cfg->max_pings_per_s)
				session_fail(s, H2_CLOSE_PING_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
			break;
		case NGHTTP2_RST_STREAM:
			if (++s->resets > s->cfg->max_resets_per_s)
				session_fail(s, H2_CLOSE_RAPID_RESET, NGHTTP2_ENHANCE_YOUR_CALM);
			break;
		case NGHTTP2_WINDOW_UPDATE:
		case NGHTTP2_PRIORITY:
			/* cheap to send, and nothing to do for us: a stream of them is a flood too */
			if (len == 0 || type == NGHTTP2_PRIORITY) {
				if (++s->empty > s->cfg->max_empty_frames_per_s * 4)
					session_fail(s, H2_CLOSE_EMPTY_FRAME_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
			}
			break;
		default:
			break;
		}
	}
	return off;
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

static void stream_free(struct h2_stream *st)
{
	struct h2_session *s = st->s;
	if (st->cc) {
		struct client_conn *cc = st->cc;
		st->cc = NULL;
		client_stream_close(cc, st->s->cut_reason);
	}
	if (st->cr)
		client_stream_discard_req(s->w, st->cr);
	if (st->prev)
		st->prev->next = st->next;
	else
		s->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	s->num_streams--;
	if (st->in)
		evbuffer_free(st->in);
	if (st->out)
		evbuffer_free(st->out);
	if (st->req_trailers)
		evbuffer_free(st->req_trailers);
	if (st->resp_trailers)
		evbuffer_free(st->resp_trailers);
	free(st);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2_session *s = arg;
	s->block_bytes = 0;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct h2_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (!(st->cr = client_stream_req(s->w))) {
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
	if (nghttp2_session_set_stream_user_data(ng, st->id, st) != 0) {
		stream_free(st);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return 0;
}

static bool field_ok(const uint8_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
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

/* One regular request field into the head the pipeline reads. */
static int stream_add_field(struct h2_stream *st, const uint8_t *name, size_t namelen, const uint8_t *value,
                            size_t valuelen)
{
	struct h1_request *h = &st->cr->h1;
	struct arena *a = &st->cr->req.arena;
	const struct conf_limits *lim = &st->s->w->snap->conf->limits;
	size_t max = lim->max_headers < H1_MAX_HEADERS ? lim->max_headers : H1_MAX_HEADERS;
	if (namelen == 6 && memcmp(name, "cookie", 6) == 0 && st->cookie_field >= 0) {
		/* RFC 9113 8.2.3: crumbs are joined back into one field for HTTP/1.1 */
		struct http_header *f = &h->headers[st->cookie_field];
		char *joined = arena_alloc(a, f->value_len + 2 + valuelen + 1);
		if (!joined)
			return -1;
		memcpy(joined, f->value, f->value_len);
		memcpy(joined + f->value_len, "; ", 2);
		memcpy(joined + f->value_len + 2, value, valuelen);
		joined[f->value_len + 2 + valuelen] = '\0';
		f->value = joined;
		f->value_len += 2 + valuelen;
		st->head_bytes += 2 + valuelen;
		return 0;
	}
	if (h->num_headers >= max) {
		st->early_status = 431;
		return 0;
	}
	struct http_header *f = &h->headers[h->num_headers];
	f->name = arena_copy(a, name, namelen);
	f->value = arena_copy(a, value, valuelen);
	if (!f->name || !f->value)
		return -1;
	f->name_len = namelen;
	f->value_len = valuelen;
	h->header_flags[h->num_headers] = 0;
	if (namelen == 6 && memcmp(name, "cookie", 6) == 0)
		st->cookie_field = (int)h->num_headers;
	h->num_headers++;
	st->head_bytes += namelen + valuelen + 4;
	return 0;
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
		/* trailers: kept for a chunked body, pseudo-headers are refused by nghttp2 */
		if (!st->req_trailers && !(st->req_trailers = evbuffer_new()))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		if (evbuffer_add(st->req_trailers, name, namelen) != 0 || evbuffer_add(st->req_trailers, ": ", 2) != 0 ||
		    evbuffer_add(st->req_trailers, value, valuelen) != 0 || evbuffer_add(st->req_trailers, "\r\n", 2) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		return 0;
	}
	if (!st->cr)
		return 0;
	struct h1_request *h = &st->cr->h1;
	struct arena *a = &st->cr->req.arena;
	if (namelen > 0 && name[0] == ':') {
		const char **slot;
		if (namelen == 7 && memcmp(name, ":method", 7) == 0)
			slot = &h->method;
		else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
			slot = &h->target;
		else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
			slot = &st->authority;
		else
			return 0; /* :scheme (the listener decides it) */
		/* a repeated one, or a target or authority that cannot go into an HTTP/1.1 head */
		if (*slot || (slot != &h->method && !target_ok(value, valuelen))) {
			st->bad = true;
			return 0;
		}
		const char *copy = arena_copy(a, value, valuelen);
		if (!copy)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		*slot = copy;
		if (slot == &h->method) {
			h->method_len = valuelen;
		} else if (slot == &h->target) {
			const char *q = memchr(copy, '?', valuelen);
			h->target_len = valuelen;
			h->path = copy;
			h->path_len = q ? (size_t)(q - copy) : valuelen;
		} else {
			st->authority_len = valuelen;
		}
		st->head_bytes += valuelen + 4;
		return 0;
	}
	if (namelen == 4 && memcmp(name, "host", 4) == 0) {
		if (st->host || !target_ok(value, valuelen)) {
			st->bad = true;
			return 0;
		}
		if (!(st->host = arena_copy(a, value, valuelen)))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		st->host_len = valuelen;
		return 0;
	}
	if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
		/* the pipeline sends its own from the body it forwards */
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
		h->content_length = v;
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

static void in_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	(void)buf;
	if (info->n_deleted)
		stream_ack(arg);
}

static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	(void)buf;
	struct h2_stream *st = arg;
	if (info->n_added && st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->s->ng, st->id);
		session_schedule(st->s);
	}
}

/* The request head is complete: hand the stream to the pipeline. */
static int stream_start(struct h2_session *s, struct h2_stream *st, bool end_stream)
{
	struct client_req *cr = st->cr;
	if (!cr)
		return 0;
	struct h1_request *h = &cr->h1;
	const char *auth = st->authority ? st->authority : st->host;
	size_t auth_len = st->authority ? st->authority_len : st->host_len;
	bool connect = h->method && h->method_len == 7 && memcmp(h->method, "CONNECT", 7) == 0;
	if (st->bad || !h->method || !auth || auth_len == 0 ||
	    (!connect && (!h->target || (h->target[0] != '/' && !(h->target_len == 1 && h->target[0] == '*'))))) {
		stream_glitch(s, st->id);
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
		return 0;
	}
	if (connect) {
		st->early_status = 501; /* no tunnels */
		h->target = h->path = auth;
		h->target_len = h->path_len = auth_len;
	}
	h->authority = auth;
	h->authority_len = auth_len;
	h->minor_version = 1;
	h->keep_alive = false;
	st->req_ended = end_stream;
	if (end_stream) {
		h->body = H1_BODY_NONE;
	} else if (st->have_length) {
		h->body = H1_BODY_LENGTH;
	} else {
		/* a body of unknown length: chunked towards the pipeline */
		h->body = H1_BODY_CHUNKED;
		st->req_chunked = true;
	}
	cr->head_len = st->head_bytes + h->method_len + auth_len + 32;
	st->out = evbuffer_new();
	if (!end_stream)
		st->in = evbuffer_new();
	if (!st->out || (!end_stream && !st->in)) {
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
		return 0;
	}
	evbuffer_add_cb(st->out, out_cb, st);
	if (st->in)
		evbuffer_add_cb(st->in, in_cb, st);
	struct client_origin o = s->origin;
	o.protocol = "HTTP/2.0";
	struct client_conn *cc = client_stream_new(s->w, s->listener, &o, s->bev, st, st->in, st->out);
	if (!cc) {
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
		return 0;
	}
	st->cc = cc;
	st->cr = NULL; /* the pipeline's now */
	client_stream_begin(cc, cr, st->early_status);
	return 0;
}

static void stream_end_request(struct h2_stream *st)
{
	if (st->req_ended)
		return;
	st->req_ended = true;
	if (!st->cc || !st->in || !st->req_chunked)
		return;
	evbuffer_add(st->in, "0\r\n", 3);
	if (st->req_trailers)
		evbuffer_add_buffer(st->in, st->req_trailers);
	evbuffer_add(st->in, "\r\n", 2);
	client_stream_body(st->cc);
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
	if (!st || !st->cc || !st->in || st->req_ended || st->finished) {
		/* nobody reads it: give the connection window back at once */
		nghttp2_session_consume_connection(ng, len);
		return 0;
	}
	st->req_unacked += len;
	int rc = 0;
	if (st->req_chunked) {
		char line[24];
		int k = snprintf(line, sizeof line, "%zx\r\n", len);
		rc = evbuffer_add(st->in, line, (size_t)k) != 0 || evbuffer_add(st->in, data, len) != 0 ||
		     evbuffer_add(st->in, "\r\n", 2) != 0;
	} else {
		rc = evbuffer_add(st->in, data, len) != 0;
	}
	if (rc)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	client_stream_body(st->cc);
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
	if (frame->hd.stream_id != 0 && (!refused || s->settings_acks >= 2))
		stream_glitch(s, frame->hd.stream_id);
	return s->closing ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/* ---- streams: response side ---- */

static bool hop_by_hop(const char *name, size_t n)
{
	static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
	                                    "upgrade", "te", "trailer", "content-length", "http2-settings"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i]) == n && strncasecmp(names[i], name, n) == 0)
			return true;
	return false;
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
	if (avail >= PROXY_HIGH_WATER / 2 && left < PROXY_HIGH_WATER / 2 && st->cc && !st->finished) {
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

long h2_stream_respond(struct h2_stream *st, int status, const struct http_header *fields, size_t n_fields,
                      const char *lines, bool body)
{
	struct h2_session *s = st->s;
	if (st->resp_submitted || status < 100 || status > 999)
		return -1;
	nghttp2_nv nv[H2_MAX_NV];
	char status_text[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10), (char)('0' + status % 10), 0};
	size_t k = 0;
	nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status_text, 7, 3, NGHTTP2_NV_FLAG_NONE};
	long head_bytes = 15; /* "HTTP/1.1 200 \r\n" ... "\r\n" */
	/* names must be lower case in HTTP/2: upper-case ones are copied here */
	size_t lines_len = lines ? strlen(lines) : 0;
	size_t need = lines_len;
	for (size_t i = 0; i < n_fields; i++)
		need += fields[i].name_len;
	char stack[2048];
	char *low = need <= sizeof stack ? stack : malloc(need);
	if (!low)
		return -1;
	size_t used = 0;
	for (size_t i = 0; i < n_fields && k < H2_MAX_NV; i++) {
		const struct http_header *f = &fields[i];
		const char *name = f->name;
		if (!lower_case(f->name, f->name_len)) {
			for (size_t j = 0; j < f->name_len; j++)
				low[used + j] = (char)tolower((unsigned char)f->name[j]);
			name = low + used;
			used += f->name_len;
		}
		nv[k++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)f->value, f->name_len, f->value_len, nv_index_flag(name, f->name_len)};
		head_bytes += (long)(f->name_len + f->value_len + 4);
	}
	/* module and extra lines: "name: value\r\n"... */
	const char *p = lines, *end = lines ? lines + lines_len : NULL;
	while (p && p < end && k < H2_MAX_NV) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = eol ? eol : end;
		const char *colon = memchr(p, ':', (size_t)(line_end - p));
		if (colon && colon > p && !hop_by_hop(p, (size_t)(colon - p))) {
			size_t name_len = (size_t)(colon - p);
			for (size_t j = 0; j < name_len; j++)
				low[used + j] = (char)tolower((unsigned char)p[j]);
			const char *v = colon + 1;
			const char *ve = line_end;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			nv[k++] = (nghttp2_nv){(uint8_t *)low + used, (uint8_t *)v, name_len, (size_t)(ve - v),
			                       NGHTTP2_NV_FLAG_NONE};
			used += name_len;
			head_bytes += (long)(name_len + (size_t)(ve - v) + 4);
		}
		p = eol ? eol + 1 : end;
	}
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
	int rc = nghttp2_submit_response(s->ng, st->id, nv, k, body ? &prd : NULL);
	if (low != stack)
		free(low);
	st->resp_submitted = rc == 0;
	session_schedule(s);
	return rc == 0 ? head_bytes : -1;
}

void h2_stream_trailer(struct h2_stream *st, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	if (!colon || colon == line || hop_by_hop(line, (size_t)(colon - line)))
		return;
	if (!st->resp_trailers && !(st->resp_trailers = evbuffer_new()))
		return;
	if (evbuffer_add(st->resp_trailers, line, len) != 0 || evbuffer_add(st->resp_trailers, "\n", 1) != 0)
		log_msg(LOG_ERROR, "out of memory keeping an HTTP/2 response trailer");
}

void h2_stream_finished(struct h2_stream *st, bool complete)
{
	struct h2_session *s = st->s;
	if (st->finished)
		return;
	st->finished = true;
	st->complete = complete && st->resp_submitted;
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
}

/* ---- the session ---- */

/* The idle timer runs only while no stream has an exchange in progress (an
 * exchange has its own timeouts in the pipeline); it is armed once when the
 * session becomes idle, not pushed back by every flush. */
static void session_arm_timer(struct h2_session *s)
{
	bool active = false;
	for (struct h2_stream *st = s->streams; st && !active; st = st->next)
		active = st->cc != NULL && !st->finished;
	if (active) {
		if (evtimer_pending(s->timer, NULL) && evtimer_del(s->timer) != 0)
			log_msg(LOG_WARN, "cannot stop the HTTP/2 idle timer");
		return;
	}
	if (evtimer_pending(s->timer, NULL))
		return;
	conf_msec ms = s->cfg->idle_timeout ? s->cfg->idle_timeout : s->w->snap->conf->limits.keepalive_timeout;
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
				if (st->cc && !st->finished)
					client_stream_drained(st->cc);
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

static void session_read_cb(struct bufferevent *bev, void *arg)
{
	struct h2_session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	s->in_io = true;
	while (evbuffer_get_length(in) > 0 && !s->closing && !s->dead) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		size_t drop;
		size_t ok = scan_frames(s, v.iov_base, v.iov_len, &drop);
		if (s->closing)
			break;
		if (ok == 0 && drop == 0) {
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
	if (s->closing)
		evbuffer_drain(in, evbuffer_get_length(in));
	s->in_io = false;
	session_flush(s);
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
		active = st->cc != NULL && !st->finished;
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
	struct h2_worker *hw = w->h2;
	if (s->prev)
		s->prev->next = s->next;
	else if (hw)
		hw->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	free(s);
	worker_conn_closed(w);
}

void h2_session_start(struct worker *w, size_t listener, struct bufferevent *bev, const struct client_origin *o)
{
	struct h2_worker *hw = h2w(w);
	const struct conf_listener *cl = &w->snap->conf->listeners[listener];
	struct h2_session *s = hw ? calloc(1, sizeof(*s)) : NULL;
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
	s->preface_left = 24;
	s->cut_reason = REASON_CLIENT_RESET;
	s->window_start_us = worker_wall_us(w);
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
	int rc = nghttp2_session_server_new2(&s->ng, cbs, s, opt);
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
	 * never sees (scan_frames): nghttp2 ends the connection with
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
	s->next = hw->sessions;
	if (hw->sessions)
		hw->sessions->prev = s;
	hw->sessions = s;
	hw->sessions_total++;
	w->num_conns++;
	const struct conf *c = w->snap->conf;
	struct timeval send_tv = worker_timeval(w, c->limits.send_timeout);
	bufferevent_setwatermark(bev, EV_WRITE, H2_OUT_HIGH / 2, 0);
	bufferevent_setcb(bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_set_timeouts(bev, NULL, &send_tv);
	if (bufferevent_enable(bev, EV_READ | EV_WRITE) != 0) {
		session_free(s);
		return;
	}
	if (w->draining) {
		h2_drain_all(w);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		session_read_cb(bev, s);
	else
		session_flush(s);
}

void h2_drain_all(struct worker *w)
{
	if (!w->h2)
		return;
	struct h2_session *s = w->h2->sessions;
	while (s) {
		struct h2_session *next = s->next;
		if (!s->draining && !s->closing) {
			s->draining = true;
			nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
			                      NGHTTP2_NO_ERROR, NULL, 0);
		}
		session_flush(s);
		s = next;
	}
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
	uint64_t total = 0;
	for (int i = 0; i < H2_CLOSE__COUNT; i++)
		if (i != H2_CLOSE_IDLE_TIMEOUT)
			total += hw->closed[i];
	if (hw->sessions_total) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "HTTP/2 sessions");
		log_int(&l, "worker", w->id);
		log_int(&l, "sessions", (long long)hw->sessions_total);
		log_int(&l, "closed_by_defence", (long long)total);
		for (int i = 0; i < H2_CLOSE__COUNT; i++)
			if (hw->closed[i])
				log_int(&l, h2_close_names[i], (long long)hw->closed[i]);
		log_end(&l);
	}
	free(hw);
	w->h2 = NULL;
}
