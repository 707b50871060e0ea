/* conn_timer.h - connection deadlines without a timer event per connection.
 *
 * A queue holds the deadlines of one kind (the header timeout, the keep-alive
 * timeout, ...): every deadline of a kind is "now + the same duration", so
 * the newest is nearly always the latest and a queue stays sorted by
 * appending. One libevent timer per queue fires at its head's deadline. An
 * idle keep-alive connection then holds a few list pointers instead of a
 * 128-byte event (plus its allocation), and moving a deadline (once or twice
 * per request) is an unlink and an append instead of a timer re-add.
 * A deadline earlier than the tail's (a reload shortened the duration) is
 * inserted in order, walking back from the tail.
 *
 * Ownership and threads: a queue belongs to one worker's event base; a
 * conn_timer is embedded in a connection of that worker and must be cleared
 * (conn_timer_clear) before the connection is freed. The expired callback runs
 * from the queue's timer at the top of the loop: it may free the connection,
 * and set or clear any timer of any queue. */
#ifndef SLUICE_CONN_TIMER_H
#define SLUICE_CONN_TIMER_H

#include <stdbool.h>
#include <stdint.h>

struct event;
struct event_base;
struct conn_timer;

typedef void (*conn_timer_cb)(struct conn_timer *t);

struct conn_timer_queue {
	struct event *ev;
	struct conn_timer *head, *tail;
	uint64_t armed_us; /* when ev fires (monotonic); 0: not pending */
	conn_timer_cb expired;
};

struct conn_timer {
	struct conn_timer *prev, *next;
	struct conn_timer_queue *q; /* NULL: no deadline */
	uint64_t at_us;             /* monotonic */
};

/* Returns 0, or -1 (out of memory). */
int conn_timer_queue_init(struct conn_timer_queue *q, struct event_base *base, conn_timer_cb expired);
/* Every timer must have been cleared. Safe on a zeroed queue. */
void conn_timer_queue_free(struct conn_timer_queue *q);

/* Give t the deadline at_us (monotonic) on q, replacing any deadline it had.
 * A deadline at or before now expires once the current callbacks are done. */
void conn_timer_set(struct conn_timer_queue *q, struct conn_timer *t, uint64_t at_us);
void conn_timer_clear(struct conn_timer *t);

static inline bool conn_timer_pending(const struct conn_timer *t)
{
	return t->q != 0;
}

#endif
