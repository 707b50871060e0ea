/* trace_export.c - the span queues and the OTLP/HTTP exporter thread (trace_export.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setname_np */
#endif

#include "trace_export.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "clock.h"
#include "counters.h"
#include "log.h"
#include "tls_ctx.h"
#include "trace_client.h"
#include "trace_otlp.h"

struct trace_ring {
	struct trace_ring *next; /* the exporter's list */
	struct trace_exporter *ex;
	struct ctr_worker *cw; /* the producer's counters */
	atomic_bool retired;
	uint64_t mask;
	_Alignas(64) atomic_uint_fast64_t head; /* written by the producer */
	_Alignas(64) atomic_uint_fast64_t tail; /* written by the exporter */
	struct trace_span slots[];
};

struct trace_exporter {
	pthread_t thread;
	int wake_fd; /* eventfd: a ring half full, or stop */
	atomic_bool stop;
	unsigned users; /* main thread only */
	pthread_mutex_t lock; /* rings (the list head) and conf */
	struct trace_ring *rings;
	struct trace_export_conf *conf;
	uint64_t generation;
	struct ctr_worker *cw; /* the exporter thread's own counters */
	/* exporter thread only */
	struct trace_client client; /* the connection to the collector, kept open */
	struct trace_span *batch;
	size_t batch_cap;
	bool failing;
	uint64_t failed_since_log;
	uint64_t last_fail_log_us;
	uint64_t rejected_since_log; /* partial successes not logged yet (one line a second) */
	uint64_t last_reject_log_us;
};

/* A kept-alive connection to the collector unused this long is closed (a
 * collector behind a load balancer gets a fresh pick now and then; most
 * close idle connections sooner themselves). */
#define TRACE_EXPORT_IDLE_CLOSE_US (90ull * 1000000)

/* The most of a refusal's reason a log line carries (bytes of UTF-8). */
#define TRACE_EXPORT_COLLECTOR_MESSAGE_MAX 200

/* The process's exporter (trace_export.h): main thread only. */
static struct trace_exporter *process_exporter;

/* ---- conf ---- */

struct trace_export_conf *trace_export_conf_new(const struct conf_tracing *ct)
{
	struct trace_export_conf *ec = calloc(1, sizeof *ec);
	if (!ec)
		return NULL;
	atomic_init(&ec->refs, 1);
	size_t hlen = 1;
	for (size_t i = 0; i < ct->num_headers; i++)
		hlen += strlen(ct->headers[i].name) + strlen(ct->headers[i].value) + 4;
	ec->host = strdup(ct->otlp_host);
	ec->port = strdup(ct->otlp_port);
	ec->path = strdup(ct->otlp_path);
	ec->service_name = strdup(ct->service_name);
	ec->extra_headers = malloc(hlen);
	if (!ec->host || !ec->port || !ec->path || !ec->service_name || !ec->extra_headers) {
		trace_export_conf_unref(ec);
		return NULL;
	}
	size_t o = 0;
	for (size_t i = 0; i < ct->num_headers; i++)
		o += (size_t)snprintf(ec->extra_headers + o, hlen - o, "%s: %s\r\n", ct->headers[i].name,
		                      ct->headers[i].value);
	ec->extra_headers[o] = '\0';
	ec->batch_size = ct->batch_size;
	ec->queue_size = ct->queue_size;
	ec->timeout_ms = (unsigned)ct->timeout;
	ec->interval_ms = (unsigned)ct->interval;
	ec->protocol = ct->protocol;
	if (ct->tls) {
		ec->ssl_ctx = tls_client_ctx(ct->tls);
		SSL_CTX_up_ref(ec->ssl_ctx); /* the exporter may use it after the conf is gone */
	}
	return ec;
}

void trace_export_conf_ref(struct trace_export_conf *ec)
{
	atomic_fetch_add_explicit(&ec->refs, 1, memory_order_relaxed);
}

void trace_export_conf_unref(struct trace_export_conf *ec)
{
	if (!ec || atomic_fetch_sub_explicit(&ec->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(ec->host);
	free(ec->port);
	free(ec->path);
	free(ec->service_name);
	free(ec->extra_headers);
	SSL_CTX_free(ec->ssl_ctx);
	free(ec);
}

/* ---- rings ---- */

struct trace_ring *trace_ring_new(struct trace_exporter *ex, unsigned capacity, struct ctr_worker *cw)
{
	uint64_t cap = 16;
	while (cap < capacity)
		cap <<= 1;
	struct trace_ring *r = calloc(1, sizeof *r + cap * sizeof(struct trace_span));
	if (!r)
		return NULL;
	r->ex = ex;
	r->cw = cw;
	r->mask = cap - 1;
	atomic_init(&r->retired, false);
	atomic_init(&r->head, 0);
	atomic_init(&r->tail, 0);
	pthread_mutex_lock(&ex->lock);
	r->next = ex->rings;
	ex->rings = r;
	pthread_mutex_unlock(&ex->lock);
	return r;
}

void trace_ring_retire(struct trace_exporter *ex, struct trace_ring *r)
{
	(void)ex;
	atomic_store_explicit(&r->retired, true, memory_order_release);
}

unsigned trace_ring_capacity(const struct trace_ring *r)
{
	return (unsigned)(r->mask + 1);
}

struct trace_span *trace_ring_reserve(struct trace_ring *r)
{
	uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
	if (h - t > r->mask) {
		CTR_GLOBAL_ADD(r->cw, TRACE_SPANS_DROPPED, 0, 1);
		return NULL;
	}
	return &r->slots[h & r->mask];
}

void trace_ring_commit(struct trace_ring *r)
{
	uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed) + 1;
	atomic_store_explicit(&r->head, h, memory_order_release);
	/* half full: wake the exporter now rather than at its next interval */
	if (h - atomic_load_explicit(&r->tail, memory_order_relaxed) == (r->mask + 1) / 2) {
		uint64_t one = 1;
		ssize_t n = write(r->ex->wake_fd, &one, sizeof one);
		(void)n; /* the eventfd only saturates: the exporter is awake then */
	}
}

/* ---- the exporter thread ---- */

/* A 2xx answer's partial success: the spans the collector says it rejected
 * (at most the batch) are counted as rejected and dropped, and logged with
 * its message at most once a second (a warning without rejected spans,
 * too). Returns how many. */
static size_t collector_rejected(struct trace_exporter *ex, const struct trace_export_conf *ec,
                                 const struct trace_answer *ans, size_t n)
{
	char msg[512];
	uint64_t rejected = ans->body_len ? trace_otlp_rejected(ec->protocol, ans->content_type, ans->body,
	                                                        ans->body_len, msg, sizeof msg)
	                                  : 0;
	if (!ans->body_len || (!rejected && !msg[0]))
		return 0;
	if (rejected > n)
		rejected = n;
	CTR_GLOBAL_ADD(ex->cw, TRACE_SPANS_REJECTED, CTR_TRACE_REJECT_PARTIAL_SUCCESS, rejected);
	CTR_GLOBAL_ADD(ex->cw, TRACE_SPANS_DROPPED, 0, rejected);
	ex->rejected_since_log += rejected;
	uint64_t now = clock_mono_us();
	if (ex->last_reject_log_us && now - ex->last_reject_log_us < 1000000)
		return (size_t)rejected;
	struct log_line l;
	log_begin(&l, ex->rejected_since_log ? LOG_WARN : LOG_INFO,
	          ex->rejected_since_log ? "tracing: the OTLP collector rejected spans"
	                                 : "tracing: the OTLP collector sent a warning");
	log_str(&l, "error", msg[0] ? msg : "(no message)");
	log_int(&l, "spans_rejected", (long long)ex->rejected_since_log);
	log_end(&l);
	ex->last_reject_log_us = now;
	ex->rejected_since_log = 0;
	return (size_t)rejected;
}

/* Why the collector refused an export, as it said it (docs/tracing.md,
 * "Why the collector refused"): the reason in its answer's body, bounded, and when
 * it asks to be left alone for a while, for how long. */
static void log_refusal(struct log_line *l, int status, const struct trace_answer *ans)
{
	char msg[TRACE_EXPORT_COLLECTOR_MESSAGE_MAX + 1];
	if (ans->body_len && trace_otlp_status_message(ans->content_type, ans->body, ans->body_len, msg, sizeof msg))
		log_str(l, "collector_message", msg);
	if ((status == 429 || status == 503) && ans->retry_after_s >= 0)
		log_int(l, "retry_after_s", ans->retry_after_s);
}

static void export_batch(struct trace_exporter *ex, struct trace_export_conf *ec, size_t n)
{
	if (!ec) {
		CTR_GLOBAL_ADD(ex->cw, TRACE_SPANS_DROPPED, 0, n);
		return;
	}
	size_t len = 0;
	void *body = ec->protocol == CONF_TRACING_HTTP_PROTOBUF ? (void *)trace_otlp_protobuf(ec, ex->batch, n, &len)
	                                                       : (void *)trace_otlp_json(ec, ex->batch, n, &len);
	char why[256] = "out of memory";
	struct trace_answer ans;
	int status = body ? trace_client_post(&ex->client, ec, body, len, &ans, why, sizeof why) : -1;
	free(body);
	if (status >= 0 && (status < 200 || status > 299))
		snprintf(why, sizeof why, "the collector answered %d", status);
	if (status >= 200 && status <= 299) {
		size_t rejected = collector_rejected(ex, ec, &ans, n);
		CTR_GLOBAL_ADD(ex->cw, TRACE_SPANS_EXPORTED, 0, n - rejected);
		if (ex->failing) {
			struct log_line l;
			log_begin(&l, LOG_INFO, "tracing: the OTLP collector takes spans again");
			log_int(&l, "spans_dropped", (long long)ex->failed_since_log);
			log_end(&l);
			ex->failing = false;
			ex->failed_since_log = 0;
		}
		return;
	}
	CTR_GLOBAL_ADD(ex->cw, TRACE_EXPORT_FAILURES, 0, 1);
	CTR_GLOBAL_ADD(ex->cw, TRACE_SPANS_DROPPED, 0, n);
	/* OTLP: a 4xx other than these is the collector refusing the data, not a passing failure */
	if (status >= 400 && status <= 499 && status != 408 && status != 429)
		CTR_GLOBAL_ADD(ex->cw, TRACE_SPANS_REJECTED, CTR_TRACE_REJECT_REFUSED, n);
	ex->failed_since_log += n;
	uint64_t now = clock_mono_us();
	/* the first failure, then at most one line a minute */
	if (!ex->failing || now - ex->last_fail_log_us >= 60000000) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "tracing: span export failed; spans dropped");
		log_str(&l, "error", why);
		if (status >= 0)
			log_refusal(&l, status, &ans);
		log_int(&l, "spans_dropped", (long long)ex->failed_since_log);
		log_end(&l);
		ex->failing = true;
		ex->last_fail_log_us = now;
		ex->failed_since_log = 0;
	}
}

/* Drains every ring into batches and sends them; frees retired rings once empty. */
static void export_round(struct trace_exporter *ex)
{
	pthread_mutex_lock(&ex->lock);
	struct trace_export_conf *ec = ex->conf;
	if (ec)
		trace_export_conf_ref(ec);
	struct trace_ring *rings = ex->rings; /* only this thread unlinks: the nodes stay */
	pthread_mutex_unlock(&ex->lock);
	size_t batch = ec ? ec->batch_size : 512;
	if (batch > ex->batch_cap) {
		struct trace_span *b = realloc(ex->batch, batch * sizeof *b);
		if (b) {
			ex->batch = b;
			ex->batch_cap = batch;
		}
	}
	if (batch > ex->batch_cap)
		batch = ex->batch_cap;
	for (;;) {
		size_t n = 0;
		for (struct trace_ring *r = rings; r && n < batch; r = r->next) {
			uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
			uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
			while (t != h && n < batch)
				ex->batch[n++] = r->slots[t++ & r->mask];
			atomic_store_explicit(&r->tail, t, memory_order_release);
		}
		if (n == 0)
			break;
		export_batch(ex, ec, n);
		if (n < batch)
			break;
	}
	if (!ec)
		trace_client_reset(&ex->client); /* tracing gone: no connection kept for it */
	else
		trace_client_close_idle(&ex->client, TRACE_EXPORT_IDLE_CLOSE_US);
	trace_export_conf_unref(ec);
	/* retired and drained rings go */
	pthread_mutex_lock(&ex->lock);
	for (struct trace_ring **p = &ex->rings; *p;) {
		struct trace_ring *r = *p;
		if (atomic_load_explicit(&r->retired, memory_order_acquire) &&
		    atomic_load_explicit(&r->head, memory_order_acquire) == atomic_load_explicit(&r->tail, memory_order_relaxed)) {
			*p = r->next;
			free(r);
		} else {
			p = &r->next;
		}
	}
	pthread_mutex_unlock(&ex->lock);
}

static void *exporter_main(void *arg)
{
	struct trace_exporter *ex = arg;
	while (!atomic_load(&ex->stop)) {
		pthread_mutex_lock(&ex->lock);
		/* no tracing and no queue (a process without `tracing`): sleep until configured */
		int wait_ms = ex->conf ? (int)ex->conf->interval_ms : ex->rings ? 1000 : -1;
		pthread_mutex_unlock(&ex->lock);
		struct pollfd p = {.fd = ex->wake_fd, .events = POLLIN};
		if (poll(&p, 1, wait_ms) > 0) {
			uint64_t v;
			ssize_t n = read(ex->wake_fd, &v, sizeof v);
			(void)n;
		}
		export_round(ex);
	}
	export_round(ex); /* the last spans, bounded by the timeout */
	trace_client_reset(&ex->client);
	return NULL;
}

struct trace_exporter *trace_exporter_get(void)
{
	if (process_exporter) {
		process_exporter->users++;
		return process_exporter;
	}
	struct trace_exporter *ex = calloc(1, sizeof *ex);
	if (!ex)
		return NULL;
	ex->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	atomic_init(&ex->stop, false);
	if (ex->wake_fd < 0 || pthread_mutex_init(&ex->lock, NULL) != 0) {
		log_msg(LOG_ERROR, "tracing: cannot create the exporter's wakeup descriptor");
		if (ex->wake_fd >= 0)
			close(ex->wake_fd);
		free(ex);
		return NULL;
	}
	ex->cw = counters_worker_new(counters_process);
	trace_client_init(&ex->client);
	int rc = pthread_create(&ex->thread, NULL, exporter_main, ex);
	if (rc == 0)
		(void)pthread_setname_np(ex->thread, "sluice-otlp"); /* top -H, strace -p: which thread exports */
	if (rc != 0) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "tracing: cannot start the exporter thread");
		log_str(&l, "error", strerror(rc));
		log_end(&l);
		pthread_mutex_destroy(&ex->lock);
		close(ex->wake_fd);
		free(ex);
		return NULL;
	}
	ex->users = 1;
	process_exporter = ex;
	return ex;
}

void trace_exporter_put(struct trace_exporter *ex)
{
	if (!ex || --ex->users > 0)
		return;
	atomic_store(&ex->stop, true);
	uint64_t one = 1;
	ssize_t n = write(ex->wake_fd, &one, sizeof one);
	(void)n;
	pthread_join(ex->thread, NULL);
	while (ex->rings) {
		struct trace_ring *r = ex->rings;
		ex->rings = r->next;
		free(r);
	}
	trace_export_conf_unref(ex->conf);
	free(ex->batch);
	pthread_mutex_destroy(&ex->lock);
	close(ex->wake_fd);
	if (process_exporter == ex)
		process_exporter = NULL;
	free(ex);
}

void trace_exporter_configure(struct trace_exporter *ex, struct trace_export_conf *ec, uint64_t generation)
{
	pthread_mutex_lock(&ex->lock);
	if (generation > ex->generation || (generation == ex->generation && !ex->conf && ec)) {
		if (ec)
			trace_export_conf_ref(ec);
		trace_export_conf_unref(ex->conf);
		ex->conf = ec;
		ex->generation = generation;
		uint64_t one = 1; /* its interval may have changed */
		ssize_t n = write(ex->wake_fd, &one, sizeof one);
		(void)n;
	}
	pthread_mutex_unlock(&ex->lock);
}
