/* h2.h - HTTP/2 to clients (nghttp2), over TLS (ALPN "h2") or in plaintext
 * with prior knowledge (h2c).
 *
 * Each stream becomes an HTTP/1.1 exchange over an internal bufferevent pair:
 * h2.c writes a validated HTTP/1.1 request head and the body into one end,
 * the other end is served by client_accept_bev() like any connection (same
 * route / access / proxy / log pipeline), and the HTTP/1.1 response coming
 * back is parsed (h1.h) into HEADERS, DATA and trailers. Flow control is tied
 * to the pair: request DATA is acknowledged (WINDOW_UPDATE) only as the pair
 * drains, and response DATA is pulled only while the transport's output is
 * small, so neither a slow upstream nor a slow client grows memory.
 *
 * A session and its streams belong to one worker. A session counts as one
 * connection of the worker (each stream's internal connection counts too,
 * bounded by max_concurrent_streams). Floods (rapid reset, CONTINUATION,
 * SETTINGS, PING, empty frames, oversized header blocks, glitches) are
 * counted in our own callbacks, not left to the nghttp2 release, and end the
 * session with GOAWAY and a reason counted per worker. */
#ifndef SLUICE_H2_H
#define SLUICE_H2_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>

struct worker;
struct client_origin;
struct h2_worker;

/* Serve HTTP/2 on bev (the client preface may already wait in its input).
 * Takes ownership of bev (freed on error too). */
void h2_session_start(struct worker *w, size_t listener, struct bufferevent *bev, const struct client_origin *o);

/* Graceful shutdown: GOAWAY to every session; each closes once its open
 * streams are done (or when the worker's drain time is over). */
void h2_drain_all(struct worker *w);
/* Free every session now. */
void h2_close_all(struct worker *w);
/* Logs the counts of sessions closed by a defence, frees the per-worker state. */
void h2_worker_free(struct worker *w);

/* The transport (socket or TLS) bufferevent of the session that owns the
 * stream end paired with bev, or NULL if bev is not an HTTP/2 stream. */
struct bufferevent *h2_stream_transport(struct bufferevent *bev);

#endif
