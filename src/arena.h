/* arena.h - a bump allocator for a request's short-lived allocations.
 *
 * Allocations are freed all at once by arena_reset() (keeps the first block
 * for reuse, so a recycled request does not touch the global allocator in the
 * steady state) or arena_free(). Not thread-safe: an arena belongs to one
 * request on one worker. Allocation failure aborts (an arena is bounded by the
 * request limits, so running out means the process is out of memory). */
#ifndef SLUICE_ARENA_H
#define SLUICE_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
	struct arena_block *head; /* current block; the first block is kept by reset */
	size_t block_size;
};

void arena_init(struct arena *a, size_t block_size);
void *arena_alloc(struct arena *a, size_t n); /* 16-byte aligned */
char *arena_strndup(struct arena *a, const char *s, size_t n);
void arena_reset(struct arena *a);
void arena_free(struct arena *a);

#endif
