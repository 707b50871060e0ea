/* metrics.h - what the admin HTTP listener (admin_http.h) reports: the
 * Prometheus / OpenMetrics exposition of /metrics, the readiness answer of
 * /readyz and the status page of GET / (metrics_status.c).
 *
 * A view of the process kept by the main thread: the current snapshot (a
 * reference, replaced at each reload), the runtime state table (health,
 * breaker, weights, drains, live load: read with atomic loads), whether
 * the process is ready (config loaded, every listener bound, workers
 * started) or draining, and the outcome of the last reload. Totals come
 * from the counter registry (counters.h) once it is there; nothing here
 * counts requests of its own.
 *
 * Label values are configured names (listener, pool, server address,
 * service) or fixed sets (breaker state), escaped per the exposition
 * format: cardinality is bounded by the config.
 *
 * Ownership: main thread only; the runtime must outlive the view. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct evbuffer;
struct runtime;
struct snapshot;

struct metrics;

/* NULL when out of memory. workers: the number of worker threads. */
struct metrics *metrics_new(struct runtime *rt, struct snapshot *snap, unsigned workers);
void metrics_free(struct metrics *m);

/* After a successful reload: describe snap (takes a reference). */
void metrics_set_snapshot(struct metrics *m, struct snapshot *snap);
/* Every listener bound and the workers serving: /readyz answers 200. */
void metrics_set_ready(struct metrics *m);
/* Shutdown began: /readyz answers 503 from now on. */
void metrics_set_draining(struct metrics *m);
/* A reload was tried (ok: published). */
void metrics_reloaded(struct metrics *m, bool ok);

/* NULL when ready, else why not ("starting", "draining"). */
const char *metrics_not_ready(const struct metrics *m);

/* The exposition. openmetrics: the OpenMetrics 1.0 text format (ends in
 * "# EOF"), else the Prometheus text format 0.0.4. */
void metrics_write(struct metrics *m, struct evbuffer *out, bool openmetrics);

/* The status page (self-contained HTML) or the same as one JSON object. */
void metrics_status(struct metrics *m, struct evbuffer *out, bool json);

#endif
