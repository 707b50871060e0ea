/* client.h - a client's HTTP/1.x connection: accept, read and parse each
 * head, hand it to the pipeline (pipeline.h) as an exchange, implement the
 * exchange's operations for it (the response head and body as HTTP/1.1
 * bytes, the request body decoded from its framing), then go on with the
 * next request (keep-alive, pipelining) or close (with a linger when the
 * client may still be sending).
 *
 * A struct client_conn and its transport belong to one worker. Requests on
 * a connection are handled one at a time, in order; bytes of a pipelined next
 * request wait in the input buffer (bounded by a read high-water mark) until
 * the current response is complete. A connection waiting for its next
 * request on a plain listener holds no buffer and no timer event: its
 * deadline is on one of the worker's deadline queues (conn_timer.h). */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "h1.h"
#include "conn_timer.h"
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
	/* The transport: a bufferevent (TLS, or a socket another layer handed
	 * over), or, for a connection accepted on a plain listener (bev NULL), the
	 * socket itself (conn_sock.h): fd, a persistent read event, a write event
	 * made when the socket first fills, and buffers held only while they
	 * hold bytes. */
	struct bufferevent *bev;
	struct evbuffer *in, *out; /* bev's buffers; own socket: taken while not empty (else NULL) */
	struct event *ev;          /* own socket: EV_READ | EV_PERSIST, added while `reading` */
	struct event *wev;         /* own socket: EV_WRITE with the send timeout, added while `write_blocked` */
	int fd;                    /* own socket, -1 otherwise */
	struct io_flusher flusher; /* direct writes (own or plain sockets; not installed on TLS) */
	struct conn_timer timer;   /* header, keep-alive, body (own socket), linger deadlines */
	struct client_conn *prev, *next;
	size_t listener; /* the process's number for it (conf.h id) */
	enum client_state state;
	struct exchange *ex; /* the request in the pipeline (CLIENT_BUSY) */
	bool keep_alive;   /* after the current response */
	bool head_timer_armed; /* the header timeout runs from a head's first byte */
	bool in_input_loop;    /* client_handle_input is on the stack */
	bool linger;           /* CLOSING: the client may still be sending, so half-close and linger */
	bool lingering;        /* half-closed, reading and dropping until EOF or timeout */
	bool body_timer_on;    /* the request body's read timeout (client_body_timeout) runs */
	bool close_now;        /* CLOSING without flush: the timer frees the connection */
	bool read_high_on;     /* bev: the input's read high-water mark is installed (client_bound_input) */
	bool drain;            /* its listener is gone: the next answer says connection: close */
	bool reading;          /* own socket: ev is added */
	bool read_paused;      /* own socket: the exchange paused its body */
	bool read_full;        /* own socket: the input holds its bound; reading waits until it drains */
	bool write_blocked;    /* own socket: the socket is full, wev is added */
	/* the current exchange, as HTTP/1 frames it */
	bool http10;           /* the request was HTTP/1.0 */
	bool chunked_out;      /* the response body is chunked */
	bool trailers_out;     /* the last chunk and trailers are written */
	bool head_held;        /* a response head waits for its body's first bytes (client_hold_head) */
	uint64_t discard;  /* bytes of the previous request's body still to drop before the next head */
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
/* The worker's client-side state (deadline queues, buffer pool), after
 * every connection was freed (client_close_all). */
void client_worker_free(struct worker *w);

#endif
