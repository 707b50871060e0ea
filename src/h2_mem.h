/* h2_mem.h - the allocator nghttp2 uses for one worker's HTTP/2 sessions.
 *
 * nghttp2 allocates a handful of small blocks per stream (the stream, the
 * outgoing frames, the copied response fields, HPACK table entries) and
 * frees them when the stream closes. Streams come in bursts (a read of 64
 * HEADERS frames, then their 64 answers), larger than glibc's per-thread
 * cache, so most of those calls took malloc's slow path. Here blocks of up to
 * H2_MEM_SMALL_MAX bytes are kept on per-size free lists of the worker and
 * handed out again; at most H2_MEM_KEEP_BYTES stay idle (what goes past it
 * goes back to malloc), larger blocks are malloc's.
 *
 * Ownership: the worker owns its h2_mem; every session of that worker uses
 * it (h2_mem_bind) and must be deleted before h2_mem_free. Not thread-safe:
 * a worker's sessions never leave its thread. */
#ifndef SLUICE_H2_MEM_H
#define SLUICE_H2_MEM_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

#define H2_MEM_SMALL_MAX 4096
#define H2_MEM_KEEP_BYTES (1024 * 1024)

struct h2_mem;

/* NULL when out of memory. */
struct h2_mem *h2_mem_new(void);
/* Gives every idle block back to malloc; m must have no live block. */
void h2_mem_free(struct h2_mem *m);
/* The allocator table for nghttp2_session_server_new3 (nghttp2 copies it). */
void h2_mem_bind(struct h2_mem *m, nghttp2_mem *out);
/* Bytes in idle blocks kept for reuse (for tests and the contract above). */
size_t h2_mem_idle_bytes(const struct h2_mem *m);

#endif
