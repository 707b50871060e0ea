/* log_syslog.c - RFC 5424 to a syslog collector (log_syslog.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "log_syslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "clock.h"
#include "conf.h"
#include "counters.h"
#include "log.h"

struct logsys {
	struct event_base *base;
	struct logsys_target t;
	int facility;
	char app[49];      /* RFC 5424 APP-NAME: at most 48 printable characters */
	char host[256];    /* HOSTNAME */
	int fd;            /* -1: not open */
	bool connecting;   /* a stream's non-blocking connect in progress */
	struct event *io;  /* writable: a stream's frames, or datagrams the socket refused for now */
	struct event *retry;
	/* what is not sent yet: a stream's whole frames; for datagrams, each as a
	 * 4-byte length then its bytes (a Unix datagram socket such as /dev/log
	 * refuses with EAGAIN while the collector's queue, 10 datagrams by
	 * default, is full: those wait here instead of being dropped) */
	struct evbuffer *queue;
	size_t max_queue; /* bytes queue may hold (LOGSYS_MAX_QUEUE unless set) */
	uint64_t dropped;
	/* logsys_track: bytes into and out of the queue (sent or dropped),
	 * read by a flush on another thread; the rest under logsys_tracked_lock */
	_Atomic uint64_t in_total, out_total;
	bool tracked;
	struct logsys *tnext, *tprev;
	char *name;
	uint64_t mark, mark_gen; /* in_total when flush mark_gen began */
};

/* The tracked senders (logsys_track) and the last flush's number. */
static pthread_mutex_t logsys_tracked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct logsys *logsys_tracked;
static uint64_t logsys_flush_gen;

bool logsys_parse(const char *url, struct logsys_target *t, char *why, size_t why_size)
{
	memset(t, 0, sizeof(*t));
	const char *forms = "write \"udp://127.0.0.1:514\", \"tcp://127.0.0.1:601\" or \"unix:///dev/log\"";
	if (strncmp(url, "unix://", 7) == 0) {
		const char *path = url + 7;
		struct sockaddr_un *un = (struct sockaddr_un *)&t->addr;
		if (path[0] != '/' || strlen(path) >= sizeof(un->sun_path)) {
			snprintf(why, why_size, "\"%s\": a unix socket needs an absolute path of at most %zu bytes (%s)", url,
			         sizeof(un->sun_path) - 1, forms);
			return false;
		}
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, path, strlen(path) + 1);
		t->addr_len = (socklen_t)sizeof(*un);
		t->transport = LOGSYS_UNIX;
		return true;
	}
	bool udp = strncmp(url, "udp://", 6) == 0, tcp = strncmp(url, "tcp://", 6) == 0;
	if (!udp && !tcp) {
		snprintf(why, why_size, "\"%s\": unknown syslog address (%s)", url, forms);
		return false;
	}
	char w[160];
	if (!conf_parse_address_why(url + 6, &t->addr, &t->addr_len, w, sizeof w)) {
		snprintf(why, why_size, "\"%s\": %s (%s)", url, w, forms);
		return false;
	}
	t->transport = udp ? LOGSYS_UDP : LOGSYS_TCP;
	return true;
}

int logsys_facility(const char *name)
{
	if (strcmp(name, "user") == 0)
		return 1;
	if (strcmp(name, "daemon") == 0)
		return 3;
	if (strncmp(name, "local", 5) == 0 && name[5] >= '0' && name[5] <= '7' && name[6] == '\0')
		return 16 + (name[5] - '0');
	return -1;
}

static void logsys_close(struct logsys *s)
{
	if (s->io) {
		event_free(s->io);
		s->io = NULL;
	}
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->connecting = false;
	size_t lost = evbuffer_get_length(s->queue);
	if (lost && s->t.transport != LOGSYS_TCP) {
		/* datagrams that waited for room: each one is a line lost */
		uint32_t len;
		while (evbuffer_copyout(s->queue, &len, sizeof len) == (ev_ssize_t)sizeof len) {
			s->dropped++;
			evbuffer_drain(s->queue, sizeof len + len);
		}
	} else if (lost) {
		/* frames cut by the lost connection: the collector drops a partial one */
		s->dropped++;
	}
	evbuffer_drain(s->queue, evbuffer_get_length(s->queue));
}

static void logsys_retry_later(struct logsys *s)
{
	logsys_close(s);
	struct timeval tv = { LOGSYS_RETRY_MS / 1000, (LOGSYS_RETRY_MS % 1000) * 1000 };
	event_add(s->retry, &tv);
}

static void logsys_flush(struct logsys *s);

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct logsys *s = arg;
	if (s->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
			logsys_retry_later(s);
			return;
		}
		s->connecting = false;
	}
	logsys_flush(s);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg; /* the next message opens the socket again */
}

static bool logsys_open(struct logsys *s)
{
	if (s->fd >= 0)
		return true;
	if (evtimer_pending(s->retry, NULL))
		return false;
	int type = s->t.transport == LOGSYS_TCP ? SOCK_STREAM : SOCK_DGRAM;
	int fd = socket(s->t.addr.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 && s->t.transport == LOGSYS_UNIX && errno == EPROTOTYPE)
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto later;
	if (connect(fd, (const struct sockaddr *)&s->t.addr, s->t.addr_len) != 0) {
		if (errno == EPROTOTYPE && s->t.transport == LOGSYS_UNIX) {
			/* a stream socket at that path (rsyslog's imuxsock is datagram, others are not) */
			close(fd);
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fd < 0 || connect(fd, (const struct sockaddr *)&s->t.addr, s->t.addr_len) != 0) {
				if (fd >= 0)
					close(fd);
				goto later;
			}
			s->t.transport = LOGSYS_TCP; /* framed as a stream from now on */
		} else if (errno == EINPROGRESS) {
			s->connecting = true;
		} else {
			close(fd);
			goto later;
		}
	}
	s->fd = fd;
	s->io = event_new(s->base, fd, EV_WRITE, io_cb, s);
	if (!s->io) {
		logsys_close(s);
		goto later;
	}
	if (s->connecting)
		event_add(s->io, NULL);
	return true;
later:;
	struct timeval tv = { LOGSYS_RETRY_MS / 1000, (LOGSYS_RETRY_MS % 1000) * 1000 };
	event_add(s->retry, &tv);
	return false;
}

/* Sends queued datagrams in order until the socket refuses one. */
static void logsys_flush_datagrams(struct logsys *s)
{
	uint32_t len;
	while (s->fd >= 0 && evbuffer_copyout(s->queue, &len, sizeof len) == (ev_ssize_t)sizeof len) {
		const unsigned char *p = evbuffer_pullup(s->queue, (ev_ssize_t)(sizeof len + len));
		if (!p) {
			logsys_retry_later(s);
			return;
		}
		if (send(s->fd, p + sizeof len, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				if (!event_pending(s->io, EV_WRITE, NULL))
					event_add(s->io, NULL);
				return;
			}
			s->dropped++;
			evbuffer_drain(s->queue, sizeof len + len);
			if (errno != ENOBUFS) {
				logsys_retry_later(s); /* e.g. ECONNREFUSED, the collector restarted */
				return;
			}
			continue;
		}
		evbuffer_drain(s->queue, sizeof len + len);
	}
}

static void logsys_flush(struct logsys *s)
{
	if (s->t.transport != LOGSYS_TCP) {
		logsys_flush_datagrams(s);
		return;
	}
	while (s->fd >= 0 && !s->connecting && evbuffer_get_length(s->queue) > 0) {
		int n = evbuffer_write(s->queue, s->fd);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			break;
		if (n <= 0) {
			logsys_retry_later(s);
			return;
		}
	}
	if (s->fd >= 0 && s->io && evbuffer_get_length(s->queue) > 0 && !event_pending(s->io, EV_WRITE, NULL))
		event_add(s->io, NULL);
}

struct logsys *logsys_new(struct event_base *base, const struct logsys_target *t, int facility, const char *app)
{
	struct logsys *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->base = base;
	s->t = *t;
	s->facility = facility;
	s->fd = -1;
	s->max_queue = LOGSYS_MAX_QUEUE;
	snprintf(s->app, sizeof s->app, "%s", app && *app ? app : "sluice");
	for (char *p = s->app; *p; p++)
		if (*p <= ' ' || *p >= 0x7f)
			*p = '_';
	if (gethostname(s->host, sizeof s->host - 1) != 0 || !s->host[0])
		strcpy(s->host, "-");
	for (char *p = s->host; *p; p++)
		if (*p <= ' ' || *p >= 0x7f)
			*p = '_';
	s->queue = evbuffer_new();
	s->retry = evtimer_new(base, retry_cb, s);
	if (!s->queue || !s->retry) {
		logsys_free(s);
		return NULL;
	}
	return s;
}

void logsys_free(struct logsys *s)
{
	if (!s)
		return;
	if (s->tracked) {
		/* a flush stops waiting for it: what it still holds is dropped (counted) below */
		pthread_mutex_lock(&logsys_tracked_lock);
		if (s->tprev)
			s->tprev->tnext = s->tnext;
		else
			logsys_tracked = s->tnext;
		if (s->tnext)
			s->tnext->tprev = s->tprev;
		pthread_mutex_unlock(&logsys_tracked_lock);
		free(s->name);
	}
	if (s->queue)
		logsys_close(s);
	if (s->retry)
		event_free(s->retry);
	if (s->queue)
		evbuffer_free(s->queue);
	free(s);
}

static void logsys_queue_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
	(void)b;
	struct logsys *s = arg;
	if (info->n_added)
		atomic_fetch_add_explicit(&s->in_total, info->n_added, memory_order_relaxed);
	if (info->n_deleted)
		atomic_fetch_add_explicit(&s->out_total, info->n_deleted, memory_order_release);
}

void logsys_set_max_queue(struct logsys *s, size_t bytes)
{
	s->max_queue = bytes;
}

bool logsys_track(struct logsys *s, const char *name)
{
	s->name = strdup(name ? name : "");
	if (!s->name || !evbuffer_add_cb(s->queue, logsys_queue_cb, s)) {
		free(s->name);
		s->name = NULL;
		return false;
	}
	atomic_init(&s->in_total, evbuffer_get_length(s->queue));
	atomic_init(&s->out_total, 0);
	pthread_mutex_lock(&logsys_tracked_lock);
	s->tracked = true;
	s->tnext = logsys_tracked;
	if (logsys_tracked)
		logsys_tracked->tprev = s;
	logsys_tracked = s;
	pthread_mutex_unlock(&logsys_tracked_lock);
	return true;
}

/* Bytes that tracked senders held at flush gen's start and still hold;
 * name: one of them (may be NULL). */
static uint64_t logsys_left(uint64_t gen, char *name, size_t name_size)
{
	uint64_t left = 0;
	pthread_mutex_lock(&logsys_tracked_lock);
	for (struct logsys *s = logsys_tracked; s; s = s->tnext) {
		uint64_t out = atomic_load_explicit(&s->out_total, memory_order_acquire);
		if (s->mark_gen != gen || out >= s->mark)
			continue;
		if (!left && name)
			snprintf(name, name_size, "%s", s->name);
		left += s->mark - out;
	}
	pthread_mutex_unlock(&logsys_tracked_lock);
	return left;
}

bool logsys_flush_wait(unsigned timeout_ms, uint64_t *pending, char *name, size_t name_size)
{
	uint64_t until = clock_mono_us() + (uint64_t)timeout_ms * 1000u;
	pthread_mutex_lock(&logsys_tracked_lock);
	uint64_t gen = ++logsys_flush_gen;
	for (struct logsys *s = logsys_tracked; s; s = s->tnext) {
		s->mark = atomic_load_explicit(&s->in_total, memory_order_relaxed);
		s->mark_gen = gen;
	}
	pthread_mutex_unlock(&logsys_tracked_lock);
	/* the senders make progress on their own loops: look every millisecond */
	for (;;) {
		uint64_t left = logsys_left(gen, name, name_size);
		if (!left || clock_mono_us() >= until) {
			*pending = left;
			return left == 0;
		}
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
}

uint64_t logsys_dropped(const struct logsys *s)
{
	return s ? s->dropped : 0;
}

void logsys_send(struct logsys *s, int severity, const char *msg, size_t n, uint64_t wall_us)
{
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		n--;
	/* <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG */
	char head[400];
	time_t sec = (time_t)(wall_us / 1000000u);
	struct tm tm;
	gmtime_r(&sec, &tm);
	int hn = snprintf(head, sizeof head, "<%d>1 %04d-%02d-%02dT%02d:%02d:%02d.%06uZ %s %s %ld - - ",
	                  s->facility * 8 + severity, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                  tm.tm_sec, (unsigned)(wall_us % 1000000u), s->host, s->app, (long)getpid());
	if (hn < 0 || (size_t)hn >= sizeof head || !logsys_open(s)) {
		s->dropped++;
		return;
	}
	if (s->t.transport != LOGSYS_TCP) {
		if (evbuffer_get_length(s->queue) == 0) {
			struct iovec iov[2] = { { head, (size_t)hn }, { (void *)msg, n } };
			struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
			if (sendmsg(s->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
				return;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				s->dropped++;
				if (errno != ENOBUFS)
					logsys_close(s); /* e.g. ECONNREFUSED, the collector restarted: reopen later */
				return;
			}
		}
		/* the socket is full (or others wait already): wait in order, bounded */
		uint32_t len = (uint32_t)((size_t)hn + n);
		if (evbuffer_get_length(s->queue) + sizeof len + len > s->max_queue ||
		    evbuffer_add(s->queue, &len, sizeof len) != 0) {
			s->dropped++;
			return;
		}
		if (evbuffer_add(s->queue, head, (size_t)hn) != 0 || evbuffer_add(s->queue, msg, n) != 0) {
			logsys_retry_later(s); /* half a record in the queue: start over, counted */
			return;
		}
		logsys_flush_datagrams(s);
		return;
	}
	size_t frame = (size_t)hn + n;
	if (evbuffer_get_length(s->queue) + frame + 12 > s->max_queue) {
		s->dropped++;
		return;
	}
	evbuffer_add_printf(s->queue, "%zu ", frame);
	evbuffer_add(s->queue, head, (size_t)hn);
	evbuffer_add(s->queue, msg, n);
	logsys_flush(s);
}

/* ---- the error log's syslog output (log_syslog.h) ---- */

/* a queued line: this header, then its bytes */
struct errlog_rec {
	uint64_t wall_us;
	uint32_t n;
	uint8_t level;
};

/* The one error-log sender of the process (log_syslog.h): the queue under
 * lock is written by any thread; the rest belongs to the main thread. */
static struct {
	pthread_mutex_t lock;
	bool active;
	char *pending; /* records waiting, ERRLOG_QUEUE bytes */
	size_t len;
	uint64_t dropped; /* lines that did not fit */
	int efd;          /* eventfd: the queue became non-empty */
	/* main thread */
	char *draining;
	struct event *ev;
	struct event *tick; /* a collector's drops happen after the send: counted each second */
	struct logsys *sys;
	char *url;
	int facility;
	char *app;
	uint64_t counted_queue, counted_sys;
	bool redirected; /* stderr was moved by error_log.path */
} errlog = {.lock = PTHREAD_MUTEX_INITIALIZER, .efd = -1};

static void errlog_sink(enum log_level level, const char *line, size_t n, uint64_t wall_us)
{
	pthread_mutex_lock(&errlog.lock);
	if (errlog.active) {
		struct errlog_rec h = {.wall_us = wall_us, .n = (uint32_t)n, .level = (uint8_t)level};
		if (errlog.len + sizeof h + n > LOGSYS_ERRLOG_QUEUE) {
			errlog.dropped++;
		} else {
			bool wake = errlog.len == 0;
			memcpy(errlog.pending + errlog.len, &h, sizeof h);
			memcpy(errlog.pending + errlog.len + sizeof h, line, n);
			errlog.len += sizeof h + n;
			if (wake) {
				/* under the lock: logsys_errlog_stop closes it under the lock too */
				uint64_t one = 1;
				ssize_t w = write(errlog.efd, &one, sizeof one);
				(void)w;
			}
		}
	}
	pthread_mutex_unlock(&errlog.lock);
}

static int errlog_severity(uint8_t level)
{
	switch (level) {
	case LOG_DEBUG:
		return 7;
	case LOG_INFO:
		return 6;
	case LOG_WARN:
		return 4;
	default:
		return 3;
	}
}

static void errlog_drain(void)
{
	pthread_mutex_lock(&errlog.lock);
	char *batch = errlog.pending;
	size_t len = errlog.len;
	errlog.pending = errlog.draining;
	errlog.draining = batch;
	errlog.len = 0;
	uint64_t dropped = errlog.dropped;
	pthread_mutex_unlock(&errlog.lock);
	for (size_t off = 0; off < len;) {
		struct errlog_rec h;
		memcpy(&h, batch + off, sizeof h);
		if (errlog.sys)
			logsys_send(errlog.sys, errlog_severity(h.level), batch + off + sizeof h, h.n, h.wall_us);
		off += sizeof h + h.n;
	}
	/* drops (a full queue, the collector's) into the main thread's own counters */
	uint64_t sys_dropped = errlog.sys ? logsys_dropped(errlog.sys) : 0;
	uint64_t delta = (dropped - errlog.counted_queue) + (sys_dropped - errlog.counted_sys);
	errlog.counted_queue = dropped;
	errlog.counted_sys = sys_dropped;
	if (delta && counters_process)
		CTR_GLOBAL_ADD(counters_main(counters_process), ERROR_LOG_DROPPED, 0, delta);
}

static void errlog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	uint64_t v;
	ssize_t n = read(fd, &v, sizeof v);
	(void)n;
	errlog_drain();
}

static void errlog_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	errlog_drain();
}

static bool errlog_same_target(const struct conf_error_log *e)
{
	return errlog.sys && errlog.url && strcmp(errlog.url, e->syslog) == 0 && errlog.facility == e->syslog_facility &&
	       strcmp(errlog.app, e->syslog_app ? e->syslog_app : "sluice") == 0;
}

static void errlog_drop_target(void)
{
	if (errlog.sys)
		errlog_drain(); /* what was queued for the old target goes there */
	logsys_free(errlog.sys);
	errlog.sys = NULL;
	free(errlog.url);
	free(errlog.app);
	errlog.url = errlog.app = NULL;
	errlog.counted_sys = 0;
}

int logsys_errlog_apply(const struct conf_error_log *e, struct event_base *base, char *why, size_t why_size)
{
	if (e->path || errlog.redirected) {
		if (log_set_error_output(e->path ? e->path : "stderr", why, why_size) != 0)
			return -1;
		errlog.redirected = e->path != NULL;
	}
	if (!e->syslog) {
		log_set_sink(NULL);
		pthread_mutex_lock(&errlog.lock);
		errlog.active = false;
		pthread_mutex_unlock(&errlog.lock);
		errlog_drop_target();
		log_set_stderr(1);
		return 0;
	}
	if (!errlog.ev) {
		errlog.pending = malloc(LOGSYS_ERRLOG_QUEUE);
		errlog.draining = malloc(LOGSYS_ERRLOG_QUEUE);
		errlog.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		errlog.ev = errlog.efd >= 0 ? event_new(base, errlog.efd, EV_READ | EV_PERSIST, errlog_cb, NULL) : NULL;
		errlog.tick = event_new(base, -1, EV_PERSIST, errlog_tick_cb, NULL);
		struct timeval second = {1, 0};
		if (!errlog.pending || !errlog.draining || !errlog.ev || !errlog.tick || event_add(errlog.ev, NULL) != 0 ||
		    event_add(errlog.tick, &second) != 0) {
			snprintf(why, why_size, "cannot set up the error log's syslog queue: %s",
			         errno ? strerror(errno) : "out of memory");
			logsys_errlog_stop();
			return -1;
		}
	}
	if (!errlog_same_target(e)) {
		struct logsys_target t;
		if (!logsys_parse(e->syslog, &t, why, why_size))
			return -1;
		errlog_drop_target();
		errlog.url = strdup(e->syslog);
		errlog.app = strdup(e->syslog_app ? e->syslog_app : "sluice");
		errlog.facility = e->syslog_facility;
		errlog.sys = errlog.url && errlog.app ? logsys_new(base, &t, e->syslog_facility, errlog.app) : NULL;
		if (!errlog.sys) {
			snprintf(why, why_size, "out of memory");
			errlog_drop_target();
			return -1;
		}
	}
	pthread_mutex_lock(&errlog.lock);
	errlog.active = true;
	pthread_mutex_unlock(&errlog.lock);
	log_set_sink(errlog_sink);
	log_set_stderr(!e->off);
	return 0;
}

void logsys_errlog_stop(void)
{
	log_set_sink(NULL);
	log_set_stderr(1);
	if (errlog.ev)
		errlog_drain();
	pthread_mutex_lock(&errlog.lock);
	errlog.active = false;
	if (errlog.efd >= 0)
		close(errlog.efd);
	errlog.efd = -1;
	pthread_mutex_unlock(&errlog.lock);
	if (errlog.ev)
		event_free(errlog.ev);
	if (errlog.tick)
		event_free(errlog.tick);
	errlog.ev = errlog.tick = NULL;
	errlog_drop_target();
	free(errlog.pending);
	free(errlog.draining);
	errlog.pending = errlog.draining = NULL;
	errlog.len = 0;
}
