/* Unit tests for rs_finder (src/redis_sentinel.h), the asynchronous "where
 * is the master?" on an event loop, against real redis-server and
 * redis-sentinel processes on free loopback ports: a round's answer, a dead,
 * a stopped (SIGSTOP: connects, never answers) and an unknowing sentinel
 * skipped, a round where none answers, the order sentinels are asked in (the
 * last that answered first; rs_finder_stale moves on), and a real
 * `+switch-master` (SENTINEL FAILOVER) reported through the subscription,
 * which first has to move past a dead sentinel.
 *
 * The processes: redis_procs.h. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "redis_procs.h"
#include "redis_sentinel.h"

#define MASTER PROC_MASTER
#define ROUND_MS 10000 /* the most a round may take here (a loaded machine), never a measure */

/* ---- the finder on a loop ------------------------------------------------- */

struct seen {
	unsigned found, switched;
	bool master_known;
	struct rs_addr master, switched_to;
	char why[512];
};

static void on_found(void *arg, const struct rs_addr *master, const char *why)
{
	struct seen *s = arg;
	s->found++;
	s->master_known = master != NULL;
	if (master)
		s->master = *master;
	snprintf(s->why, sizeof s->why, "%s", why ? why : "");
}

static void on_switched(void *arg, const struct rs_addr *to)
{
	struct seen *s = arg;
	s->switched++;
	s->switched_to = *to;
}

struct finder_setup {
	struct event_base *base;
	struct conf_redis_sentinel list[4];
	char addr[4][32];
	struct rs_finder *f;
	struct seen seen;
};

static void finder_start(struct finder_setup *t, const int *ports, size_t n, uint64_t timeout_us)
{
	memset(t, 0, sizeof *t);
	ck_assert_uint_le(n, 4);
	for (size_t i = 0; i < n; i++) {
		snprintf(t->addr[i], sizeof t->addr[i], "127.0.0.1:%d", ports[i]);
		t->list[i] = (struct conf_redis_sentinel){ t->addr[i], "127.0.0.1", ports[i] };
	}
	t->base = event_base_new();
	ck_assert_ptr_nonnull(t->base);
	t->f = rs_finder_new(t->base, t->list, n, MASTER, NULL, timeout_us, on_found, on_switched, &t->seen);
	ck_assert_ptr_nonnull(t->f);
}

/* One round: its answer's port, or 0 when it gave none (why in seen). */
static int finder_round(struct finder_setup *t)
{
	unsigned before = t->seen.found;
	rs_finder_ask(t->f);
	proc_run_until(t->base, &t->seen.found, before, ROUND_MS);
	ck_assert_uint_eq(t->seen.found, before + 1); /* exactly once */
	return t->seen.master_known ? t->seen.master.port : 0;
}

static void finder_stop(struct finder_setup *t)
{
	rs_finder_free(t->f);
	event_base_free(t->base);
}

/* ---- tests ------------------------------------------------------------------ */

START_TEST(finds_the_master)
{
	int m = proc_free_port(), s = proc_free_port();
	pid_t pm = proc_start_redis(m, 0, NULL), ps = proc_start_sentinel(s, MASTER, m);
	struct finder_setup t;
	finder_start(&t, (int[]){ s }, 1, 500000);
	ck_assert_int_eq(finder_round(&t), m);
	ck_assert_str_eq(t.seen.master.host, "127.0.0.1");
	ck_assert_str_eq(t.seen.why, "");
	/* asking again while a round runs starts no second one */
	unsigned before = t.seen.found;
	rs_finder_ask(t.f);
	rs_finder_ask(t.f);
	proc_run_until(t.base, &t.seen.found, before, ROUND_MS);
	proc_run_until(t.base, &t.seen.found, before + 1, 300);
	ck_assert_uint_eq(t.seen.found, before + 1);
	finder_stop(&t);
	proc_stop(ps);
	proc_stop(pm);
}
END_TEST

START_TEST(skips_failed_sentinels)
{
	/* nothing listens on dead; other knows no master named edge; slow is stopped (the kernel accepts, nobody answers) */
	int m = proc_free_port(), dead = proc_free_port(), other = proc_free_port(), slow = proc_free_port();
	int good = proc_free_port();
	pid_t pm = proc_start_redis(m, 0, NULL);
	pid_t po = proc_start_sentinel(other, "not-" MASTER, m), pslow = proc_start_sentinel(slow, MASTER, m);
	pid_t pg = proc_start_sentinel(good, MASTER, m);
	ck_assert_int_eq(kill(pslow, SIGSTOP), 0);
	struct finder_setup t;
	finder_start(&t, (int[]){ dead, other, slow, good }, 4, 300000);
	ck_assert_int_eq(finder_round(&t), m);
	finder_stop(&t);

	/* every one of them failing: the round ends without a master, saying why and naming the last one */
	finder_start(&t, (int[]){ dead, other, slow }, 3, 300000);
	ck_assert_int_eq(finder_round(&t), 0);
	ck_assert_msg(strstr(t.seen.why, "no sentinel gave the master of " MASTER " (3 asked"), "%s", t.seen.why);
	char last[64];
	snprintf(last, sizeof last, "sentinel 127.0.0.1:%d: no answer within connect_timeout", slow);
	ck_assert_msg(strstr(t.seen.why, last), "%s", t.seen.why);
	finder_stop(&t);

	/* the unknowing one says so */
	finder_start(&t, (int[]){ other }, 1, 300000);
	ck_assert_int_eq(finder_round(&t), 0);
	ck_assert_msg(strstr(t.seen.why, "does not know a master named " MASTER), "%s", t.seen.why);
	finder_stop(&t);
	/* and the dead one */
	finder_start(&t, (int[]){ dead }, 1, 300000);
	ck_assert_int_eq(finder_round(&t), 0);
	ck_assert_msg(strstr(t.seen.why, "connect failed"), "%s", t.seen.why);
	finder_stop(&t);
	proc_stop(pg);
	proc_stop(pslow);
	proc_stop(po);
	proc_stop(pm);
}
END_TEST

START_TEST(asks_the_last_that_answered_first)
{
	/* two sentinels that do not know each other, each naming its own master "edge":
	 * the answer shows which one was asked */
	int m1 = proc_free_port(), m2 = proc_free_port(), s1 = proc_free_port(), s2 = proc_free_port();
	pid_t p1 = proc_start_redis(m1, 0, NULL), p2 = proc_start_redis(m2, 0, NULL);
	pid_t ps1 = proc_start_sentinel(s1, MASTER, m1), ps2 = proc_start_sentinel(s2, MASTER, m2);
	struct finder_setup t;
	finder_start(&t, (int[]){ s1, s2 }, 2, 500000);
	ck_assert_int_eq(finder_round(&t), m1);
	ck_assert_int_eq(finder_round(&t), m1); /* s1 answered: asked first again */
	rs_finder_stale(t.f);                     /* m1 could not be reached: the other one first */
	ck_assert_int_eq(finder_round(&t), m2);
	ck_assert_int_eq(finder_round(&t), m2);
	/* a round cancelled ends without found; the next one runs */
	unsigned before = t.seen.found;
	rs_finder_ask(t.f);
	rs_finder_cancel(t.f);
	proc_run_until(t.base, &t.seen.found, before, 300);
	ck_assert_uint_eq(t.seen.found, before);
	/* (the cancelled ask counts as asked: this round starts at the sentinel after it) */
	int port = finder_round(&t);
	ck_assert_msg(port == m1 || port == m2, "%d", port);
	finder_stop(&t);

	/* s1 down: the round moves on to s2, which is then asked first */
	proc_stop(ps1);
	finder_start(&t, (int[]){ s1, s2 }, 2, 500000);
	ck_assert_int_eq(finder_round(&t), m2);
	ps1 = proc_start_sentinel(s1, MASTER, m1);
	ck_assert_int_eq(finder_round(&t), m2);
	finder_stop(&t);
	proc_stop(ps2);
	proc_stop(ps1);
	proc_stop(p2);
	proc_stop(p1);
}
END_TEST

/* The finder's +switch-master subscription is on this sentinel. */
static bool subscribed(int sentinel)
{
	return proc_reply_has(proc_command(sentinel, "CLIENT LIST"), "cmd=subscribe");
}

START_TEST(follows_switch_master)
{
	int m = proc_free_port(), r = proc_free_port(), dead = proc_free_port(), s = proc_free_port();
	pid_t pm = proc_start_redis(m, 0, NULL), pr = proc_start_redis(r, m, NULL);
	proc_wait_for(proc_replica_in_sync, r, 15, "replica in sync");
	pid_t ps = proc_start_sentinel(s, MASTER, m);
	struct finder_setup t;
	/* the subscription tries the dead one first, then moves on (retried each second) */
	finder_start(&t, (int[]){ dead, s }, 2, 300000);
	ck_assert_int_eq(finder_round(&t), m);
	uint64_t end = clock_mono_us() + 15000000u;
	while (!subscribed(s)) {
		ck_assert_msg(clock_mono_us() < end, "no subscription on the live sentinel");
		proc_run_until(t.base, &t.seen.switched, 0, 50);
	}
	ck_assert_uint_eq(t.seen.switched, 0);
	proc_wait_for(proc_failover_accepted, s, 30, "SENTINEL FAILOVER accepted");
	proc_run_until(t.base, &t.seen.switched, 0, 30000);
	ck_assert_uint_eq(t.seen.switched, 1);
	ck_assert_str_eq(t.seen.switched_to.host, "127.0.0.1");
	ck_assert_int_eq(t.seen.switched_to.port, r);
	/* and a round now names the new master */
	ck_assert_int_eq(finder_round(&t), r);
	finder_stop(&t);
	proc_stop(ps);
	proc_stop(pr);
	proc_stop(pm);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("rs_finder");
	TCase *tc = tcase_create("sentinels");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, finds_the_master);
	tcase_add_test(tc, skips_failed_sentinels);
	tcase_add_test(tc, asks_the_last_that_answered_first);
	tcase_add_test(tc, follows_switch_master);
	suite_add_tcase(s, tc);
	return proc_main("check_rs_finder", s);
}
