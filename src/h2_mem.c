/* h2_mem.c - per-worker free lists for nghttp2's small blocks (h2_mem.h).
 *
 * Every block carries a 16-byte header (its size class, or its size when it
 * came from malloc directly), so free and realloc need no size from nghttp2
 * and the payload keeps malloc's 16-byte alignment. */
#include "h2_mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Under ASan a block on a free list is poisoned, so a use after nghttp2
 * freed it is still reported although the memory stays ours. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H2_MEM_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(H2_MEM_ASAN)
#define H2_MEM_ASAN 1
#endif
#ifdef H2_MEM_ASAN
#include <sanitizer/asan_interface.h>
#define H2_MEM_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define H2_MEM_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define H2_MEM_POISON(p, n) ((void)(p), (void)(n))
#define H2_MEM_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* payload sizes of the classes: 32, 64, ..., H2_MEM_SMALL_MAX */
#define H2_MEM_MIN_SHIFT 5
#define H2_MEM_CLASSES 8
#define H2_MEM_LARGE UINT32_MAX

struct h2_mem_hdr {
	union {
		struct h2_mem_hdr *next; /* while on a free list */
		size_t size;             /* a large block's payload size */
	} u;
	uint32_t cls; /* a class index, or H2_MEM_LARGE */
	uint32_t pad;
};

_Static_assert(sizeof(struct h2_mem_hdr) == 16, "the header keeps the payload 16-byte aligned");
_Static_assert((32u << (H2_MEM_CLASSES - 1)) == H2_MEM_SMALL_MAX, "the last class is H2_MEM_SMALL_MAX");

struct h2_mem {
	struct h2_mem_hdr *free[H2_MEM_CLASSES];
	size_t idle; /* payload bytes on the free lists */
};

static size_t class_size(uint32_t cls)
{
	return (size_t)1 << (cls + H2_MEM_MIN_SHIFT);
}

/* The smallest class that holds n (n <= H2_MEM_SMALL_MAX). */
static uint32_t class_of(size_t n)
{
	if (n <= class_size(0))
		return 0;
	return (uint32_t)(64 - __builtin_clzll((unsigned long long)(n - 1))) - H2_MEM_MIN_SHIFT;
}

struct h2_mem *h2_mem_new(void)
{
	return calloc(1, sizeof(struct h2_mem));
}

void h2_mem_free(struct h2_mem *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < H2_MEM_CLASSES; i++) {
		while (m->free[i]) {
			struct h2_mem_hdr *h = m->free[i];
			H2_MEM_UNPOISON(h, sizeof(*h) + class_size(i));
			m->free[i] = h->u.next;
			free(h);
		}
	}
	free(m);
}

size_t h2_mem_idle_bytes(const struct h2_mem *m)
{
	return m->idle;
}

static void *mem_malloc(size_t n, void *arg)
{
	struct h2_mem *m = arg;
	struct h2_mem_hdr *h;
	if (n > H2_MEM_SMALL_MAX) {
		if (n > SIZE_MAX - sizeof(*h) || !(h = malloc(sizeof(*h) + n)))
			return NULL;
		h->u.size = n;
		h->cls = H2_MEM_LARGE;
		return h + 1;
	}
	uint32_t cls = class_of(n);
	if ((h = m->free[cls])) {
		H2_MEM_UNPOISON(h, sizeof(*h) + class_size(cls));
		m->free[cls] = h->u.next;
		m->idle -= class_size(cls);
	} else if (!(h = malloc(sizeof(*h) + class_size(cls)))) {
		return NULL;
	}
	h->cls = cls;
	return h + 1;
}

static void mem_free(void *p, void *arg)
{
	struct h2_mem *m = arg;
	if (!p)
		return;
	struct h2_mem_hdr *h = (struct h2_mem_hdr *)p - 1;
	if (h->cls == H2_MEM_LARGE || m->idle + class_size(h->cls) > H2_MEM_KEEP_BYTES) {
		free(h);
		return;
	}
	uint32_t cls = h->cls;
	m->idle += class_size(cls);
	h->u.next = m->free[cls];
	m->free[cls] = h;
	H2_MEM_POISON(h, sizeof(*h) + class_size(cls));
}

static void *mem_calloc(size_t count, size_t size, void *arg)
{
	if (size && count > SIZE_MAX / size)
		return NULL;
	void *p = mem_malloc(count * size, arg);
	if (p)
		memset(p, 0, count * size);
	return p;
}

static void *mem_realloc(void *p, size_t n, void *arg)
{
	if (!p)
		return mem_malloc(n, arg);
	if (n == 0) {
		mem_free(p, arg);
		return NULL;
	}
	struct h2_mem_hdr *h = (struct h2_mem_hdr *)p - 1;
	size_t have = h->cls == H2_MEM_LARGE ? h->u.size : class_size(h->cls);
	if (n <= have)
		return p; /* it fits where it is */
	void *q = mem_malloc(n, arg);
	if (!q)
		return NULL; /* p stays valid, as realloc leaves it */
	memcpy(q, p, have < n ? have : n);
	mem_free(p, arg);
	return q;
}

void h2_mem_bind(struct h2_mem *m, nghttp2_mem *out)
{
	*out = (nghttp2_mem){.mem_user_data = m,
	                     .malloc = mem_malloc,
	                     .free = mem_free,
	                     .calloc = mem_calloc,
	                     .realloc = mem_realloc};
}
