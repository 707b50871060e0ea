/* snapshot.h - an immutable, reference-counted, compiled configuration.
 *
 * snapshot_build() loads a config file (conf.h), compiles its routes
 * (route.h), builds consistent-hash rings for hash-balanced pools and lets
 * every module build its per-snapshot state. Once built nothing in it
 * changes, so every worker reads it without locks. Whoever holds a pointer
 * holds a reference: the server holds the current one, each worker holds one
 * per snapshot it still has per-(snapshot, worker) state for (worker.h), each
 * request, HTTP/2 session, TLS handshake in progress, health checker and the
 * admin socket hold the one they started on.
 *
 * Freeing: a snapshot that has a reaper (the running server sets one before
 * publishing it) is freed on the thread that set the reaper, the main thread:
 * a last snapshot_unref() on any other thread hands it to the reaper (a
 * message to the main loop) instead of freeing it there, so that no worker
 * frees a config (closing files, freeing TLS contexts) on its request path.
 * Without a reaper (sluice check, unit tests) the last unref frees it. */
#ifndef SLUICE_SNAPSHOT_H
#define SLUICE_SNAPSHOT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conf.h"

struct counters_map;
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
	/* who loaded it, for `sluice ctl show config` */
	long long loaded_by_uid; /* -1: not known (the process start, SIGHUP) */
	const char *loaded_how;  /* "start", "ctl reload", "SIGHUP" (static strings) */
	/* the main thread's hand-off for a last unref on another thread */
	void (*reaper)(struct snapshot *s, void *arg);
	void *reaper_arg;
	pthread_t reaper_thread;
	struct snapshot *reap_next; /* the reaper's queue */
	struct counters_map *counters; /* its names in the counter registry (counters.h); NULL without one */
};

/* Returns a snapshot with one reference, or NULL with every problem in errs. */
struct snapshot *snapshot_build(const char *path, uint64_t generation, struct conf_errors *errs);
void snapshot_ref(struct snapshot *s);
void snapshot_unref(struct snapshot *s);
/* From now on, a last unref on another thread than the caller's calls
 * reaper(s, arg), which must get s to the caller's thread and call
 * snapshot_free() there. Set before s is shared. */
void snapshot_set_reaper(struct snapshot *s, void (*reaper)(struct snapshot *, void *), void *arg);
/* Frees s now (its references are gone). */
void snapshot_free(struct snapshot *s);

#endif
