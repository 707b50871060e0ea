/* balance.h - load-balancing algorithms as pure functions over arrays.
 *
 * The caller (the proxy, per worker) owns the state arrays; nothing here
 * allocates except the consistent-hash ring, which is built once per snapshot
 * and then only read. `eligible[i]` false means server i must not be chosen
 * (down, draining, breaker open, weight 0); every function returns -1 when no
 * server is eligible. balance_service_pick() picks a service's pool for a
 * request (overrides, sticky split, weighted draw).
 */
#ifndef SLUICE_BALANCE_H
#define SLUICE_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Smooth weighted round robin (the nginx algorithm): over a cycle of sum(weights)
 * picks, server i is picked weights[i] times, interleaved as evenly as possible.
 * current[] is the caller's per-pool state, zero-initialised, n entries. */
int balance_swrr_next(int64_t *current, const unsigned *weights, const bool *eligible, size_t n);

/* Least connections weighted: minimises active[i] / weights[i]; ties go round robin
 * starting after *cursor, which it updates. */
int balance_least_conn(const unsigned *active, const unsigned *weights, const bool *eligible, size_t n,
                       size_t *cursor);

/* Consistent hashing ring (ketama-like: ~160 points per unit of weight, capped) over
 * server names. Moving one server in or out remaps only ~1/n of the keys. */
struct balance_ring;
struct balance_ring *balance_ring_build(const char *const *names, const unsigned *weights, size_t n);
void balance_ring_free(struct balance_ring *r);
/* The server owning hash, skipping ineligible servers clockwise. */
int balance_ring_pick(const struct balance_ring *r, uint64_t hash, const bool *eligible);
/* Number of points on the ring, for diagnostics: 160 per unit of weight, scaled down to at most
 * 65535 in all (unless there are more weighted servers than that: each has at least one). */
size_t balance_ring_size(const struct balance_ring *r);

/* Weighted pick of one of n choices by a uniformly distributed 64-bit value r
 * (a hash for stickiness, or a random number). Zero weights are never picked. */
int balance_weighted_pick(const unsigned *weights, size_t n, uint64_t r);

/* Sticky weighted choice by rendezvous (highest random weight) hashing: each
 * choice i with weights[i] > 0 draws u_i in (0,1) from key and seeds[i], and
 * the lowest -ln(u_i) / weights[i] wins, so choice i wins a share
 * weights[i] / sum(weights) of the keys. Monotone: raising one weight (or
 * lowering the others) only moves keys to that choice, and only the share
 * that must move; a key never moves between two choices whose weights kept
 * their ratio. -1 when every weight is 0. */
int balance_rendezvous_pick(const unsigned *weights, const uint64_t *seeds, size_t n, uint64_t key);

/* The pool (an index into conf.pools) that service svc sends request r to:
 * the first of svc's overrides whose key equals its value; else, with a
 * sticky key present in r, balance_rendezvous_pick() on its hash; else (no
 * sticky key, or r lacks it) a weighted draw by random. The weights are the
 * runtime splits' (splits[i] is svc->pools[i]'s), read with atomic loads.
 * -1 when every weight is 0. */
struct request;
struct conf_service;
struct runtime_split;
int balance_service_pick(const struct request *r, const struct conf_service *svc,
                         struct runtime_split *const *splits, uint64_t random);

/* A fast, well-mixed 64-bit hash (seeded), used for hash keys and stickiness. */
uint64_t balance_hash(const void *data, size_t len, uint64_t seed);

#endif
