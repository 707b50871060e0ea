/* h2.h - HTTP/2 to clients (nghttp2), over TLS (ALPN "h2") or in plaintext
 * with prior knowledge (h2c).
 *
 * Each stream is an exchange (exchange.h) that the pipeline (pipeline.h)
 * drives like any other: the decoded HEADERS become the request's fields,
 * request DATA is its body as it came (no re-framing), and the stream
 * implements the exchange's ops (the response head as HEADERS from fields,
 * the body through the stream's output buffer as DATA, trailers, END_STREAM
 * or RST_STREAM). Flow control is tied to those buffers: request DATA is
 * acknowledged (WINDOW_UPDATE) only as the pipeline takes it, and the proxy
 * stops reading its upstream while a stream's output holds PROXY_HIGH_WATER
 * bytes the client has not taken, so neither a slow upstream nor a slow
 * client grows memory. The ops never run nghttp2: they set flags and
 * schedule the session's flush.
 *
 * A session and its streams belong to one worker. A session counts as one
 * connection of the worker; its streams (at most max_concurrent_streams) do not. Floods (rapid reset, CONTINUATION,
 * SETTINGS, PING, empty frames, oversized header blocks, glitches) are
 * counted in our own callbacks, not left to the nghttp2 release, and end the
 * session with GOAWAY and a reason counted per worker. Streams over
 * max_concurrent_streams, or that would be one more still uploading a request
 * body than max_uploading_streams, are refused (REFUSED_STREAM), never the
 * connection; a HEADERS frame opening a stream with a non-increasing id ends
 * it (PROTOCOL_ERROR). */
#ifndef SLUICE_H2_H
#define SLUICE_H2_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>

struct worker;
struct snapshot;
struct client_origin;
struct h2_worker;

/* Serve HTTP/2 on bev (the client preface may already wait in its input),
 * accepted on the listener numbered `listener` (conf.h id) of snapshot snap
 * (the session takes a reference: its HTTP/2 settings and limits are
 * snap's). Takes ownership of bev (freed on error too). */
void h2_session_start(struct worker *w, struct snapshot *snap, size_t listener, struct bufferevent *bev,
                      const struct client_origin *o);

/* Graceful shutdown: every session is told to open no more streams (GOAWAY
 * in two steps: streams already on their way are still served); each
 * closes once its streams are done (or when the worker's drain time is over). */
void h2_drain_all(struct worker *w);
/* A binary upgrade (the worker's `handover`): sessions are not told to go
 * while they have streams (a client such as h2load counts a request it
 * could not send after a GOAWAY as failed, and does not reconnect); a
 * session idle for H2_HANDOVER_IDLE_MS closes (GOAWAY NO_ERROR) and the
 * worker drains the rest with h2_drain_all halfway through its drain time. */
void h2_handover(struct worker *w);
/* The same for the sessions of one listener (a reload removed it). */
void h2_drain_listener(struct worker *w, size_t listener);
/* Free every session now. */
void h2_close_all(struct worker *w);
/* Logs the counts of sessions closed by a defence, frees the per-worker state. */
void h2_worker_free(struct worker *w);

#endif
