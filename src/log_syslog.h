/* log_syslog.h - log lines to a syslog collector: RFC 5424 messages over UDP,
 * TCP (RFC 6587 octet-counted framing) or a Unix socket (datagram, as
 * /dev/log is, or stream), from one thread's event loop.
 *
 * Never blocks its thread: the socket is non-blocking; messages the socket
 * cannot take now (a stream's, or datagrams refused with EAGAIN, as a full
 * /dev/log does) wait in order, at most LOGSYS_MAX_QUEUE bytes of them
 * (logsys_set_max_queue changes it), and
 * a message that does not fit whole, or that a datagram socket rejects
 * otherwise, is dropped and counted (logsys_dropped). A message is queued whole or not at all, so the
 * collector never gets a partial line; a lost connection is reopened after
 * LOGSYS_RETRY_MS (what was queued on it is dropped and counted).
 *
 * Ownership: one struct logsys per thread, used only on the thread whose
 * event_base it was made with. */
#ifndef SLUICE_LOG_SYSLOG_H
#define SLUICE_LOG_SYSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>

#define LOGSYS_MAX_QUEUE (1u << 20)
#define LOGSYS_RETRY_MS 1000

enum logsys_transport { LOGSYS_UDP, LOGSYS_TCP, LOGSYS_UNIX };

struct logsys_target {
	enum logsys_transport transport;
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

/* "udp://HOST:PORT", "tcp://HOST:PORT" or "unix:///PATH". False with why
 * filled (what is wrong and the forms accepted). */
bool logsys_parse(const char *url, struct logsys_target *t, char *why, size_t why_size);
/* "local0".."local7", "user", "daemon": the facility number, or -1. */
int logsys_facility(const char *name);

struct logsys;
/* app: the APP-NAME field (e.g. "sluice"). NULL when out of memory. */
struct logsys *logsys_new(struct event_base *base, const struct logsys_target *t, int facility, const char *app);
void logsys_free(struct logsys *s);

/* Send msg[0..n) (one line, without its newline) at severity (RFC 5424: 6
 * informational, 4 warning, 3 error) stamped wall_us. */
void logsys_send(struct logsys *s, int severity, const char *msg, size_t n, uint64_t wall_us);
uint64_t logsys_dropped(const struct logsys *s);
/* The most bytes s may queue from now on (a smaller size drops nothing
 * already queued). */
void logsys_set_max_queue(struct logsys *s, size_t bytes);

/* A flush (logsys_flush_wait, from another thread) waits for s: what s
 * queues is counted as it leaves the queue (handed to the socket, or
 * dropped). name (copied): shown when a flush times out. False when out of
 * memory (s works untracked). The owner's thread; logsys_free untracks. */
bool logsys_track(struct logsys *s, const char *name);
/* Waits until every tracked sender has handed to its socket (or dropped)
 * what it held when the call began, or timeout_ms passed, polling every
 * millisecond; *pending: the bytes still held, name: one sender still
 * holding some. One caller at a time (the main thread). */
bool logsys_flush_wait(unsigned timeout_ms, uint64_t *pending, char *name, size_t name_size);

/* ---- the error/event log (log.h) to syslog: error_log in the config ----
 * Lines come from every thread: each is copied, under a short lock and
 * without I/O, into one bounded queue (LOGSYS_ERRLOG_QUEUE bytes; a line
 * that does not fit is dropped whole and counted) and an eventfd wakes the
 * main thread, which sends them with a logsys on its loop. Drops (the
 * queue's and the collector's) are counted in sluice_error_log_dropped_total.
 * Main thread only: */
#define LOGSYS_ERRLOG_QUEUE (256u << 10)
struct conf_error_log;
/* Applies e (path: log_set_error_output; syslog: the sender above, made or
 * retargeted on the main loop base). At start and after every reload.
 * Returns 0, or -1 with why filled (the previous outputs stay). */
int logsys_errlog_apply(const struct conf_error_log *e, struct event_base *base, char *why, size_t why_size);
/* Sends what is queued and stops (before the main base is freed). */
void logsys_errlog_stop(void);

#endif
