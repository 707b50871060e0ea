/* redis_procs.c - Redis processes for unit tests (redis_procs.h). */
#include "redis_procs.h"

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
#include <unistd.h>

#include "clock.h"

static char top_dir[256];

static bool have(const char *prog)
{
	char cmd[200];
	snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

/* The exit status of a test program that could not run (automake's SKIP):
 * t/run-tests counts it as skipped, the container build (docker/Dockerfile)
 * lets it pass; CI installs the servers (scripts/install-deps), so there it
 * runs. */
#define PROC_SKIP 77

static bool have_servers(const char *test_name)
{
	if (have("redis-server") && have("redis-sentinel"))
		return true;
	fprintf(stderr, "%s: SKIP: redis-server and redis-sentinel are needed (scripts/install-deps)\n", test_name);
	return false;
}

static bool proc_init(const char *test_name)
{
	snprintf(top_dir, sizeof top_dir, "/tmp/%s.XXXXXX", test_name);
	if (!mkdtemp(top_dir)) {
		fprintf(stderr, "%s: mkdtemp %s: %s\n", test_name, top_dir, strerror(errno));
		return false;
	}
	return true;
}

static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	if (!d) {
		unlink(path);
		return;
	}
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
}

int proc_main(const char *test_name, Suite *s)
{
	if (!have_servers(test_name))
		return PROC_SKIP;
	if (!proc_init(test_name))
		return EXIT_FAILURE;
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	remove_tree(top_dir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

int proc_free_port(void)
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

void proc_stop(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGCONT);
	kill(pid, SIGTERM);
	for (int i = 0; i < 500; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

redisReply *proc_command(int port, const char *fmt, ...)
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

bool proc_reply_has(redisReply *r, const char *text)
{
	bool has = r && r->type != REDIS_REPLY_ERROR && r->str && strstr(r->str, text);
	if (r)
		freeReplyObject(r);
	return has;
}

void proc_wait_for(bool (*fn)(int port), int port, int seconds, const char *what)
{
	uint64_t end = clock_mono_us() + (uint64_t)seconds * 1000000u;
	while (!fn(port)) {
		ck_assert_msg(clock_mono_us() < end, "%s (port %d) not within %d s", what, port, seconds);
		usleep(20000);
	}
}

bool proc_answers_ping(int port)
{
	redisReply *r = proc_command(port, "PING");
	/* NOAUTH: up, with a password */
	bool ok = r && (r->type == REDIS_REPLY_STATUS || (r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOAUTH")));
	if (r)
		freeReplyObject(r);
	return ok;
}

bool proc_replica_in_sync(int port)
{
	return proc_reply_has(proc_command(port, "INFO replication"), "master_link_status:up");
}

bool proc_failover_accepted(int sentinel_port)
{
	redisReply *r = proc_command(sentinel_port, "SENTINEL FAILOVER %s", PROC_MASTER);
	bool ok = r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	return ok;
}

void proc_run_until(struct event_base *base, const unsigned *count, unsigned before, unsigned ms)
{
	uint64_t end = clock_mono_us() + (uint64_t)ms * 1000u;
	while (*count <= before && clock_mono_us() < end) {
		struct timeval slice = { 0, 20000 };
		event_base_loopexit(base, &slice);
		event_base_dispatch(base);
	}
}

pid_t proc_start_redis(int port, int replica_of, const char *password)
{
	char dir[512], p[16], m[16];
	server_dir(port, dir, sizeof dir);
	snprintf(p, sizeof p, "%d", port);
	snprintf(m, sizeof m, "%d", replica_of);
	char *argv[20] = { "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		           "--daemonize", "no", "--dir", dir };
	int n = 13;
	if (replica_of) {
		argv[n++] = "--replicaof";
		argv[n++] = "127.0.0.1";
		argv[n++] = m;
	}
	if (password) {
		argv[n++] = "--requirepass";
		argv[n++] = (char *)password;
	}
	argv[n] = NULL;
	pid_t pid = spawn(argv, dir);
	proc_wait_for(proc_answers_ping, port, 10, "redis-server");
	return pid;
}

pid_t proc_start_sentinel(int port, const char *name, int master_port)
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
	proc_wait_for(proc_answers_ping, port, 10, "redis-sentinel");
	return pid;
}
