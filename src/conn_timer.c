#include "conn_timer.h"

#include <stddef.h>

#include <event2/event.h>

#include "clock.h"
#include "log.h"

static void conn_timer_arm(struct conn_timer_queue *q, uint64_t now)
{
	uint64_t at = q->head->at_us;
	if (q->armed_us != 0 && q->armed_us <= at)
		return; /* fires in time: the head is re-checked then */
	if (at <= now) {
		/* due now: after the current callbacks (an active event cancels a pending timeout) */
		event_active(q->ev, EV_TIMEOUT, 1);
		q->armed_us = now;
		return;
	}
	uint64_t d = at - now;
	struct timeval tv = {.tv_sec = (time_t)(d / 1000000u), .tv_usec = (suseconds_t)(d % 1000000u)};
	if (event_add(q->ev, &tv) != 0) {
		log_msg(LOG_ERROR, "cannot arm a connection deadline timer");
		return;
	}
	q->armed_us = at;
}

static void conn_timer_fire(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct conn_timer_queue *q = arg;
	q->armed_us = 0; /* a non-persistent event is no longer pending when it runs */
	uint64_t now = clock_mono_us();
	/* a callback may free connections or move deadlines: take the head afresh */
	while (q->head && q->head->at_us <= now) {
		struct conn_timer *t = q->head;
		conn_timer_clear(t);
		q->expired(t);
	}
	if (q->head)
		conn_timer_arm(q, now);
}

int conn_timer_queue_init(struct conn_timer_queue *q, struct event_base *base, conn_timer_cb expired)
{
	q->head = q->tail = NULL;
	q->armed_us = 0;
	q->expired = expired;
	q->ev = evtimer_new(base, conn_timer_fire, q);
	return q->ev ? 0 : -1;
}

void conn_timer_queue_free(struct conn_timer_queue *q)
{
	while (q->head)
		conn_timer_clear(q->head);
	if (q->ev)
		event_free(q->ev);
	q->ev = NULL;
}

void conn_timer_clear(struct conn_timer *t)
{
	struct conn_timer_queue *q = t->q;
	if (!q)
		return;
	if (t->prev)
		t->prev->next = t->next;
	else
		q->head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	else
		q->tail = t->prev;
	t->prev = t->next = NULL;
	t->q = NULL;
	/* the queue's timer stays as it is: firing early only re-arms it for the new head */
}

void conn_timer_set(struct conn_timer_queue *q, struct conn_timer *t, uint64_t at_us)
{
	conn_timer_clear(t);
	t->q = q;
	t->at_us = at_us;
	struct conn_timer *after = q->tail;
	while (after && after->at_us > at_us)
		after = after->prev;
	t->prev = after;
	t->next = after ? after->next : q->head;
	if (t->next)
		t->next->prev = t;
	else
		q->tail = t;
	if (after)
		after->next = t;
	else
		q->head = t;
	/* a new head that the queue's timer already fires in time for needs no clock reading */
	if (q->head == t && !(q->armed_us != 0 && q->armed_us <= at_us))
		conn_timer_arm(q, clock_mono_us());
}
