/* proxy.h - the balance and proxy phases of one request: pick a pool and a
 * server, take or open an upstream connection, stream the request to it and
 * the response back to the client with bounded buffers on both sides.
 *
 * A struct proxy_txn lives inside its struct client_req (client.h); it owns
 * the upstream connection while the exchange runs and gives it back to the
 * worker's pool (pool.h) only when both messages ended cleanly. */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "h1.h"
#include "reason.h"

struct client_req;
struct upstream_conn;
struct pool_state;

/* Buffered bytes above which the reading side is paused until the writing side drains. */
#define PROXY_HIGH_WATER (64 * 1024)

struct proxy_txn {
	struct pool_state *pool;
	int server;
	struct upstream_conn *uc;
	bool connecting;
	bool reused;           /* current attempt runs on a pooled connection */
	bool failed_over;      /* already retried once on a fresh connection */

	/* resilience (runtime.h): what this request holds in the shared counters */
	uint64_t avoid;          /* servers already tried (bit i: server i) */
	unsigned tries;          /* servers tried */
	uint64_t breaker_epoch;  /* of the current server's breaker when admitted */
	bool probe;              /* admitted as a half-open probe */
	bool outcome_pending;    /* the current attempt's outcome is not yet reported */
	bool counted;            /* in the pool's active requests */
	bool retrying;           /* in the pool's retries in flight */
	bool pending;            /* in the pool's pending connects */
	uint64_t attempt_start_us;

	/* request side */
	uint64_t req_body_sent; /* body bytes moved to the upstream (decoded) */
	bool req_done;          /* the whole request (head, body, trailers) is in the upstream output */
	bool req_paused;        /* client reading paused: upstream output above high water */
	bool read_timer_on;     /* the upstream read (response) timeout is armed */

	/* response side */
	uint64_t resp_bytes_seen; /* any byte from the upstream for this attempt */
	bool resp_head_done;
	bool resp_done;
	bool resp_paused;       /* upstream reading paused: client output above high water */
	bool resp_chunked_out;  /* re-chunk towards the client */
	enum h1_body resp_body;
	uint64_t resp_remaining;
	struct h1_chunked resp_chunk;
	bool resp_in_trailers;
	bool resp_eof;          /* close-delimited body: the upstream closed, flush what is queued */
	uint64_t connect_start_us;
	/* last: the parser fills it, so a new transaction clears only what is above */
	struct h1_response resp;
};

/* Balance and start proxying cr's request (its head has been parsed, routed and
 * admitted; its body, if any, is still in the client input). */
void proxy_start(struct client_req *cr);
/* New request-body bytes are in the client input. */
void proxy_on_client_data(struct client_req *cr);
/* The client output drained below the low-water mark. */
void proxy_on_client_drained(struct client_req *cr);
/* The client is gone or the request is being torn down: release the upstream side. */
void proxy_abort(struct client_req *cr);

#endif
