/* tracing.c - the tracing module (tracing.h). */
#include "tracing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "clock.h"
#include "conf_tracing.h"
#include "log.h"
#include "snapshot.h"
#include "trace_context.h"
#include "trace_export.h"
#include "worker.h"

/* Per snapshot: how to sample, where to export (NULL: nowhere). */
struct tracing_state {
	bool sample_all;
	uint64_t sample_below; /* a new trace is sampled when a random 64-bit value is below this */
	bool parent_based;
	unsigned queue_size;
	struct trace_export_conf *export;
	uint64_t generation;
};

struct tracing_worker {
	struct worker *w;
	uint64_t rng[4]; /* xoshiro256** */
	struct trace_exporter *exporter;
	struct trace_ring *ring; /* created with the first span to export */
};

/* Attempts a request records as client spans at most (retries are at most
 * 10, each with at most one fail-over to a fresh connection): the ids of
 * any more still change, they are not exported. */
#define TRACING_MAX_ATTEMPTS 32

/* One upstream attempt of a sampled request: its client span. */
struct tracing_attempt {
	uint8_t span_id[TRACE_SPAN_ID_LEN];
	bool ended;
	uint16_t status;      /* the upstream's, 0: none */
	enum reason reason;   /* why it failed, when it did */
	uint64_t start_mono_us, end_mono_us;
	char upstream[64];
};

/* A request's tracing state (r->trace, in its arena), for the proxy's hooks. */
struct tracing_req {
	struct tracing_worker *tw;
	char *traceparent;    /* the value that goes upstream: each attempt writes its span id into it */
	struct tracing_attempt *attempts; /* sampled requests only */
	unsigned n, cap;
};

static int tracing_snapshot_init(const struct conf *c, void **state, struct conf_errors *errs)
{
	*state = NULL;
	const struct conf_tracing *ct = c->tracing;
	if (!ct)
		return 0;
	struct tracing_state *s = calloc(1, sizeof *s);
	if (!s) {
		conf_errors_add(errs, "%s: tracing: out of memory", c->source);
		return -1;
	}
	/* 2^64 * ratio; a ratio so close to 1 that the product rounds to 2^64 (out
	 * of a uint64_t's range) samples everything */
	double below = ct->sample * 18446744073709551616.0;
	s->sample_all = ct->sample >= 1.0 || below >= 18446744073709551615.0;
	s->sample_below = s->sample_all ? UINT64_MAX : (uint64_t)below;
	s->parent_based = ct->parent_based;
	s->queue_size = ct->queue_size;
	if (ct->otlp) {
		s->export = trace_export_conf_new(ct);
		if (!s->export) {
			conf_errors_add(errs, "%s: tracing: out of memory", c->source);
			free(s);
			return -1;
		}
	}
	*state = s;
	return 0;
}

static void tracing_snapshot_free(void *state)
{
	struct tracing_state *s = state;
	trace_export_conf_unref(s->export);
	free(s);
}

/* ---- ids ---- */

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

/* A random id of 8 or 16 bytes, never all zero (an all-zero id is invalid). */
static void random_id(struct tracing_worker *tw, uint8_t *out, size_t n)
{
	uint64_t v[2];
	do {
		v[0] = rng_next(tw->rng);
		v[1] = n > 8 ? rng_next(tw->rng) : 0;
	} while ((v[0] | v[1]) == 0);
	memcpy(out, v, n);
}

static const struct tracing_state *state_of(const struct snapshot *s)
{
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i] == &tracing_module)
			return s->module_state[i];
	return NULL;
}

static bool name_is(const struct http_header *h, const char *lower, size_t n)
{
	return h->name_len == n && strncasecmp(h->name, lower, n) == 0;
}

/* The request's trace: continue a valid incoming one or start one, and put
 * what goes upstream in its fields (one pass over them finds both). Returns
 * the traceparent value the fields hold (NULL: the request was traced
 * already). */
static char *tracing_begin(struct request *r, const struct tracing_state *s, struct tracing_worker *tw)
{
	if (r->traced)
		return NULL;
	r->traced = true;
	struct fields *f = &r->headers;
	int tp_at = -1, tp_count = 0, ts_count = 0;
	for (size_t i = 0; i < f->n; i++) {
		const struct http_header *h = &f->v[i];
		if (h->name_len < 10 || (h->name[0] | 0x20) != 't')
			continue;
		if (name_is(h, "traceparent", 11)) {
			tp_at = (int)i;
			tp_count++;
		} else if (name_is(h, "tracestate", 10)) {
			ts_count++;
		}
	}
	struct trace_parent parent;
	/* two traceparent fields cannot both be the caller's: neither is trusted */
	bool valid = tp_count == 1 && trace_parent_parse(f->v[tp_at].value, f->v[tp_at].value_len, &parent);
	bool sampled;
	if (valid) {
		memcpy(r->trace_id, parent.trace_id, sizeof r->trace_id);
		memcpy(r->parent_span_id, parent.parent_id, sizeof r->parent_span_id);
		sampled = s->parent_based ? (parent.flags & TRACE_FLAG_SAMPLED) != 0
		                          : s->sample_all || rng_next(tw->rng) < s->sample_below;
	} else {
		random_id(tw, r->trace_id, sizeof r->trace_id);
		memset(r->parent_span_id, 0, sizeof r->parent_span_id);
		sampled = s->sample_all || rng_next(tw->rng) < s->sample_below;
	}
	random_id(tw, r->span_id, sizeof r->span_id);
	memcpy(r->upstream_span_id, r->span_id, sizeof r->upstream_span_id); /* unsampled: every attempt's parent */
	r->trace_flags = sampled ? TRACE_FLAG_SAMPLED : 0;

	char *out = arena_alloc(&r->arena, TRACE_PARENT_LEN + 1);
	trace_parent_format(r->trace_id, r->span_id, r->trace_flags, out);
	if (tp_count == 1) {
		f->v[tp_at].value = out; /* in place: the field's position is kept */
		f->v[tp_at].value_len = TRACE_PARENT_LEN;
	} else {
		if (tp_count > 1)
			fields_remove(f, "traceparent");
		fields_add(f, "traceparent", 11, out, TRACE_PARENT_LEN);
	}
	if (ts_count == 0)
		return out;
	/* tracestate belongs to the incoming traceparent: kept (bounded) with it, dropped without */
	if (!valid) {
		fields_remove(f, "tracestate");
		return out;
	}
	int first = fields_find(f, "tracestate", 0);
	const char *joined = f->v[first].value;
	size_t joined_len = f->v[first].value_len;
	if (ts_count > 1) {
		size_t total = 0;
		for (int i = first; i >= 0; i = fields_find(f, "tracestate", (size_t)i + 1))
			total += f->v[i].value_len + 1;
		char *j = arena_alloc(&r->arena, total);
		joined_len = 0;
		for (int i = first; i >= 0; i = fields_find(f, "tracestate", (size_t)i + 1)) {
			if (joined_len)
				j[joined_len++] = ',';
			memcpy(j + joined_len, f->v[i].value, f->v[i].value_len);
			joined_len += f->v[i].value_len;
		}
		joined = j;
	}
	char *bounded = arena_alloc(&r->arena, TRACE_STATE_MAX + 1);
	if (trace_state_bound(joined, joined_len, bounded, TRACE_STATE_MAX + 1) > 0)
		fields_set(f, "tracestate", bounded);
	else
		fields_remove(f, "tracestate");
	return out;
}

/* ---- upstream attempts (the proxy's hooks, request.h) ---- */

/* The open attempt, if any, ends now with this outcome. */
static void attempt_close(struct tracing_req *tq, int status, enum reason reason, uint64_t now)
{
	struct tracing_attempt *a = tq->n ? &tq->attempts[tq->n - 1] : NULL;
	if (!a || a->ended)
		return;
	a->ended = true;
	a->status = (uint16_t)status;
	a->reason = reason;
	a->end_mono_us = now;
}

static void tracing_attempt_end(struct request *r, int status, enum reason reason)
{
	attempt_close(r->trace, status, reason, clock_mono_us());
}

/* Each attempt of a sampled request is a span of its own, the server
 * span's child: its id goes upstream as the traceparent's parent id, so the
 * upstream's span hangs under the attempt that reached it. (Unsampled
 * requests have no hooks: tracing_access.) */
static void tracing_attempt_begin(struct request *r)
{
	struct tracing_req *tq = r->trace;
	uint8_t id[TRACE_SPAN_ID_LEN];
	random_id(tq->tw, id, sizeof id);
	char hex[2 * TRACE_SPAN_ID_LEN + 1];
	trace_hex(id, sizeof id, hex);
	/* "00-" trace id "-" span id "-" flags */
	memcpy(tq->traceparent + 3 + 2 * TRACE_ID_LEN + 1, hex, 2 * TRACE_SPAN_ID_LEN);
	memcpy(r->upstream_span_id, id, sizeof r->upstream_span_id); /* for the access log */
	uint64_t now = clock_mono_us();
	attempt_close(tq, 0, REASON_NONE, now); /* one whose end was not told */
	if (tq->n == TRACING_MAX_ATTEMPTS)
		return;
	if (tq->n == tq->cap) {
		unsigned cap = tq->cap ? 2 * tq->cap : 2;
		struct tracing_attempt *grown = arena_alloc(&r->arena, cap * sizeof *grown);
		if (tq->n)
			memcpy(grown, tq->attempts, tq->n * sizeof *grown);
		tq->attempts = grown;
		tq->cap = cap;
	}
	struct tracing_attempt *a = &tq->attempts[tq->n++];
	memcpy(a->span_id, id, sizeof a->span_id);
	a->ended = false;
	a->status = 0;
	a->reason = REASON_NONE;
	a->start_mono_us = a->end_mono_us = now;
	size_t n = strnlen(r->upstream, sizeof a->upstream - 1);
	memcpy(a->upstream, r->upstream, n);
	a->upstream[n] = '\0';
}

static const struct request_trace_hooks tracing_hooks = {
    .attempt_begin = tracing_attempt_begin,
    .attempt_end = tracing_attempt_end,
};

static enum phase_result tracing_access(struct request *r, const void *snapshot_state, void *worker_state,
                                        struct phase_deny *deny)
{
	(void)deny;
	if (!snapshot_state)
		return PHASE_CONTINUE;
	char *traceparent = tracing_begin(r, snapshot_state, worker_state);
	/* An unsampled request records no attempt, so none needs an id of its
	 * own: every attempt sends the server span's id as the parent (the
	 * traceparent tracing_begin wrote), as nginx-otel does for every
	 * request; W3C lets the parent id name the gateway's operation, and
	 * keeps the trace id and the flags propagating. No hooks, no state. */
	if (traceparent && (r->trace_flags & TRACE_FLAG_SAMPLED)) {
		/* the request may go upstream: its attempts are told to us */
		struct tracing_req *tq = arena_alloc(&r->arena, sizeof *tq);
		memset(tq, 0, sizeof *tq);
		tq->tw = worker_state;
		tq->traceparent = traceparent;
		r->trace = tq;
		r->trace_hooks = &tracing_hooks;
	}
	return PHASE_CONTINUE;
}

/* A request answered without an access phase (no route, a local answer, an
 * early error) is traced when its response head goes out. */
static void tracing_response_headers(struct request *r, const void *snapshot_state, void *worker_state,
                                     struct fields *response)
{
	(void)response;
	if (snapshot_state)
		tracing_begin(r, snapshot_state, worker_state);
}

/* ---- the spans ---- */

static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strnlen(src, cap - 1) : 0;
	memcpy(dst, src ? src : "", n);
	dst[n] = '\0';
}

/* The request's tracestate (as forwarded) into the span. */
static void copy_trace_state(struct trace_span *sp, const struct request *r)
{
	size_t n = 0;
	const char *ts = fields_value(&r->headers, "tracestate", &n);
	n = ts ? (n < sizeof sp->trace_state - 1 ? n : sizeof sp->trace_state - 1) : 0;
	memcpy(sp->trace_state, ts ? ts : "", n);
	sp->trace_state[n] = '\0';
}

static void fill_span(struct trace_span *sp, const struct request *r)
{
	memcpy(sp->trace_id, r->trace_id, sizeof sp->trace_id);
	memcpy(sp->span_id, r->span_id, sizeof sp->span_id);
	memcpy(sp->parent_id, r->parent_span_id, sizeof sp->parent_id);
	sp->flags = r->trace_flags;
	sp->client = false;
	sp->resend_count = 0;
	sp->pool[0] = '\0';
	sp->status = (uint16_t)r->status;
	sp->upstream_status = (uint16_t)r->upstream_status;
	sp->client_port = r->client_port;
	sp->start_ns = r->start_wall_us * 1000;
	sp->end_ns = sp->start_ns + (r->end_mono_us > r->start_mono_us ? r->end_mono_us - r->start_mono_us : 0) * 1000;
	sp->bytes_in = r->bytes_in;
	sp->bytes_out = r->bytes_out;
	copy_str(sp->method, sizeof sp->method, r->method);
	copy_str(sp->scheme, sizeof sp->scheme, r->scheme);
	const char *proto = r->protocol ? r->protocol : "";
	copy_str(sp->protocol, sizeof sp->protocol, strcmp(proto, "HTTP/2.0") == 0 ? "2"
	                                            : strncmp(proto, "HTTP/", 5) == 0 ? proto + 5
	                                                                              : proto);
	sp->error_type[0] = '\0';
	if (r->status == 0 || r->status >= 500) {
		if (r->reason != REASON_NONE)
			copy_str(sp->error_type, sizeof sp->error_type, reason_name(r->reason));
		else if (r->status)
			snprintf(sp->error_type, sizeof sp->error_type, "%d", r->status);
		else
			copy_str(sp->error_type, sizeof sp->error_type, "_OTHER");
	}
	copy_str(sp->route, sizeof sp->route, r->route_name);
	copy_str(sp->listener, sizeof sp->listener, r->listener);
	copy_str(sp->client_ip, sizeof sp->client_ip, r->client_ip);
	copy_str(sp->upstream, sizeof sp->upstream, r->upstream);
	copy_str(sp->request_id, sizeof sp->request_id, r->request_id);
	copy_str(sp->host, sizeof sp->host, r->host);
	copy_str(sp->path, sizeof sp->path, r->path);
	size_t n = 0;
	const char *ua = fields_value(&r->headers, "user-agent", &n);
	n = ua ? (n < sizeof sp->user_agent - 1 ? n : sizeof sp->user_agent - 1) : 0;
	memcpy(sp->user_agent, ua ? ua : "", n);
	sp->user_agent[n] = '\0';
	copy_trace_state(sp, r);
}

/* Attempt a (the index-th) of r as its client span. */
static void fill_client_span(struct trace_span *sp, const struct request *r, const struct tracing_attempt *a,
                             unsigned index)
{
	memcpy(sp->trace_id, r->trace_id, sizeof sp->trace_id);
	memcpy(sp->span_id, a->span_id, sizeof sp->span_id);
	memcpy(sp->parent_id, r->span_id, sizeof sp->parent_id);
	sp->flags = r->trace_flags;
	sp->client = true;
	sp->resend_count = (uint16_t)index;
	sp->status = a->status;
	sp->upstream_status = 0;
	sp->client_port = 0;
	sp->start_ns = (r->start_wall_us + clock_elapsed_us(r->start_mono_us, a->start_mono_us)) * 1000;
	sp->end_ns = sp->start_ns + clock_elapsed_us(a->start_mono_us, a->end_mono_us) * 1000;
	sp->bytes_in = sp->bytes_out = 0;
	copy_str(sp->method, sizeof sp->method, r->method);
	const struct conf *c = r->snap->conf;
	const struct conf_pool *pool = r->pool >= 0 && (size_t)r->pool < c->num_pools ? &c->pools[r->pool] : NULL;
	copy_str(sp->scheme, sizeof sp->scheme, pool && pool->tls ? "https" : "http");
	copy_str(sp->pool, sizeof sp->pool, pool ? pool->name : NULL);
	copy_str(sp->protocol, sizeof sp->protocol, "1.1");
	/* an error: the status for a 4xx or 5xx, else the reason it failed */
	if (a->status >= 400)
		snprintf(sp->error_type, sizeof sp->error_type, "%u", (unsigned)a->status);
	else if (a->status == 0)
		copy_str(sp->error_type, sizeof sp->error_type, a->reason != REASON_NONE ? reason_name(a->reason) : "_OTHER");
	else
		sp->error_type[0] = '\0';
	sp->route[0] = sp->listener[0] = sp->client_ip[0] = sp->host[0] = sp->user_agent[0] = '\0';
	copy_str(sp->upstream, sizeof sp->upstream, a->upstream);
	copy_str(sp->request_id, sizeof sp->request_id, r->request_id);
	copy_str(sp->path, sizeof sp->path, r->path);
	copy_trace_state(sp, r);
}

static void tracing_log(const struct request *r, const void *snapshot_state, void *worker_state)
{
	const struct tracing_state *s = snapshot_state;
	struct tracing_worker *tw = worker_state;
	/* not traced: the client went away before an access phase or a response */
	if (!s || !s->export || !r->traced || !(r->trace_flags & TRACE_FLAG_SAMPLED) || !tw->exporter)
		return;
	if (tw->ring && trace_ring_capacity(tw->ring) < s->queue_size) {
		trace_ring_retire(tw->exporter, tw->ring); /* a reload asked for a larger queue */
		tw->ring = NULL;
	}
	if (!tw->ring && !(tw->ring = trace_ring_new(tw->exporter, s->queue_size, tw->w->counters)))
		return;
	/* the server span, then a client span per attempt; what does not fit is
	 * dropped and counted span by span (trace_ring_reserve counts it) */
	const struct tracing_req *tq = r->trace;
	unsigned spans = 1 + (tq ? tq->n : 0);
	for (unsigned i = 0; i < spans; i++) {
		struct trace_span *sp = trace_ring_reserve(tw->ring);
		if (!sp)
			continue;
		if (i == 0) {
			fill_span(sp, r);
		} else {
			struct tracing_attempt a = tq->attempts[i - 1];
			/* the last attempt ends with the request: its response, or why there was none */
			if (!a.ended) {
				a.status = (uint16_t)r->upstream_status;
				a.reason = r->upstream_status ? REASON_NONE : r->reason;
				a.end_mono_us = r->end_mono_us > a.start_mono_us ? r->end_mono_us : a.start_mono_us;
			}
			fill_client_span(sp, r, &a, i - 1);
		}
		trace_ring_commit(tw->ring);
	}
}

/* ---- worker ---- */

static void tracing_configure(struct tracing_worker *tw, const struct snapshot *snap)
{
	const struct tracing_state *s = state_of(snap);
	if (tw->exporter)
		trace_exporter_configure(tw->exporter, s ? s->export : NULL, snap->generation);
}

static int tracing_worker_init(struct worker *w, void **worker_state)
{
	struct tracing_worker *tw = calloc(1, sizeof *tw);
	if (!tw)
		return -1;
	tw->w = w;
	if (getrandom(tw->rng, sizeof tw->rng, 0) != (ssize_t)sizeof tw->rng) {
		log_msg(LOG_ERROR, "tracing: getrandom failed: cannot seed the trace id generator");
		free(tw);
		return -1;
	}
	if (trace_id_is_zero((const uint8_t *)tw->rng, sizeof tw->rng))
		tw->rng[0] = 1; /* xoshiro's one state that never leaves zero */
	tw->exporter = trace_exporter_get();
	if (w->snap)
		tracing_configure(tw, w->snap);
	*worker_state = tw;
	return 0;
}

static void tracing_worker_free(void *worker_state)
{
	struct tracing_worker *tw = worker_state;
	if (tw->ring)
		trace_ring_retire(tw->exporter, tw->ring);
	trace_exporter_put(tw->exporter);
	free(tw);
}

static void tracing_worker_adopt(struct worker *w, void *worker_state, const void *snapshot_state)
{
	(void)snapshot_state;
	tracing_configure(worker_state, w->snap);
}

const struct module tracing_module = {
    .name = "tracing",
    .snapshot_init = tracing_snapshot_init,
    .snapshot_free = tracing_snapshot_free,
    .worker_init = tracing_worker_init,
    .worker_free = tracing_worker_free,
    .worker_adopt = tracing_worker_adopt,
    .access = tracing_access,
    .response_headers = tracing_response_headers,
    .log = tracing_log,
    .conf = &conf_tracing_section,
};
