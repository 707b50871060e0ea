/* trace_otlp.c - OTLP JSON and protobuf encodings of span batches (trace_otlp.h). */
#include "trace_otlp.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pb_write.h"

/* ---- one view of a span, for both encodings ---- */

struct otlp_attr {
	const char *key;
	const char *str; /* NULL: an int */
	uint64_t num;
};

#define OTLP_MAX_ATTRS 24

/* The OpenTelemetry HTTP semantic conventions know these methods; any other
 * is reported as "_OTHER" with the original beside it. */
static bool method_known(const char *m)
{
	static const char *const known[] = {"GET",     "HEAD",  "POST",  "PUT",   "DELETE", "CONNECT",
	                                    "OPTIONS", "TRACE", "PATCH", "QUERY", NULL};
	for (const char *const *k = known; *k; k++)
		if (strcmp(*k, m) == 0)
			return true;
	return false;
}

struct span_view {
	const struct trace_span *s;
	bool has_parent;
	bool error;        /* status ERROR */
	unsigned kind;     /* OTLP SpanKind: 2 server, 3 client */
	uint32_t flags;    /* W3C flags; bit 8: whether the parent is remote is known; bit 9: it is */
	const char *name;
	struct otlp_attr attrs[OTLP_MAX_ATTRS];
	size_t n;
	char name_buf[sizeof ((struct trace_span *)0)->method + sizeof ((struct trace_span *)0)->route + 1];
	char peer_host[sizeof ((struct trace_span *)0)->upstream];
	char url[sizeof ((struct trace_span *)0)->scheme + sizeof ((struct trace_span *)0)->upstream +
	         sizeof ((struct trace_span *)0)->path + 8];
};

static void attr_str(struct span_view *v, const char *key, const char *value)
{
	if (value && *value && v->n < OTLP_MAX_ATTRS)
		v->attrs[v->n++] = (struct otlp_attr){.key = key, .str = value};
}

static void attr_int(struct span_view *v, const char *key, uint64_t value)
{
	if (v->n < OTLP_MAX_ATTRS)
		v->attrs[v->n++] = (struct otlp_attr){.key = key, .num = value};
}

/* "HOST:PORT" or "[V6]:PORT" into the host (no brackets) and the port (0: none). */
static unsigned split_host_port(const char *hp, char *host, size_t cap)
{
	const char *colon = strrchr(hp, ':');
	const char *h = hp;
	size_t hn = colon ? (size_t)(colon - hp) : strlen(hp);
	if (hn >= 2 && hp[0] == '[' && hp[hn - 1] == ']') {
		h++;
		hn -= 2;
	} else if (colon && memchr(hp, ':', hn)) {
		/* a bare IPv6 address: no port */
		hn = strlen(hp);
		colon = NULL;
	}
	if (hn >= cap)
		hn = cap - 1;
	memcpy(host, h, hn);
	host[hn] = '\0';
	unsigned long port = colon ? strtoul(colon + 1, NULL, 10) : 0;
	return port <= 65535 ? (unsigned)port : 0;
}

static void view_server(struct span_view *v, const char *method)
{
	const struct trace_span *s = v->s;
	v->kind = 2; /* SPAN_KIND_SERVER */
	v->flags |= v->has_parent ? 0x200u : 0;
	/* "{method} {http.route}" (the route's name here), else the method alone */
	if (s->route[0]) {
		snprintf(v->name_buf, sizeof v->name_buf, "%s %s", method, s->route);
		v->name = v->name_buf;
	}
	attr_str(v, "url.path", s->path);
	attr_str(v, "url.scheme", s->scheme);
	attr_str(v, "http.route", s->route);
	if (s->status)
		attr_int(v, "http.response.status_code", s->status);
	attr_str(v, "server.address", s->host);
	attr_str(v, "network.protocol.name", "http");
	attr_str(v, "network.protocol.version", s->protocol);
	attr_str(v, "client.address", s->client_ip);
	attr_int(v, "client.port", s->client_port);
	attr_str(v, "user_agent.original", s->user_agent);
	attr_int(v, "http.request.body.size", s->bytes_in);
	attr_str(v, "error.type", s->error_type);
	attr_str(v, "sluice.listener", s->listener);
	attr_str(v, "sluice.request_id", s->request_id);
	attr_str(v, "sluice.upstream.address", s->upstream);
	if (s->upstream_status)
		attr_int(v, "sluice.upstream.status_code", s->upstream_status);
	attr_int(v, "sluice.response.bytes", s->bytes_out);
	/* a server span is an error for a 5xx or no response at all (4xx is the client's) */
	v->error = s->status >= 500 || s->status == 0;
}

/* One upstream attempt: the OpenTelemetry HTTP client span. */
static void view_client(struct span_view *v)
{
	const struct trace_span *s = v->s;
	v->kind = 3; /* SPAN_KIND_CLIENT; its parent, the server span, is local */
	unsigned port = split_host_port(s->upstream, v->peer_host, sizeof v->peer_host);
	snprintf(v->url, sizeof v->url, "%s://%s%s", s->scheme, s->upstream, s->path);
	attr_str(v, "server.address", v->peer_host);
	if (port)
		attr_int(v, "server.port", port);
	attr_str(v, "url.full", v->url);
	if (s->status)
		attr_int(v, "http.response.status_code", s->status);
	if (s->resend_count)
		attr_int(v, "http.request.resend_count", s->resend_count);
	attr_str(v, "error.type", s->error_type);
	attr_str(v, "network.protocol.name", "http");
	attr_str(v, "network.protocol.version", "1.1");
	attr_str(v, "sluice.pool", s->pool);
	attr_str(v, "sluice.request_id", s->request_id);
	/* for a client, a 4xx is an error too: the request it sent was refused */
	v->error = s->status >= 400 || s->status == 0;
}

static void span_view(const struct trace_span *s, struct span_view *v)
{
	v->s = s;
	v->n = 0;
	v->has_parent = !trace_id_is_zero(s->parent_id, TRACE_SPAN_ID_LEN);
	v->flags = (uint32_t)s->flags | 0x100u;
	bool known = method_known(s->method);
	const char *method = known ? s->method : "_OTHER";
	v->name = method;
	/* both kinds start with the method */
	attr_str(v, "http.request.method", method);
	if (!known)
		attr_str(v, "http.request.method_original", s->method);
	if (s->client)
		view_client(v);
	else
		view_server(v, method);
}

/* ---- UTF-8 ---- */

/* The length of the valid UTF-8 sequence at p[0..n), 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	size_t len;
	unsigned min;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	unsigned cp = c & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* s[0..n) copied into out (cap > 0 bytes, NUL-terminated) with each byte
 * that starts no valid sequence, and each NUL, replaced by U+FFFD; cut to
 * fit between characters. Returns the length written. */
static size_t utf8_copy(const char *s, size_t n, char *out, size_t cap)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		size_t k = p[i] ? utf8_seq(p + i, n - i) : 0;
		const char *src = k ? s + i : "\xef\xbf\xbd";
		size_t m = k ? k : 3;
		if (o + m >= cap)
			break;
		memcpy(out + o, src, m);
		o += m;
		i += k ? k : 1;
	}
	out[o] = '\0';
	return o;
}

/* s itself when it is valid UTF-8, else a copy in out (cap bytes) with each
 * byte that starts no valid sequence replaced by U+FFFD (cut to fit). */
static const char *utf8_clean(const char *s, char *out, size_t cap)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), i = 0;
	while (i < n && p[i] < 0x80)
		i++;
	while (i < n) {
		size_t k = utf8_seq(p + i, n - i);
		if (!k)
			break;
		i += k;
	}
	if (i >= n)
		return s;
	utf8_copy(s, n, out, cap);
	return out;
}

/* room for the longest string field (the path or the URL) with every byte replaced */
#define CLEAN_CAP (3 * sizeof ((struct span_view *)0)->url + 1)

/* ---- JSON ---- */

struct tbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static bool __attribute__((noinline)) tb_grow(struct tbuf *b, size_t n)
{
	if (b->oom)
		return false;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

/* room for n more bytes and a NUL */
static inline bool tb_room(struct tbuf *b, size_t n)
{
	return (!b->oom && b->len + n + 1 <= b->cap) || tb_grow(b, n);
}

/* (the NUL goes on at the end: trace_otlp_json; tb_room keeps room for it) */
static void tb_put(struct tbuf *b, const char *s, size_t n)
{
	if (!tb_room(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static inline void tb_put1(struct tbuf *b, char c)
{
	if (tb_room(b, 1))
		b->p[b->len++] = c;
}

/* a JSON string, quoted: valid UTF-8 goes as it is (the same text as the
 * protobuf encoding carries), control characters, '"' and '\\' escaped */
static void tb_json(struct tbuf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	char clean[CLEAN_CAP];
	s = utf8_clean(s, clean, sizeof clean);
	size_t n = strlen(s);
	if (!tb_room(b, n * 6 + 2))
		return;
	char *o = b->p + b->len;
	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		/* a run of bytes that go as they are: one copy */
		const unsigned char *run = p;
		while (*run >= 0x20 && *run != '"' && *run != '\\' && *run != 0x7f)
			run++;
		if (run > p) {
			memcpy(o, p, (size_t)(run - p));
			o += run - p;
			p = run;
			if (!*p)
				break;
		}
		*o++ = '\\';
		switch (*p) {
		case '"': case '\\': *o++ = (char)*p; break;
		case '\n': *o++ = 'n'; break;
		case '\r': *o++ = 'r'; break;
		case '\t': *o++ = 't'; break;
		default:
			memcpy(o, "u00", 3);
			o[3] = hex[*p >> 4];
			o[4] = hex[*p & 15];
			o += 5;
		}
	}
	*o++ = '"';
	*o = '\0';
	b->len = (size_t)(o - b->p);
}

static void tb_u64(struct tbuf *b, uint64_t v, bool quoted)
{
	char num[24];
	size_t i = sizeof num;
	if (quoted)
		num[--i] = '"';
	do {
		num[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (quoted)
		num[--i] = '"';
	tb_put(b, num + i, sizeof num - i);
}

static void tb_hex(struct tbuf *b, const uint8_t *id, size_t n)
{
	char hex[2 * TRACE_ID_LEN + 3];
	trace_hex(id, n, hex + 1);
	hex[0] = hex[2 * n + 1] = '"';
	tb_put(b, hex, 2 * n + 2);
}

/* ---- one walk, two writers ----
 * The request is walked once (walk_request: the envelope, the resource,
 * each span's fields and attributes); a writer turns each field into its
 * encoding. A field names itself both ways: its JSON member (the OTLP JSON
 * mapping: lowerCamel, ids in hex, 64-bit integers as strings) and its
 * protobuf number (opentelemetry/proto: collector/trace/v1, trace/v1,
 * common/v1, resource/v1; fields equal to their default are left out, as
 * proto3 encoders do). */

enum otlp_type {
	OT_MSG,     /* a message, or one element of a repeated message field */
	OT_ID,      /* bytes: hex in JSON */
	OT_STR,
	OT_ENUM,    /* a varint: a number in JSON */
	OT_FIXED32, /* a number in JSON */
	OT_FIXED64, /* a string in JSON */
	OT_INT64,   /* a varint: a string in JSON */
};

struct otlp_field {
	const char *json; /* ",\"name\":", the member's key as written after another (the first: from json + 1) */
	size_t json_len;
	uint32_t pb;
	enum otlp_type type;
};

#define OTLP_FIELD(sym, name, number, t)                                                                           \
	static const struct otlp_field sym = {",\"" name "\":", sizeof(",\"" name "\":") - 1, number, t}
OTLP_FIELD(F_RESOURCE_SPANS, "resourceSpans", 1, OT_MSG); /* ExportTraceServiceRequest */
OTLP_FIELD(F_RESOURCE, "resource", 1, OT_MSG);            /* ResourceSpans */
OTLP_FIELD(F_SCOPE_SPANS, "scopeSpans", 2, OT_MSG);
OTLP_FIELD(F_RES_ATTRIBUTES, "attributes", 1, OT_MSG);    /* Resource */
OTLP_FIELD(F_SCOPE, "scope", 1, OT_MSG);                  /* ScopeSpans */
OTLP_FIELD(F_SPANS, "spans", 2, OT_MSG);
OTLP_FIELD(F_SCOPE_NAME, "name", 1, OT_STR);              /* InstrumentationScope */
OTLP_FIELD(F_SCOPE_VERSION, "version", 2, OT_STR);
OTLP_FIELD(F_TRACE_ID, "traceId", 1, OT_ID);              /* Span */
OTLP_FIELD(F_SPAN_ID, "spanId", 2, OT_ID);
OTLP_FIELD(F_TRACE_STATE, "traceState", 3, OT_STR);
OTLP_FIELD(F_PARENT_SPAN_ID, "parentSpanId", 4, OT_ID);
OTLP_FIELD(F_NAME, "name", 5, OT_STR);
OTLP_FIELD(F_KIND, "kind", 6, OT_ENUM);
OTLP_FIELD(F_START, "startTimeUnixNano", 7, OT_FIXED64);
OTLP_FIELD(F_END, "endTimeUnixNano", 8, OT_FIXED64);
OTLP_FIELD(F_SPAN_ATTRIBUTES, "attributes", 9, OT_MSG);
OTLP_FIELD(F_STATUS, "status", 15, OT_MSG);
OTLP_FIELD(F_FLAGS, "flags", 16, OT_FIXED32);
OTLP_FIELD(F_STATUS_CODE, "code", 3, OT_ENUM);            /* Status */
OTLP_FIELD(F_KV_KEY, "key", 1, OT_STR);                   /* KeyValue */
OTLP_FIELD(F_KV_VALUE, "value", 2, OT_MSG);
OTLP_FIELD(F_ANY_STRING, "stringValue", 1, OT_STR);       /* AnyValue */
OTLP_FIELD(F_ANY_INT, "intValue", 3, OT_INT64);
#undef OTLP_FIELD

/* A writer. A repeated message field is list_begin, an elem_begin/elem_end
 * pair per element, list_end; a single one msg_begin/msg_end. str's plain:
 * the code's own ASCII (keys, the scope), written as it is; else a string
 * from outside, cleaned to UTF-8 (and escaped in JSON). */
struct otlp_writer {
	bool by_number; /* fields in field-number order (protobuf's canonical form) */
	void (*list_begin)(void *o, const struct otlp_field *f);
	void (*list_end)(void *o);
	void (*elem_begin)(void *o, const struct otlp_field *f);
	void (*msg_begin)(void *o, const struct otlp_field *f);
	void (*end)(void *o); /* of an element or a message */
	void (*id)(void *o, const struct otlp_field *f, const uint8_t *id, size_t n);
	void (*str)(void *o, const struct otlp_field *f, const char *s, bool plain);
	void (*num)(void *o, const struct otlp_field *f, uint64_t v);
	/* one KeyValue of the repeated field list (attributes: the most
	 * frequent message, written in one piece) */
	void (*attr)(void *o, const struct otlp_field *list, const struct otlp_attr *a);
};

static void walk_attrs(const struct otlp_writer *w, void *o, const struct otlp_field *list,
                       const struct otlp_attr *a, size_t n)
{
	w->list_begin(o, list);
	for (size_t i = 0; i < n; i++)
		w->attr(o, list, &a[i]);
	w->list_end(o);
}

static void walk_span(const struct otlp_writer *w, void *o, const struct trace_span *s)
{
	struct span_view v;
	span_view(s, &v);
	w->elem_begin(o, &F_SPANS);
	w->id(o, &F_TRACE_ID, s->trace_id, TRACE_ID_LEN);
	w->id(o, &F_SPAN_ID, s->span_id, TRACE_SPAN_ID_LEN);
	/* the encodings' only difference in order: JSON keeps the member order
	 * it always had, protobuf goes by field number */
	if (w->by_number && s->trace_state[0])
		w->str(o, &F_TRACE_STATE, s->trace_state, false);
	if (v.has_parent)
		w->id(o, &F_PARENT_SPAN_ID, s->parent_id, TRACE_SPAN_ID_LEN);
	if (!w->by_number) {
		if (s->trace_state[0])
			w->str(o, &F_TRACE_STATE, s->trace_state, false);
		w->num(o, &F_FLAGS, v.flags);
	}
	w->str(o, &F_NAME, v.name, false);
	w->num(o, &F_KIND, v.kind);
	w->num(o, &F_START, s->start_ns);
	w->num(o, &F_END, s->end_ns);
	walk_attrs(w, o, &F_SPAN_ATTRIBUTES, v.attrs, v.n);
	if (v.error) {
		w->msg_begin(o, &F_STATUS);
		w->num(o, &F_STATUS_CODE, 2); /* STATUS_CODE_ERROR */
		w->end(o);
	}
	if (w->by_number)
		w->num(o, &F_FLAGS, v.flags);
	w->end(o);
}

static void walk_request(const struct otlp_writer *w, void *o, const struct trace_export_conf *ec,
                         const struct trace_span *spans, size_t n)
{
	const struct otlp_attr res[] = {{.key = "service.name", .str = ec->service_name},
	                                {.key = "service.version", .str = PACKAGE_VERSION}};
	w->list_begin(o, &F_RESOURCE_SPANS);
	w->elem_begin(o, &F_RESOURCE_SPANS);
	w->msg_begin(o, &F_RESOURCE);
	walk_attrs(w, o, &F_RES_ATTRIBUTES, res, 2);
	w->end(o);
	w->list_begin(o, &F_SCOPE_SPANS);
	w->elem_begin(o, &F_SCOPE_SPANS);
	w->msg_begin(o, &F_SCOPE);
	w->str(o, &F_SCOPE_NAME, "sluice", true);
	w->str(o, &F_SCOPE_VERSION, PACKAGE_VERSION, true);
	w->end(o);
	w->list_begin(o, &F_SPANS);
	for (size_t i = 0; i < n; i++)
		walk_span(w, o, &spans[i]);
	w->list_end(o);
	w->end(o);
	w->list_end(o);
	w->end(o);
	w->list_end(o);
}

/* ---- the JSON writer ---- */

#define JSON_MAX_DEPTH 16

struct json_out {
	struct tbuf b;
	unsigned depth;
	bool later[JSON_MAX_DEPTH]; /* a member or element was written at this depth: the next needs a comma */
};

static void jw_sep(struct json_out *j)
{
	if (j->later[j->depth])
		tb_put1(&j->b, ',');
	j->later[j->depth] = true;
}

static void jw_key(struct json_out *j, const struct otlp_field *f)
{
	size_t first = !j->later[j->depth]; /* no comma before the first member */
	j->later[j->depth] = true;
	tb_put(&j->b, f->json + first, f->json_len - first);
}

static void jw_open(struct json_out *j, char c)
{
	tb_put1(&j->b, c);
	if (j->depth + 1 < JSON_MAX_DEPTH) {
		j->later[++j->depth] = false;
	} else {
		j->b.oom = true; /* deeper than OTLP goes: a bug, reported as a failure */
		j->later[j->depth] = false;
	}
}

static void jw_close(struct json_out *j, char c)
{
	tb_put1(&j->b, c);
	if (j->depth > 0 && !j->b.oom)
		j->depth--;
}

static void jw_list_begin(void *o, const struct otlp_field *f)
{
	jw_key(o, f);
	jw_open(o, '[');
}

static void jw_list_end(void *o)
{
	jw_close(o, ']');
}

static void jw_elem_begin(void *o, const struct otlp_field *f)
{
	(void)f;
	jw_sep(o);
	jw_open(o, '{');
}

static void jw_msg_begin(void *o, const struct otlp_field *f)
{
	jw_key(o, f);
	jw_open(o, '{');
}

static void jw_end(void *o)
{
	jw_close(o, '}');
}

static void jw_id(void *o, const struct otlp_field *f, const uint8_t *id, size_t n)
{
	struct json_out *j = o;
	jw_key(j, f);
	tb_hex(&j->b, id, n);
}

static void jw_str(void *o, const struct otlp_field *f, const char *s, bool plain)
{
	struct json_out *j = o;
	jw_key(j, f);
	if (!plain) {
		tb_json(&j->b, s);
		return;
	}
	size_t n = strlen(s);
	if (!tb_room(&j->b, n + 2))
		return;
	char *w = j->b.p + j->b.len;
	w[0] = '"';
	memcpy(w + 1, s, n);
	w[n + 1] = '"';
	j->b.len += n + 2;
}

/* 64-bit integers are strings in OTLP JSON (the protobuf JSON mapping) */
static void jw_num(void *o, const struct otlp_field *f, uint64_t v)
{
	struct json_out *j = o;
	jw_key(j, f);
	tb_u64(&j->b, v, f->type == OT_FIXED64 || f->type == OT_INT64);
}

/* {"key":"K","value":{"stringValue":"V"}} or {..."intValue":"N"}}: keys are
 * the code's own ASCII */
static void jw_attr(void *o, const struct otlp_field *list, const struct otlp_attr *a)
{
	(void)list;
	struct json_out *j = o;
	jw_sep(j);
	size_t n = strlen(a->key);
	if (!tb_room(&j->b, n + 40))
		return;
	char *w = j->b.p + j->b.len;
	memcpy(w, "{\"key\":\"", 8);
	memcpy(w + 8, a->key, n);
	w += 8 + n;
	if (a->str) {
		memcpy(w, "\",\"value\":{\"stringValue\":", 25);
		j->b.len = (size_t)(w + 25 - j->b.p);
		tb_json(&j->b, a->str);
	} else {
		memcpy(w, "\",\"value\":{\"intValue\":", 22);
		j->b.len = (size_t)(w + 22 - j->b.p);
		tb_u64(&j->b, a->num, true);
	}
	tb_put(&j->b, "}}", 2);
}

static const struct otlp_writer json_writer = {
    .by_number = false,
    .list_begin = jw_list_begin,
    .list_end = jw_list_end,
    .elem_begin = jw_elem_begin,
    .msg_begin = jw_msg_begin,
    .end = jw_end,
    .id = jw_id,
    .str = jw_str,
    .num = jw_num,
    .attr = jw_attr,
};

char *trace_otlp_json(const struct trace_export_conf *ec, const struct trace_span *spans, size_t n, size_t *len)
{
	struct json_out j = {0};
	jw_open(&j, '{');
	walk_request(&json_writer, &j, ec, spans, n);
	jw_close(&j, '}');
	if (!j.b.oom && tb_room(&j.b, 0))
		j.b.p[j.b.len] = '\0';
	if (j.b.oom) {
		free(j.b.p);
		return NULL;
	}
	*len = j.b.len;
	return j.b.p;
}

/* ---- the protobuf writer (pb_write.h) ---- */

static void pw_none(void *o)
{
	(void)o;
}

static void pw_list_begin(void *o, const struct otlp_field *f)
{
	(void)o;
	(void)f;
}

static void pw_begin(void *o, const struct otlp_field *f)
{
	pb_begin(o, f->pb);
}

static void pw_end(void *o)
{
	pb_end(o);
}

static void pw_id(void *o, const struct otlp_field *f, const uint8_t *id, size_t n)
{
	pb_bytes(o, f->pb, id, n);
}

static void pw_str(void *o, const struct otlp_field *f, const char *s, bool plain)
{
	char clean[CLEAN_CAP];
	pb_string(o, f->pb, plain ? s : utf8_clean(s, clean, sizeof clean));
}

static void pw_num(void *o, const struct otlp_field *f, uint64_t v)
{
	if (f->type == OT_FIXED64)
		pb_fixed64(o, f->pb, v);
	else if (f->type == OT_FIXED32)
		pb_fixed32(o, f->pb, (uint32_t)v);
	else
		pb_varint(o, f->pb, v);
}

static void pw_attr(void *o, const struct otlp_field *list, const struct otlp_attr *a)
{
	pb_begin(o, list->pb);
	pb_string(o, F_KV_KEY.pb, a->key);
	pb_begin(o, F_KV_VALUE.pb);
	if (a->str)
		pw_str(o, &F_ANY_STRING, a->str, false);
	else
		pb_varint(o, F_ANY_INT.pb, a->num);
	pb_end(o);
	pb_end(o);
}

static const struct otlp_writer pb_writer = {
    .by_number = true,
    .list_begin = pw_list_begin,
    .list_end = pw_none,
    .elem_begin = pw_begin,
    .msg_begin = pw_begin,
    .end = pw_end,
    .id = pw_id,
    .str = pw_str,
    .num = pw_num,
    .attr = pw_attr,
};

uint8_t *trace_otlp_protobuf(const struct trace_export_conf *ec, const struct trace_span *spans, size_t n,
                             size_t *len)
{
	struct pb_buf b;
	pb_init(&b);
	walk_request(&pb_writer, &b, ec, spans, n);
	return pb_take(&b, len);
}

/* ---- the collector's answer: a partial success ---- */

/* A JSON scanner just big enough to find two fields in an
 * ExportTraceServiceResponse: every value is walked (nesting bounded),
 * only the two asked for are read. */
struct jscan {
	const char *p, *end;
};

static void js_ws(struct jscan *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool js_lit(struct jscan *j, char c)
{
	js_ws(j);
	if (j->p < j->end && *j->p == c) {
		j->p++;
		return true;
	}
	return false;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	o[0] = (char)(0xe0 | cp >> 12);
	o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[2] = (char)(0x80 | (cp & 0x3f));
	return 3;
}

/* A string at j->p, unescaped into out (cap bytes, NUL-terminated, cut to
 * fit; a \u escape outside the BMP's plain range becomes U+FFFD), or only
 * walked over when out is NULL. */
static bool js_string(struct jscan *j, char *out, size_t cap)
{
	static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
	size_t o = 0;
	if (!js_lit(j, '"'))
		return false;
	/* OUT is a whole string on every return: a bad escape halfway left the
	 * bytes before it over an earlier value with no NUL (fuzz_otlp_answer) */
	if (out && cap)
		out[0] = '\0';
	while (j->p < j->end && *j->p != '"') {
		char tmp[4];
		size_t n = 1;
		tmp[0] = *j->p++;
		if (tmp[0] == '\\') {
			if (j->p >= j->end)
				return false;
			const char *e = strchr(esc_in, *j->p);
			if (*j->p == 'u') {
				unsigned cp = 0;
				if (j->end - j->p < 5)
					return false;
				for (int i = 1; i <= 4; i++) {
					char h = j->p[i];
					unsigned d = h >= '0' && h <= '9' ? (unsigned)(h - '0') : h >= 'a' && h <= 'f' ? (unsigned)(h - 'a' + 10)
					           : h >= 'A' && h <= 'F' ? (unsigned)(h - 'A' + 10) : 16;
					if (d == 16)
						return false;
					cp = cp << 4 | d;
				}
				j->p += 5;
				n = put_utf8(tmp, cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp);
			} else if (e && *e) {
				tmp[0] = esc_out[e - esc_in];
				j->p++;
			} else {
				return false;
			}
		}
		if (out && o + n < cap) {
			memcpy(out + o, tmp, n);
			o += n;
			out[o] = '\0';
		}
	}
	if (out && cap)
		out[o < cap ? o : cap - 1] = '\0';
	return js_lit(j, '"');
}

static bool js_skip(struct jscan *j, int depth);

/* The members of an object at j->p: on each key, member(key, j, ctx) reads
 * or skips its value. */
static bool js_object(struct jscan *j, int depth, bool (*member)(const char *key, struct jscan *j, int depth, void *ctx),
                      void *ctx)
{
	if (depth > 32 || !js_lit(j, '{'))
		return false;
	if (js_lit(j, '}'))
		return true;
	do {
		char key[32];
		if (!js_string(j, key, sizeof key) || !js_lit(j, ':') || !member(key, j, depth + 1, ctx))
			return false;
	} while (js_lit(j, ','));
	return js_lit(j, '}');
}

static bool js_skip_member(const char *key, struct jscan *j, int depth, void *ctx)
{
	(void)key;
	(void)ctx;
	return js_skip(j, depth);
}

static bool js_skip(struct jscan *j, int depth)
{
	js_ws(j);
	if (j->p >= j->end || depth > 32)
		return false;
	if (*j->p == '"')
		return js_string(j, NULL, 0);
	if (*j->p == '{')
		return js_object(j, depth, js_skip_member, NULL);
	if (*j->p == '[') {
		j->p++;
		if (js_lit(j, ']'))
			return true;
		do {
			if (!js_skip(j, depth + 1))
				return false;
		} while (js_lit(j, ','));
		return js_lit(j, ']');
	}
	const char *start = j->p; /* a number, true, false, null */
	while (j->p < j->end && *j->p && strchr("0123456789+-.eEtruefalsn", *j->p))
		j->p++;
	return j->p > start;
}

struct partial {
	uint64_t rejected;
	char *msg;
	size_t msg_cap;
};

/* an int64 as the JSON mapping writes it (a string) or as a number; a
 * negative or fractional count is none */
static bool js_count(struct jscan *j, uint64_t *v)
{
	js_ws(j);
	bool quoted = j->p < j->end && *j->p == '"';
	const char *start = j->p + quoted;
	struct jscan k = *j;
	if (!(quoted ? js_string(&k, NULL, 0) : js_skip(&k, 0)))
		return false;
	uint64_t n = 0;
	const char *q = start;
	for (; q < k.end && *q >= '0' && *q <= '9'; q++)
		n = n > (UINT64_MAX - 9) / 10 ? UINT64_MAX : n * 10 + (uint64_t)(*q - '0');
	*v = q > start && q == k.p - quoted ? n : 0;
	*j = k;
	return true;
}

static bool js_partial_member(const char *key, struct jscan *j, int depth, void *ctx)
{
	struct partial *ps = ctx;
	if (strcmp(key, "rejectedSpans") == 0 || strcmp(key, "rejected_spans") == 0)
		return js_count(j, &ps->rejected);
	if (strcmp(key, "errorMessage") == 0 || strcmp(key, "error_message") == 0) {
		js_ws(j);
		return j->p < j->end && *j->p == '"' ? js_string(j, ps->msg, ps->msg_cap) : js_skip(j, depth);
	}
	return js_skip(j, depth);
}

static bool js_response_member(const char *key, struct jscan *j, int depth, void *ctx)
{
	if (strcmp(key, "partialSuccess") == 0 || strcmp(key, "partial_success") == 0) {
		js_ws(j);
		return j->p < j->end && *j->p == '{' ? js_object(j, depth, js_partial_member, ctx) : js_skip(j, depth);
	}
	return js_skip(j, depth);
}

/* One field of a protobuf message at *p: its number, wire type, and a
 * varint's value or a length-delimited field's bytes. */
static bool pb_field(const uint8_t **p, const uint8_t *end, uint32_t *field, unsigned *wt, uint64_t *v,
                     const uint8_t **data)
{
	uint64_t tag = 0;
	for (int shift = 0;; shift += 7) {
		if (*p >= end || shift > 63)
			return false;
		uint8_t c = *(*p)++;
		tag |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			break;
	}
	*field = (uint32_t)(tag >> 3);
	*wt = (unsigned)(tag & 7);
	*v = 0;
	if (*wt == 0 || *wt == 2) {
		for (int shift = 0;; shift += 7) {
			if (*p >= end || shift > 63)
				return false;
			uint8_t c = *(*p)++;
			*v |= (uint64_t)(c & 0x7f) << shift;
			if (!(c & 0x80))
				break;
		}
		if (*wt == 0)
			return true;
		if (*v > (uint64_t)(end - *p))
			return false;
		*data = *p;
		*p += *v;
		return true;
	}
	size_t n = *wt == 1 ? 8 : *wt == 5 ? 4 : 0;
	if (!n || (size_t)(end - *p) < n)
		return false;
	*p += n;
	return true;
}

enum { PB_RESP_PARTIAL = 1, PB_PARTIAL_REJECTED = 1, PB_PARTIAL_MESSAGE = 2 };

static void pb_partial(const uint8_t *p, const uint8_t *end, struct partial *ps)
{
	uint32_t f;
	unsigned wt;
	uint64_t v;
	const uint8_t *d = NULL;
	while (p < end && pb_field(&p, end, &f, &wt, &v, &d)) {
		if (f == PB_PARTIAL_REJECTED && wt == 0)
			ps->rejected = (int64_t)v > 0 ? v : 0;
		else if (f == PB_PARTIAL_MESSAGE && wt == 2 && ps->msg_cap) {
			size_t n = v < ps->msg_cap - 1 ? (size_t)v : ps->msg_cap - 1;
			memcpy(ps->msg, d, n);
			ps->msg[n] = '\0';
		}
	}
}

uint64_t trace_otlp_rejected(enum conf_tracing_protocol protocol, const char *content_type, const char *body,
                             size_t len, char *msg, size_t msg_cap)
{
	struct partial ps = {.msg = msg, .msg_cap = msg_cap};
	if (msg_cap)
		msg[0] = '\0';
	bool pb = strcmp(content_type, "application/x-protobuf") == 0 ||
	          (strcmp(content_type, "application/json") != 0 && protocol == CONF_TRACING_HTTP_PROTOBUF);
	if (pb) {
		const uint8_t *p = (const uint8_t *)body, *end = p + len;
		uint32_t f;
		unsigned wt;
		uint64_t v;
		const uint8_t *d = NULL;
		while (p < end && pb_field(&p, end, &f, &wt, &v, &d))
			if (f == PB_RESP_PARTIAL && wt == 2)
				pb_partial(d, d + v, &ps);
	} else {
		struct jscan j = {body, body + len};
		struct partial tmp = ps;
		/* a body that is not the JSON it should be tells nothing */
		if (!js_object(&j, 0, js_response_member, &tmp)) {
			tmp.rejected = 0;
			if (msg_cap)
				msg[0] = '\0';
		}
		ps.rejected = tmp.rejected;
	}
	return ps.rejected;
}

/* ---- the collector's refusal: a google.rpc.Status ---- */

struct status {
	char raw[1024]; /* the JSON message unescaped, cut to fit */
	bool found;
};

static bool js_status_member(const char *key, struct jscan *j, int depth, void *ctx)
{
	struct status *st = ctx;
	js_ws(j);
	if (strcmp(key, "message") == 0 && j->p < j->end && *j->p == '"') {
		if (!js_string(j, st->raw, sizeof st->raw))
			return false;
		st->found = true;
		return true;
	}
	return js_skip(j, depth);
}

enum { PB_STATUS_MESSAGE = 2 };

/* The first line of a body that is text (or is taken as text), leading
 * blank space skipped, trailing blank space dropped. */
static size_t first_line(const char *body, size_t len, char *msg, size_t msg_cap)
{
	size_t i = 0;
	while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
		i++;
	size_t e = i;
	while (e < len && e - i < msg_cap - 1 && body[e] != '\r' && body[e] != '\n')
		e++;
	while (e > i && (body[e - 1] == ' ' || body[e - 1] == '\t'))
		e--;
	return utf8_copy(body + i, e - i, msg, msg_cap);
}

size_t trace_otlp_status_message(const char *content_type, const char *body, size_t len, char *msg, size_t msg_cap)
{
	if (!msg_cap)
		return 0;
	msg[0] = '\0';
	if (strcmp(content_type, "application/x-protobuf") == 0) {
		const uint8_t *p = (const uint8_t *)body, *end = p + len, *d = NULL;
		const uint8_t *m = NULL;
		size_t mlen = 0;
		uint32_t f;
		unsigned wt;
		uint64_t v;
		/* fields up to the first that does not parse; the last message wins, as protobuf merges */
		while (p < end && pb_field(&p, end, &f, &wt, &v, &d))
			if (f == PB_STATUS_MESSAGE && wt == 2) {
				m = d;
				mlen = (size_t)v;
			}
		return m ? utf8_copy((const char *)m, mlen, msg, msg_cap) : 0;
	}
	if (strcmp(content_type, "application/json") == 0) {
		/* a message read whole counts even when what follows is cut (the body is kept bounded) */
		struct status st = {.found = false};
		struct jscan j = {body, body + len};
		(void)js_object(&j, 0, js_status_member, &st);
		if (st.found && st.raw[0])
			return utf8_copy(st.raw, strlen(st.raw), msg, msg_cap);
	}
	return first_line(body, len, msg, msg_cap);
}

const char *trace_otlp_content_type(enum conf_tracing_protocol protocol)
{
	return protocol == CONF_TRACING_HTTP_PROTOBUF ? "application/x-protobuf" : "application/json";
}
