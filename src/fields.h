/* fields.h - a small list of header fields (name, value) for one request:
 * its request headers, a response head being built, trailers.
 *
 * The list and the copies it makes live in the request's arena, so they go
 * away with the request in one go and nothing is freed one by one. A field
 * is a view (struct http_header): fields_add() stores the caller's pointers,
 * which must live as long as the request (the request's head copy, the
 * arena, static strings); fields_add_copy() and fields_add_line() copy into
 * the arena. Names compare case-insensitively; order is kept (a removal
 * moves the later fields up). Arena allocation aborts on exhaustion (arena.h),
 * so adding cannot fail. Not thread-safe: it belongs to its request. */
#ifndef SLUICE_FIELDS_H
#define SLUICE_FIELDS_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"

struct arena;

/* Per-field flag: not forwarded by a proxy (hop-by-hop, or framing the proxy
 * redoes). The HTTP/1 parser's H1_HDR_HOP has the same value. */
#define FIELD_HOP 0x01

struct fields {
	struct http_header *v;
	uint8_t *flags; /* per field, or NULL while no field has a flag */
	size_t n, cap;
	struct arena *arena; /* where v, flags and copies grow */
};

/* An empty list that allocates from a. */
void fields_init(struct fields *f, struct arena *a);
/* A list over existing storage (v[0..n) of cap slots, flags may be NULL): the
 * HTTP/1 parser's output is used in place; growing past cap moves it to a. */
void fields_view(struct fields *f, struct arena *a, struct http_header *v, uint8_t *flags, size_t n, size_t cap);

/* Index of the first field named lower_name at or after from, or -1. */
int fields_find(const struct fields *f, const char *lower_name, size_t from);
/* The value of the first field named lower_name (its length in *len), or NULL. */
const char *fields_value(const struct fields *f, const char *lower_name, size_t *len);
static inline uint8_t fields_flags(const struct fields *f, size_t i)
{
	return f->flags ? f->flags[i] : 0;
}

/* Room for one more field (the array doubles into the arena). */
void fields_grow(struct fields *f);
/* Append a field whose bytes outlive the request (views, not copied). */
static inline void fields_add(struct fields *f, const char *name, size_t name_len, const char *value,
                              size_t value_len)
{
	if (f->n == f->cap)
		fields_grow(f);
	f->v[f->n] = (struct http_header){name, name_len, value, value_len};
	if (f->flags)
		f->flags[f->n] = 0;
	f->n++;
}
/* Append copies of NUL-terminated name and value. */
void fields_add_copy(struct fields *f, const char *name, const char *value);
/* Append an HTTP/1 field line "name: value" (no line end; copied, the value
 * trimmed); a line without a name or colon is ignored. */
void fields_add_line(struct fields *f, const char *line, size_t len);
/* Append name (a string that outlives the request, e.g. a literal) with a
 * decimal value (formatted into the arena). */
void fields_add_u64(struct fields *f, const char *name, uint64_t value);
/* Remove every field named lower_name; returns how many. */
size_t fields_remove(struct fields *f, const char *lower_name);
/* The same for a name whose length is known. */
size_t fields_remove_len(struct fields *f, const char *lower_name, size_t len);
/* Replace every field named lower_name by one with value (both copied). */
void fields_set(struct fields *f, const char *lower_name, const char *value);
/* Append all of src (views: src's bytes must live as long). */
void fields_append(struct fields *f, const struct fields *src);

#endif
