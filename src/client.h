/* client.h - a client's HTTP/1.x connection: accept, read and parse each
 * head, hand it to the pipeline (pipeline.h) as an exchange, implement the
 * exchange's operations for it (the response head and body as HTTP/1.1
 * bytes, the request body decoded from its framing), then go on with the
 * next request (keep-alive, pipelining) or close (with a linger when the
 * client may still be sending).
 *
 * A struct client_conn and its bufferevent belong to one worker. Requests on
 * a connection are handled one at a time, in order; bytes of a pipelined next
 * request wait in the input buffer (bounded by a read high-water mark) until
 * the current response is complete. */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "h1.h"
#include "io.h"

struct worker;
struct exchange;

enum client_state {
	CLIENT_WAIT_HEAD, /* idle keep-alive or a head partly received */
	CLIENT_BUSY,      /* an exchange is in the pipeline */
	CLIENT_CLOSING,   /* flushing the last bytes before close */
};

/* Who is at the other end of a connection, and how it arrived. */
struct client_origin {
	const char *scheme;   /* "http" or "https" (static string) */
	char ip[64];
	uint16_t port;
	bool plain_socket; /* bev is a plain socket bufferevent: responses may be written directly (io.h) */
};

struct client_conn {
	struct worker *w;
	struct client_origin origin;
	struct io_flusher flusher; /* direct writes (plain sockets only; ev == NULL otherwise) */
	struct bufferevent *bev;
	struct evbuffer *in, *out; /* bev's buffers */
	struct event *timer; /* header, keep-alive and linger deadlines */
	struct client_conn *prev, *next;
	size_t listener; /* the process's number for it (conf.h id) */
	enum client_state state;
	struct exchange *ex; /* the request in the pipeline (CLIENT_BUSY) */
	bool keep_alive;   /* after the current response */
	bool head_timer_armed; /* the header timeout runs from a head's first byte */
	bool in_input_loop;    /* client_handle_input is on the stack */
	bool linger;           /* CLOSING: the client may still be sending, so half-close and linger */
	bool lingering;        /* half-closed, reading and dropping until EOF or timeout */
	bool body_timer_on;    /* the bufferevent read timeout (client_body_timeout) is set */
	bool close_now;        /* CLOSING without flush: the timer frees the connection */
	bool read_high_on;     /* the input's read high-water mark is installed (client_bound_input) */
	bool drain;            /* its listener is gone: the next answer says connection: close */
	/* the current exchange, as HTTP/1 frames it */
	bool http10;           /* the request was HTTP/1.0 */
	bool chunked_out;      /* the response body is chunked */
	bool trailers_out;     /* the last chunk and trailers are written */
	uint64_t deadline_us;  /* monotonic; 0: none (header, keep-alive, linger) */
	uint64_t timer_at_us;  /* when the pending libevent timer fires; 0: not pending */
	unsigned requests; /* served on this connection */
};

/* Accept a new plaintext connection on worker w (fd accepted non-blocking by the worker). */
void client_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa, int salen);
/* Serve HTTP/1.x on bev: a socket or a TLS bufferevent after its handshake.
 * Takes ownership of bev (freed on error too). Returns the connection, or NULL. */
struct client_conn *client_accept_bev(struct worker *w, size_t listener, struct bufferevent *bev,
                                      const struct client_origin *o);
void client_origin_from_sockaddr(struct client_origin *o, const struct sockaddr *sa);

/* Close every idle keep-alive connection (shutdown) and make busy ones close after their response. */
void client_drain_all(struct worker *w);
/* A reload removed the listener numbered listener: close its idle
 * keep-alive connections (close_idle: its address is no longer served;
 * else a client may be sending on them right now), and each other one
 * after the answer that says connection: close (one more request if an
 * answer already promised keep-alive). */
void client_drain_listener(struct worker *w, size_t listener, bool close_idle);
/* Free every connection immediately (drain time over). */
void client_close_all(struct worker *w);

#endif
