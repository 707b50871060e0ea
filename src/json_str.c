#include "json_str.h"

#include <string.h>

#include <event2/buffer.h>

/* What each byte needs: 0 copied as it is; the letter after '\' for a short
 * escape; 'u' for \u00XX; 'h' for a byte >= 0x80, whose UTF-8 sequence is
 * checked. One table load per byte keeps the loop over plain bytes (most of
 * an access-log line) short: fewer instructions than the four comparisons
 * it replaced (callgrind figures in docs/architecture.md). */
#define U 'u'
#define H 'h'
static const unsigned char json_str_class[256] = {
	U, U, U, U, U, U, U, U, U, 't', 'n', U, U, 'r', U, U, /* 0x00 */
	U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U,       /* 0x10 */
	0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     /* 0x20 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* 0x30 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* 0x40 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0,    /* 0x50 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* 0x60 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, U,       /* 0x70: DEL */
	H, H, H, H, H, H, H, H, H, H, H, H, H, H, H, H,       /* 0x80 */
	H, H, H, H, H, H, H, H, H, H, H, H, H, H, H, H,       /* 0x90 */
	H, H, H, H, H, H, H, H, H, H, H, H, H, H, H, H,       /* 0xa0 */
	H, H, H, H, H, H, H, H, H, H, H, H, H, H, H, H,       /* 0xb0 */
	H, H, H, H, H, H, H, H, H, H, H, H, H, H, H, H,       /* 0xc0 */
	H, H, H, H, H, H, H, H, H, H, H, H, H, H, H, H,       /* 0xd0 */
	H, H, H, H, H, H, H, H, H, H, H, H, H, H, H, H,       /* 0xe0 */
	H, H, H, H, H, H, H, H, H, H, H, H, H, H, H, H,       /* 0xf0 */
};
#undef U
#undef H

/* The length of the well-formed UTF-8 sequence at s[0..n) (s[0] >= 0x80),
 * or 0 if it is ill-formed there. RFC 3629's table: the second byte's range
 * depends on the first (E0 and F0 exclude overlong forms, ED the surrogates,
 * F4 what lies above U+10FFFF); C0, C1 and F5..FF never start one. */
static size_t json_str_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t k;
	if (c >= 0xc2 && c <= 0xdf) {
		k = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		k = 3;
		lo = c == 0xe0 ? 0xa0 : 0x80;
		hi = c == 0xed ? 0x9f : 0xbf;
	} else if (c >= 0xf0 && c <= 0xf4) {
		k = 4;
		lo = c == 0xf0 ? 0x90 : 0x80;
		hi = c == 0xf4 ? 0x8f : 0xbf;
	} else {
		return 0;
	}
	if (n < k || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < k; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return k;
}

/* Escape s[0..n) into dst[*len..cap) while whole units fit below cap (a run
 * of plain bytes may be cut: any prefix of it is whole). Returns how many
 * bytes of s it consumed; n when all of them. */
static size_t json_str_escape_some(char *dst, size_t cap, size_t *len, const unsigned char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = *len;
	size_t i = 0;
	while (i < n) {
		/* a run of plain bytes: one copy (what most field values are) */
		size_t run = i;
		while (run < n && json_str_class[s[run]] == 0)
			run++;
		if (run > i) {
			size_t k = run - i;
			if (o + k >= cap) {
				k = o + 1 < cap ? cap - o - 1 : 0;
				memcpy(dst + o, s + i, k);
				*len = o + k;
				return i + k;
			}
			memcpy(dst + o, s + i, k);
			o += k;
			i = run;
			if (i == n)
				break;
		}
		unsigned char c = s[i];
		unsigned char what = json_str_class[c];
		char esc[6] = {'\\', (char)what};
		const char *unit = esc;
		size_t unit_len = 2, used = 1;
		if (what == 'h') {
			size_t k = json_str_utf8_len(s + i, n - i);
			if (k == 2 && c == 0xc2 && s[i + 1] < 0xa0) {
				/* a C1 control: escaped as its code point, text unchanged */
				c = s[i + 1];
				used = 2;
				what = 'u';
			} else if (k > 0) {
				unit = (const char *)s + i;
				unit_len = used = k;
			} else {
				what = 'u'; /* one byte of an ill-formed sequence */
			}
		}
		if (what == 'u') {
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			unit_len = 6;
		}
		if (o + unit_len >= cap)
			break;
		memcpy(dst + o, unit, unit_len);
		o += unit_len;
		i += used;
	}
	*len = o;
	return i;
}

int json_str_escape(char *dst, size_t cap, size_t *len, const char *s, size_t n)
{
	return json_str_escape_some(dst, cap, len, (const unsigned char *)s, n) == n ? 0 : -1;
}

int json_str_add(struct evbuffer *out, const char *s, size_t n)
{
	/* in pieces through a stack buffer: any piece's first unit fits, so
	 * every round consumes input */
	char buf[512];
	while (n > 0) {
		size_t len = 0;
		size_t used = json_str_escape_some(buf, sizeof buf, &len, (const unsigned char *)s, n);
		if (evbuffer_add(out, buf, len) != 0)
			return -1;
		s += used;
		n -= used;
	}
	return 0;
}

int json_str_add_quoted(struct evbuffer *out, const char *s, size_t n)
{
	if (evbuffer_add(out, "\"", 1) != 0 || json_str_add(out, s, n) != 0 || evbuffer_add(out, "\"", 1) != 0)
		return -1;
	return 0;
}
