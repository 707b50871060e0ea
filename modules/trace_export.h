/* trace_export.h - finished spans from the workers to an OTLP/HTTP collector,
 * off the request path (docs/tracing.md).
 *
 * A worker copies each sampled span into its own bounded queue (a
 * single-producer single-consumer ring of fixed-size records: the worker
 * writes, the exporter thread reads; no lock, no allocation, no system call
 * except a wakeup when the ring is half full). A full ring drops the span
 * and counts it (sluice_tracing_spans_dropped_total). The exporter thread
 * wakes every `interval` (or on that wakeup; never while nothing is
 * configured and no ring exists), encodes up to `batch_size`
 * spans as one OTLP ExportTraceServiceRequest (JSON or protobuf, `protocol`,
 * trace_otlp.h) and POSTs it (over TLS to an https:// collector, verified
 * against `ca_file` or the system store) with a small
 * blocking HTTP/1.1 client bounded by `timeout`; spans of a failed request
 * are dropped and counted (no retry: a collector that is down must not
 * grow memory).
 *
 * Ownership and threads: the process has one exporter (trace_exporter_get /
 * trace_exporter_put, main thread only: the tracing module's worker_init and
 * worker_free), created with the first worker and stopped, after a last
 * bounded flush, with the last. What it exports to is a trace_export_conf
 * (refcounted, immutable, one per snapshot) handed over by each worker as it
 * adopts a snapshot (trace_exporter_configure, under a mutex, newest
 * generation wins). A ring belongs to one worker; the exporter frees it once
 * it is retired and drained.
 */
#ifndef SLUICE_TRACE_EXPORT_H
#define SLUICE_TRACE_EXPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf_tracing.h"
#include "trace_context.h"

struct ctr_worker;

/* One finished span, as the worker copies it (strings truncated to fit): the
 * gateway's server span, or a client span for one upstream attempt (client
 * set; then status is the upstream's, scheme the upstream's, path the path
 * sent, parent_id the server span's; route, listener, host, user agent
 * and the client's address are left empty). */
struct trace_span {
	uint8_t trace_id[TRACE_ID_LEN];
	uint8_t span_id[TRACE_SPAN_ID_LEN];
	uint8_t parent_id[TRACE_SPAN_ID_LEN]; /* all zero: a root span */
	uint8_t flags;
	bool client;            /* an upstream attempt (SPAN_KIND_CLIENT), else the server span */
	uint16_t resend_count;  /* client: attempts before this one */
	uint16_t status;        /* sent to the client; 0: none */
	uint16_t upstream_status;
	uint16_t client_port;
	uint64_t start_ns, end_ns; /* Unix epoch */
	uint64_t bytes_in, bytes_out;
	char method[24];        /* as sent (checked against the known methods when encoded) */
	char scheme[8];
	char protocol[8];       /* network.protocol.version: "1.0", "1.1", "2" */
	char error_type[40];    /* "" when the request did not fail */
	char route[64];
	char listener[64];
	char client_ip[64];
	char upstream[64];      /* the server's "host:port" */
	char pool[64];          /* client: the pool's name */
	char request_id[72];
	char host[256];
	char path[512];
	char user_agent[256];
	char trace_state[TRACE_STATE_MAX + 1];
};

/* What and where to export: built from a conf_tracing with otlp set. */
struct trace_export_conf {
	atomic_uint refs;
	char *host, *port, *path;
	char *service_name;
	char *extra_headers; /* "name: value\r\n" lines */
	unsigned batch_size;
	unsigned queue_size;
	unsigned timeout_ms;
	unsigned interval_ms;
	enum conf_tracing_protocol protocol;
	struct ssl_ctx_st *ssl_ctx; /* https: the client context (a reference of its own); NULL: http */
};

/* NULL when out of memory. One reference, the caller's. */
struct trace_export_conf *trace_export_conf_new(const struct conf_tracing *ct);
void trace_export_conf_ref(struct trace_export_conf *ec);
void trace_export_conf_unref(struct trace_export_conf *ec);

struct trace_ring;
struct trace_exporter;

/* The process's exporter, created (thread started) on first use. Main thread.
 * NULL when it cannot start (logged). */
struct trace_exporter *trace_exporter_get(void);
/* Drops a use; the last one flushes what is queued (bounded by the timeout),
 * stops the thread and frees everything. Main thread. */
void trace_exporter_put(struct trace_exporter *ex);

/* From now on export to ec (NULL: nothing is exported, queued spans are
 * dropped), unless a newer generation was already handed over. Any thread. */
void trace_exporter_configure(struct trace_exporter *ex, struct trace_export_conf *ec, uint64_t generation);

/* A new ring of capacity (rounded up to a power of two), registered with ex.
 * The calling worker is its only producer; drops go to its counters cw. NULL
 * when out of memory. */
struct trace_ring *trace_ring_new(struct trace_exporter *ex, unsigned capacity, struct ctr_worker *cw);
/* The worker is done with r: the exporter frees it once drained. */
void trace_ring_retire(struct trace_exporter *ex, struct trace_ring *r);
unsigned trace_ring_capacity(const struct trace_ring *r);

/* The record to fill for the next span, or NULL when the ring is full (the
 * span is counted as dropped). Commit with trace_ring_commit. Producer only. */
struct trace_span *trace_ring_reserve(struct trace_ring *r);
void trace_ring_commit(struct trace_ring *r);

#endif
