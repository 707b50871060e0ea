/* log_queue.c - per-worker line rings and the log writer thread (log_queue.h). */
#include "log_queue.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "clock.h"
#include "counters.h"
#include "log.h"
#include "log_syslog.h"

/* A queued line: this header, then its bytes, the whole padded to LOGQ_ALIGN
 * so that the room left before the ring's end always holds a header. */
struct logq_rec {
	uint32_t len; /* LOGQ_WRAP: nothing more up to the ring's end */
	uint32_t pad;
	struct logq_target *target;
};
#define LOGQ_ALIGN 16u
#define LOGQ_HDR LOGQ_ALIGN
#define LOGQ_WRAP UINT32_MAX
_Static_assert(sizeof(struct logq_rec) <= LOGQ_HDR, "a record header fits its unit");

static inline size_t logq_rec_size(size_t n)
{
	return LOGQ_HDR + ((n + LOGQ_ALIGN - 1) & ~(size_t)(LOGQ_ALIGN - 1));
}

struct logq_target {
	struct logq_target *next; /* the writer's released list */
	int fd;
	bool owned;
	bool pipe_like; /* not a regular file: a write of at most PIPE_BUF bytes is never interleaved */
	unsigned output;
	char *name;
	/* writer thread only: what a failed write left of a line, written first next time */
	char *cut;
	size_t cut_len;
};

struct logq_ring {
	struct logq_ring *next; /* the writer's list: pushed at the head under its lock, unlinked by it alone */
	struct logq_ring *prev; /* read r only once prev is retired and empty (then the writer clears it) */
	struct ctr_worker *cw;
	unsigned char *buf;
	uint64_t mask;
	atomic_bool retired;
	atomic_uint_fast64_t dropped;
	_Alignas(64) atomic_uint_fast64_t head; /* written by the producer */
	uint64_t tail_seen;                     /* the producer's last read of tail */
	_Alignas(64) atomic_uint_fast64_t tail; /* written by the writer */
};

struct logq_writer {
	pthread_mutex_t lock; /* started, rings (the head), released, the flush counters */
	pthread_cond_t flushed;
	pthread_t thread;
	bool started;
	unsigned users; /* main thread */
	int wake_fd;    /* eventfd */
	atomic_bool stop;
	struct logq_ring *rings;
	struct logq_target *released;
	uint64_t flush_asked, flush_done;
	/* the output the writer is writing to now, for a flush that times out
	 * (under lock; busy_since_us 0: none) */
	uint64_t busy_since_us;
	unsigned busy_output;
	char busy_name[256];
	atomic_int last_err;   /* the errno of the last failed write */
	struct ctr_worker *cw; /* the writer's own counters (write failures) */
	/* writer thread only */
	struct logq_target *releasing; /* released, waiting for the rings to be drained past them */
	struct iovec iov[IOV_MAX];
	/* read by every push: on a cache line of its own (last, the struct's
	 * size rounds up to its alignment); enum logq_state */
	_Alignas(64) atomic_int state;
};

/* What the writer is doing, for a push deciding whether to wake it:
 *  - AWAKE: it will read the rings again without being told;
 *  - DOZING: it wrote less than LOGQ_DOZE_ROUNDS x LOGQ_BATCH_MS ago and
 *    reads them again within LOGQ_BATCH_MS: only a ring more than half full
 *    wakes it sooner, so lines that keep coming cost no wakeup each, and the
 *    writer writes them in batches;
 *  - SLEEPING: nothing came for that long: the first line wakes it (and it
 *    stays asleep, no timer, while nothing comes). */
enum logq_state { LOGQ_AWAKE, LOGQ_DOZING, LOGQ_SLEEPING };

/* The process's writer (log_queue.h): set and cleared by the main thread
 * while no worker runs; read by workers in between. */
static struct logq_writer *logq_w;
/* Totals for the log lines, and when the last one was written (any thread). */
static atomic_uint_fast64_t logq_full_total, logq_failed_total;
/* Lines a failed write cut that wait for their end (targets holding a cut). */
static atomic_uint_fast64_t logq_cut_lines;
static _Atomic uint64_t logq_last_log_us;

#define LOGQ_OUTPUT_NAME(sym, str) str,
static const char *const logq_output_names[] = {CTR_LOG_OUTPUT_LIST(LOGQ_OUTPUT_NAME)};
#undef LOGQ_OUTPUT_NAME

/* Zeroed memory aligned for the cache-line-aligned members below (calloc
 * gives 16 bytes). Freed with free(). */
static void *logq_zalloc(size_t size)
{
	size = (size + 63) & ~(size_t)63;
	void *p = aligned_alloc(64, size);
	if (p)
		memset(p, 0, size);
	return p;
}

/* At most one drop line a second, from whichever thread gets there first. */
static bool logq_log_due(void)
{
	uint64_t now = clock_mono_us();
	uint64_t last = atomic_load_explicit(&logq_last_log_us, memory_order_relaxed);
	if (last && now - last < 1000000u)
		return false;
	return atomic_compare_exchange_strong(&logq_last_log_us, &last, now);
}

static void logq_log_drops(enum log_level level, const char *msg, const struct logq_target *t, int err)
{
	struct log_line l;
	log_begin(&l, level, msg);
	log_str(&l, "output", t->output < CTR_LOG_OUT__COUNT ? logq_output_names[t->output] : "");
	log_str(&l, "path", t->name);
	if (err)
		log_str(&l, "error", strerror(err));
	log_int(&l, "dropped_queue_full", (long long)atomic_load(&logq_full_total));
	log_int(&l, "dropped_write_failed", (long long)atomic_load(&logq_failed_total));
	log_end(&l);
}

static void logq_wake(struct logq_writer *wr)
{
	uint64_t one = 1;
	ssize_t n = write(wr->wake_fd, &one, sizeof one);
	(void)n; /* an eventfd only fails when saturated: the writer is awake then */
}

/* ---- targets ---- */

struct logq_target *logq_target_new(int fd, bool owned, unsigned output, const char *name)
{
	struct logq_target *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->name = strdup(name ? name : "");
	if (!t->name) {
		free(t);
		return NULL;
	}
	struct stat st;
	t->fd = fd;
	t->owned = owned;
	t->output = output;
	t->pipe_like = fstat(fd, &st) != 0 || !S_ISREG(st.st_mode);
	return t;
}

int logq_target_fd(const struct logq_target *t)
{
	return t->fd;
}

unsigned logq_target_output(const struct logq_target *t)
{
	return t->output;
}

static void logq_target_free(struct logq_target *t)
{
	if (t->owned)
		close(t->fd);
	if (t->cut)
		atomic_fetch_sub_explicit(&logq_cut_lines, 1, memory_order_relaxed);
	free(t->cut);
	free(t->name);
	free(t);
}

void logq_target_release(struct logq_target *t)
{
	if (!t)
		return;
	struct logq_writer *wr = logq_w;
	if (wr) {
		pthread_mutex_lock(&wr->lock);
		bool queued = wr->started; /* no thread: no ring, so no line names t */
		if (queued) {
			t->next = wr->released;
			wr->released = t;
		}
		pthread_mutex_unlock(&wr->lock);
		if (queued) {
			logq_wake(wr);
			return;
		}
	}
	logq_target_free(t);
}

/* ---- rings (producer side) ---- */

size_t logq_ring_size(size_t bytes)
{
	size_t cap = LOGQ_MIN_BYTES;
	while (cap < bytes && cap < LOGQ_MAX_BYTES)
		cap <<= 1;
	return cap;
}

size_t logq_ring_capacity(const struct logq_ring *r)
{
	return (size_t)r->mask + 1;
}

uint64_t logq_ring_dropped(const struct logq_ring *r)
{
	return atomic_load_explicit(&r->dropped, memory_order_relaxed);
}

void logq_ring_retire(struct logq_ring *r)
{
	if (r)
		atomic_store_explicit(&r->retired, true, memory_order_release);
}

static void logq_drop(struct logq_ring *r, const struct logq_target *t)
{
	atomic_store_explicit(&r->dropped, atomic_load_explicit(&r->dropped, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	atomic_fetch_add_explicit(&logq_full_total, 1, memory_order_relaxed);
	CTR_GLOBAL_ADD(r->cw, ACCESS_LOG_DROPPED, t->output, 1);
	if (logq_log_due())
		logq_log_drops(LOG_WARN, "access log: queue full (the output is slower than the traffic); lines dropped", t,
		               0);
}

bool logq_push(struct logq_ring *r, struct logq_target *t, const char *line, size_t n)
{
	size_t cap = (size_t)r->mask + 1;
	size_t need = logq_rec_size(n);
	uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
	size_t off = (size_t)(h & r->mask);
	size_t skip = need > cap - off ? cap - off : 0; /* a record never wraps: the end's room is skipped */
	/* the writer's tail is read only when the last reading says the ring is
	 * full: not a cache miss on its line per line */
	if (h + skip + need - r->tail_seen > cap)
		r->tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
	if (n >= LOGQ_WRAP || need > cap || h + skip + need - r->tail_seen > cap) {
		logq_drop(r, t);
		return false;
	}
	if (skip) {
		struct logq_rec wrap = {.len = LOGQ_WRAP};
		memcpy(r->buf + off, &wrap, sizeof wrap);
		h += skip;
		off = 0;
	}
	struct logq_rec rec = {.len = (uint32_t)n, .target = t};
	memcpy(r->buf + off, &rec, sizeof rec);
	memcpy(r->buf + off + LOGQ_HDR, line, n);
	h += need;
	atomic_store_explicit(&r->head, h, memory_order_release);
	/* Dekker with the writer going to sleep (it sets SLEEPING, fences, then
	 * reads the heads): one of the two sees the other's store */
	atomic_thread_fence(memory_order_seq_cst);
	struct logq_writer *wr = logq_w;
	int st = atomic_load_explicit(&wr->state, memory_order_relaxed);
	if (st == LOGQ_AWAKE)
		return true;
	if (st == LOGQ_DOZING) {
		/* it comes back within LOGQ_BATCH_MS: only a ring filling up calls it sooner */
		if (h - r->tail_seen <= cap / 2)
			return true;
		r->tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
		if (h - r->tail_seen <= cap / 2)
			return true;
	}
	if (atomic_compare_exchange_strong_explicit(&wr->state, &st, LOGQ_AWAKE, memory_order_relaxed,
	                                            memory_order_relaxed))
		logq_wake(wr);
	return true;
}

/* ---- the writer thread ---- */

/* writev(2) that a stop past LOGQ_STOP_WAIT_MS may cancel (the thread is
 * cancellable only here: it holds no lock and nothing half-done then). */
static ssize_t logq_writev(int fd, const struct iovec *iov, int n)
{
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	ssize_t w = writev(fd, iov, n);
	int err = errno;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	errno = err;
	return w;
}

static void logq_wait_writable(int fd)
{
	int old;
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	int rc = poll(&p, 1, 1000);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	(void)rc; /* either way the write is tried again */
}

/* Writes iov[0..n) whole, waiting while the descriptor is full. Returns 0,
 * or an errno with *done the lines written whole and *part the bytes of the
 * next one written before the failure. */
static int logq_write_all(int fd, struct iovec *iov, int n, int *done, size_t *part)
{
	int i = 0;
	size_t in_line = 0;
	while (i < n) {
		ssize_t w = logq_writev(fd, iov + i, n - i);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			logq_wait_writable(fd); /* a descriptor someone made non-blocking */
			continue;
		}
		if (w <= 0) {
			*done = i;
			*part = in_line;
			return w < 0 ? errno : EIO;
		}
		size_t left = (size_t)w;
		while (left > 0) {
			size_t rest = iov[i].iov_len;
			if (left >= rest) {
				left -= rest;
				i++;
				in_line = 0;
			} else {
				iov[i].iov_base = (char *)iov[i].iov_base + left;
				iov[i].iov_len -= left;
				in_line += left;
				left = 0;
			}
		}
	}
	*done = n;
	*part = 0;
	return 0;
}

static void logq_write_failed(struct logq_writer *wr, struct logq_target *t, unsigned lines, int err)
{
	atomic_store_explicit(&wr->last_err, err, memory_order_relaxed);
	if (lines) {
		atomic_fetch_add_explicit(&logq_failed_total, lines, memory_order_relaxed);
		CTR_GLOBAL_ADD(wr->cw, ACCESS_LOG_DROPPED, t->output, lines);
	}
	if (logq_log_due())
		logq_log_drops(LOG_ERROR, "access log: cannot write; lines dropped", t, err);
}

/* Says what the writer is about to wait on (t) or that it waits on nothing
 * (NULL), for a flush that times out. */
static void logq_set_busy(struct logq_writer *wr, const struct logq_target *t)
{
	pthread_mutex_lock(&wr->lock);
	if (t) {
		wr->busy_since_us = clock_mono_us();
		wr->busy_output = t->output;
		snprintf(wr->busy_name, sizeof wr->busy_name, "%s", t->name);
	} else {
		wr->busy_since_us = 0;
	}
	pthread_mutex_unlock(&wr->lock);
}

/* One batch of whole lines for t. */
static void logq_target_write_batch(struct logq_writer *wr, struct logq_target *t, struct iovec *iov, int n)
{
	int done;
	size_t part;
	if (t->cut) {
		/* first the end of the line a failure cut, so the output has no partial line */
		struct iovec c = {t->cut, t->cut_len};
		int err = logq_write_all(t->fd, &c, 1, &done, &part);
		if (err) {
			memmove(t->cut, t->cut + part, t->cut_len - part);
			t->cut_len -= part;
			logq_write_failed(wr, t, (unsigned)n, err);
			return;
		}
		free(t->cut);
		t->cut = NULL;
		t->cut_len = 0;
		atomic_fetch_sub_explicit(&logq_cut_lines, 1, memory_order_relaxed);
	}
	int err = logq_write_all(t->fd, iov, n, &done, &part);
	if (!err)
		return;
	if (part) {
		/* the line is in the output in part: keep its end (the ring's copy is about to go) */
		t->cut = malloc(iov[done].iov_len);
		if (t->cut) {
			memcpy(t->cut, iov[done].iov_base, iov[done].iov_len);
			t->cut_len = iov[done].iov_len;
			atomic_fetch_add_explicit(&logq_cut_lines, 1, memory_order_relaxed);
		}
		done++;
	}
	logq_write_failed(wr, t, (unsigned)(n - done), err);
}

static void logq_target_write(struct logq_writer *wr, struct logq_target *t, struct iovec *iov, int n)
{
	logq_set_busy(wr, t);
	logq_target_write_batch(wr, t, iov, n);
	logq_set_busy(wr, NULL);
}

static bool logq_ring_empty(struct logq_ring *r)
{
	return atomic_load_explicit(&r->head, memory_order_acquire) ==
	       atomic_load_explicit(&r->tail, memory_order_relaxed);
}

/* Writes everything r holds now, in order. True if there was anything. */
static bool logq_ring_drain(struct logq_writer *wr, struct logq_ring *r)
{
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
	if (t == h)
		return false;
	size_t cap = (size_t)r->mask + 1;
	while (t != h) {
		struct logq_target *target = NULL;
		int n = 0;
		size_t bytes = 0;
		uint64_t end = t;
		while (end != h && n < IOV_MAX) {
			size_t off = (size_t)(end & r->mask);
			struct logq_rec rec;
			memcpy(&rec, r->buf + off, sizeof rec);
			if (rec.len == LOGQ_WRAP) {
				end += cap - off;
				continue;
			}
			/* a batch is one target's; on a pipe at most PIPE_BUF bytes, unless one line is longer */
			if (n > 0 && (rec.target != target || (target->pipe_like && bytes + rec.len > PIPE_BUF)))
				break;
			target = rec.target;
			wr->iov[n].iov_base = r->buf + off + LOGQ_HDR;
			wr->iov[n].iov_len = rec.len;
			n++;
			bytes += rec.len;
			end += logq_rec_size(rec.len);
		}
		if (n > 0)
			logq_target_write(wr, target, wr->iov, n);
		t = end;
		atomic_store_explicit(&r->tail, t, memory_order_release);
	}
	return true;
}

enum logq_round { LOGQ_IDLE, LOGQ_WROTE, LOGQ_WAITING };

static enum logq_round logq_writer_round(struct logq_writer *wr)
{
	pthread_mutex_lock(&wr->lock);
	while (wr->released) {
		struct logq_target *t = wr->released;
		wr->released = t->next;
		t->next = wr->releasing;
		wr->releasing = t;
	}
	struct logq_ring *rings = wr->rings;
	uint64_t flush = wr->flush_asked;
	pthread_mutex_unlock(&wr->lock);
	/* every head is read after the releases were taken: what names them is written below */
	bool wrote = false, waiting = false;
	for (struct logq_ring *r = rings; r; r = r->next) {
		if (r->prev) {
			if (!atomic_load_explicit(&r->prev->retired, memory_order_acquire) || !logq_ring_empty(r->prev)) {
				waiting = true; /* the worker's older lines first */
				continue;
			}
			r->prev = NULL;
		}
		wrote |= logq_ring_drain(wr, r);
	}
	if (!waiting) {
		while (wr->releasing) {
			struct logq_target *t = wr->releasing;
			wr->releasing = t->next;
			logq_target_free(t);
		}
	}
	pthread_mutex_lock(&wr->lock);
	for (struct logq_ring **p = &wr->rings; *p;) {
		struct logq_ring *r = *p;
		if (atomic_load_explicit(&r->retired, memory_order_acquire) && logq_ring_empty(r)) {
			for (struct logq_ring *s = wr->rings; s; s = s->next)
				if (s->prev == r)
					s->prev = NULL;
			*p = r->next;
			free(r->buf);
			free(r);
		} else {
			p = &r->next;
		}
	}
	if (!waiting && wr->flush_done < flush) {
		wr->flush_done = flush;
		pthread_cond_broadcast(&wr->flushed);
	}
	pthread_mutex_unlock(&wr->lock);
	return wrote ? LOGQ_WROTE : waiting ? LOGQ_WAITING : LOGQ_IDLE;
}

static bool logq_has_work(struct logq_writer *wr)
{
	pthread_mutex_lock(&wr->lock);
	bool work = wr->released || wr->flush_asked > wr->flush_done;
	for (struct logq_ring *r = wr->rings; r && !work; r = r->next)
		work = !logq_ring_empty(r);
	pthread_mutex_unlock(&wr->lock);
	return work;
}

/* Waits on the wakeup eventfd at most ms (-1: no limit), then is AWAKE;
 * returns whether somebody woke it. */
static bool logq_wait(struct logq_writer *wr, int ms)
{
	struct pollfd p = {.fd = wr->wake_fd, .events = POLLIN};
	bool woken = poll(&p, 1, ms) > 0;
	atomic_store(&wr->state, LOGQ_AWAKE);
	if (woken) {
		uint64_t v;
		ssize_t n = read(wr->wake_fd, &v, sizeof v);
		(void)n; /* EAGAIN: another reader got there (none), or a spurious readiness */
	}
	return woken;
}

static void *logq_writer_main(void *arg)
{
	struct logq_writer *wr = arg;
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	unsigned quiet = LOGQ_DOZE_ROUNDS; /* rounds in a row that found nothing */
	for (;;) {
		/* read before the round: a stop comes after the last push, so a
		 * round that began after seeing it has read every last head */
		bool stopping = atomic_load(&wr->stop);
		enum logq_round rr = logq_writer_round(wr);
		if (rr == LOGQ_WROTE)
			quiet = 0;
		if (rr == LOGQ_IDLE && stopping)
			break;
		if (rr == LOGQ_WAITING) {
			logq_wait(wr, 1); /* a worker is about to retire its previous ring */
			continue;
		}
		if (stopping)
			continue;
		if (rr == LOGQ_WROTE || ++quiet <= LOGQ_DOZE_ROUNDS) {
			/* lines came a moment ago: more are likely, let them gather
			 * without a wakeup each (a push wakes us only when its ring
			 * passes half full; a flush, a release or a stop at once) */
			atomic_store(&wr->state, LOGQ_DOZING);
			logq_wait(wr, LOGQ_BATCH_MS);
			continue;
		}
		quiet = LOGQ_DOZE_ROUNDS;
		atomic_store(&wr->state, LOGQ_SLEEPING);
		atomic_thread_fence(memory_order_seq_cst);
		if (!logq_has_work(wr) && !atomic_load(&wr->stop))
			logq_wait(wr, -1);
		else
			atomic_store(&wr->state, LOGQ_AWAKE);
	}
	return NULL;
}

bool logq_writer_get(void)
{
	if (logq_w) {
		logq_w->users++;
		return true;
	}
	struct logq_writer *wr = logq_zalloc(sizeof *wr);
	if (!wr) {
		log_msg(LOG_ERROR, "access log: out of memory for the log writer");
		return false;
	}
	pthread_condattr_t ca;
	bool cond = pthread_condattr_init(&ca) == 0;
	if (cond) {
		cond = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&wr->flushed, &ca) == 0;
		pthread_condattr_destroy(&ca);
	}
	wr->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!cond || wr->wake_fd < 0 || pthread_mutex_init(&wr->lock, NULL) != 0) {
		log_msg(LOG_ERROR, "access log: cannot set up the log writer's wakeup");
		if (cond)
			pthread_cond_destroy(&wr->flushed);
		if (wr->wake_fd >= 0)
			close(wr->wake_fd);
		free(wr);
		return false;
	}
	atomic_init(&wr->state, LOGQ_AWAKE);
	atomic_init(&wr->stop, false);
	atomic_init(&wr->last_err, 0);
	wr->cw = counters_worker_new(counters_process);
	wr->users = 1;
	logq_w = wr;
	return true;
}

/* Under wr->lock. */
static bool logq_writer_start(struct logq_writer *wr)
{
	if (wr->started)
		return true;
	int rc = pthread_create(&wr->thread, NULL, logq_writer_main, wr);
	if (rc != 0) {
		errno = rc;
		return false;
	}
	wr->started = true;
	return true;
}

struct logq_ring *logq_ring_new(size_t bytes, struct ctr_worker *cw, struct logq_ring *prev)
{
	struct logq_writer *wr = logq_w;
	if (!wr)
		return NULL;
	size_t cap = logq_ring_size(bytes);
	struct logq_ring *r = logq_zalloc(sizeof *r);
	unsigned char *buf = r ? malloc(cap) : NULL;
	if (!buf) {
		free(r);
		log_msg(LOG_ERROR, "access log: out of memory for a worker's queue");
		return NULL;
	}
	r->buf = buf;
	r->cw = cw;
	r->prev = prev;
	r->mask = cap - 1;
	atomic_init(&r->retired, false);
	atomic_init(&r->dropped, 0);
	atomic_init(&r->head, 0);
	atomic_init(&r->tail, 0);
	pthread_mutex_lock(&wr->lock);
	bool ok = logq_writer_start(wr);
	int err = errno;
	if (ok) {
		r->next = wr->rings;
		wr->rings = r;
	}
	pthread_mutex_unlock(&wr->lock);
	if (!ok) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "access log: cannot start the log writer thread");
		log_str(&l, "error", strerror(err));
		log_end(&l);
		free(buf);
		free(r);
		return NULL;
	}
	return r;
}

/* A deadline for pthread_timedjoin_np / pthread_cond_timedwait on clock id. */
static struct timespec logq_deadline(bool monotonic, unsigned ms)
{
	uint64_t us = (monotonic ? clock_mono_us() : clock_wall_us()) + (uint64_t)ms * 1000u;
	struct timespec ts = {.tv_sec = (time_t)(us / 1000000u), .tv_nsec = (long)(us % 1000000u) * 1000};
	return ts;
}

/* Bytes in every ring now. Under wr->lock (the writer frees rings under it). */
static uint64_t logq_queued_bytes(struct logq_writer *wr)
{
	uint64_t sum = 0;
	for (struct logq_ring *r = wr->rings; r; r = r->next)
		sum += atomic_load_explicit(&r->head, memory_order_acquire) -
		       atomic_load_explicit(&r->tail, memory_order_acquire);
	return sum;
}

/* The file/stdout part of logq_flush_wait. */
static void logq_flush_rings(unsigned timeout_ms, struct logq_flush_result *res)
{
	res->done = true;
	struct logq_writer *wr = logq_w;
	if (!wr)
		return;
	uint64_t failed0 = atomic_load(&logq_failed_total);
	pthread_mutex_lock(&wr->lock);
	if (wr->started) {
		res->queued_bytes = logq_queued_bytes(wr);
		/* the writer's next round reads this, then every ring's head: what
		 * was queued before it is written before flush_done passes want */
		uint64_t want = ++wr->flush_asked;
		logq_wake(wr);
		struct timespec until = logq_deadline(true, timeout_ms);
		while (wr->flush_done < want)
			if (pthread_cond_timedwait(&wr->flushed, &wr->lock, &until) == ETIMEDOUT)
				break;
		res->done = wr->flush_done >= want;
		if (!res->done) {
			res->pending_bytes = logq_queued_bytes(wr);
			if (wr->busy_since_us) {
				unsigned o = wr->busy_output;
				snprintf(res->blocked_output, sizeof res->blocked_output, "%s",
				         o < CTR_LOG_OUT__COUNT ? logq_output_names[o] : "");
				snprintf(res->blocked_name, sizeof res->blocked_name, "%s", wr->busy_name);
				res->blocked_ms = (clock_mono_us() - wr->busy_since_us) / 1000u;
			}
		}
	}
	pthread_mutex_unlock(&wr->lock);
	res->failed_lines = atomic_load(&logq_failed_total) - failed0;
	if (res->failed_lines)
		res->write_error = atomic_load_explicit(&wr->last_err, memory_order_relaxed);
	res->cut_lines = atomic_load(&logq_cut_lines);
}

bool logq_flush_wait(unsigned timeout_ms, struct logq_flush_result *res)
{
	struct logq_flush_result local;
	if (!res)
		res = &local;
	memset(res, 0, sizeof *res);
	uint64_t t0 = clock_mono_us();
	logq_flush_rings(timeout_ms, res);
	/* then the workers' syslog senders, in what is left of the time */
	uint64_t used_ms = (clock_mono_us() - t0) / 1000u;
	uint64_t s0 = clock_mono_us(), sys_left = 0;
	char name[sizeof res->blocked_name] = "";
	if (!logsys_flush_wait(used_ms >= timeout_ms ? 0 : timeout_ms - (unsigned)used_ms, &sys_left, name, sizeof name)) {
		res->done = false;
		res->pending_bytes += sys_left;
		if (!res->blocked_output[0]) {
			snprintf(res->blocked_output, sizeof res->blocked_output, "syslog");
			snprintf(res->blocked_name, sizeof res->blocked_name, "%s", name);
			res->blocked_ms = (clock_mono_us() - s0) / 1000u;
		}
	}
	res->waited_us = clock_mono_us() - t0;
	return res->done;
}

void logq_flush(void)
{
	/* the files only: syslog has nothing to do with reopening them */
	struct logq_flush_result res;
	memset(&res, 0, sizeof res);
	logq_flush_rings(LOGQ_FLUSH_WAIT_MS, &res);
}

void logq_writer_put(void)
{
	struct logq_writer *wr = logq_w;
	if (!wr || --wr->users > 0)
		return;
	if (wr->started) {
		atomic_store(&wr->stop, true);
		logq_wake(wr);
		struct timespec until = logq_deadline(false, LOGQ_STOP_WAIT_MS);
		if (pthread_timedjoin_np(wr->thread, NULL, &until) != 0) {
			/* an output that takes nothing (a pipe nobody reads): exit anyway */
			struct log_line l;
			log_begin(&l, LOG_ERROR, "access log: an output is blocked; lines still queued at exit are lost");
			log_int(&l, "waited_ms", LOGQ_STOP_WAIT_MS);
			log_end(&l);
			pthread_cancel(wr->thread);
			pthread_join(wr->thread, NULL);
		}
	}
	uint64_t full = atomic_load(&logq_full_total), failed = atomic_load(&logq_failed_total);
	if (full || failed) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "access log: lines dropped");
		log_int(&l, "dropped_queue_full", (long long)full);
		log_int(&l, "dropped_write_failed", (long long)failed);
		log_end(&l);
	}
	while (wr->rings) {
		struct logq_ring *r = wr->rings;
		wr->rings = r->next;
		free(r->buf);
		free(r);
	}
	struct logq_target *lists[2] = {wr->released, wr->releasing};
	for (int i = 0; i < 2; i++) {
		while (lists[i]) {
			struct logq_target *t = lists[i];
			lists[i] = t->next;
			logq_target_free(t);
		}
	}
	pthread_cond_destroy(&wr->flushed);
	pthread_mutex_destroy(&wr->lock);
	close(wr->wake_fd);
	logq_w = NULL;
	free(wr);
}
