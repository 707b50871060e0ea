/* pb_write.h - a small writer of the protocol buffers wire format (no
 * schema, no reflection, no parser): what the OTLP/HTTP protobuf exporter
 * needs (modules/trace_otlp.h), and nothing from libprotobuf.
 *
 * The wire format: each field is a tag (field number << 3 | wire type, as
 * a varint) and a value: a varint (wire type 0: integers, bools, enums;
 * negative int64 values take ten bytes), 8 or 4 little-endian bytes (types
 * 1 and 5: fixed64, fixed32, double), or a length (varint) and that many
 * bytes (type 2: strings, bytes and nested messages).
 *
 * A nested message's length comes before its content and is not known
 * until it ends: pb_begin() reserves one byte for it and pb_end() writes
 * it, moving the content up when the length needs more than one byte
 * (over 127 bytes), so the output is the canonical (shortest) encoding.
 * Messages nest at most PB_MAX_DEPTH deep.
 *
 * Errors: out of memory, or a nesting mistake (too deep, pb_end without
 * pb_begin), set `failed` and make every later call a no-op; check it once
 * at the end. Ownership: the buffer is the caller's (pb_init, pb_take or
 * pb_free); not thread-safe, one writer.
 */
#ifndef SLUICE_PB_WRITE_H
#define SLUICE_PB_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PB_MAX_DEPTH 8
#define PB_VARINT_MAX 10

struct pb_buf {
	uint8_t *p;
	size_t len, cap;
	bool failed;
	unsigned depth;
	size_t open[PB_MAX_DEPTH]; /* where each open message's length byte is */
};

void pb_init(struct pb_buf *b);
void pb_free(struct pb_buf *b);
/* The bytes written (malloc'ed, the caller frees) and their length; NULL
 * when writing failed or a message is still open (the buffer is freed
 * either way). */
uint8_t *pb_take(struct pb_buf *b, size_t *len);

/* v as a varint into out; returns its length (1..PB_VARINT_MAX). */
size_t pb_varint_encode(uint8_t out[PB_VARINT_MAX], uint64_t v);

/* Fields. field: 1 .. 2^29 - 1. */
void pb_varint(struct pb_buf *b, uint32_t field, uint64_t v);   /* uint32/64, int64 (two's complement), enum, bool */
void pb_fixed64(struct pb_buf *b, uint32_t field, uint64_t v);
void pb_fixed32(struct pb_buf *b, uint32_t field, uint32_t v);
void pb_bytes(struct pb_buf *b, uint32_t field, const void *p, size_t n); /* bytes, string */
void pb_string(struct pb_buf *b, uint32_t field, const char *s);          /* NUL-terminated */

/* A nested message as field `field`: its fields go between the two calls. */
void pb_begin(struct pb_buf *b, uint32_t field);
void pb_end(struct pb_buf *b);

#endif
