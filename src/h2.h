/* h2.h - HTTP/2 to clients (nghttp2), over TLS (ALPN "h2") or in plaintext
 * with prior knowledge (h2c).
 *
 * Each stream is served by the same route / access / proxy / log pipeline as
 * an HTTP/1 request, without an HTTP/1.1 detour: the decoded HEADERS fill the
 * request head the pipeline reads (client_stream_*, client.h), request DATA
 * goes into the stream's input buffer, and the pipeline hands back the
 * response head (h2_stream_respond), the body through the stream's output
 * buffer, trailers and the end (h2_stream_finished). Flow control is tied to
 * those buffers: request DATA is acknowledged (WINDOW_UPDATE) only as the
 * pipeline takes it, and the proxy stops reading its upstream while a
 * stream's output holds PROXY_HIGH_WATER bytes the client has not taken, so
 * neither a slow upstream nor a slow client grows memory. The pipeline's
 * calls never run nghttp2: they set flags and schedule the session's flush.
 *
 * A session and its streams belong to one worker. A session counts as one
 * connection of the worker; its streams (at most max_concurrent_streams) do not. Floods (rapid reset, CONTINUATION,
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

/* For the pipeline (client.c, proxy.c), on a stream it was given: */
struct h2_stream;
struct http_header;
/* Submit the response head: status, fields (any case: lower-cased on the way),
 * then "name: value\r\n" lines (module headers; may be NULL); body: DATA
 * follows from the stream's output buffer. Returns the head's size as
 * HTTP/1.1 would count it (for the access log), or -1 (nothing sent). */
long h2_stream_respond(struct h2_stream *st, int status, const struct http_header *fields, size_t n_fields,
                      const char *lines, bool body);
/* A response trailer line "name: value" (no line end), sent after the body. */
void h2_stream_trailer(struct h2_stream *st, const char *line, size_t len);
/* The pipeline is done: complete (the whole body is in the output buffer:
 * END_STREAM once it is sent) or not (RST_STREAM). The stream frees the
 * pipeline's conn (client_stream_close) when it closes. */
void h2_stream_finished(struct h2_stream *st, bool complete);

#endif
