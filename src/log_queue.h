/* log_queue.h - whole log lines from the workers to a descriptor (a file,
 * stdout, stderr) without a worker ever waiting on it: the access log's
 * file and stdout outputs (modules/accesslog.c).
 *
 * Each worker owns a ring: a single-producer single-consumer queue of whole
 * lines (bytes, bounded; lines stay in the worker's order). A push copies the
 * line in and never blocks, allocates or makes a system call, except one
 * write to an eventfd when the writer sleeps (no line came for
 * LOGQ_DOZE_ROUNDS x LOGQ_BATCH_MS) or when the ring passes half full while
 * the writer dozes (it reads the rings every LOGQ_BATCH_MS while lines
 * come): so traffic costs the workers no wakeup per line, and the writer at
 * most one round each LOGQ_BATCH_MS; a line that does not fit whole
 * is dropped (never a part of one), counted in the worker's counters
 * (sluice_access_log_dropped_total{output}) and logged at most once a second.
 *
 * One writer thread per process drains every ring with writev(2): batches of
 * consecutive lines for the same target, at most PIPE_BUF bytes at a time on a
 * pipe, socket or terminal (so lines stay whole beside other writers, e.g. the
 * error log on the same pipe). The writer alone may wait on an output (a pipe
 * nobody reads, a slow disk); the workers' rings fill and drop meanwhile. A
 * failed write (ENOSPC, EIO, EPIPE) drops the batch's lines, counted and
 * logged at most once a second; the rest of a line cut by a failing write is
 * kept and written first when the output takes bytes again, so a file never
 * keeps a partial line.
 *
 * Ownership and threads:
 *  - a target (a descriptor, owned or not) is made and released by the main
 *    thread (the access log makes one per snapshot). Lines in rings point at
 *    it without a reference: logq_target_release hands it to the writer,
 *    which closes and frees it only after it has written every line queued
 *    before the release (the snapshot's last request pushed its line before
 *    the snapshot was released). So nothing is written to a closed or reused
 *    descriptor. Reopening (SIGUSR1) dup3()s a new file onto logq_target_fd.
 *  - the writer is process-wide state (the one global here, behind a mutex
 *    for its lists): logq_writer_get/put count its users (the access log's
 *    worker_init/worker_free, main thread); the thread starts with the first
 *    ring; the last put writes what is queued (waiting at most
 *    LOGQ_STOP_WAIT_MS for a blocked output, then gives up, logged) and stops.
 *  - a ring is made and used by one producer thread (logq_ring_new may run on
 *    it) and freed by the writer once retired and drained. A ring made with a
 *    predecessor (a reload changed the queue size) is not read until the
 *    predecessor is retired and empty: the worker's lines stay in order. */
#ifndef SLUICE_LOG_QUEUE_H
#define SLUICE_LOG_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ctr_worker;

#define LOGQ_DEFAULT_BYTES ((size_t)1 << 20)
#define LOGQ_MIN_BYTES ((size_t)64 << 10)
#define LOGQ_MAX_BYTES ((size_t)1 << 30)
#define LOGQ_STOP_WAIT_MS 5000
#define LOGQ_FLUSH_WAIT_MS 1000
/* How long a line may wait in a ring while the writer gathers more after
 * a write (log_queue.c, LOGQ_DOZING): the bound on a line's delay beyond
 * writing what is ahead of it. */
#define LOGQ_BATCH_MS 10
/* Rounds of LOGQ_BATCH_MS that find nothing before the writer sleeps
 * until a push wakes it (100 ms without a line). */
#define LOGQ_DOZE_ROUNDS 10
/* `sluice ctl flush-logs [TIMEOUT_MS]`: the default and longest wait (the
 * admin socket's main thread waits that long at most) */
#define LOGQ_FLUSH_ADMIN_MS 2000
#define LOGQ_FLUSH_ADMIN_MAX_MS 5000

struct logq_target;
struct logq_ring;

/* A target writing to fd (closed by the writer at the end when owned).
 * output: the counter label of its drops (enum ctr_log_output); name: shown
 * in log lines (copied). NULL when out of memory (fd is not closed). Main
 * thread. */
struct logq_target *logq_target_new(int fd, bool owned, unsigned output, const char *name);
int logq_target_fd(const struct logq_target *t);
unsigned logq_target_output(const struct logq_target *t);
/* No new line will name t: the writer frees it (and closes an owned fd) once
 * the lines queued for it are written; at once when no writer runs. Main
 * thread. NULL: nothing. */
void logq_target_release(struct logq_target *t);

/* A user of the writer (main thread): false when it cannot be set up (logged). */
bool logq_writer_get(void);
/* Drops a use; the last writes everything queued and stops the thread. */
void logq_writer_put(void);
/* What a flush found (logq_flush_wait). */
struct logq_flush_result {
	bool done;              /* every line queued before the call went to its output (or failed, below) */
	uint64_t queued_bytes;  /* in the rings when the flush began */
	uint64_t pending_bytes; /* still in the rings when it returned (0 when done) */
	uint64_t failed_lines;  /* lines a failing write dropped while it waited (counted as drops) */
	int write_error;        /* the errno of the last failed write, 0: none */
	uint64_t cut_lines;     /* lines a failed write cut, whose end waits for the output to take bytes */
	uint64_t waited_us;
	/* not done: the output the writer was stuck writing to ("" when none)
	 * and for how long; its name is the target's (a path, "stdout") */
	char blocked_output[16];
	char blocked_name[256];
	uint64_t blocked_ms;
};
/* Waits until every line queued before the call (by any ring) is written
 * to its output, then until every access-log syslog sender (log_syslog.h,
 * logsys_track) has handed to its socket what it held, or timeout_ms
 * passed (a blocked output: a pipe nobody reads, a stalled disk or
 * collector); res (may be NULL) says which and what is left ("syslog" and
 * the collector's URL for a sender). Returns res->done. Main thread (the
 * admin's flush-logs). */
bool logq_flush_wait(unsigned timeout_ms, struct logq_flush_result *res);
/* The rings' part of logq_flush_wait, at most LOGQ_FLUSH_WAIT_MS: reopening
 * a file for logrotate puts the lines logged before it into the old file.
 * Main thread. */
void logq_flush(void);

/* A ring of about bytes (rounded up to a power of two, at least
 * LOGQ_MIN_BYTES) whose producer counts its drops in cw (may be NULL), read
 * only after prev (NULL: none; the caller retires prev right after). Needs a
 * writer user (logq_writer_get). NULL when out of memory or the writer thread
 * cannot start (logged). The producer's thread, or before it runs. */
struct logq_ring *logq_ring_new(size_t bytes, struct ctr_worker *cw, struct logq_ring *prev);
/* The producer is done with r (it pushes no more): the writer frees it once drained. */
void logq_ring_retire(struct logq_ring *r);
size_t logq_ring_capacity(const struct logq_ring *r);
/* The capacity logq_ring_new(bytes, ...) gives (a reload compares it). */
size_t logq_ring_size(size_t bytes);
/* Lines this ring dropped because they did not fit. */
uint64_t logq_ring_dropped(const struct logq_ring *r);

/* Queue line[0..n) (one whole line, its newline included) for t. False: it
 * did not fit and was dropped (counted). Producer only. */
bool logq_push(struct logq_ring *r, struct logq_target *t, const char *line, size_t n);

#endif
