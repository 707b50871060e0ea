#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

/* Written once by main() before threads start; read-only afterwards. */
static enum log_level log_min_level = LOG_INFO;

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

/* The error log's other outputs (log.h): set by the main thread, read by any. */
static _Atomic(log_sink_fn) log_sink;
static atomic_int log_stderr_on = 1;

void log_set_sink(log_sink_fn sink)
{
	atomic_store(&log_sink, sink);
}

void log_set_stderr(int on)
{
	atomic_store(&log_stderr_on, on);
}

void log_set_level(enum log_level min_level)
{
	log_min_level = min_level;
}

int log_enabled(enum log_level level)
{
	return level >= log_min_level;
}

/* The formatted second of the last time this thread formatted: every log
 * line and access-log line formats one, and gmtime_r + snprintf cost more
 * than the rest of an access-log line (callgrind). Per thread, so no lock. */
static _Thread_local struct {
	int64_t sec;
	size_t len;
	char text[27]; /* "YYYY-MM-DDTHH:MM:SS", cut to leave room for ".mmmZ" in 31 */
} log_time_cache = {.sec = INT64_MIN};

void log_format_time(uint64_t wall_us, char out[32])
{
	int64_t secs = (int64_t)(wall_us / 1000000);
	if (secs != log_time_cache.sec) {
		time_t t = (time_t)secs;
		struct tm tm;
		if (!gmtime_r(&t, &tm))
			memset(&tm, 0, sizeof(tm));
		/* sized for any int the compiler can imagine in struct tm, then cut */
		char tmp[96];
		int n = snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
		                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
		size_t len = n < 0 ? 0 : (size_t)n < sizeof log_time_cache.text ? (size_t)n : sizeof log_time_cache.text - 1;
		memcpy(log_time_cache.text, tmp, len);
		log_time_cache.len = len;
		log_time_cache.sec = secs;
	}
	size_t len = log_time_cache.len;
	unsigned ms = (unsigned)((wall_us / 1000) % 1000);
	memcpy(out, log_time_cache.text, len);
	out[len] = '.';
	out[len + 1] = (char)('0' + ms / 100);
	out[len + 2] = (char)('0' + ms / 10 % 10);
	out[len + 3] = (char)('0' + ms % 10);
	out[len + 4] = 'Z';
	out[len + 5] = '\0';
}

static void log_raw(struct log_line *l, const char *s, size_t n)
{
	/* keep 3 bytes for the closing "}\n" */
	if (l->len + n + 3 > sizeof(l->buf)) {
		l->truncated = 1;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void log_key(struct log_line *l, const char *key)
{
	log_raw(l, ",\"", 2);
	log_raw(l, key, strlen(key));
	log_raw(l, "\":", 2);
}

void log_strn(struct log_line *l, const char *key, const char *value, size_t n)
{
	log_key(l, key);
	log_raw(l, "\"", 1);
	size_t len = l->len;
	if (log_json_escape(l->buf, sizeof(l->buf) - 4, &len, value, n) < 0)
		l->truncated = 1;
	l->len = len;
	log_raw(l, "\"", 1);
}

void log_str(struct log_line *l, const char *key, const char *value)
{
	log_strn(l, key, value ? value : "", value ? strlen(value) : 0);
}

void log_int(struct log_line *l, const char *key, long long value)
{
	char num[32];
	int n = snprintf(num, sizeof(num), "%lld", value);
	log_key(l, key);
	log_raw(l, num, (size_t)n);
}

void log_begin(struct log_line *l, enum log_level level, const char *msg)
{
	char ts[32];
	l->len = 0;
	l->truncated = 0;
	l->level = level;
	l->wall_us = clock_wall_us();
	log_format_time(l->wall_us, ts);
	log_raw(l, "{\"time\":\"", 9);
	log_raw(l, ts, strlen(ts));
	log_raw(l, "\",\"level\":\"", 11);
	log_raw(l, log_level_names[level], strlen(log_level_names[level]));
	log_raw(l, "\"", 1);
	log_str(l, "msg", msg);
}

void log_end(struct log_line *l)
{
	if (l->truncated) {
		/* the buffer always keeps room for this marker and the closing brace */
		static const char mark[] = ",\"truncated\":true";
		if (l->len + sizeof(mark) + 2 <= sizeof(l->buf)) {
			memcpy(l->buf + l->len, mark, sizeof(mark) - 1);
			l->len += sizeof(mark) - 1;
		}
	}
	l->buf[l->len++] = '}';
	l->buf[l->len++] = '\n';
	if (atomic_load_explicit(&log_stderr_on, memory_order_relaxed)) {
		/* a failed write to stderr has nowhere to be reported */
		ssize_t w = write(STDERR_FILENO, l->buf, l->len);
		(void)w;
	}
	log_sink_fn sink = atomic_load_explicit(&log_sink, memory_order_acquire);
	if (sink)
		sink(l->level, l->buf, l->len - 1, l->wall_us);
}

void log_msg(enum log_level level, const char *msg)
{
	if (!log_enabled(level))
		return;
	struct log_line l;
	log_begin(&l, level, msg);
	log_end(&l);
}

/* stdout and stderr's paths when they are regular files ("" if not): written
 * by log_remember_files() before threads start, then only on the main thread
 * (log_set_error_output, log_reopen). */
static char log_std_paths[2][PATH_MAX];
/* what stderr was at start, once log_set_error_output moved it: a duplicate
 * and its path (main thread) */
static int log_orig_stderr = -1;
static char log_orig_stderr_path[PATH_MAX];

void log_remember_files(void)
{
	for (int i = 0; i < 2; i++) {
		int fd = i + 1;
		struct stat st;
		char link[64];
		log_std_paths[i][0] = '\0';
		if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, log_std_paths[i], sizeof(log_std_paths[i]) - 1);
		/* not absolute (a memfd, say) or already unlinked: nothing to reopen by name */
		if (n <= 0 || log_std_paths[i][0] != '/' || (size_t)n >= sizeof(log_std_paths[i]) - 1 ||
		    (n > 10 && memcmp(log_std_paths[i] + n - 10, " (deleted)", 10) == 0))
			n = 0;
		log_std_paths[i][n] = '\0';
	}
}

int log_open_append(const char *path, char *why, size_t why_size)
{
	static const char fix[] = "a log path must be a regular file or a character device such as /dev/null; to "
	                          "feed a program write \"stdout\" and pipe sluice's output, or use syslog";
	/* O_NONBLOCK: opening a FIFO for writing with no reader would wait for one */
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0640);
	if (fd < 0) {
		int err = errno;
		if (err == ENXIO)
			snprintf(why, why_size, "cannot open \"%s\" for appending: it is a FIFO (%s)", path, fix);
		else
			snprintf(why, why_size, "cannot open \"%s\" for appending: %s", path, strerror(err));
		errno = err;
		return -1;
	}
	struct stat st;
	const char *kind = NULL;
	if (fstat(fd, &st) != 0)
		kind = "something fstat cannot read";
	else if (S_ISFIFO(st.st_mode))
		kind = "a FIFO";
	else if (S_ISSOCK(st.st_mode))
		kind = "a socket";
	else if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode))
		kind = "neither a file nor a device";
	int flags = kind ? 0 : fcntl(fd, F_GETFL);
	if (!kind && (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0))
		kind = "a file whose flags cannot be set";
	if (kind) {
		snprintf(why, why_size, "cannot open \"%s\" for appending: it is %s (%s)", path, kind, fix);
		close(fd);
		errno = EINVAL;
		return -1;
	}
	return fd;
}

void log_reopen(void)
{
	static const char *const names[] = {"stdout", "stderr"};
	for (int i = 0; i < 2; i++) {
		if (!log_std_paths[i][0])
			continue;
		char why[PATH_MAX + 300];
		int fd = log_open_append(log_std_paths[i], why, sizeof why);
		int err = errno;
		/* dup2 replaces the descriptor atomically: a concurrent write goes to one file or the other */
		if (fd >= 0 && dup2(fd, i + 1) < 0)
			err = errno;
		else if (fd >= 0)
			err = 0;
		if (fd >= 0)
			close(fd);
		struct log_line l;
		log_begin(&l, err ? LOG_ERROR : LOG_INFO, err ? "cannot reopen a log file; still writing to the old one"
		                                              : "log file reopened");
		log_str(&l, "stream", names[i]);
		log_str(&l, "file", log_std_paths[i]);
		if (err)
			log_str(&l, "error", strerror(err));
		log_end(&l);
	}
}

int log_set_error_output(const char *path, char *why, size_t why_size)
{
	if (log_orig_stderr < 0) {
		log_orig_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
		if (log_orig_stderr < 0) {
			snprintf(why, why_size, "cannot keep the original stderr: %s", strerror(errno));
			return -1;
		}
		memcpy(log_orig_stderr_path, log_std_paths[1], sizeof log_orig_stderr_path);
	}
	int fd;
	const char *name;
	if (strcmp(path, "stderr") == 0) {
		fd = log_orig_stderr;
		name = log_orig_stderr_path;
	} else if (strcmp(path, "stdout") == 0) {
		fd = STDOUT_FILENO;
		name = log_std_paths[0];
	} else {
		fd = log_open_append(path, why, why_size);
		if (fd < 0)
			return -1;
		name = path;
	}
	int err = dup2(fd, STDERR_FILENO) < 0 ? errno : 0;
	if (fd != log_orig_stderr && fd != STDOUT_FILENO)
		close(fd);
	if (err) {
		snprintf(why, why_size, "cannot redirect stderr: %s", strerror(err));
		return -1;
	}
	if (name != log_std_paths[1])
		snprintf(log_std_paths[1], sizeof log_std_paths[1], "%s", name);
	return 0;
}
