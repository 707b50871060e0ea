/* conf_tracing.h - the tracing module's config section (docs/tracing.md,
 * docs/configuration.md "tracing").
 *
 *   tracing = { otlp = "http://127.0.0.1:4318/v1/traces", sample = 0.05,
 *               service_name = "sluice" }
 * turns W3C trace context propagation on (traceparent/tracestate checked,
 * a new trace started when there is none, the gateway's span as the
 * upstream request's parent) and exports sampled spans over OTLP/HTTP, JSON
 * by default or binary protobuf with protocol = "http/protobuf" (the names
 * of OpenTelemetry's OTEL_EXPORTER_OTLP_PROTOCOL). Without `otlp` the ids
 * are propagated and logged, nothing is exported.
 *
 * Ownership: struct conf_tracing belongs to the conf (conf->tracing), freed
 * with it.
 */
#ifndef SLUICE_CONF_TRACING_H
#define SLUICE_CONF_TRACING_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "conf_schema.h"

struct tls_client;

struct conf_tracing_header {
	char *name;  /* lower-case token */
	char *value; /* no CR, LF or NUL */
};

enum conf_tracing_protocol {
	CONF_TRACING_HTTP_JSON,     /* "http/json": application/json */
	CONF_TRACING_HTTP_PROTOBUF, /* "http/protobuf": application/x-protobuf */
};

struct conf_tracing {
	char *otlp;       /* the collector's URL as written; NULL: no export */
	bool otlp_tls;    /* parsed from it: https://, host (IPv6 without brackets), port, path */
	char *otlp_host;
	char *otlp_port;
	char *otlp_path;
	enum conf_tracing_protocol protocol; /* default http/json */
	char *ca_file;    /* https: the CA bundle the collector is verified against; NULL: the system store */
	struct tls_client *tls; /* https: the client context (tls_ctx.h), built while the config loads */
	double sample;    /* ratio of new traces sampled, 0..1; default 1 */
	bool parent_based; /* an incoming sampled flag decides; default true */
	char *service_name; /* resource service.name; default "sluice" */
	struct conf_tracing_header *headers; /* sent with every export (e.g. an API key) */
	size_t num_headers;
	unsigned batch_size;  /* spans per export request; default 512 */
	unsigned queue_size;  /* spans waiting per worker; default 2048 */
	conf_msec timeout;    /* one export request; default 5s */
	conf_msec interval;   /* longest wait before queued spans go; default 1s */
};

extern const struct conf_section conf_tracing_section;

/* Splits an OTLP/HTTP URL ("http[s]://HOST[:PORT][/PATH]") into whether it
 * is https, host, port ("80" or "443" if none) and path ("/v1/traces" if
 * none), malloc'ed; false with why filled when it is not one. */
bool conf_tracing_parse_url(const char *url, bool *tls, char **host, char **port, char **path, char *why,
                            size_t why_size);

#endif
