/* Unit tests for redis_link (src/redis_link.h), fleet control's link to the
 * Redis master, against real redis-server and redis-sentinel processes
 * (redis_procs.h): up with AUTH and SELECT, commands and their replies, a
 * message on the channel, a blocking connection for the last exchange; down
 * reported once per outage (a killed server, a stopped one that leaves a
 * command unanswered, nobody listening, the owner's drop) and up again after
 * it; a refused AUTH, SELECT or SUBSCRIBE (NOAUTH) never up, reported once,
 * up once the server takes the password; commands in flight failed (reply NULL) when the link
 * goes down or is freed; with sentinels, ROLE checked and a failover
 * followed to the new master. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "conf.h"
#include "redis_link.h"
#include "redis_procs.h"

#define MASTER PROC_MASTER
#define CHANNEL "t:changes"
#define WAIT_MS 15000 /* the most an event may take here (a loaded machine), never a measure */

struct seen {
	unsigned ups, downs, reports, messages, replies, null_replies;
	bool after_outage, switched;
	struct rs_addr switched_from;
	char why[300], payload[100];
	char reply_text[200];
	int reply_type;
};

static void on_up(void *arg, const struct rs_addr *switched_from, bool after_outage)
{
	struct seen *s = arg;
	s->ups++;
	s->after_outage = after_outage;
	s->switched = switched_from != NULL;
	if (switched_from)
		s->switched_from = *switched_from;
}

static void on_down(void *arg, const char *why, bool report)
{
	struct seen *s = arg;
	s->downs++;
	s->reports += report;
	snprintf(s->why, sizeof s->why, "%s", why);
}

static void on_message(void *arg, const char *payload, size_t len)
{
	struct seen *s = arg;
	s->messages++;
	snprintf(s->payload, sizeof s->payload, "%.*s", (int)len, payload);
}

static void on_reply(void *arg, const redisReply *reply)
{
	struct seen *s = arg;
	s->replies++;
	if (!reply) {
		s->null_replies++;
		return;
	}
	s->reply_type = reply->type;
	if (reply->type == REDIS_REPLY_INTEGER)
		snprintf(s->reply_text, sizeof s->reply_text, "%lld", reply->integer);
	else
		snprintf(s->reply_text, sizeof s->reply_text, "%s", reply->str ? reply->str : "");
}

static const struct redis_link_events events = { on_up, on_down, on_message };

struct link_setup {
	struct event_base *base;
	struct conf_redis cr;
	char address[64], host[32];
	struct conf_redis_sentinel sentinel;
	char sentinel_address[32];
	struct redis_link *link;
	struct seen seen;
};

/* A link to 127.0.0.1:port, or (sentinel_port not 0) to the master the sentinel names. */
static void link_start(struct link_setup *t, int port, int sentinel_port, const char *password, unsigned db,
                       uint64_t timeout_ms)
{
	memset(t, 0, sizeof *t);
	t->cr.enabled = true;
	t->cr.password = (char *)password;
	t->cr.db = db;
	if (sentinel_port) {
		snprintf(t->sentinel_address, sizeof t->sentinel_address, "127.0.0.1:%d", sentinel_port);
		t->sentinel = (struct conf_redis_sentinel){ t->sentinel_address, "127.0.0.1", sentinel_port };
		t->cr.sentinels = &t->sentinel;
		t->cr.num_sentinels = 1;
		t->cr.master = MASTER;
		snprintf(t->address, sizeof t->address, "sentinel master %s via %s", MASTER, t->sentinel_address);
	} else {
		snprintf(t->address, sizeof t->address, "127.0.0.1:%d", port);
		snprintf(t->host, sizeof t->host, "127.0.0.1");
		t->cr.host = t->host;
		t->cr.port = port;
	}
	t->cr.address = t->address;
	t->base = event_base_new();
	ck_assert_ptr_nonnull(t->base);
	t->link = redis_link_new(t->base, &t->cr, CHANNEL, timeout_ms, 500, &events, &t->seen);
	ck_assert_ptr_nonnull(t->link);
	/* nothing happens before start */
	proc_run_until(t->base, &t->seen.downs, 0, 300);
	ck_assert_uint_eq(t->seen.ups + t->seen.downs, 0);
	redis_link_start(t->link);
}

static void link_stop(struct link_setup *t)
{
	redis_link_free(t->link);
	event_base_free(t->base);
}

/* Sends argv on the link and waits for its reply. */
static void roundtrip(struct link_setup *t, int argc, const char **argv)
{
	size_t lens[8];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	unsigned before = t->seen.replies;
	ck_assert(redis_link_command(t->link, on_reply, &t->seen, argc, argv, lens));
	proc_run_until(t->base, &t->seen.replies, before, WAIT_MS);
	ck_assert_uint_eq(t->seen.replies, before + 1);
}

static long long publish(redisContext *c, const char *payload)
{
	redisReply *r = redisCommand(c, "PUBLISH %s %s", CHANNEL, payload);
	ck_assert_ptr_nonnull(r);
	long long n = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	freeReplyObject(r);
	return n;
}

START_TEST(up_commands_and_messages)
{
	int port = proc_free_port();
	pid_t pid = proc_start_redis(port, 0, "s3cret");
	struct link_setup t;
	link_start(&t, port, 0, "s3cret", 3, 2000);
	proc_run_until(t.base, &t.seen.ups, 0, WAIT_MS);
	ck_assert_uint_eq(t.seen.ups, 1);
	ck_assert_uint_eq(t.seen.downs, 0);
	ck_assert(!t.seen.after_outage && !t.seen.switched);
	ck_assert(redis_link_is_up(t.link));
	struct redis_link_status st;
	redis_link_status(t.link, &st);
	ck_assert_int_eq(st.state, REDIS_LINK_UP);
	ck_assert_str_eq(st.state_name, "up");
	ck_assert_str_eq(st.address, t.address);
	ck_assert_str_eq(st.master, t.address);
	ck_assert_str_eq(st.why, "");
	ck_assert_ptr_null(st.master_name);
	ck_assert(st.since_wall_us > 0);

	/* commands go to db 3, after AUTH */
	const char *set[] = { "SET", "k", "v" };
	roundtrip(&t, 3, set);
	ck_assert_int_eq(t.seen.reply_type, REDIS_REPLY_STATUS);
	ck_assert_str_eq(t.seen.reply_text, "OK");
	const char *get[] = { "GET", "k" };
	roundtrip(&t, 2, get);
	ck_assert_str_eq(t.seen.reply_text, "v");
	/* an error answer is the owner's to judge: the link stays up */
	const char *bad[] = { "INCR", "k" };
	roundtrip(&t, 2, bad);
	ck_assert_int_eq(t.seen.reply_type, REDIS_REPLY_ERROR);
	ck_assert(redis_link_is_up(t.link));

	/* the blocking connection for the last exchange: AUTH and SELECT as the link's */
	redisContext *c = redis_link_connect_blocking(t.link, 1000000);
	ck_assert_ptr_nonnull(c);
	redisReply *r = redisCommand(c, "GET k");
	ck_assert(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "v") == 0);
	freeReplyObject(r);

	/* the channel: published (on that connection) once the SUBSCRIBE has landed */
	uint64_t end = clock_mono_us() + WAIT_MS * 1000u;
	while (publish(c, "7 other#1") < 1) {
		ck_assert(clock_mono_us() < end);
		proc_run_until(t.base, &t.seen.messages, 0, 20);
	}
	redisFree(c);
	proc_run_until(t.base, &t.seen.messages, 0, WAIT_MS);
	ck_assert_uint_ge(t.seen.messages, 1);
	ck_assert_str_eq(t.seen.payload, "7 other#1");

	/* a command in flight when the link is freed is failed (reply NULL), once */
	const char *blpop[] = { "BLPOP", "nothing", "10" };
	size_t lens[] = { 5, 7, 2 };
	unsigned before = t.seen.replies;
	ck_assert(redis_link_command(t.link, on_reply, &t.seen, 3, blpop, lens));
	proc_run_until(t.base, &t.seen.replies, before, 100);
	ck_assert_uint_eq(t.seen.replies, before);
	unsigned downs = t.seen.downs;
	link_stop(&t);
	ck_assert_uint_eq(t.seen.replies, before + 1);
	ck_assert_uint_eq(t.seen.null_replies, 1);
	ck_assert_uint_eq(t.seen.downs, downs); /* no event while freeing */
	proc_stop(pid);
}
END_TEST

static const char *ping[] = { "PING" };
static const size_t ping_lens[] = { 4 };

/* A link up on a new redis-server on port, which is then stopped (SIGSTOP)
 * with a PING in flight; returns the server's pid. */
static pid_t up_then_unanswered(struct link_setup *t, int port, uint64_t timeout_ms)
{
	pid_t pid = proc_start_redis(port, 0, NULL);
	link_start(t, port, 0, NULL, 0, timeout_ms);
	proc_run_until(t->base, &t->seen.ups, 0, WAIT_MS);
	ck_assert_uint_eq(t->seen.ups, 1);
	ck_assert_int_eq(kill(pid, SIGSTOP), 0);
	ck_assert(redis_link_command(t->link, on_reply, &t->seen, 1, ping, ping_lens));
	return pid;
}

START_TEST(down_once_per_outage_and_back)
{
	int port = proc_free_port();
	struct link_setup t;
	/* killed with a command in flight */
	pid_t pid = up_then_unanswered(&t, port, 2000);
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	proc_stop(pid);
	proc_run_until(t.base, &t.seen.downs, 0, WAIT_MS);
	ck_assert_uint_eq(t.seen.downs, 1);
	ck_assert_uint_eq(t.seen.reports, 1);
	ck_assert_msg(strstr(t.seen.why, "connection lost"), "%s", t.seen.why);
	ck_assert_uint_eq(t.seen.null_replies, 1);
	ck_assert(!redis_link_is_up(t.link));
	ck_assert(!redis_link_command(t.link, on_reply, &t.seen, 1, ping, ping_lens));
	ck_assert_ptr_null(redis_link_connect_blocking(t.link, 100000));

	/* reconnect attempts (each second) fail again: not reported again */
	proc_run_until(t.base, &t.seen.downs, 2, WAIT_MS);
	ck_assert_uint_ge(t.seen.downs, 3);
	ck_assert_uint_eq(t.seen.reports, 1);
	struct redis_link_status st;
	redis_link_status(t.link, &st);
	ck_assert_msg(strstr(st.why, "connect failed"), "%s", st.why);

	/* back: up, after an outage */
	pid = proc_start_redis(port, 0, NULL);
	proc_run_until(t.base, &t.seen.ups, 1, WAIT_MS);
	ck_assert_uint_eq(t.seen.ups, 2);
	ck_assert(t.seen.after_outage);
	redis_link_status(t.link, &st);
	ck_assert_str_eq(st.why, "");

	/* the owner drops it: reported (it was up), then up again by itself */
	unsigned downs = t.seen.downs;
	redis_link_drop(t.link, "the owner did not like an answer");
	ck_assert_uint_eq(t.seen.downs, downs + 1);
	ck_assert_uint_eq(t.seen.reports, 2);
	ck_assert_str_eq(t.seen.why, "the owner did not like an answer");
	proc_run_until(t.base, &t.seen.ups, 2, WAIT_MS);
	ck_assert_uint_eq(t.seen.ups, 3);
	link_stop(&t);
	proc_stop(pid);
}
END_TEST

START_TEST(unanswered_command_times_out)
{
	struct link_setup t;
	pid_t pid = up_then_unanswered(&t, proc_free_port(), 300);
	proc_run_until(t.base, &t.seen.downs, 0, WAIT_MS);
	ck_assert_uint_eq(t.seen.downs, 1);
	ck_assert_str_eq(t.seen.why, "no answer in time");
	ck_assert_uint_eq(t.seen.null_replies, 1);
	ck_assert_int_eq(kill(pid, SIGCONT), 0);
	proc_run_until(t.base, &t.seen.ups, 1, WAIT_MS);
	ck_assert_uint_eq(t.seen.ups, 2);
	ck_assert(t.seen.after_outage);
	link_stop(&t);
	proc_stop(pid);
}
END_TEST

/* Runs the link through three failed attempts (a second apart): down each
 * time, reported once, never up, the status saying it was refused. */
static void refused_every_time(struct link_setup *t, const char *why1, const char *why2)
{
	proc_run_until(t->base, &t->seen.downs, 2, WAIT_MS);
	ck_assert_uint_ge(t->seen.downs, 3);
	ck_assert_uint_eq(t->seen.ups, 0);
	ck_assert_uint_eq(t->seen.reports, 1);
	ck_assert_msg(strstr(t->seen.why, why1) && strstr(t->seen.why, why2), "%s", t->seen.why);
	ck_assert(!redis_link_is_up(t->link));
	struct redis_link_status st;
	redis_link_status(t->link, &st);
	ck_assert(st.refused);
	ck_assert_int_ne(st.state, REDIS_LINK_UP);
	ck_assert_str_eq(st.why, t->seen.why);
}

/* A blocking command to 127.0.0.1:port after AUTH password; true when it answered OK. */
static bool command_as(int port, const char *password, const char *fmt, const char *arg)
{
	redisContext *c = redisConnect("127.0.0.1", port);
	ck_assert(c && !c->err);
	redisReply *r = redisCommand(c, "AUTH %s", password);
	bool ok = r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	r = ok ? redisCommand(c, fmt, arg) : NULL;
	ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return ok;
}

START_TEST(refused_and_unreachable)
{
	int port = proc_free_port(), nobody = proc_free_port();
	pid_t pid = proc_start_redis(port, 0, "right");
	struct link_setup t;
	/* a wrong password: never up (the connections are made, AUTH is
	 * refused), reported once however often it is retried */
	link_start(&t, port, 0, "wrong", 0, 2000);
	refused_every_time(&t, "AUTH/SELECT refused", "WRONGPASS");
	/* the server's password changes to the link's: up, after the outage */
	ck_assert(command_as(port, "right", "CONFIG SET requirepass %s", "wrong"));
	proc_run_until(t.base, &t.seen.ups, 0, WAIT_MS);
	ck_assert_uint_eq(t.seen.ups, 1);
	ck_assert(t.seen.after_outage);
	struct redis_link_status st;
	redis_link_status(t.link, &st);
	ck_assert(!st.refused);
	ck_assert_str_eq(st.why, "");
	const char *set[] = { "SET", "k", "v" };
	roundtrip(&t, 3, set);
	ck_assert_str_eq(t.seen.reply_text, "OK");
	link_stop(&t);
	ck_assert(command_as(port, "wrong", "CONFIG SET requirepass %s", "right"));

	/* no password where one is needed: the SUBSCRIBE is refused (NOAUTH) */
	link_start(&t, port, 0, NULL, 0, 2000);
	refused_every_time(&t, "refused", "NOAUTH");
	link_stop(&t);

	/* a db the server does not have */
	link_start(&t, port, 0, "right", 99, 2000);
	refused_every_time(&t, "AUTH/SELECT refused", "DB index");
	link_stop(&t);

	link_start(&t, nobody, 0, NULL, 0, 2000);
	proc_run_until(t.base, &t.seen.downs, 0, WAIT_MS);
	ck_assert_uint_eq(t.seen.reports, 1);
	ck_assert_msg(strstr(t.seen.why, "connect failed"), "%s", t.seen.why);
	redis_link_status(t.link, &st);
	ck_assert_int_ne(st.state, REDIS_LINK_UP);
	ck_assert(!st.refused);
	ck_assert_str_eq(st.why, t.seen.why);
	link_stop(&t);
	proc_stop(pid);
}
END_TEST

START_TEST(follows_the_sentinels)
{
	int m = proc_free_port(), r = proc_free_port(), s = proc_free_port();
	pid_t pm = proc_start_redis(m, 0, NULL), pr = proc_start_redis(r, m, NULL);
	proc_wait_for(proc_replica_in_sync, r, 15, "replica in sync");
	pid_t ps = proc_start_sentinel(s, MASTER, m);
	struct link_setup t;
	link_start(&t, 0, s, NULL, 0, 2000);
	proc_run_until(t.base, &t.seen.ups, 0, WAIT_MS);
	ck_assert_uint_eq(t.seen.ups, 1);
	ck_assert(!t.seen.switched);
	struct redis_link_status st;
	redis_link_status(t.link, &st);
	char want[32];
	snprintf(want, sizeof want, "127.0.0.1:%d", m);
	ck_assert_str_eq(st.master, want);
	ck_assert_str_eq(st.master_name, MASTER);
	ck_assert_str_eq(st.address, t.address);

	proc_wait_for(proc_failover_accepted, s, 30, "SENTINEL FAILOVER accepted");
	/* down (the switch message, or the demoted master's READONLY / lost connection), then up on the replica */
	proc_run_until(t.base, &t.seen.ups, 1, 30000);
	ck_assert_uint_eq(t.seen.ups, 2);
	ck_assert_uint_ge(t.seen.downs, 1);
	ck_assert(t.seen.switched);
	ck_assert_int_eq(t.seen.switched_from.port, m);
	redis_link_status(t.link, &st);
	snprintf(want, sizeof want, "127.0.0.1:%d", r);
	ck_assert_str_eq(st.master, want);
	/* the link checked ROLE: commands that write go through */
	const char *set[] = { "SET", "after", "1" };
	roundtrip(&t, 3, set);
	ck_assert_str_eq(t.seen.reply_text, "OK");
	link_stop(&t);
	proc_stop(ps);
	proc_stop(pr);
	proc_stop(pm);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("redis_link");
	TCase *tc = tcase_create("link");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, up_commands_and_messages);
	tcase_add_test(tc, down_once_per_outage_and_back);
	tcase_add_test(tc, unanswered_command_times_out);
	tcase_add_test(tc, refused_and_unreachable);
	tcase_add_test(tc, follows_the_sentinels);
	suite_add_tcase(s, tc);
	return proc_main("check_redis_link", s);
}
