/* addrcount.h - how many of something each client address holds, with a cap.
 *
 * One table per owner (an HTTP/2 worker counts the streams whose request body
 * is still arriving, per client address). Entries exist only while their count
 * is above zero, so the table's size follows the addresses active now, not
 * every address ever seen. Not thread-safe: a table belongs to one worker.
 * Addresses are compared as the text the caller keeps (e.g. "192.0.2.1"). */
#ifndef SLUICE_ADDRCOUNT_H
#define SLUICE_ADDRCOUNT_H

#include <stdbool.h>
#include <stddef.h>

struct addrcount;

struct addrcount *addrcount_new(void);
void addrcount_free(struct addrcount *t);
/* Count one more for addr if it holds fewer than limit: true. False when addr
 * is at its limit or memory ran out (nothing counted then). */
bool addrcount_acquire(struct addrcount *t, const char *addr, unsigned limit);
/* Give back one acquired for addr. */
void addrcount_release(struct addrcount *t, const char *addr);
/* What addr holds now (0 for an address not in the table). */
unsigned addrcount_get(const struct addrcount *t, const char *addr);
/* Addresses holding at least one. */
size_t addrcount_size(const struct addrcount *t);

#endif
