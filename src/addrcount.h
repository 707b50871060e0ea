/* addrcount.h - how many of something each client address holds, with a cap.
 *
 * Two forms over the same table. `struct addrcount` belongs to one owner and
 * is not thread-safe (each shard of the shared form is one).
 * `struct addrcount_shared` is one table for the whole process, shared by
 * every worker (the server counts each client's open connections,
 * limits.max_connections_per_client, and in a second table its HTTP/2
 * streams whose request body is still arriving,
 * http2.max_uploading_streams_per_client): its
 * keys are spread over shards, each a mutex and a table, held for one
 * lookup, so two workers meet on a lock only for keys of the same shard.
 * Entries exist only while their count is above zero, so a table's size
 * follows the addresses active now, not every address ever seen.
 * Addresses are compared as the text the caller keeps (e.g. "192.0.2.1");
 * the shared table counts them by client key (addrcount_client_key). */
#ifndef SLUICE_ADDRCOUNT_H
#define SLUICE_ADDRCOUNT_H

#include <limits.h>
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

/* ---- client keys ---- */

/* Room for a key: the longest is an IPv6 /64 ("ffff:ffff:ffff:ffff::/64"). */
#define ADDRCOUNT_KEY_MAX 48
/* What a client address (inet_ntop text) is counted under: an IPv4 address
 * as itself, also when written IPv4-mapped ("::ffff:192.0.2.1", a dual-stack
 * listener's form); an IPv6 address by its /64 ("2001:db8:1:2::/64"): a
 * host or a home is given a /64 and may take any address in it, so counting
 * single IPv6 addresses would not bound it. Anything else (not an address;
 * "" for a Unix-socket client) as itself. Returns ip or buf. */
const char *addrcount_client_key(const char *ip, char buf[ADDRCOUNT_KEY_MAX]);

/* ---- one table for the process (thread-safe) ---- */

#define ADDRCOUNT_NO_LIMIT UINT_MAX

struct addrcount_shared;

struct addrcount_shared *addrcount_shared_new(void);
/* No thread may use t any more. */
void addrcount_shared_free(struct addrcount_shared *t);
/* One more for the client key of ip if it holds fewer than limit
 * (ADDRCOUNT_NO_LIMIT: no cap): true. False when it is at its limit or
 * memory ran out. A key already held (count above 0) never needs memory,
 * so an acquire while another hold of the same key is live cannot fail.
 * ip "" (no address) is never counted: true, and its release does nothing.
 * A NULL t counts nothing (true). */
bool addrcount_shared_acquire(struct addrcount_shared *t, const char *ip, unsigned limit);
/* One more for ip with no cap, for a connection that must be counted but
 * not refused. Out of memory nothing is counted, and its release later takes
 * nothing or another connection's place: an undercount, never a lock-out. */
void addrcount_shared_hold(struct addrcount_shared *t, const char *ip);
/* Give back one acquired (or held) for ip (the same text). NULL t: nothing. */
void addrcount_shared_release(struct addrcount_shared *t, const char *ip);
/* What the client key of ip holds now. */
unsigned addrcount_shared_get(struct addrcount_shared *t, const char *ip);
/* Keys holding at least one, over every shard. */
size_t addrcount_shared_size(struct addrcount_shared *t);

#endif
