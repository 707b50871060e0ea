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

static bool pb_room(struct pb_buf *b, size_t n)
{
	if (b->failed)
		return false;
	if (n <= b->cap - b->len)
		return true;
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

size_t pb_varint_encode(uint8_t out[PB_VARINT_MAX], uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		out[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

static void pb_put_varint(struct pb_buf *b, uint64_t v)
{
	if (!pb_room(b, PB_VARINT_MAX))
		return;
	b->len += pb_varint_encode(b->p + b->len, v);
}

static void pb_tag(struct pb_buf *b, uint32_t field, unsigned wire)
{
	pb_put_varint(b, ((uint64_t)field << 3) | wire);
}

static void pb_put_le(struct pb_buf *b, uint64_t v, size_t n)
{
	if (!pb_room(b, n))
		return;
	for (size_t i = 0; i < n; i++)
		b->p[b->len++] = (uint8_t)(v >> (8 * i));
}

void pb_varint(struct pb_buf *b, uint32_t field, uint64_t v)
{
	pb_tag(b, field, PB_WIRE_VARINT);
	pb_put_varint(b, v);
}

void pb_fixed64(struct pb_buf *b, uint32_t field, uint64_t v)
{
	pb_tag(b, field, PB_WIRE_I64);
	pb_put_le(b, v, 8);
}

void pb_fixed32(struct pb_buf *b, uint32_t field, uint32_t v)
{
	pb_tag(b, field, PB_WIRE_I32);
	pb_put_le(b, v, 4);
}

void pb_bytes(struct pb_buf *b, uint32_t field, const void *p, size_t n)
{
	pb_tag(b, field, PB_WIRE_LEN);
	pb_put_varint(b, n);
	if (n && pb_room(b, n)) {
		memcpy(b->p + b->len, p, n);
		b->len += n;
	}
}

void pb_string(struct pb_buf *b, uint32_t field, const char *s)
{
	pb_bytes(b, field, s, strlen(s));
}

void pb_begin(struct pb_buf *b, uint32_t field)
{
	if (b->depth == PB_MAX_DEPTH)
		b->failed = true;
	pb_tag(b, field, PB_WIRE_LEN);
	if (!pb_room(b, 1))
		return;
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
	uint8_t len[PB_VARINT_MAX];
	size_t n = pb_varint_encode(len, content);
	if (n > 1) {
		/* a message over 127 bytes: its length takes more than the byte reserved */
		if (!pb_room(b, n - 1))
			return;
		memmove(b->p + at + n, b->p + at + 1, content);
		b->len += n - 1;
	}
	memcpy(b->p + at, len, n);
}
