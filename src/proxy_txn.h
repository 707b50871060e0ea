/* proxy_txn.h - the proxy phase's state of one request (types only).
 *
 * A struct proxy_txn lives inside its struct exchange (exchange.h), so that
 * a request costs one object; only proxy.c reads or writes it. It owns the
 * upstream connection while the exchange runs and gives it back to the
 * worker's pool (pool.h) only when both messages ended cleanly. */
#ifndef SLUICE_PROXY_TXN_H
#define SLUICE_PROXY_TXN_H

#include <stdbool.h>
#include <stdint.h>

#include "fields.h"
#include "h1.h"

struct evbuffer;
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
	struct evbuffer *req_chunk; /* a body of unknown length: the next chunk's bytes (freed with the txn) */

	/* response side */
	uint64_t resp_bytes_seen; /* any byte from the upstream for this attempt */
	bool resp_head_done;
	bool resp_done;
	bool resp_paused;       /* upstream reading paused: client output above high water */
	bool resp_head_failed;  /* the client's protocol could not send the head: the exchange is cut short */
	enum h1_body resp_body;
	uint64_t resp_remaining;
	struct h1_chunked resp_chunk;
	bool resp_in_trailers;
	struct fields resp_trailers; /* the upstream's trailers (in the request arena), valid with resp_in_trailers */
	char resp_length[24];        /* the content-length value the client gets */
	bool resp_eof;          /* close-delimited body: the upstream closed, flush what is queued */
	uint64_t connect_start_us;
	/* last: the parser fills it, so a new transaction clears only what is above */
	struct h1_response resp;
};

#endif
