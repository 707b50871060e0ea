/* pipeline.h - the phases every request walks, whatever its protocol:
 * route -> access -> balance and proxy (proxy.h) -> respond -> log
 * (DESIGN.md "The request pipeline").
 *
 * The pipeline knows no protocol: it drives a struct exchange (exchange.h)
 * and answers through its ops. It is the one place that writes a client
 * response head (pipeline_send_head: standard fields, then the respond phase
 * of every module, then the protocol's send_head), and the one place that
 * logs a request (every module's log callback, once per request, however it
 * ended). Everything here runs on the exchange's worker. */
#ifndef SLUICE_PIPELINE_H
#define SLUICE_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>

#include "exchange.h"

struct worker;

/* Who is at the other end of a client connection. */
struct pipeline_peer {
	const char *scheme; /* "http" or "https" (static) */
	const char *ip;
	uint16_t port;
	size_t listener; /* the process's number for it (conf.h id) */
};

/* A cleared exchange from the worker's free list (or new); NULL when out of
 * memory. It belongs to the caller until pipeline_begin(). */
struct exchange *pipeline_exchange_new(struct worker *w);
/* Give back an exchange that never began. */
void pipeline_exchange_discard(struct worker *w, struct exchange *ex);
/* Free the worker's recycled exchanges (worker teardown). */
void pipeline_free_exchanges(struct worker *w);

/* The exchange starts on worker w's current snapshot (one reference, dropped
 * when it is logged): the request's client side and defaults are filled. */
void pipeline_begin(struct exchange *ex, struct worker *w, const struct ex_ops *ops, void *conn,
                    const struct pipeline_peer *peer);
/* The head is in (method, targets, authority, host, headers, protocol, body):
 * set the request id, then route, access, proxy. early_status (a head the
 * protocol refused: 400, 408, 413, 431, 501, 505...): answer it at once. */
void pipeline_start(struct exchange *ex, int early_status);

/* For the protocol: more request body (or its end) can be read. */
void pipeline_on_body(struct exchange *ex);
/* For the protocol: the response output drained below half of PROXY_HIGH_WATER. */
void pipeline_on_drained(struct exchange *ex);
/* For the protocol: the client stopped sending its body in time (408 if no
 * response started, else the exchange is cut short). */
void pipeline_body_timeout(struct exchange *ex);
/* For the protocol: its side is going away (client reset, timeout, shutdown):
 * a suspended module is cancelled, the proxy released, the request logged
 * with reason and the exchange recycled; ops->finish is not called. */
void pipeline_cancel(struct exchange *ex, enum reason reason);

/* For the phases (and the proxy): the response head, built here. fields may
 * be NULL (none yet); x-request-id and the modules' fields are added. Returns
 * false when the protocol could not send it. */
bool pipeline_send_head(struct exchange *ex, int status, const char *phrase, size_t phrase_len,
                        struct fields *fields, enum ex_body body);
/* A local response with a body (content_type NULL: text/plain) and extra
 * fields (may be NULL), then the end of the exchange. */
void pipeline_respond(struct exchange *ex, int status, enum reason reason, const char *content_type,
                      const char *body, size_t body_len, const struct fields *extra);
/* The same with a short text/plain body naming the status. */
void pipeline_respond_error(struct exchange *ex, int status, enum reason reason, const struct fields *extra);
/* The whole response is queued: log, recycle, and let the protocol go on. */
void pipeline_end(struct exchange *ex);
/* The response is cut short after its head: log with reason, recycle, and
 * let the protocol show the client (close, reset). */
void pipeline_abort(struct exchange *ex, enum reason reason);

#endif
