#include "arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct arena_block {
	struct arena_block *next;
	size_t size;
	size_t used;
	_Alignas(16) unsigned char data[];
};

static struct arena_block *arena_block_new(size_t size)
{
	struct arena_block *b = malloc(sizeof(*b) + size);
	if (!b) {
		fputs("sluice: out of memory (arena)\n", stderr);
		abort();
	}
	b->next = NULL;
	b->size = size;
	b->used = 0;
	return b;
}

void arena_init(struct arena *a, size_t block_size)
{
	a->head = NULL;
	a->block_size = block_size ? block_size : 4096;
}

void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!a->head || a->head->size - a->head->used < n) {
		size_t size = n > a->block_size ? n : a->block_size;
		struct arena_block *b = arena_block_new(size);
		b->next = a->head;
		a->head = b;
	}
	void *p = a->head->data + a->head->used;
	a->head->used += n;
	return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void arena_reset(struct arena *a)
{
	struct arena_block *b = a->head;
	if (!b)
		return;
	/* keep the oldest block (the tail of the list), free the rest */
	while (b->next) {
		struct arena_block *next = b->next;
		free(b);
		b = next;
	}
	b->used = 0;
	a->head = b;
}

void arena_free(struct arena *a)
{
	struct arena_block *b = a->head;
	while (b) {
		struct arena_block *next = b->next;
		free(b);
		b = next;
	}
	a->head = NULL;
}
