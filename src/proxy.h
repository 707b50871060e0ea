/* proxy.h - the balance and proxy phases of one request: pick a pool and a
 * server, take or open an upstream connection, stream the request to it and
 * the response back to the client with bounded buffers on both sides.
 *
 * The phase's state is the exchange's struct proxy_txn (proxy_txn.h). The
 * client side is reached only through the exchange (exchange.h): the
 * protocol's ops (request body in; response data and trailers out) and the
 * pipeline's ex->pipe (response head, local answers, end, abort), both
 * registered by the layers above. */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy_txn.h"

struct exchange;

/* Balance and start proxying ex's request (its head has been parsed, routed and
 * admitted; its body, if any, is still in the client input). */
void proxy_start(struct exchange *ex);
/* New request-body bytes are in the client input. */
void proxy_on_client_data(struct exchange *ex);
/* The client output drained below the low-water mark. */
void proxy_on_client_drained(struct exchange *ex);
/* The client is gone or the request is being torn down: release the upstream side. */
void proxy_abort(struct exchange *ex);

#endif
