/* h2_scan.h - our own look at every frame header an HTTP/2 client sends,
 * before nghttp2 parses the frame, whatever nghttp2's version does.
 *
 * It counts the floods (rapid reset, CONTINUATION, SETTINGS, PING, empty
 * frames) per connection per second and says which limit a frame broke; it
 * keeps the client's second SETTINGS ACK from nghttp2 (the ACK of the frame
 * that announced max_concurrent_streams, h2.c says why); and it cuts a read
 * turn before the HEADERS frame that would be one more than
 * H2_STREAMS_PER_TURN. Pure state over bytes: no I/O, no clock of its own
 * (the caller passes the time), one per connection, one thread. */
#ifndef SLUICE_H2_SCAN_H
#define SLUICE_H2_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf_tls.h"
#include "counters.h"

/* Why a session ends: the counter registry's label set (counters.h). */
#define H2_CLOSE_LIST(X) CTR_H2_CLOSE_LIST(X)

enum h2_close {
#define H2_CLOSE_ENUM(sym, str) H2_CLOSE_##sym,
	H2_CLOSE_LIST(H2_CLOSE_ENUM)
#undef H2_CLOSE_ENUM
	H2_CLOSE__COUNT
};

/* HEADERS frames one read turn hands to nghttp2 at most. A client may send
 * hundreds of requests in one read (64 per connection from h2load -m 64,
 * more as refused streams free their slots at once); all of them answered
 * in one callback kept the worker from everything else for that long,
 * accepted streams' upstream answers included. Past this, the session stops
 * reading the socket, flushes what it has, and takes the next turn after
 * the event loop's next poll, as HAProxy and nginx bound the work of one
 * event. Four, not 32: with 50 connections of 64 streams each at twice the
 * rate limit, 32 a turn made loop iterations of 20-50 ms, and every other
 * client's request waited one or two of them (load drill h2 2x: probe p99
 * 85-163 ms, the gateway's own histogram 96-98% within 50 ms); at 4 the
 * same step held p99 37-44 ms and 99.9% (docs/benchmarks.md), throughput
 * unchanged (h2load -m 100: 51-53k req/s vs 44-51k). */
#define H2_STREAMS_PER_TURN 4

struct h2_scan {
	size_t preface_left;    /* client preface bytes not passed yet */
	uint32_t frame_left;    /* payload bytes of the current frame not passed yet */
	unsigned settings_acks; /* SETTINGS ACKs from the client (the second is not nghttp2's) */
	unsigned cont_frames;   /* CONTINUATION frames in the current header block */
	unsigned turn_streams;  /* HEADERS frames passed in this turn */
	bool turn_full;         /* the next HEADERS frame belongs to the next turn */
	/* counts in the current one-second window */
	uint64_t window_start_us;
	unsigned resets, pings, settings, empty, glitches;
};

void h2_scan_init(struct h2_scan *sc, uint64_t now_us);
/* A new read turn: H2_STREAMS_PER_TURN HEADERS frames may pass again. */
void h2_scan_turn(struct h2_scan *sc);
/* Looks at the frame headers in p[0..n). Returns how many of the n bytes
 * nghttp2 may take now: all, or fewer when a frame header is cut at the end
 * (it is judged once whole), when the turn is full (sc->turn_full), when the
 * frame starting there is not nghttp2's (*drop is then its size, for the
 * caller to discard), or when a frame broke a limit of cfg: *why says which
 * (else H2_CLOSE__COUNT), and the caller ends the session. */
size_t h2_scan_frames(struct h2_scan *sc, const struct conf_http2 *cfg, const uint8_t *p, size_t n,
                      uint64_t now_us, size_t *drop, enum h2_close *why);
/* One more glitch (a stream the client made us reset): true once past
 * cfg->max_glitches_per_s in the current second. */
bool h2_scan_glitch(struct h2_scan *sc, const struct conf_http2 *cfg, uint64_t now_us);
/* Has the client acknowledged the stream limit (its second SETTINGS ACK)? */
bool h2_scan_limit_known(const struct h2_scan *sc);

#endif
