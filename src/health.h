/* health.h - active health checks of upstream servers, run on the main
 * thread's event loop (never on a worker's request path).
 *
 * For every pool with a health_check, each server is checked every interval
 * (each wait jittered by up to 10% so checks do not march in step): a TCP
 * connect, or an HTTP GET whose status must fall in the expected range, each
 * bounded by the timeout. fall failures in a row mark the server down, rise
 * passes in a row bring it back; each transition is logged once with the
 * reason (status, timeout, refused, ...), and published to every worker at
 * once by one atomic store into the runtime table (runtime.h).
 *
 * Ownership: struct health belongs to the main thread; it holds a reference
 * to the snapshot whose pools it checks, and the runtime entries must outlive
 * it. A reload starts a new checker beside the old one (which is then
 * stopped): servers of the same pool name and address go on with the old
 * one's state (up/down, counts in a row, last result). */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

#include <event2/event.h>

#include "conf.h"
#include "runtime.h"

struct health;

struct snapshot;

/* Starts the checks of every pool of snap that has one, carrying over the
 * state of prev (NULL at start) by name. NULL on failure (logged). */
struct health *health_start(struct event_base *base, struct runtime *rt, struct snapshot *snap,
                            const struct health *prev);
/* Stops every check and frees h (NULL is fine). */
void health_stop(struct health *h);

/* The last check result of a server, for `sluice ctl show servers`: "" if
 * the pool has no checks or none has finished yet. */
const char *health_last_result(const struct health *h, const char *pool, const char *address);

#endif
