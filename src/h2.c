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
/* A response head from the internal connection larger than this is refused. */
#define H2_MAX_RESPONSE_HEAD (64 * 1024)
#define H2_MAX_NV 130

#define H2_CLOSE_LIST(X)                                                                                               \
	X(RAPID_RESET, "rapid_reset")                                                                                  \
	X(CONTINUATION_FLOOD, "continuation_flood")                                                                    \
	X(SETTINGS_FLOOD, "settings_flood")                                                                            \
	X(PING_FLOOD, "ping_flood")                                                                                    \
	X(EMPTY_FRAME_FLOOD, "empty_frame_flood")                                                                      \
	X(HEADER_LIST_TOO_LARGE, "header_list_too_large")                                                              \
	X(GLITCHES, "glitches")                                                                                        \
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
	struct bufferevent *end; /* our end of the pair; NULL once released */
	/* request */
	struct evbuffer *fields;  /* "name: value\r\n" lines while the head arrives */
	struct evbuffer *cookies; /* cookie crumbs, joined with "; " */
	char *method, *path, *authority, *host, *content_length;
	bool head_sent;
	bool req_chunked;
	bool req_ended;
	bool bad;             /* a field we refuse: the stream is reset */
	uint64_t req_unacked; /* DATA bytes received and not yet given back to the window */
	/* response */
	bool is_head;
	bool resp_head_done;
	bool resp_done;  /* every response byte went to nghttp2 */
	bool deferred;   /* the data provider waits for bytes */
	enum h1_body resp_body;
	uint64_t resp_remaining;
	struct h1_chunked chunk;
	struct evbuffer *trailers;
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
	/* our own frame scanner (independent of what nghttp2 version does) */
	size_t preface_left;
	uint8_t fh[9];
	size_t fh_len;
	uint32_t frame_left;
	unsigned cont_frames; /* CONTINUATION frames in the current header block */
	size_t block_bytes;   /* decoded header bytes of the current block */
	/* counts in the current one-second window */
	uint64_t window_start_us;
	unsigned resets, pings, settings, empty, glitches;
	bool closing;   /* fatal: GOAWAY queued, close once flushed */
	bool draining;  /* graceful: GOAWAY sent, close when no stream is left */
	bool in_io;     /* inside mem_recv/mem_send: freeing waits */
	bool dead;      /* free at the end of the current I/O */
};

static void session_free(struct h2_session *s);
static void session_flush(struct h2_session *s);
static void stream_release(struct h2_stream *st);
static void end_read_cb(struct bufferevent *bev, void *arg);
static void end_write_cb(struct bufferevent *bev, void *arg);
static void end_event_cb(struct bufferevent *bev, short what, void *arg);

static struct h2_worker *h2w(struct worker *w)
{
	if (!w->h2)
		w->h2 = calloc(1, sizeof(struct h2_worker));
	return w->h2;
}

/* ---- defences ---- */

static void session_fail(struct h2_session *s, enum h2_close why, uint32_t code)
{
	if (s->closing)
		return;
	s->closing = true;
	struct h2_worker *hw = h2w(s->w);
	if (hw)
		hw->closed[why]++;
	struct log_line l;
	log_begin(&l, why == H2_CLOSE_IDLE_TIMEOUT ? LOG_DEBUG : LOG_WARN, "HTTP/2 connection closed");
	log_str(&l, "reason", h2_close_names[why]);
	log_str(&l, "client_ip", s->origin.ip);
	log_end(&l);
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

/* Looks at every frame header before nghttp2 does. Returns false to stop. */
static bool scan_frames(struct h2_session *s, const uint8_t *p, size_t n)
{
	while (n > 0 && !s->closing) {
		if (s->preface_left) {
			size_t k = n < s->preface_left ? n : s->preface_left;
			s->preface_left -= k;
			p += k;
			n -= k;
			continue;
		}
		if (s->frame_left) {
			size_t k = n < s->frame_left ? n : s->frame_left;
			s->frame_left -= (uint32_t)k;
			p += k;
			n -= k;
			continue;
		}
		size_t k = 9 - s->fh_len;
		if (k > n)
			k = n;
		memcpy(s->fh + s->fh_len, p, k);
		s->fh_len += k;
		p += k;
		n -= k;
		if (s->fh_len < 9)
			break;
		s->fh_len = 0;
		uint32_t len = (uint32_t)s->fh[0] << 16 | (uint32_t)s->fh[1] << 8 | s->fh[2];
		uint8_t type = s->fh[3], flags = s->fh[4];
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
	return !s->closing;
}

/* ---- streams: request side ---- */

static struct h2_stream *stream_of(struct h2_session *s, int32_t id)
{
	return nghttp2_session_get_stream_user_data(s->ng, id);
}

static void stream_free(struct h2_stream *st)
{
	struct h2_session *s = st->s;
	stream_release(st);
	if (st->prev)
		st->prev->next = st->next;
	else
		s->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	s->num_streams--;
	if (st->fields)
		evbuffer_free(st->fields);
	if (st->cookies)
		evbuffer_free(st->cookies);
	if (st->trailers)
		evbuffer_free(st->trailers);
	free(st->method);
	free(st->path);
	free(st->authority);
	free(st->host);
	free(st->content_length);
	free(st);
}

/* The internal connection goes: an unfinished exchange is aborted there
 * (EOF: the client connection logs it as client_reset). */
static void stream_release(struct h2_stream *st)
{
	if (!st->end)
		return;
	struct bufferevent *end = st->end;
	st->end = NULL;
	bufferevent_setcb(end, NULL, NULL, NULL, NULL);
	if (bufferevent_pair_get_partner(end))
		bufferevent_flush(end, EV_READ | EV_WRITE, BEV_FINISHED);
	bufferevent_free(end);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2_session *s = arg;
	s->block_bytes = 0;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct h2_stream *st = calloc(1, sizeof(*st));
	if (!st || !(st->fields = evbuffer_new())) {
		free(st);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	st->s = s;
	st->id = frame->hd.stream_id;
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

static char *dupn(const uint8_t *v, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, v, n);
		d[n] = '\0';
	}
	return d;
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
		session_fail(s, H2_CLOSE_HEADER_LIST_TOO_LARGE, NGHTTP2_ENHANCE_YOUR_CALM);
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
		if (!st->trailers && !(st->trailers = evbuffer_new()))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		if (evbuffer_add_printf(st->trailers, "%.*s: %.*s\r\n", (int)namelen, name, (int)valuelen, value) < 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		return 0;
	}
	char **slot = NULL;
	if (namelen > 0 && name[0] == ':') {
		if (namelen == 7 && memcmp(name, ":method", 7) == 0)
			slot = &st->method;
		else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
			slot = &st->path;
		else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
			slot = &st->authority;
		else
			return 0; /* :scheme (the listener decides it) */
	} else if (namelen == 4 && memcmp(name, "host", 4) == 0) {
		slot = &st->host;
	} else if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
		slot = &st->content_length;
	} else if (namelen == 2 && memcmp(name, "te", 2) == 0) {
		return 0; /* only "trailers" gets past nghttp2, and it is hop-by-hop */
	} else if (namelen == 6 && memcmp(name, "cookie", 6) == 0) {
		/* RFC 9113 8.2.3: crumbs are joined back into one field for HTTP/1.1 */
		if (!st->cookies && !(st->cookies = evbuffer_new()))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		if ((evbuffer_get_length(st->cookies) && evbuffer_add(st->cookies, "; ", 2) != 0) ||
		    evbuffer_add(st->cookies, value, valuelen) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		return 0;
	}
	if (slot) {
		if (*slot) {
			st->bad = true; /* a repeated pseudo-header, host or content-length */
			return 0;
		}
		if (!(*slot = dupn(value, valuelen)))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		if (slot != &st->content_length)
			return 0;
	}
	if (evbuffer_add(st->fields, name, namelen) != 0 || evbuffer_add(st->fields, ": ", 2) != 0 ||
	    evbuffer_add(st->fields, value, valuelen) != 0 || evbuffer_add(st->fields, "\r\n", 2) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
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
	glitch(arg);
	/* the stream is reset by nghttp2 (RST_STREAM PROTOCOL_ERROR) */
	return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static void stream_ack(struct h2_stream *st)
{
	if (!st->end || st->req_unacked == 0)
		return;
	size_t queued = evbuffer_get_length(bufferevent_get_output(st->end));
	if (queued >= st->req_unacked)
		return;
	uint64_t n = st->req_unacked - queued;
	st->req_unacked -= n;
	nghttp2_session_consume(st->s->ng, st->id, (size_t)n);
}

/* Starts the HTTP/1.1 exchange of a stream whose request head is complete. */
static int stream_start(struct h2_session *s, struct h2_stream *st, bool end_stream)
{
	const char *auth = st->authority ? st->authority : st->host;
	if (st->bad || !st->method || !auth || !*auth ||
	    (strcmp(st->method, "CONNECT") != 0 && (!st->path || (st->path[0] != '/' && strcmp(st->path, "*") != 0)))) {
		glitch(s);
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
		return 0;
	}
	struct bufferevent *pair[2];
	if (bufferevent_pair_new(s->w->base, BEV_OPT_DEFER_CALLBACKS, pair) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	struct evbuffer *out = bufferevent_get_output(pair[0]);
	st->is_head = strcmp(st->method, "HEAD") == 0;
	st->req_ended = end_stream;
	int rc = evbuffer_add_printf(out, "%s %s HTTP/1.1\r\nhost: %s\r\n", st->method,
	                             st->path ? st->path : auth, auth);
	if (rc >= 0 && evbuffer_add_buffer(out, st->fields) != 0)
		rc = -1;
	if (rc >= 0 && st->cookies) {
		if (evbuffer_add(out, "cookie: ", 8) != 0 || evbuffer_add_buffer(out, st->cookies) != 0 ||
		    evbuffer_add(out, "\r\n", 2) != 0)
			rc = -1;
	}
	if (rc >= 0 && !end_stream && !st->content_length) {
		/* a body of unknown length: chunked towards the pipeline */
		st->req_chunked = true;
		if (evbuffer_add(out, "transfer-encoding: chunked\r\n", 28) != 0)
			rc = -1;
	}
	if (rc >= 0 && evbuffer_add(out, "\r\n", 2) != 0)
		rc = -1;
	if (rc < 0) {
		bufferevent_free(pair[0]);
		bufferevent_free(pair[1]);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	evbuffer_free(st->fields);
	st->fields = NULL;
	st->head_sent = true;
	st->end = pair[0];
	/* the response side is read in bounded steps: the pipeline stops when this fills */
	bufferevent_setwatermark(st->end, EV_READ, 0, H2_OUT_HIGH);
	bufferevent_setwatermark(st->end, EV_WRITE, 16 * 1024, 0);
	bufferevent_setcb(st->end, end_read_cb, end_write_cb, end_event_cb, st);
	bufferevent_enable(st->end, EV_READ | EV_WRITE);
	struct client_origin o = s->origin;
	o.protocol = "HTTP/2.0";
	/* client_accept_bev takes pair[1] (and frees it on failure) */
	if (!client_accept_bev(s->w, s->listener, pair[1], &o)) {
		stream_release(st);
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
	}
	return 0;
}

static void stream_end_request(struct h2_stream *st)
{
	if (st->req_ended)
		return;
	st->req_ended = true;
	if (!st->end || !st->req_chunked)
		return;
	struct evbuffer *out = bufferevent_get_output(st->end);
	evbuffer_add(out, "0\r\n", 3);
	if (st->trailers)
		evbuffer_add_buffer(out, st->trailers);
	evbuffer_add(out, "\r\n", 2);
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
	if (!st || !st->end || st->req_ended) {
		/* nobody reads it: give the connection window back at once */
		nghttp2_session_consume_connection(ng, len);
		return 0;
	}
	struct evbuffer *out = bufferevent_get_output(st->end);
	st->req_unacked += len;
	int rc = 0;
	if (st->req_chunked)
		rc = evbuffer_add_printf(out, "%zx\r\n", len) < 0 || evbuffer_add(out, data, len) != 0 ||
		     evbuffer_add(out, "\r\n", 2) != 0;
	else
		rc = evbuffer_add(out, data, len) != 0;
	if (rc)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	stream_ack(st);
	return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *arg)
{
	(void)error_code;
	struct h2_session *s = arg;
	struct h2_stream *st = stream_of(s, stream_id);
	if (!st)
		return 0;
	nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
	stream_free(st);
	return 0;
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
	(void)arg;
	struct h2_stream *st = source->ptr;
	if (!st->end) {
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	struct evbuffer *in = bufferevent_get_input(st->end);
	size_t copied = 0;
	bool done = false;
	if (st->resp_body == H1_BODY_LENGTH) {
		size_t avail = evbuffer_get_length(in);
		size_t n = length < avail ? length : avail;
		if (n > st->resp_remaining)
			n = (size_t)st->resp_remaining;
		if (n && evbuffer_remove(in, buf, n) != (int)n)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		copied = n;
		st->resp_remaining -= n;
		done = st->resp_remaining == 0;
	} else {
		while (copied < length && !done) {
			size_t avail = evbuffer_get_length(in);
			if (avail == 0)
				break;
			size_t want = length - copied;
			size_t win = avail < want + 4096 ? avail : want + 4096;
			const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)win);
			enum h1_chunk_event ev;
			const char *line = NULL;
			size_t line_len = 0;
			/* in a data run, never let the decoder hand us more than fits */
			size_t offer = st->chunk.remaining > 0 && win > want ? want : win;
			ssize_t r = h1_chunked_feed(&st->chunk, p, offer, &ev, &line, &line_len);
			if (r < 0)
				return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
			if (ev == H1_CHUNK_NEED_MORE)
				break;
			if (ev == H1_CHUNK_DATA) {
				memcpy(buf + copied, p, (size_t)r);
				copied += (size_t)r;
			} else if (ev == H1_CHUNK_TRAILER) {
				const char *colon = memchr(line, ':', line_len);
				if (colon && colon > line && !hop_by_hop(line, (size_t)(colon - line))) {
					if (!st->trailers && !(st->trailers = evbuffer_new()))
						return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
					evbuffer_add(st->trailers, line, line_len);
					evbuffer_add(st->trailers, "\n", 1);
				}
			} else if (ev == H1_CHUNK_DONE) {
				done = true;
			}
			evbuffer_drain(in, (size_t)r);
		}
	}
	if (done) {
		st->resp_done = true;
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		if (st->trailers && evbuffer_get_length(st->trailers) && st->resp_body == H1_BODY_CHUNKED) {
			nghttp2_nv nv[64];
			size_t n = 0;
			size_t tl = evbuffer_get_length(st->trailers);
			char *t = (char *)evbuffer_pullup(st->trailers, (ev_ssize_t)tl);
			char *end = t + tl;
			while (t < end && n < 64) {
				char *nl = memchr(t, '\n', (size_t)(end - t));
				char *colon = memchr(t, ':', (size_t)(nl - t));
				for (char *c = t; c < colon; c++)
					*c = (char)tolower((unsigned char)*c);
				char *v = colon + 1;
				while (v < nl && (*v == ' ' || *v == '\t'))
					v++;
				char *ve = nl;
				while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
					ve--;
				nv[n++] = (nghttp2_nv){(uint8_t *)t, (uint8_t *)v, (size_t)(colon - t), (size_t)(ve - v),
				                       NGHTTP2_NV_FLAG_NONE};
				t = nl + 1;
			}
			if (n && nghttp2_submit_trailer(ng, stream_id, nv, n) == 0)
				*data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		}
		return (ssize_t)copied;
	}
	if (copied == 0) {
		if (!bufferevent_pair_get_partner(st->end))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the exchange was cut short */
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)copied;
}

/* Parses the response head waiting on the pair and submits it. */
static void stream_response_head(struct h2_stream *st)
{
	struct h2_session *s = st->s;
	struct evbuffer *in = bufferevent_get_input(st->end);
	for (;;) {
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			return;
		size_t win = avail < H2_MAX_RESPONSE_HEAD ? avail : H2_MAX_RESPONSE_HEAD;
		const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)win);
		struct h1_limits lim = {.max_request_line = 8192, .max_head = H2_MAX_RESPONSE_HEAD, .max_headers = H1_MAX_HEADERS};
		struct h1_response res;
		const char *why = NULL;
		int rc = h1_parse_response(p, win, &lim, st->is_head, &res, &why);
		if (rc == H1_INCOMPLETE)
			return;
		if (rc == H1_ERROR) {
			nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
			stream_release(st);
			return;
		}
		if (res.status < 200) {
			evbuffer_drain(in, (size_t)rc);
			continue;
		}
		/* A HEAD response carries the Content-Length a GET would have, but
		 * parsed as the answer to HEAD it has no body length: parse the head
		 * again as if for GET to learn it (and to validate it the same way). */
		bool head_length = false;
		uint64_t head_content_length = 0;
		if (st->is_head && res.status >= 200 && res.status != 204 && res.status != 304) {
			struct h1_response as_get;
			const char *why_get = NULL;
			if (h1_parse_response(p, win, &lim, false, &as_get, &why_get) == rc &&
			    as_get.body == H1_BODY_LENGTH) {
				head_length = true;
				head_content_length = as_get.content_length;
			}
		}
		nghttp2_nv nv[H2_MAX_NV];
		char status[12];
		char clen[24];
		snprintf(status, sizeof status, "%03d", res.status);
		size_t n = 0;
		nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), NGHTTP2_NV_FLAG_NONE};
		/* names are lower-cased in place: the head is ours until drained */
		for (size_t i = 0; i < res.num_headers && n < H2_MAX_NV - 1; i++) {
			const struct http_header *h = &res.headers[i];
			if ((res.header_flags[i] & H1_HDR_HOP) || hop_by_hop(h->name, h->name_len))
				continue;
			for (size_t k = 0; k < h->name_len; k++)
				((char *)h->name)[k] = (char)tolower((unsigned char)h->name[k]);
			nv[n++] = (nghttp2_nv){(uint8_t *)h->name, (uint8_t *)h->value, h->name_len, h->value_len,
			                       NGHTTP2_NV_FLAG_NONE};
		}
		if ((res.body == H1_BODY_LENGTH && !st->is_head && res.status != 204 && res.status != 304) ||
		    head_length) {
			unsigned long long length = head_length ? head_content_length : res.content_length;
			int k = snprintf(clen, sizeof clen, "%llu", length);
			nv[n++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)clen, 14, (size_t)k,
			                       NGHTTP2_NV_FLAG_NONE};
		}
		st->resp_body = res.body;
		st->resp_remaining = res.content_length;
		bool body = !st->is_head && res.status != 204 && res.status != 304 && res.body != H1_BODY_NONE &&
		            !(res.body == H1_BODY_LENGTH && res.content_length == 0);
		if (res.body == H1_BODY_CHUNKED)
			h1_chunked_init(&st->chunk, 4096, 64 * 1024);
		nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
		int sr = nghttp2_submit_response(s->ng, st->id, nv, n, body ? &prd : NULL);
		evbuffer_drain(in, (size_t)rc);
		st->resp_head_done = true;
		if (sr != 0) {
			nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
			stream_release(st);
			return;
		}
		if (!body)
			st->resp_done = true;
		return;
	}
}

static void end_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct h2_stream *st = arg;
	struct h2_session *s = st->s;
	if (!st->resp_head_done)
		stream_response_head(st);
	else if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(s->ng, st->id);
	}
	session_flush(s);
}

static void end_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct h2_stream *st = arg;
	stream_ack(st);
	session_flush(st->s);
}

/* The internal connection ended: client.c flushes its end with BEV_FINISHED
 * before freeing it, so this runs (deferred, after the data it sent was
 * delivered to end_read_cb) for every exchange that ends, early or not, and
 * no polling for vanished partners is needed. */
static void end_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	struct h2_stream *st = arg;
	struct h2_session *s = st->s;
	if (!st->resp_done) {
		if (st->resp_head_done && st->deferred) {
			st->deferred = false;
			nghttp2_session_resume_data(s->ng, st->id); /* the provider reports the cut */
		} else if (!st->resp_head_done) {
			/* no (complete) response head will ever come */
			nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
			stream_release(st);
		}
	}
	session_flush(s);
}

/* ---- the session ---- */

/* The idle timer runs only while no stream has an exchange in progress (an
 * exchange has its own timeouts in the pipeline); it is armed once when the
 * session becomes idle, not pushed back by every flush. */
static void session_arm_timer(struct h2_session *s)
{
	bool active = false;
	for (struct h2_stream *st = s->streams; st && !active; st = st->next)
		active = st->end != NULL;
	if (active) {
		if (evtimer_pending(s->timer, NULL) && evtimer_del(s->timer) != 0)
			log_msg(LOG_WARN, "cannot stop the HTTP/2 idle timer");
		return;
	}
	if (evtimer_pending(s->timer, NULL))
		return;
	conf_msec ms = s->cfg->idle_timeout ? s->cfg->idle_timeout : s->w->snap->conf->limits.keepalive_timeout;
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	if (evtimer_add(s->timer, &tv) != 0)
		log_msg(LOG_WARN, "cannot arm the HTTP/2 idle timer: the connection will not time out when idle");
}

static void session_flush(struct h2_session *s)
{
	if (s->in_io)
		return;
	s->in_io = true;
	struct evbuffer *out = bufferevent_get_output(s->bev);
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

static void session_read_cb(struct bufferevent *bev, void *arg)
{
	struct h2_session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	s->in_io = true;
	while (evbuffer_get_length(in) > 0 && !s->closing && !s->dead) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		if (!scan_frames(s, v.iov_base, v.iov_len)) {
			evbuffer_drain(in, v.iov_len);
			break;
		}
		ssize_t r = nghttp2_session_mem_recv(s->ng, v.iov_base, v.iov_len);
		if (r < 0) {
			s->in_io = false;
			if (r == NGHTTP2_ERR_CALLBACK_FAILURE && s->closing)
				break; /* our own defence already queued GOAWAY */
			session_fail(s, H2_CLOSE_PROTOCOL_ERROR,
			             r == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
			s->in_io = true;
			break;
		}
		evbuffer_drain(in, (size_t)r);
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
		active = st->end != NULL;
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
	s->preface_left = 24;
	s->window_start_us = worker_wall_us(w);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	/* request bodies are acknowledged only as the pipeline takes them */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
	nghttp2_option_set_max_outbound_ack(opt, 100);
	int rc = nghttp2_session_server_new2(&s->ng, cbs, s, opt);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	s->timer = evtimer_new(w->base, session_timer_cb, s);
	if (rc != 0 || !s->timer) {
		if (s->ng)
			nghttp2_session_del(s->ng);
		if (s->timer)
			event_free(s->timer);
		free(s);
		bufferevent_free(bev);
		return;
	}
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->cfg->max_concurrent_streams},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)s->cfg->initial_window_size},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)s->cfg->max_header_list_size},
	    {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096},
	    {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
	};
	if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) {
		nghttp2_session_del(s->ng);
		event_free(s->timer);
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
	struct timeval send_tv = {.tv_sec = (time_t)(c->limits.send_timeout / 1000),
	                          .tv_usec = (suseconds_t)(c->limits.send_timeout % 1000) * 1000};
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

struct bufferevent *h2_stream_transport(struct bufferevent *bev)
{
	struct bufferevent *partner = bev ? bufferevent_pair_get_partner(bev) : NULL;
	if (!partner)
		return NULL;
	bufferevent_data_cb readcb = NULL;
	void *arg = NULL;
	bufferevent_getcb(partner, &readcb, NULL, NULL, &arg);
	if (readcb != end_read_cb || !arg)
		return NULL;
	return ((struct h2_stream *)arg)->s->bev;
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
