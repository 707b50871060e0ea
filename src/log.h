/* log.h - sluice's own messages (not the access log): one JSON object a line
 * on stderr, e.g. {"time":"2026-11-27T10:00:00.123Z","level":"info","msg":"listening","address":"127.0.0.1:8080"}.
 *
 * A line is built on the caller's stack and written with one write(2), so
 * lines from different threads never interleave. Globals: the minimum
 * level, set once by main() before any thread starts; the sink and the
 * stderr switch (atomics, below).
 * Secrets must never be passed to these functions. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "json_str.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

struct log_line {
	char buf[2048];
	size_t len;
	int truncated;
	enum log_level level;
	uint64_t wall_us; /* the line's time */
};

void log_set_level(enum log_level min_level);
int log_enabled(enum log_level level);

void log_begin(struct log_line *l, enum log_level level, const char *msg);
void log_str(struct log_line *l, const char *key, const char *value);
void log_strn(struct log_line *l, const char *key, const char *value, size_t n);
void log_int(struct log_line *l, const char *key, long long value);
void log_end(struct log_line *l);

/* logrotate support. log_remember_files() notes, once at start on the main
 * thread before other threads exist, which of stdout and stderr are regular
 * files and their paths (globals used afterwards only on the main thread, by
 * log_reopen() and log_set_error_output()). log_reopen() opens those paths again for
 * appending, on the same descriptors (dup2), so a renamed file is left behind
 * and a fresh one takes the lines; it logs what it did. */
void log_remember_files(void);
void log_reopen(void);

/* Where the error log goes besides stderr (error_log in the config,
 * log_syslog.h): every finished line is also handed to sink (without its
 * newline), from whatever thread logged it; the sink must be thread-safe and
 * never block. NULL: none. The pointer is atomic and the sink is never freed
 * while the process runs, so a thread that read it may still call it. */
typedef void (*log_sink_fn)(enum log_level level, const char *line, size_t n, uint64_t wall_us);
void log_set_sink(log_sink_fn sink);
/* false: lines go to the sink only, not to stderr (error_log.path = "off"). */
void log_set_stderr(int on);

/* Opens a log file's path for appending (created 0640 if missing) without
 * ever blocking: a FIFO or a socket at the path is refused (a writer would
 * wait for a reader, or block when it stops reading), so is anything that is
 * not a regular file or a character device (/dev/null, a terminal). Returns
 * the descriptor (blocking, close-on-exec), or -1 with errno set and why
 * filled ("cannot open \"PATH\" for appending: ..."). Any thread. */
int log_open_append(const char *path, char *why, size_t why_size);

/* Point stderr (descriptor 2) at the error log's path, main thread only:
 * "stderr" (what the process started with), "stdout" (descriptor 1), or a
 * file opened for appending, which log_reopen() then reopens by name. The
 * change is a dup2, so lines written meanwhile by other threads go to one
 * file or the other, whole. Returns 0, or -1 with why filled. */
int log_set_error_output(const char *path, char *why, size_t why_size);

/* One-shot: a message with no fields. */
void log_msg(enum log_level level, const char *msg);

/* Append s[0..n) JSON-escaped (without quotes) to dst[*len..cap); stops at cap
 * without splitting an escape or a UTF-8 sequence. Returns 0, or -1 if it had
 * to truncate. The escaping is json_str.h's (valid UTF-8 kept as it is). */
static inline int log_json_escape(char *dst, size_t cap, size_t *len, const char *s, size_t n)
{
	return json_str_escape(dst, cap, len, s, n);
}

/* Format a wall-clock time (microseconds since the epoch) as RFC 3339 UTC with
 * milliseconds: "2026-11-27T10:00:00.123Z" (24 chars + NUL). Keeps the last
 * second it formatted in a thread-local cache (the one per-thread state
 * here): the calendar is worked out once a second per thread. */
void log_format_time(uint64_t wall_us, char out[32]);

#endif
