/* request.h - what the pipeline knows about one request (an HTTP/1 message or
 * an HTTP/2 stream), as seen by modules.
 *
 * A struct request is the first member of its exchange (exchange.h): the
 * protocol (client.c, h2.c) fills the client side and the head, the pipeline
 * (pipeline.c, proxy.c) the decisions and the outcome. Modules read it, may
 * change its header fields (until the proxy phase sends them upstream) and
 * may allocate from its arena, which is reset when the request ends. Strings
 * are NUL-terminated and live in the arena for the life of the request. */
#ifndef SLUICE_REQUEST_H
#define SLUICE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "fields.h"
#include "http.h"
#include "reason.h"

struct snapshot;
struct worker;
struct request;

/* What the proxy tells the tracing module (modules/tracing.h) about upstream
 * attempts, through the hooks that module sets in a traced request: each
 * attempt is a span of its own, whose id goes upstream in its traceparent. */
struct request_trace_hooks {
	/* an attempt to r->upstream begins (before its head is built) */
	void (*attempt_begin)(struct request *r);
	/* the current attempt failed or is given up for a retry (status: the
	 * upstream's, 0 if none); the last one otherwise ends with the request */
	void (*attempt_end)(struct request *r, int status, enum reason reason);
};

struct request {
	struct arena arena;
	struct worker *worker;
	const struct snapshot *snap; /* the snapshot the request started on (holds a reference) */

	/* client side */
	char client_ip[64];
	uint16_t client_port;
	const char *listener; /* listener name */
	size_t listener_index; /* into conf.listeners; SIZE_MAX: a reload removed it */
	const char *scheme;   /* "http" or "https" */
	const char *protocol; /* "HTTP/1.0", "HTTP/1.1", "HTTP/2.0" */
	uint32_t stream_id;   /* the HTTP/2 stream; 0 for HTTP/1 */

	/* request head */
	const char *method;
	const char *target; /* as sent (origin-form, absolute-form or "*") */
	const char *origin_target; /* path and query: what goes upstream */
	const char *path;   /* path without query */
	const char *authority; /* host[:port] as sent (absolute-form target, Host, :authority); NULL if none */
	const char *host;   /* without port, lower-case; "" if none */
	struct fields headers; /* request header fields, as they will go upstream (hop-by-hop ones flagged) */
	char request_id[72]; /* up to 64 characters (client-supplied or generated) + NUL */

	/* decisions */
	int route;             /* index into conf.routes, -1 none */
	const char *route_name;
	int service;           /* index into conf.services, -1 none */
	int pool;              /* index into conf.pools, -1 none */
	char upstream[64];     /* "ip:port" of the server used, "" if none */
	int server;            /* index into the pool's servers, -1 none */

	/* outcome */
	int status;            /* status sent to the client, 0 if none */
	enum reason reason;
	uint64_t bytes_in;     /* request body bytes received */
	uint64_t bytes_out;    /* response bytes sent (head + body) */
	int upstream_status;   /* 0 if none */
	unsigned attempts;     /* upstream attempts made */

	/* what Lua policies (modules/policy.h) leave for other modules, in the
	 * arena (fields_init'ed on first use): rate-limit key values
	 * (r:set_limit_key, names lower-cased) and access-log fields (r:log) */
	struct fields policy_keys;
	struct fields log_fields;
	void *policy; /* the policy module's per-request state */

	/* W3C trace context (modules/tracing.h), set before the request goes
	 * upstream or is answered when tracing is on: the trace, the gateway's
	 * span in it, the caller's span (all zero: the trace started here) */
	uint8_t trace_id[16];
	uint8_t span_id[8];
	uint8_t parent_span_id[8];
	uint8_t upstream_span_id[8]; /* the parent id the last upstream attempt was sent (valid with attempts > 0) */
	uint8_t trace_flags; /* as sent upstream: bit 0 sampled */
	bool traced;         /* the fields above are set */
	const struct request_trace_hooks *trace_hooks; /* NULL: attempts are not traced */
	void *trace;         /* the tracing module's per-request state (in the arena) */

	/* times, from the worker's cached clocks */
	uint64_t start_mono_us;
	uint64_t start_wall_us;      /* microseconds since the epoch */
	uint64_t upstream_connect_us; /* duration, 0 if none */
	uint64_t upstream_header_us;  /* request start -> response head received */
	uint64_t end_mono_us;
};

#endif
