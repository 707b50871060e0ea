/* pb_write.c - the protocol buffers wire-format writer (pb_write.h). */
#include "pb_write.h"

#include <stdlib.h>
#include <string.h>

enum { PB_WIRE_VARINT = 0, PB_WIRE_I64 = 1, PB_WIRE_LEN = 2, PB_WIRE_I32 = 5 };

void pb_init(struct pb_buf *b)
{
	memset(b, 0, sizeof *b);
}

void pb_free(struct pb_buf *b)
{
	free(b->p);
	pb_init(b);
}

uint8_t *pb_take(struct pb_buf *b, size_t *len)
{
	if (b->failed || b->depth) {
		pb_free(b);
		return NULL;
	}
	uint8_t *p = b->p;
	*len = b->len;
	if (!p && !(p = malloc(1))) /* an empty message is a valid one */
		return NULL;
	pb_init(b);
	return p;
}

/* The slow path of pb_room: grow, or fail. */
static bool __attribute__((noinline)) pb_grow(struct pb_buf *b, size_t n)
{
	if (b->failed)
		return false;
	size_t cap = b->cap ? b->cap : 1024;
	while (cap - b->len < n) {
		if (cap > SIZE_MAX / 2) {
			b->failed = true;
			return false;
		}
		cap *= 2;
	}
	uint8_t *p = realloc(b->p, cap);
	if (!p) {
		b->failed = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

/* Room for n more bytes (each field checks once, then writes unchecked:
 * the encoder's cost is its calls). */
static inline bool pb_room(struct pb_buf *b, size_t n)
{
	return (!b->failed && n <= b->cap - b->len) || pb_grow(b, n);
}

static inline uint8_t *pb_raw_varint(uint8_t *o, uint64_t v)
{
	while (v >= 0x80) {
		*o++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*o++ = (uint8_t)v;
	return o;
}

static inline uint8_t *pb_raw_tag(uint8_t *o, uint32_t field, unsigned wire)
{
	return pb_raw_varint(o, ((uint64_t)field << 3) | wire);
}

static inline uint8_t *pb_raw_le(uint8_t *o, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		*o++ = (uint8_t)(v >> (8 * i));
	return o;
}

size_t pb_varint_encode(uint8_t out[PB_VARINT_MAX], uint64_t v)
{
	return (size_t)(pb_raw_varint(out, v) - out);
}

void pb_varint(struct pb_buf *b, uint32_t field, uint64_t v)
{
	if (!pb_room(b, 2 * PB_VARINT_MAX))
		return;
	uint8_t *o = pb_raw_tag(b->p + b->len, field, PB_WIRE_VARINT);
	b->len = (size_t)(pb_raw_varint(o, v) - b->p);
}

void pb_fixed64(struct pb_buf *b, uint32_t field, uint64_t v)
{
	if (!pb_room(b, PB_VARINT_MAX + 8))
		return;
	uint8_t *o = pb_raw_tag(b->p + b->len, field, PB_WIRE_I64);
	b->len = (size_t)(pb_raw_le(o, v, 8) - b->p);
}

void pb_fixed32(struct pb_buf *b, uint32_t field, uint32_t v)
{
	if (!pb_room(b, PB_VARINT_MAX + 4))
		return;
	uint8_t *o = pb_raw_tag(b->p + b->len, field, PB_WIRE_I32);
	b->len = (size_t)(pb_raw_le(o, v, 4) - b->p);
}

void pb_bytes(struct pb_buf *b, uint32_t field, const void *p, size_t n)
{
	if (n > SIZE_MAX - 2 * PB_VARINT_MAX || !pb_room(b, 2 * PB_VARINT_MAX + n))
		return;
	uint8_t *o = pb_raw_tag(b->p + b->len, field, PB_WIRE_LEN);
	o = pb_raw_varint(o, n);
	if (n)
		memcpy(o, p, n);
	b->len = (size_t)(o + n - b->p);
}

void pb_string(struct pb_buf *b, uint32_t field, const char *s)
{
	pb_bytes(b, field, s, strlen(s));
}

void pb_begin(struct pb_buf *b, uint32_t field)
{
	if (b->depth == PB_MAX_DEPTH)
		b->failed = true;
	if (!pb_room(b, PB_VARINT_MAX + 1))
		return;
	b->len = (size_t)(pb_raw_tag(b->p + b->len, field, PB_WIRE_LEN) - b->p);
	b->open[b->depth++] = b->len;
	b->p[b->len++] = 0; /* the length, once known */
}

void pb_end(struct pb_buf *b)
{
	if (b->failed)
		return;
	if (b->depth == 0) {
		b->failed = true;
		return;
	}
	size_t at = b->open[--b->depth];
	size_t content = b->len - at - 1;
	if (content < 0x80) {
		b->p[at] = (uint8_t)content;
		return;
	}
	/* a message over 127 bytes: its length takes more than the byte reserved */
	uint8_t len[PB_VARINT_MAX];
	size_t n = pb_varint_encode(len, content);
	if (!pb_room(b, n - 1))
		return;
	memmove(b->p + at + n, b->p + at + 1, content);
	b->len += n - 1;
	memcpy(b->p + at, len, n);
}
