/* client.h - a client's HTTP/1.x connection and the requests on it: read and
 * parse each head, run the route and access phases, answer directly or hand
 * the request to the proxy (proxy.h), then log it and go on with the next
 * (keep-alive, pipelining) or close.
 *
 * A struct client_conn and its bufferevent belong to one worker. Requests on
 * a connection are handled one at a time, in order; bytes of a pipelined next
 * request wait in the input buffer (bounded by a read high-water mark) until
 * the current response is complete.
 *
 * An HTTP/2 stream is a client_conn too, without a bufferevent: h2.c fills the
 * request head (struct h1_request) from the HEADERS it decoded, writes the
 * request body into `in` (chunked framing when it has no length) and takes
 * the response body from `out`; the response head and the end of the
 * exchange go to h2.c (h2.h) instead of being written as HTTP/1.1. Such a
 * conn serves one request, is not in the worker's connection list, and is
 * freed by h2.c (client_stream_close) once h2_stream_finished() told it the
 * pipeline is done. */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "h1.h"
#include "io.h"
#include "module.h"
#include "proxy.h"
#include "request.h"

struct worker;
struct h2_stream;

enum client_state {
	CLIENT_WAIT_HEAD,  /* idle keep-alive or a head partly received */
	CLIENT_ACCESS,     /* running the access phase (maybe suspended in a module) */
	CLIENT_PROXY,      /* the proxy owns the exchange */
	CLIENT_CLOSING,    /* flushing the last bytes before close */
};

/* One request in flight; recycled through the worker's free list. */
struct client_req {
	struct request req;
	struct client_conn *conn;
	struct client_req *next_free;
	const char *head_copy;
	size_t head_len;
	bool head_is_head_method;
	bool expect_continue_pending;
	/* request body as it arrives from the client */
	enum h1_body body;
	uint64_t body_remaining; /* H1_BODY_LENGTH */
	struct h1_chunked body_chunk;
	bool body_in_trailers;
	bool body_done;
	/* access phase */
	size_t access_next;
	bool suspended;
	bool response_started; /* a status line went to the client */
	/* the large parts last: a recycled request clears only what is above them */
	struct proxy_txn txn;
	struct h1_request h1; /* filled by the parser; pointers rebased into req.arena */
};

/* Who is at the other end of a connection, and how it arrived. */
struct client_origin {
	const char *scheme;   /* "http" or "https" (static string) */
	const char *protocol; /* NULL: from the request line; "HTTP/2.0" for the streams of an h2 session */
	char ip[64];
	uint16_t port;
	bool plain_socket; /* bev is a plain socket bufferevent: responses may be written directly (io.h) */
};

struct client_conn {
	struct worker *w;
	struct client_origin origin;
	struct io_flusher flusher; /* direct writes (plain sockets only; ev == NULL otherwise) */
	struct bufferevent *bev;   /* NULL for an HTTP/2 stream */
	struct evbuffer *in, *out; /* request bytes in, response bytes out: bev's buffers, or the stream's */
	struct h2_stream *stream;  /* an HTTP/2 stream (h2.c owns in, out and this conn) */
	struct bufferevent *transport; /* the socket or TLS bufferevent (an HTTP/2 stream: its session's) */
	struct event *timer; /* header, keep-alive and access-suspension deadlines */
	struct client_conn *prev, *next;
	size_t listener;
	enum client_state state;
	struct client_req *cr;
	bool keep_alive;   /* after the current response */
	bool head_timer_armed; /* the header timeout runs from a head's first byte */
	bool in_input_loop;    /* client_handle_input is on the stack */
	bool linger;           /* CLOSING: the client may still be sending, so half-close and linger */
	bool lingering;        /* half-closed, reading and dropping until EOF or timeout */
	bool body_timer_on;    /* the bufferevent read timeout (client_body_timeout) is set */
	bool close_now;        /* CLOSING without flush: the timer frees the connection */
	uint64_t deadline_us;  /* monotonic; 0: none (header, keep-alive, suspension, linger) */
	uint64_t timer_at_us;  /* when the pending libevent timer fires; 0: not pending */
	unsigned requests; /* served on this connection */
};

/* Accept a new plaintext connection on worker w (fd accepted non-blocking by the worker's evconnlistener). */
void client_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa, int salen);
/* Serve HTTP/1.x on bev: a socket, a TLS bufferevent after its handshake, or
 * one end of an internal pair (an HTTP/2 stream). Takes ownership of bev
 * (freed on error too). Returns the connection, or NULL. */
struct client_conn *client_accept_bev(struct worker *w, size_t listener, struct bufferevent *bev,
                                      const struct client_origin *o);
void client_origin_from_sockaddr(struct client_origin *o, const struct sockaddr *sa);

/* HTTP/2 streams (h2.c). A request object whose arena and h1 head h2.c fills
 * while the HEADERS arrive; given back with client_stream_discard_req() if the
 * stream ends before client_stream_begin(). */
struct client_req *client_stream_req(struct worker *w);
void client_stream_discard_req(struct worker *w, struct client_req *cr);
/* A conn for stream st: in/out stay h2.c's. NULL when out of memory. */
struct client_conn *client_stream_new(struct worker *w, size_t listener, const struct client_origin *o,
                                      struct bufferevent *transport, struct h2_stream *st, struct evbuffer *in,
                                      struct evbuffer *out);
/* Runs cr (its head filled) through the pipeline; early_status (431, 400...)
 * answers it at once instead. May call h2_stream_finished() before returning. */
void client_stream_begin(struct client_conn *cc, struct client_req *cr, int early_status);
/* More request body bytes (or its end) are in cc->in. */
void client_stream_body(struct client_conn *cc);
/* The stream's response buffer drained: the proxy may read the upstream again. */
void client_stream_drained(struct client_conn *cc);
/* Frees cc; a request still in progress is aborted and logged with reason
 * (client_reset: the client reset the stream or the connection ended). */
void client_stream_close(struct client_conn *cc, enum reason reason);

/* Close every idle keep-alive connection (shutdown) and make busy ones close after their response. */
void client_drain_all(struct worker *w);
/* Free every connection immediately (drain time over). */
void client_close_all(struct worker *w);
/* Release the worker's recycled request objects. */
void client_free_reqs(struct worker *w);

/* For the proxy: */
/* Send a locally generated response for cr (error or direct); body may be NULL. */
void client_respond(struct client_req *cr, int status, enum reason reason, const char *content_type, const char *body,
                    size_t body_len, const char *extra_headers);
/* Every module's response header lines (respond phase) after extra (may be
 * NULL), as one "name: value\r\n"... string (in cr's arena, or static); NULL if none. */
const char *client_module_lines(struct client_req *cr, const char *extra);
/* Append every module's response header lines (respond phase) to out. */
void client_add_module_headers(struct client_req *cr, struct evbuffer *out);
/* The same with a short text/plain body naming the status. */
void client_respond_error(struct client_req *cr, int status, enum reason reason, const char *extra_headers);
/* The response to cr is fully in the client output: log it and go on. */
void client_finish_request(struct client_req *cr);
/* Abort the connection (response cut short); logs cr with reason. */
void client_abort(struct client_req *cr, enum reason reason);
/* Arm (reading_body) or clear the client body read timeout; the send timeout stays. */
void client_body_timer(struct client_conn *cc, bool reading_body);
/* Pause/resume reading from the client (request-body back-pressure). */
void client_pause_reading(struct client_conn *cc, bool paused);

#endif
