/* snapshot.h - an immutable, reference-counted, compiled configuration.
 *
 * snapshot_build() loads a config file (conf.h), compiles its routes
 * (route.h), builds consistent-hash rings for hash-balanced pools and lets
 * every module build its per-snapshot state. Once built nothing in it
 * changes, so every worker reads it without locks. Whoever holds a pointer
 * holds a reference: the server holds the current one, each worker holds the
 * one it serves new requests with, and each request holds the one it started
 * on. The last snapshot_unref() frees it, on whichever thread that happens. */
#ifndef SLUICE_SNAPSHOT_H
#define SLUICE_SNAPSHOT_H

#include <stdatomic.h>
#include <stdint.h>

#include "conf.h"

struct route_table;
struct balance_ring;

struct snapshot {
	atomic_uint refs;
	uint64_t generation;     /* 1 for the first config, +1 per reload */
	uint64_t loaded_wall_us; /* when it was built */
	struct conf *conf;
	struct route_table *routes;
	struct balance_ring **rings; /* per pool, NULL unless balance = hash */
	void **module_state;         /* per module (module_list order) */
};

/* Returns a snapshot with one reference, or NULL with every problem in errs. */
struct snapshot *snapshot_build(const char *path, uint64_t generation, struct conf_errors *errs);
void snapshot_ref(struct snapshot *s);
void snapshot_unref(struct snapshot *s);

#endif
