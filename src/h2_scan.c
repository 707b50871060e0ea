/* h2_scan.c - the HTTP/2 frame scanner and flood counts (h2_scan.h). */
#include "h2_scan.h"

#include <string.h>

#include <nghttp2/nghttp2.h>

#include "clock.h"

/* The client connection preface (RFC 9113 3.4) passes unexamined. */
#define H2_PREFACE_LEN 24

void h2_scan_init(struct h2_scan *sc, uint64_t now_us)
{
	memset(sc, 0, sizeof(*sc));
	sc->preface_left = H2_PREFACE_LEN;
	sc->window_start_us = now_us;
}

void h2_scan_turn(struct h2_scan *sc)
{
	sc->turn_streams = 0;
	sc->turn_full = false;
}

bool h2_scan_limit_known(const struct h2_scan *sc)
{
	return sc->settings_acks >= 2;
}

static void window_roll(struct h2_scan *sc, uint64_t now_us)
{
	if (clock_elapsed_us(sc->window_start_us, now_us) >= 1000000) {
		sc->window_start_us = now_us;
		sc->resets = sc->pings = sc->settings = sc->empty = sc->glitches = 0;
	}
}

bool h2_scan_glitch(struct h2_scan *sc, const struct conf_http2 *cfg, uint64_t now_us)
{
	window_roll(sc, now_us);
	return ++sc->glitches > cfg->max_glitches_per_s;
}

/* The limit the frame whose header this is breaks, or H2_CLOSE__COUNT. */
static enum h2_close judge(struct h2_scan *sc, const struct conf_http2 *cfg, uint8_t type, uint8_t flags,
                           uint32_t len)
{
	switch (type) {
	case NGHTTP2_DATA:
		if (len == 0 && !(flags & NGHTTP2_FLAG_END_STREAM) && ++sc->empty > cfg->max_empty_frames_per_s)
			return H2_CLOSE_EMPTY_FRAME_FLOOD;
		break;
	case NGHTTP2_HEADERS:
		sc->cont_frames = 0;
		break;
	case NGHTTP2_CONTINUATION:
		if (++sc->cont_frames > cfg->max_continuation_frames)
			return H2_CLOSE_CONTINUATION_FLOOD;
		if (len == 0 && !(flags & NGHTTP2_FLAG_END_HEADERS) && ++sc->empty > cfg->max_empty_frames_per_s)
			return H2_CLOSE_EMPTY_FRAME_FLOOD;
		break;
	case NGHTTP2_SETTINGS:
		if (!(flags & NGHTTP2_FLAG_ACK) && ++sc->settings > cfg->max_settings_per_s)
			return H2_CLOSE_SETTINGS_FLOOD;
		break;
	case NGHTTP2_PING:
		if (!(flags & NGHTTP2_FLAG_ACK) && ++sc->pings > cfg->max_pings_per_s)
			return H2_CLOSE_PING_FLOOD;
		break;
	case NGHTTP2_RST_STREAM:
		if (++sc->resets > cfg->max_resets_per_s)
			return H2_CLOSE_RAPID_RESET;
		break;
	case NGHTTP2_WINDOW_UPDATE:
	case NGHTTP2_PRIORITY:
		/* cheap to send, and nothing to do for us: a stream of them is a flood too */
		if ((len == 0 || type == NGHTTP2_PRIORITY) && ++sc->empty > cfg->max_empty_frames_per_s * 4)
			return H2_CLOSE_EMPTY_FRAME_FLOOD;
		break;
	default:
		break;
	}
	return H2_CLOSE__COUNT;
}

size_t h2_scan_frames(struct h2_scan *sc, const struct conf_http2 *cfg, const uint8_t *p, size_t n,
                      uint64_t now_us, size_t *drop, enum h2_close *why)
{
	size_t off = 0;
	*drop = 0;
	*why = H2_CLOSE__COUNT;
	while (off < n) {
		if (sc->preface_left) {
			size_t k = n - off < sc->preface_left ? n - off : sc->preface_left;
			sc->preface_left -= k;
			off += k;
			continue;
		}
		if (sc->frame_left) {
			size_t k = n - off < sc->frame_left ? n - off : sc->frame_left;
			sc->frame_left -= (uint32_t)k;
			off += k;
			continue;
		}
		if (n - off < 9)
			break;
		const uint8_t *fh = p + off;
		uint32_t len = (uint32_t)fh[0] << 16 | (uint32_t)fh[1] << 8 | fh[2];
		uint8_t type = fh[3], flags = fh[4];
		if (type == NGHTTP2_HEADERS && ++sc->turn_streams > H2_STREAMS_PER_TURN) {
			sc->turn_full = true; /* this frame starts the next turn */
			return off;
		}
		if (type == NGHTTP2_SETTINGS && (flags & NGHTTP2_FLAG_ACK) && len == 0 && ++sc->settings_acks == 2) {
			/* the ACK of the SETTINGS that announced max_concurrent_streams
			 * (h2_session_start): nghttp2 never sees it, so it keeps refusing
			 * excess streams with REFUSED_STREAM, as it does before an ACK,
			 * instead of ending the connection with PROTOCOL_ERROR */
			*drop = 9;
			return off;
		}
		off += 9;
		sc->frame_left = len;
		window_roll(sc, now_us);
		if ((*why = judge(sc, cfg, type, flags, len)) != H2_CLOSE__COUNT)
			return off;
	}
	return off;
}
