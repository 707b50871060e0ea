/* exchange.h - one request and its response, whatever protocol carries them:
 * the object the pipeline (pipeline.h) drives and the operations table that
 * each client protocol implements (HTTP/1.1: client.c; HTTP/2: h2.c).
 *
 * Ownership: the pipeline owns a struct exchange (a per-worker free list,
 * pipeline_exchange_new()); the protocol owns its side (`conn`: a client
 * connection, an HTTP/2 stream) and tells the pipeline what happens to it
 * (pipeline_start(), pipeline_on_body(), pipeline_on_drained(),
 * pipeline_cancel()). The pipeline answers only through the ops below, in
 * this order: send_head once, send_data any number of times, send_trailers
 * at most once, finish, then (after the log phase) release, after which the
 * exchange is the pipeline's again (recycled) and the protocol must forget it.
 *
 * Header fields are fields (fields.h) in the request's arena, on both sides:
 * the protocol decodes its wire format into req.headers, and encodes the
 * response fields the pipeline hands it; no protocol sees another's text.
 * The request body reaches the pipeline decoded (read_body): an HTTP/1
 * chunked body is unchunked by the HTTP/1 side, an HTTP/2 body is its DATA;
 * the proxy frames the upstream request itself. */
#ifndef SLUICE_EXCHANGE_H
#define SLUICE_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fields.h"
#include "h1.h"
#include "proxy_txn.h"
#include "request.h"

struct evbuffer;
struct event;
struct exchange;
struct tls_info;

/* What follows a head (or how long a request body is). */
enum ex_body {
	EX_BODY_NONE,   /* nothing */
	EX_BODY_LENGTH, /* a known length (for a response: its content-length is one of the fields) */
	EX_BODY_STREAM, /* until the end of the exchange (length unknown) */
};

struct ex_head {
	int status;
	const char *phrase; /* HTTP/1 reason phrase (phrase_len bytes); NULL: the standard one */
	size_t phrase_len;
	struct fields *fields; /* complete: standard and module fields are in */
	enum ex_body body;
};

/* How the pipeline ended an exchange (finish). */
enum ex_end {
	EX_END_COMPLETE, /* the whole response is queued */
	EX_END_ABORT,    /* cut short: the client must see it was (HTTP/1 close, HTTP/2 reset) */
};

struct ex_ops {
	/* The response head: returns the bytes it queued as HTTP/1.1 would count
	 * them (for the access log), or -1 when nothing could be sent. */
	long (*send_head)(struct exchange *ex, const struct ex_head *h);
	/* n bytes of body to the client, moved from src, or copied from bytes
	 * when src is NULL (framing added as the protocol needs). Returns the
	 * bytes queued, or -1. */
	long (*send_data)(struct exchange *ex, struct evbuffer *src, const char *bytes, size_t n);
	/* Response trailers, after the last data (dropped where the protocol
	 * cannot carry them). Returns the bytes queued, or -1. */
	long (*send_trailers)(struct exchange *ex, const struct fields *trailers);
	/* Response bytes queued that the client has not taken yet (the proxy
	 * stops reading its upstream above PROXY_HIGH_WATER and waits for
	 * pipeline_on_drained()). */
	size_t (*buffered)(const struct exchange *ex);
	/* The response is complete (queue its end: the last chunk, END_STREAM)
	 * or cut short (nothing more goes out). Returns the bytes queued, or -1.
	 * Called before the log phase. */
	long (*finish)(struct exchange *ex, enum ex_end how);
	/* After the log phase: the exchange is recycled (only conn is passed) and
	 * the protocol goes on (next request, close, reset, free the stream).
	 * body_unread: the request body was not read to its end. */
	void (*release)(void *conn, enum ex_end how, bool body_unread);

	/* The request was admitted and its body is wanted now (HTTP/1 answers
	 * Expect: 100-continue here); the body read timeout starts. */
	void (*start_body)(struct exchange *ex);
	/* Moves up to max bytes of decoded request body to dst; sets
	 * ex->body_done at its end (request trailers are then in ex->trailers).
	 * Returns the bytes moved, or -1 for a malformed body (*status, *reason
	 * say what the client gets). */
	ssize_t (*read_body)(struct exchange *ex, struct evbuffer *dst, size_t max, int *status, enum reason *reason);
	/* Stop (true) or resume taking request body from the client (back-pressure). */
	void (*pause_body)(struct exchange *ex, bool paused);

	/* TLS details of the client connection; false for plaintext. */
	bool (*tls_info)(const struct exchange *ex, struct tls_info *out);
};

struct phase_deny;

/* The pipeline's side of the exchange, registered by pipeline_begin(): how
 * the layers below it (the proxy phase, a module that suspended) report
 * back without calling up into the pipeline by name (pipeline.h says what
 * each does). */
struct ex_pipeline {
	bool (*send_head)(struct exchange *ex, int status, const char *phrase, size_t phrase_len,
	                  struct fields *fields, enum ex_body body);
	void (*respond_error)(struct exchange *ex, int status, enum reason reason, const struct fields *extra);
	void (*end)(struct exchange *ex);
	void (*abort)(struct exchange *ex, enum reason reason);
	void (*resume)(struct exchange *ex, int result, const struct phase_deny *deny);
};

enum ex_phase {
	EX_PHASE_ACCESS, /* route and access (maybe suspended in a module) */
	EX_PHASE_BODY,   /* reading the request body into body_buf before access (routes[N].request_buffering) */
	EX_PHASE_PROXY,  /* the proxy phase owns the exchange */
	EX_PHASE_DONE,   /* answered: the response is on its way */
};

struct exchange {
	struct request req; /* first: a module's struct request * is its exchange */
	const struct ex_ops *ops;
	const struct ex_pipeline *pipe;
	void *conn;                /* the protocol's side (the ops' ex->conn, release's argument) */
	struct exchange *next_free;
	struct event *suspend_timer; /* a module's suspension, then the request body's pace (pipeline.c);
	                              * created on first use, kept across recycling */
	/* routes[N].request_buffering: the request body's first bytes (up to the
	 * route's size), read before the access phase, decoded; modules may read
	 * them there. The proxy sends them before the rest. Created on first
	 * use, kept (empty) across recycling. */
	struct evbuffer *body_buf;

	/* the request body, as the protocol delivers it (decoded) */
	enum ex_body body;
	uint64_t body_length;   /* EX_BODY_LENGTH */
	bool body_done;         /* read to its end (or none) */
	bool body_started;      /* start_body was called */
	/* the body's pace (limits.client_body_min_rate, client_body_deadline), monotonic:
	 * when the body was wanted, and when the rate's measure began with req.bytes_in then */
	uint64_t body_start_us, rate_start_us, rate_base;
	bool head_method;       /* HEAD: responses carry no body */
	struct fields trailers; /* request trailers, once body_done */

	/* the pipeline */
	enum ex_phase phase;
	size_t access_next;    /* next module of the access phase */
	bool suspended;        /* in module access_next - 1 */
	bool response_started; /* a response head went to the protocol */

	/* the large parts last: a recycled exchange clears only what is above them */
	struct proxy_txn txn;
	/* HTTP/1 only (client.c), not cleared on recycling: the parser's output,
	 * which req.headers views, and the request body's framing as it is read
	 * (here rather than in the connection, which then holds nothing per
	 * request while it waits for the next one) */
	struct h1_request h1;
	enum h1_body h1_body;
	uint64_t h1_body_remaining; /* H1_BODY_LENGTH */
	struct h1_chunked h1_chunk;
};

/* The exchange of a module's request. */
static inline struct exchange *ex_of(struct request *r)
{
	return (struct exchange *)r;
}

#endif
