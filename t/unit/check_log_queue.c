/* Unit tests for the per-worker log queues and the log writer thread
 * (src/log_queue.c): order, whole lines, bounded rings that drop instead of
 * waiting, wrap-around, a target closed only after its lines are written,
 * a ring's successor read after it, write failures counted, and the last
 * user's flush, a flush that waits for the lines queued before it (not
 * after) or says which output blocks it, and a line cut by a short or a
 * failed write finished before the next. Real descriptors: temporary files, pipes, /dev/full. The
 * gateway around it: t/test_access_log_queue.py. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "counters.h"
#include "log_queue.h"

static char tmpl[] = "/tmp/check-logq-XXXXXX";

/* A fresh temporary file: its descriptor (appending) and path in path. */
static int temp_file(char *path, size_t size)
{
	snprintf(path, size, "%s", tmpl);
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_SETFL, O_APPEND), 0);
	return fd;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap + 1);
	for (size_t got; (got = fread(buf + n, 1, cap - n, f)) > 0;) {
		n += got;
		if (n == cap)
			buf = realloc(buf, (cap *= 2) + 1);
	}
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* Line i of producer p: a recognisable head and a length that varies with i. */
static size_t make_line(char *buf, size_t cap, int p, int i)
{
	int n = snprintf(buf, cap, "{\"p\":%d,\"i\":%d,\"pad\":\"", p, i);
	size_t pad = (size_t)((i * 7919) % 3000);
	memset(buf + n, 'a' + (i % 26), pad);
	n += (int)pad;
	n += snprintf(buf + n, cap - (size_t)n, "\"}\n");
	return (size_t)n;
}

/* Every line of text is producer p's, whole, numbered from first on without a gap; returns the count. */
static int check_lines(const char *text, size_t len, int p, int first)
{
	char want[4096];
	int i = first;
	for (size_t off = 0; off < len; i++) {
		size_t n = make_line(want, sizeof want, p, i);
		ck_assert_msg(off + n <= len && memcmp(text + off, want, n) == 0, "line %d of producer %d differs", i, p);
		off += n;
	}
	return i - first;
}

/* The file at path holds producer p's lines 0..n-1, whole; then the ring,
 * the target and the writer go, and the file. */
static void expect_lines_then_stop(char *path, int p, int n, struct logq_ring *r, struct logq_target *t)
{
	size_t len;
	char *text = slurp(path, &len);
	ck_assert_int_eq(check_lines(text, len, p, 0), n);
	free(text);
	logq_ring_retire(r);
	logq_target_release(t);
	logq_writer_put();
	unlink(path);
}

static uint64_t dropped(struct counters *reg, unsigned output)
{
	return counters_get(reg, NULL, CTR_DIM_GLOBAL, 0, CTR_ACCESS_LOG_DROPPED + output);
}

START_TEST(lines_in_order_and_whole_across_wraps)
{
	ck_assert(logq_writer_get());
	char path[64];
	int fd = temp_file(path, sizeof path);
	struct logq_target *t = logq_target_new(fd, true, CTR_LOG_OUT_FILE, path);
	struct logq_ring *r = logq_ring_new(1, NULL, NULL);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(logq_ring_capacity(r), LOGQ_MIN_BYTES);
	ck_assert_uint_eq(logq_ring_size(LOGQ_MIN_BYTES + 1), LOGQ_MIN_BYTES * 2);
	/* about 100 times the ring: it wraps often; a refused line is pushed again */
	char line[4096];
	for (int i = 0; i < 4000; i++) {
		size_t n = make_line(line, sizeof line, 0, i);
		while (!logq_push(r, t, line, n))
			usleep(200);
	}
	logq_flush();
	expect_lines_then_stop(path, 0, 4000, r, t);
}
END_TEST

/* Fills a pipe to the brim: the writer then blocks on it. */
static void fill_pipe(int wfd)
{
	int fl = fcntl(wfd, F_GETFL);
	fcntl(wfd, F_SETFL, fl | O_NONBLOCK);
	char junk[4096];
	memset(junk, '\n', sizeof junk);
	while (write(wfd, junk, sizeof junk) > 0)
		;
	ck_assert_int_eq(errno, EAGAIN);
	fcntl(wfd, F_SETFL, fl);
}

START_TEST(a_full_ring_drops_whole_lines_without_waiting)
{
	struct counters *reg = counters_new();
	counters_process = reg;
	struct ctr_worker *cw = counters_worker_new(reg);
	ck_assert(logq_writer_get());
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	fill_pipe(p[1]);
	struct logq_target *t = logq_target_new(p[1], false, CTR_LOG_OUT_STDOUT, "stdout");
	struct logq_ring *r = logq_ring_new(LOGQ_MIN_BYTES, cw, NULL);
	/* the writer is stuck on the full pipe: the ring fills, then refuses */
	char line[4096];
	int accepted = 0, refused = 0;
	for (int i = 0; i < 2000; i++) {
		size_t n = make_line(line, sizeof line, 1, accepted);
		if (logq_push(r, t, line, n))
			accepted++;
		else
			refused++;
	}
	ck_assert_int_gt(accepted, 10);
	ck_assert_int_gt(refused, 0);
	ck_assert_uint_eq(logq_ring_dropped(r), (uint64_t)refused);
	ck_assert_uint_eq(dropped(reg, CTR_LOG_OUT_STDOUT), (uint64_t)refused);
	ck_assert_uint_eq(dropped(reg, CTR_LOG_OUT_FILE), 0);
	/* the reader resumes: what was accepted arrives whole and in order */
	size_t cap = 8 << 20, len = 0;
	char *buf = malloc(cap);
	int prefix = 1, got = 0;
	char want[4096];
	size_t expect = 0;
	for (int i = 0; i < accepted; i++)
		expect += make_line(want, sizeof want, 1, i);
	while (len < expect) {
		struct pollfd pf = {.fd = p[0], .events = POLLIN};
		ck_assert_int_eq(poll(&pf, 1, 5000), 1);
		ssize_t n = read(p[0], buf + len, cap - len);
		ck_assert_int_gt(n, 0);
		len += (size_t)n;
		if (prefix) {
			/* the prefill is newlines only */
			size_t k = 0;
			while (k < len && buf[k] == '\n')
				k++;
			memmove(buf, buf + k, len - k);
			len -= k;
			prefix = len == 0;
		}
	}
	got = check_lines(buf, len, 1, 0);
	ck_assert_int_eq(got, accepted);
	free(buf);
	logq_ring_retire(r);
	logq_target_release(t);
	logq_writer_put();
	close(p[0]);
	close(p[1]);
	counters_process = NULL;
	counters_free(reg);
}
END_TEST

START_TEST(a_released_target_is_closed_after_its_lines)
{
	ck_assert(logq_writer_get());
	char path[64];
	int fd = temp_file(path, sizeof path);
	struct logq_target *t = logq_target_new(fd, true, CTR_LOG_OUT_FILE, path);
	struct logq_ring *r = logq_ring_new(LOGQ_MIN_BYTES * 4, NULL, NULL);
	char line[4096];
	for (int i = 0; i < 50; i++) {
		size_t n = make_line(line, sizeof line, 2, i);
		ck_assert(logq_push(r, t, line, n));
	}
	/* released at once, as a snapshot whose last request just logged */
	logq_target_release(t);
	logq_flush();
	ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
	ck_assert_int_eq(errno, EBADF);
	size_t len;
	char *text = slurp(path, &len);
	ck_assert_int_eq(check_lines(text, len, 2, 0), 50);
	free(text);
	logq_ring_retire(r);
	logq_writer_put();
	unlink(path);
}
END_TEST

START_TEST(a_successor_ring_waits_for_its_predecessor)
{
	ck_assert(logq_writer_get());
	char path[64];
	int fd = temp_file(path, sizeof path);
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	/* the old ring's first line blocks the writer on a full pipe, so its
	 * other lines are still queued when the new ring gets lines */
	fill_pipe(p[1]);
	struct logq_target *blocked = logq_target_new(p[1], false, CTR_LOG_OUT_STDOUT, "stdout");
	struct logq_target *t = logq_target_new(fd, true, CTR_LOG_OUT_FILE, path);
	struct logq_ring *a = logq_ring_new(LOGQ_MIN_BYTES, NULL, NULL);
	ck_assert(logq_push(a, blocked, "x\n", 2));
	char line[4096];
	for (int i = 0; i < 10; i++) {
		size_t n = make_line(line, sizeof line, 3, i);
		ck_assert(logq_push(a, t, line, n));
	}
	struct logq_ring *b = logq_ring_new(LOGQ_MIN_BYTES * 2, NULL, a);
	for (int i = 10; i < 20; i++) {
		size_t n = make_line(line, sizeof line, 3, i);
		ck_assert(logq_push(b, t, line, n));
	}
	usleep(50 * 1000);
	logq_ring_retire(a);
	/* unblock: drain the pipe */
	int fl = fcntl(p[0], F_GETFL);
	fcntl(p[0], F_SETFL, fl | O_NONBLOCK);
	char junk[65536];
	for (int k = 0; k < 200; k++) {
		while (read(p[0], junk, sizeof junk) > 0)
			;
		usleep(5000);
	}
	logq_flush();
	size_t len;
	char *text = slurp(path, &len);
	ck_assert_int_eq(check_lines(text, len, 3, 0), 20);
	free(text);
	logq_ring_retire(b);
	logq_target_release(t);
	logq_target_release(blocked);
	logq_writer_put();
	close(p[0]);
	close(p[1]);
	unlink(path);
}
END_TEST

START_TEST(write_failures_are_counted_and_survived)
{
	struct counters *reg = counters_new();
	counters_process = reg;
	ck_assert(logq_writer_get());
	int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	struct logq_target *t = logq_target_new(fd, true, CTR_LOG_OUT_FILE, "/dev/full");
	struct logq_ring *r = logq_ring_new(LOGQ_MIN_BYTES, NULL, NULL);
	char line[4096];
	for (int i = 0; i < 30; i++) {
		size_t n = make_line(line, sizeof line, 4, i);
		ck_assert(logq_push(r, t, line, n));
		if (i % 10 == 9)
			logq_flush();
	}
	logq_flush();
	ck_assert_uint_eq(dropped(reg, CTR_LOG_OUT_FILE), 30);
	/* the writer lives on: a good target after a failing one */
	char path[64];
	int good = temp_file(path, sizeof path);
	struct logq_target *g = logq_target_new(good, true, CTR_LOG_OUT_FILE, path);
	size_t n = make_line(line, sizeof line, 4, 0);
	ck_assert(logq_push(r, g, line, n));
	logq_ring_retire(r);
	logq_target_release(t);
	logq_target_release(g);
	/* the last user writes what is queued before it stops */
	logq_writer_put();
	size_t len;
	char *text = slurp(path, &len);
	ck_assert_int_eq(check_lines(text, len, 4, 0), 1);
	free(text);
	unlink(path);
	counters_process = NULL;
	counters_free(reg);
}
END_TEST

START_TEST(the_last_put_writes_everything_queued)
{
	ck_assert(logq_writer_get());
	ck_assert(logq_writer_get()); /* two workers */
	char path[64];
	int fd = temp_file(path, sizeof path);
	struct logq_target *t = logq_target_new(fd, true, CTR_LOG_OUT_FILE, path);
	struct logq_ring *r1 = logq_ring_new(LOGQ_MIN_BYTES * 16, NULL, NULL);
	struct logq_ring *r2 = logq_ring_new(LOGQ_MIN_BYTES * 16, NULL, NULL);
	char line[4096];
	int n1 = 0, n2 = 0;
	for (int i = 0; i < 200; i++) {
		size_t n = make_line(line, sizeof line, 5, i);
		ck_assert(logq_push(r1, t, line, n));
		n1++;
		n = make_line(line, sizeof line, 6, i);
		ck_assert(logq_push(r2, t, line, n));
		n2++;
	}
	logq_ring_retire(r1);
	logq_writer_put();
	logq_ring_retire(r2);
	logq_target_release(t); /* held by the writer until written */
	logq_writer_put();
	/* each producer's lines in its order; both whole */
	size_t len;
	char *text = slurp(path, &len);
	int seen[2] = {0, 0};
	for (char *s = text; *s;) {
		char *nl = strchr(s, '\n');
		ck_assert_ptr_nonnull(nl);
		int p, i;
		ck_assert_int_eq(sscanf(s, "{\"p\":%d,\"i\":%d", &p, &i), 2);
		ck_assert(p == 5 || p == 6);
		ck_assert_int_eq(i, seen[p - 5]);
		char want[4096];
		size_t n = make_line(want, sizeof want, p, i);
		ck_assert_uint_eq((size_t)(nl + 1 - s), n);
		ck_assert(memcmp(s, want, n) == 0);
		seen[p - 5]++;
		s = nl + 1;
	}
	ck_assert_int_eq(seen[0], n1);
	ck_assert_int_eq(seen[1], n2);
	free(text);
	unlink(path);
}
END_TEST

/* Reads a pipe slowly (a few KiB every millisecond or two) until told to stop, keeping what it read. */
struct slow_reader {
	int fd;
	size_t chunk;
	unsigned pause_us;
	atomic_bool stop;
	pthread_mutex_t lock;
	char *buf;
	size_t len, cap;
	pthread_t thread;
};

static void *slow_read(void *arg)
{
	struct slow_reader *sr = arg;
	char tmp[65536];
	while (!atomic_load(&sr->stop)) {
		struct pollfd pf = {.fd = sr->fd, .events = POLLIN};
		if (poll(&pf, 1, 10) != 1)
			continue;
		/* the read and the count under one lock: a reader of len plus what is
		 * still in the pipe never misses the bytes in between */
		pthread_mutex_lock(&sr->lock);
		ssize_t n = read(sr->fd, tmp, sr->chunk < sizeof tmp ? sr->chunk : sizeof tmp);
		if (n <= 0) {
			pthread_mutex_unlock(&sr->lock);
			break;
		}
		if (sr->len + (size_t)n > sr->cap) {
			sr->cap = (sr->len + (size_t)n) * 2;
			sr->buf = realloc(sr->buf, sr->cap);
		}
		memcpy(sr->buf + sr->len, tmp, (size_t)n);
		sr->len += (size_t)n;
		pthread_mutex_unlock(&sr->lock);
		usleep(sr->pause_us);
	}
	return NULL;
}

static void slow_reader_start(struct slow_reader *sr, int fd, size_t chunk, unsigned pause_us)
{
	memset(sr, 0, sizeof *sr);
	sr->fd = fd;
	sr->chunk = chunk;
	sr->pause_us = pause_us;
	atomic_init(&sr->stop, false);
	pthread_mutex_init(&sr->lock, NULL);
	ck_assert_int_eq(pthread_create(&sr->thread, NULL, slow_read, sr), 0);
}

/* Stops the reader, then takes what is left in the pipe (non-blocking). */
static void slow_reader_finish(struct slow_reader *sr)
{
	atomic_store(&sr->stop, true);
	pthread_join(sr->thread, NULL);
	fcntl(sr->fd, F_SETFL, fcntl(sr->fd, F_GETFL) | O_NONBLOCK);
	char tmp[65536];
	for (ssize_t n; (n = read(sr->fd, tmp, sizeof tmp)) > 0;) {
		if (sr->len + (size_t)n > sr->cap) {
			sr->cap = (sr->len + (size_t)n) * 2;
			sr->buf = realloc(sr->buf, sr->cap);
		}
		memcpy(sr->buf + sr->len, tmp, (size_t)n);
		sr->len += (size_t)n;
	}
}

/* A producer that keeps its ring full (pushing again what does not fit) until stopped. */
struct producer {
	struct logq_ring *ring;
	struct logq_target *target;
	int id;
	atomic_int pushed;
	atomic_bool stop;
	pthread_t thread;
};

static void *produce(void *arg)
{
	struct producer *pr = arg;
	char line[4096];
	for (int i = 0; !atomic_load(&pr->stop); i++) {
		size_t n = make_line(line, sizeof line, pr->id, i);
		while (!logq_push(pr->ring, pr->target, line, n))
			if (atomic_load(&pr->stop))
				return NULL;
		atomic_store(&pr->pushed, i + 1);
	}
	return NULL;
}

/* Bytes of producer p's lines [0, n). */
static size_t lines_bytes(int p, int n)
{
	char line[4096];
	size_t sum = 0;
	for (int i = 0; i < n; i++)
		sum += make_line(line, sizeof line, p, i);
	return sum;
}

START_TEST(a_flush_waits_for_the_lines_queued_before_it_not_after)
{
	ck_assert(logq_writer_get());
	/* one ring to a file, one kept full by a producer that never stops, to a
	 * pipe read slowly: the flush must not wait for the lines pushed after it
	 * (the second ring is never empty) */
	char path[64];
	int fd = temp_file(path, sizeof path);
	struct logq_target *file = logq_target_new(fd, true, CTR_LOG_OUT_FILE, path);
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	struct logq_target *slow = logq_target_new(p[1], false, CTR_LOG_OUT_STDOUT, "stdout");
	struct logq_ring *rf = logq_ring_new(LOGQ_MIN_BYTES * 4, NULL, NULL);
	struct producer pr = {.ring = logq_ring_new(LOGQ_MIN_BYTES, NULL, NULL), .target = slow, .id = 8};
	atomic_init(&pr.pushed, 0);
	atomic_init(&pr.stop, false);
	struct slow_reader sr;
	slow_reader_start(&sr, p[0], 8192, 2000);
	ck_assert_int_eq(pthread_create(&pr.thread, NULL, produce, &pr), 0);
	char line[4096];
	int in_file = 0;
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 40; i++, in_file++) {
			size_t n = make_line(line, sizeof line, 7, in_file);
			ck_assert(logq_push(rf, file, line, n));
		}
		while (atomic_load(&pr.pushed) < (round + 1) * 50)
			usleep(1000);
		int before = atomic_load(&pr.pushed);
		struct logq_flush_result res;
		ck_assert_msg(logq_flush_wait(10000, &res), "flush %d not done: %llu bytes pending", round,
		              (unsigned long long)res.pending_bytes);
		ck_assert_uint_eq(res.pending_bytes, 0);
		ck_assert_uint_eq(res.failed_lines, 0);
		ck_assert_uint_gt(res.queued_bytes, 0);
		/* the file has exactly the lines pushed before */
		size_t len;
		char *text = slurp(path, &len);
		ck_assert_int_eq(check_lines(text, len, 7, 0), in_file);
		free(text);
		/* the pipe got at least every line pushed before (read, or in the pipe) */
		int inpipe = 0;
		ck_assert_int_eq(ioctl(p[0], FIONREAD, &inpipe), 0);
		pthread_mutex_lock(&sr.lock);
		size_t got = sr.len + (size_t)inpipe;
		pthread_mutex_unlock(&sr.lock);
		ck_assert_uint_ge(got, lines_bytes(8, before));
	}
	atomic_store(&pr.stop, true);
	pthread_join(pr.thread, NULL);
	logq_ring_retire(pr.ring);
	logq_ring_retire(rf);
	ck_assert(logq_flush_wait(10000, NULL));
	slow_reader_finish(&sr);
	ck_assert_int_eq(check_lines(sr.buf, sr.len, 8, 0), atomic_load(&pr.pushed));
	free(sr.buf);
	logq_target_release(file);
	logq_target_release(slow);
	logq_writer_put();
	close(p[0]);
	close(p[1]);
	unlink(path);
}
END_TEST

START_TEST(a_flush_on_a_blocked_output_times_out_and_says_which)
{
	ck_assert(logq_writer_get());
	/* no writer thread yet (no ring): nothing is queued, done at once */
	struct logq_flush_result res;
	ck_assert(logq_flush_wait(100, &res));
	ck_assert_uint_eq(res.queued_bytes, 0);
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	fill_pipe(p[1]);
	struct logq_target *t = logq_target_new(p[1], false, CTR_LOG_OUT_STDOUT, "stdout");
	struct logq_ring *r = logq_ring_new(LOGQ_MIN_BYTES, NULL, NULL);
	char line[4096];
	size_t queued = 0;
	for (int i = 0; i < 5; i++) {
		size_t n = make_line(line, sizeof line, 9, i);
		ck_assert(logq_push(r, t, line, n));
		queued += n;
	}
	ck_assert(!logq_flush_wait(200, &res));
	ck_assert(!res.done);
	ck_assert_uint_ge(res.pending_bytes, queued); /* every line, with its record header */
	ck_assert_uint_ge(res.waited_us, 200000);
	ck_assert_str_eq(res.blocked_output, "stdout");
	ck_assert_str_eq(res.blocked_name, "stdout");
	ck_assert_uint_ge(res.blocked_ms, 100);
	/* the reader comes back: the same lines go through, whole */
	struct slow_reader sr;
	slow_reader_start(&sr, p[0], 65536, 0);
	ck_assert(logq_flush_wait(5000, &res));
	ck_assert_uint_eq(res.pending_bytes, 0);
	ck_assert_str_eq(res.blocked_output, "");
	slow_reader_finish(&sr);
	size_t k = 0;
	while (k < sr.len && sr.buf[k] == '\n')
		k++; /* the prefill */
	ck_assert_int_eq(check_lines(sr.buf + k, sr.len - k, 9, 0), 5);
	free(sr.buf);
	logq_ring_retire(r);
	logq_target_release(t);
	logq_writer_put();
	close(p[0]);
	close(p[1]);
}
END_TEST

/* Line i of producer p, long: 3 to 11 KiB, past PIPE_BUF and the pipe's own buffer. */
static size_t make_long_line(char *buf, size_t cap, int p, int i)
{
	int n = snprintf(buf, cap, "{\"p\":%d,\"i\":%d,\"pad\":\"", p, i);
	size_t pad = 3000 + (size_t)((i * 7919) % 8000);
	memset(buf + n, 'a' + (i % 26), pad);
	n += (int)pad;
	n += snprintf(buf + n, cap - (size_t)n, "\"}\n");
	return (size_t)n;
}

START_TEST(a_line_cut_by_a_short_write_is_finished_before_the_next)
{
	ck_assert(logq_writer_get());
	/* a non-blocking pipe with one page of buffer, read a little at a time:
	 * nearly every writev takes part of a line */
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_ge(fcntl(p[1], F_SETPIPE_SZ, 4096), 4096);
	fcntl(p[1], F_SETFL, fcntl(p[1], F_GETFL) | O_NONBLOCK);
	struct logq_target *t = logq_target_new(p[1], false, CTR_LOG_OUT_STDOUT, "stdout");
	struct logq_ring *r = logq_ring_new(LOGQ_MIN_BYTES * 16, NULL, NULL);
	struct slow_reader sr;
	slow_reader_start(&sr, p[0], 1000, 200);
	char line[16384];
	size_t want_len = 0;
	for (int i = 0; i < 120; i++) {
		size_t n = make_long_line(line, sizeof line, 10, i);
		ck_assert(logq_push(r, t, line, n));
		want_len += n;
	}
	ck_assert(logq_flush_wait(30000, NULL));
	slow_reader_finish(&sr);
	ck_assert_uint_eq(sr.len, want_len);
	size_t off = 0;
	for (int i = 0; i < 120; i++) {
		size_t n = make_long_line(line, sizeof line, 10, i);
		ck_assert_msg(memcmp(sr.buf + off, line, n) == 0, "line %d cut or mixed", i);
		off += n;
	}
	free(sr.buf);
	logq_ring_retire(r);
	logq_target_release(t);
	logq_writer_put();
	close(p[0]);
	close(p[1]);
}
END_TEST

START_TEST(a_line_cut_by_a_failed_write_is_finished_first_when_the_output_recovers)
{
	/* the file may grow only so far (RLIMIT_FSIZE: a write past it is cut,
	 * the next fails with EFBIG), then may grow again: the line the limit cut
	 * is finished before the next one, and the lines refused meanwhile are
	 * dropped whole */
	signal(SIGXFSZ, SIG_IGN);
	struct counters *reg = counters_new();
	counters_process = reg;
	ck_assert(logq_writer_get());
	char path[64];
	int fd = temp_file(path, sizeof path);
	struct logq_target *t = logq_target_new(fd, true, CTR_LOG_OUT_FILE, path);
	struct logq_ring *r = logq_ring_new(LOGQ_MIN_BYTES, NULL, NULL);
	char line[4096];
	size_t first = make_line(line, sizeof line, 11, 0);
	struct rlimit old, lim;
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = first + 10; /* line 0 whole, then 10 bytes of line 1 */
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	for (int i = 0; i < 3; i++) {
		size_t n = make_line(line, sizeof line, 11, i);
		ck_assert(logq_push(r, t, line, n));
	}
	struct logq_flush_result res;
	ck_assert(logq_flush_wait(5000, &res));
	ck_assert_uint_eq(res.failed_lines, 1); /* line 2: refused whole */
	ck_assert_int_eq(res.write_error, EFBIG);
	ck_assert_uint_eq(res.cut_lines, 1); /* line 1: its start is in the file */
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, (off_t)(first + 10));
	ck_assert_uint_eq(dropped(reg, CTR_LOG_OUT_FILE), 1);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	/* the output takes bytes again: the end of line 1, then line 3 */
	size_t n = make_line(line, sizeof line, 11, 3);
	ck_assert(logq_push(r, t, line, n));
	ck_assert(logq_flush_wait(5000, &res));
	ck_assert_uint_eq(res.failed_lines, 0);
	ck_assert_uint_eq(res.cut_lines, 0);
	size_t len;
	char *text = slurp(path, &len);
	size_t off = 0;
	for (int i = 0; i < 4; i++) {
		if (i == 2)
			continue;
		size_t m = make_line(line, sizeof line, 11, i);
		ck_assert_msg(off + m <= len && memcmp(text + off, line, m) == 0, "line %d not whole in its place", i);
		off += m;
	}
	ck_assert_uint_eq(off, len);
	free(text);
	logq_ring_retire(r);
	logq_target_release(t);
	logq_writer_put();
	unlink(path);
	counters_process = NULL;
	counters_free(reg);
}
END_TEST

/* Waits (at most 10 s: a lost wakeup fails) until the file holds bytes. */
static void wait_file_size(const char *path, size_t bytes)
{
	struct stat st;
	for (int i = 0; i < 10000; i++) {
		ck_assert_int_eq(stat(path, &st), 0);
		if ((size_t)st.st_size >= bytes)
			return;
		usleep(1000);
	}
	ck_abort_msg("%s has %lld of %zu bytes: a line was never written", path, (long long)st.st_size, bytes);
}

START_TEST(lines_are_written_without_a_flush_whether_the_writer_dozes_or_sleeps)
{
	/* no flush here: the writer must come back by itself, from a doze (it
	 * wrote a moment ago: a push does not wake it) or from its sleep (a
	 * push wakes it); pauses around LOGQ_BATCH_MS and the doze's end catch
	 * a line left waiting for a wakeup nobody sends */
	ck_assert(logq_writer_get());
	char path[64];
	int fd = temp_file(path, sizeof path);
	struct logq_target *t = logq_target_new(fd, true, CTR_LOG_OUT_FILE, path);
	struct logq_ring *r = logq_ring_new(LOGQ_MIN_BYTES, NULL, NULL);
	static const unsigned pauses_us[] = {0, 100, 2000, LOGQ_BATCH_MS * 1000, LOGQ_BATCH_MS * 1000 + 500,
	                                     LOGQ_DOZE_ROUNDS * LOGQ_BATCH_MS * 1000 - 3000,
	                                     LOGQ_DOZE_ROUNDS * LOGQ_BATCH_MS * 1000 + 20000};
	char line[4096];
	size_t total = 0;
	int i = 0;
	for (int round = 0; round < 3; round++) {
		for (size_t k = 0; k < sizeof pauses_us / sizeof pauses_us[0]; k++, i++) {
			size_t n = make_line(line, sizeof line, 12, i);
			ck_assert(logq_push(r, t, line, n));
			total += n;
			wait_file_size(path, total);
			usleep(pauses_us[k]);
		}
	}
	expect_lines_then_stop(path, 12, i, r, t);
}
END_TEST

static Suite *logq_suite(void)
{
	Suite *s = suite_create("log_queue");
	TCase *tc = tcase_create("log_queue");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, lines_in_order_and_whole_across_wraps);
	tcase_add_test(tc, a_full_ring_drops_whole_lines_without_waiting);
	tcase_add_test(tc, a_released_target_is_closed_after_its_lines);
	tcase_add_test(tc, a_successor_ring_waits_for_its_predecessor);
	tcase_add_test(tc, write_failures_are_counted_and_survived);
	tcase_add_test(tc, the_last_put_writes_everything_queued);
	tcase_add_test(tc, lines_are_written_without_a_flush_whether_the_writer_dozes_or_sleeps);
	tcase_add_test(tc, a_flush_waits_for_the_lines_queued_before_it_not_after);
	tcase_add_test(tc, a_flush_on_a_blocked_output_times_out_and_says_which);
	tcase_add_test(tc, a_line_cut_by_a_short_write_is_finished_before_the_next);
	tcase_add_test(tc, a_line_cut_by_a_failed_write_is_finished_first_when_the_output_recovers);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(logq_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
