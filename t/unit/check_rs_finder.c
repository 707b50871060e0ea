/* Unit tests for rs_finder (src/redis_sentinel.h), the asynchronous "where
 * is the master?" on an event loop, against real redis-server and
 * redis-sentinel processes on free loopback ports: a round's answer, a dead,
 * a stopped (SIGSTOP: connects, never answers) and an unknowing sentinel
 * skipped, a round where none answers, the order sentinels are asked in (the
 * last that answered first; rs_finder_stale moves on), and a real
 * `+switch-master` (SENTINEL FAILOVER) reported through the subscription,
 * which first has to move past a dead sentinel.
 *
 * Every process started here gets PR_SET_PDEATHSIG: when a test's forked
 * child fails (or Check's timeout kills it), its servers die with it. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "redis_sentinel.h"

#define MASTER "edge"
#define ROUND_MS 10000 /* the most a round may take here (a loaded machine), never a measure */

static char top_dir[] = "/tmp/check_rs_finder.XXXXXX";

/* ---- processes ---------------------------------------------------------- */

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* A directory of its own for each server (a sentinel rewrites its config, a
 * replica writes dump.rdb); a server started again on its port reuses it. */
static void server_dir(int port, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%d", top_dir, port);
	ck_assert_msg(mkdir(buf, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", buf, strerror(errno));
}

static pid_t spawn(char *const argv[], const char *dir)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* dies with the test process, whatever ends it */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(127);
		char log[600];
		snprintf(log, sizeof log, "%s/log", dir);
		int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (out < 0 || in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 || chdir(dir) != 0)
			_exit(127);
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static void stop(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGCONT); /* a stopped one must see the SIGTERM */
	kill(pid, SIGTERM);
	for (int i = 0; i < 500; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* One blocking command to 127.0.0.1:port (printf-style, as redisCommand); NULL when unreachable. */
static redisReply *command(int port, const char *fmt, ...)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	redisFree(c);
	return r;
}

static bool reply_has(redisReply *r, const char *text)
{
	bool has = r && r->type != REDIS_REPLY_ERROR && r->str && strstr(r->str, text);
	if (r)
		freeReplyObject(r);
	return has;
}

/* Polls until fn(port) holds, or fails the test after seconds. */
static void wait_for(bool (*fn)(int), int port, int seconds, const char *what)
{
	uint64_t end = clock_mono_us() + (uint64_t)seconds * 1000000u;
	while (!fn(port)) {
		ck_assert_msg(clock_mono_us() < end, "%s (port %d) not within %d s", what, port, seconds);
		usleep(20000);
	}
}

static bool answers_ping(int port)
{
	redisReply *r = command(port, "PING");
	bool ok = r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	return ok;
}

/* A redis-server (a replica of replica_of when it is not 0). */
static pid_t start_redis(int port, int replica_of)
{
	char dir[512], p[16], m[16];
	server_dir(port, dir, sizeof dir);
	snprintf(p, sizeof p, "%d", port);
	snprintf(m, sizeof m, "%d", replica_of);
	char *argv[] = { "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		         "--daemonize", "no", "--dir", dir, replica_of ? "--replicaof" : NULL, "127.0.0.1", m, NULL };
	pid_t pid = spawn(argv, dir);
	wait_for(answers_ping, port, 10, "redis-server");
	return pid;
}

/* A redis-sentinel monitoring 127.0.0.1:master_port under the name name. */
static pid_t start_sentinel(int port, const char *name, int master_port)
{
	char dir[512], conf[600];
	server_dir(port, dir, sizeof dir);
	snprintf(conf, sizeof conf, "%s/sentinel.conf", dir);
	FILE *f = fopen(conf, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
	        "port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\n"
	        "sentinel monitor %s 127.0.0.1 %d 1\n"
	        "sentinel down-after-milliseconds %s 1000\n"
	        "sentinel failover-timeout %s 4000\n",
	        port, dir, name, master_port, name, name);
	ck_assert_int_eq(fclose(f), 0);
	char *argv[] = { "redis-sentinel", conf, NULL };
	pid_t pid = spawn(argv, dir);
	wait_for(answers_ping, port, 10, "redis-sentinel");
	return pid;
}

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

/* Runs the loop until *count exceeds before, or ms pass. */
static void run_until(struct event_base *base, const unsigned *count, unsigned before, unsigned ms)
{
	uint64_t end = clock_mono_us() + (uint64_t)ms * 1000u;
	while (*count <= before && clock_mono_us() < end) {
		struct timeval slice = { 0, 20000 };
		event_base_loopexit(base, &slice);
		event_base_dispatch(base);
	}
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
	run_until(t->base, &t->seen.found, before, ROUND_MS);
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
	int m = free_port(), s = free_port();
	pid_t pm = start_redis(m, 0), ps = start_sentinel(s, MASTER, m);
	struct finder_setup t;
	finder_start(&t, (int[]){ s }, 1, 500000);
	ck_assert_int_eq(finder_round(&t), m);
	ck_assert_str_eq(t.seen.master.host, "127.0.0.1");
	ck_assert_str_eq(t.seen.why, "");
	/* asking again while a round runs starts no second one */
	unsigned before = t.seen.found;
	rs_finder_ask(t.f);
	rs_finder_ask(t.f);
	run_until(t.base, &t.seen.found, before, ROUND_MS);
	run_until(t.base, &t.seen.found, before + 1, 300);
	ck_assert_uint_eq(t.seen.found, before + 1);
	finder_stop(&t);
	stop(ps);
	stop(pm);
}
END_TEST

START_TEST(skips_failed_sentinels)
{
	/* nothing listens on dead; other knows no master named edge; slow is stopped (the kernel accepts, nobody answers) */
	int m = free_port(), dead = free_port(), other = free_port(), slow = free_port(), good = free_port();
	pid_t pm = start_redis(m, 0);
	pid_t po = start_sentinel(other, "not-" MASTER, m), pslow = start_sentinel(slow, MASTER, m);
	pid_t pg = start_sentinel(good, MASTER, m);
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
	stop(pg);
	stop(pslow);
	stop(po);
	stop(pm);
}
END_TEST

START_TEST(asks_the_last_that_answered_first)
{
	/* two sentinels that do not know each other, each naming its own master "edge":
	 * the answer shows which one was asked */
	int m1 = free_port(), m2 = free_port(), s1 = free_port(), s2 = free_port();
	pid_t p1 = start_redis(m1, 0), p2 = start_redis(m2, 0);
	pid_t ps1 = start_sentinel(s1, MASTER, m1), ps2 = start_sentinel(s2, MASTER, m2);
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
	run_until(t.base, &t.seen.found, before, 300);
	ck_assert_uint_eq(t.seen.found, before);
	/* (the cancelled ask counts as asked: this round starts at the sentinel after it) */
	int port = finder_round(&t);
	ck_assert_msg(port == m1 || port == m2, "%d", port);
	finder_stop(&t);

	/* s1 down: the round moves on to s2, which is then asked first */
	stop(ps1);
	finder_start(&t, (int[]){ s1, s2 }, 2, 500000);
	ck_assert_int_eq(finder_round(&t), m2);
	ps1 = start_sentinel(s1, MASTER, m1);
	ck_assert_int_eq(finder_round(&t), m2);
	finder_stop(&t);
	stop(ps2);
	stop(ps1);
	stop(p2);
	stop(p1);
}
END_TEST

static bool replica_in_sync(int port)
{
	return reply_has(command(port, "INFO replication"), "master_link_status:up");
}

static bool subscribed(int sentinel)
{
	return reply_has(command(sentinel, "CLIENT LIST"), "cmd=subscribe");
}

static bool failover_started(int sentinel)
{
	redisReply *r = command(sentinel, "SENTINEL FAILOVER %s", MASTER);
	bool ok = r && r->type == REDIS_REPLY_STATUS; /* NOGOODSLAVE until it has seen the replica in sync */
	if (r)
		freeReplyObject(r);
	return ok;
}

START_TEST(follows_switch_master)
{
	int m = free_port(), r = free_port(), dead = free_port(), s = free_port();
	pid_t pm = start_redis(m, 0), pr = start_redis(r, m);
	wait_for(replica_in_sync, r, 15, "replica in sync");
	pid_t ps = start_sentinel(s, MASTER, m);
	struct finder_setup t;
	/* the subscription tries the dead one first, then moves on (retried each second) */
	finder_start(&t, (int[]){ dead, s }, 2, 300000);
	ck_assert_int_eq(finder_round(&t), m);
	uint64_t end = clock_mono_us() + 15000000u;
	while (!subscribed(s)) {
		ck_assert_msg(clock_mono_us() < end, "no subscription on the live sentinel");
		run_until(t.base, &t.seen.switched, 0, 50);
	}
	ck_assert_uint_eq(t.seen.switched, 0);
	wait_for(failover_started, s, 30, "SENTINEL FAILOVER accepted");
	run_until(t.base, &t.seen.switched, 0, 30000);
	ck_assert_uint_eq(t.seen.switched, 1);
	ck_assert_str_eq(t.seen.switched_to.host, "127.0.0.1");
	ck_assert_int_eq(t.seen.switched_to.port, r);
	/* and a round now names the new master */
	ck_assert_int_eq(finder_round(&t), r);
	finder_stop(&t);
	stop(ps);
	stop(pr);
	stop(pm);
}
END_TEST

/* ---- the run ------------------------------------------------------------------- */

static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			char sub[1024];
			snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
			remove_tree(sub);
		}
		closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

static bool have(const char *prog)
{
	char cmd[200];
	snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

int main(void)
{
	if (!have("redis-server") || !have("redis-sentinel")) {
		fprintf(stderr, "check_rs_finder: redis-server and redis-sentinel are needed (scripts/install-deps)\n");
		return EXIT_FAILURE;
	}
	if (!mkdtemp(top_dir)) {
		perror("check_rs_finder: mkdtemp");
		return EXIT_FAILURE;
	}
	Suite *s = suite_create("rs_finder");
	TCase *tc = tcase_create("sentinels");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, finds_the_master);
	tcase_add_test(tc, skips_failed_sentinels);
	tcase_add_test(tc, asks_the_last_that_answered_first);
	tcase_add_test(tc, follows_switch_master);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	remove_tree(top_dir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
