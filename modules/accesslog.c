#include "accesslog.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "counters.h"
#include "log.h"
#include "log_queue.h"
#include "log_syslog.h"
#include "snapshot.h"
#include "trace_context.h"
#include "worker.h"
#include "tls_io.h"

struct accesslog_state {
	/* path's lines go through the worker's queue to the log writer
	 * (log_queue.h); NULL: no path (syslog only). The writer closes an owned
	 * file once the lines queued for it are written (snapshot_free). */
	struct logq_target *target;
	bool owned;         /* a file we opened: reopened on SIGUSR1 */
	size_t queue_bytes; /* access_log.queue */
	bool syslog;
	struct logsys_target syslog_target;
	int syslog_facility;
	const char *syslog_app;
	const char *syslog_url; /* the conf's: compared when a worker adopts another snapshot */
};

/* Per worker: its queue of lines for the log writer, and its own connection
 * to the syslog collector (log_syslog.h), on its own loop, so that a slow
 * disk, pipe or collector costs a worker nothing but drops. */
struct accesslog_worker {
	struct worker *w;
	struct logq_ring *ring; /* made when the worker first logs to a path */
	struct logsys *sys;
	char *url; /* the target sys sends to */
	size_t syslog_queue; /* sys's queue bound (access_log.queue; 0: not set yet) */
	uint64_t dropped_logged;
	uint64_t dropped_counted; /* of sys's drops, already in the counters */
};

static int accesslog_snapshot_init(const struct conf *c, void **state, struct conf_errors *errs)
{
	*state = NULL;
	if (!c->access_log.enabled)
		return 0;
	struct accesslog_state *s = calloc(1, sizeof(*s));
	if (!s) {
		conf_errors_add(errs, "%s: access_log: out of memory", c->source);
		return -1;
	}
	const char *path = c->access_log.path;
	s->queue_bytes = c->access_log.queue ? (size_t)c->access_log.queue : LOGQ_DEFAULT_BYTES;
	if (c->access_log.syslog) {
		char why[256];
		if (!logsys_parse(c->access_log.syslog, &s->syslog_target, why, sizeof why)) {
			conf_errors_add(errs, "%s: access_log.syslog: %s", c->source, why);
			free(s);
			return -1;
		}
		s->syslog = true;
		s->syslog_facility = c->access_log.syslog_facility;
		s->syslog_app = c->access_log.syslog_app ? c->access_log.syslog_app : "sluice";
		s->syslog_url = c->access_log.syslog;
	}
	if (path) {
		int fd;
		unsigned output;
		if (strcmp(path, "stdout") == 0) {
			fd = STDOUT_FILENO;
			output = CTR_LOG_OUT_STDOUT;
		} else if (strcmp(path, "stderr") == 0) {
			fd = STDERR_FILENO;
			output = CTR_LOG_OUT_STDERR;
		} else {
			char why[PATH_MAX + 300];
			fd = log_open_append(path, why, sizeof why);
			if (fd < 0) {
				conf_errors_add(errs, "%s: access_log.path: %s", c->source, why);
				free(s);
				return -1;
			}
			output = CTR_LOG_OUT_FILE;
			s->owned = true;
		}
		s->target = logq_target_new(fd, s->owned, output, path);
		if (!s->target) {
			conf_errors_add(errs, "%s: access_log: out of memory", c->source);
			if (s->owned)
				close(fd);
			free(s);
			return -1;
		}
	}
	*state = s;
	return 0;
}

static void accesslog_snapshot_free(void *state)
{
	struct accesslog_state *s = state;
	logq_target_release(s->target);
	free(s);
}

static void accesslog_reopen(const struct conf *c, void *state)
{
	struct accesslog_state *s = state;
	if (!s->owned)
		return; /* stdout/stderr: log_reopen() (log.h) handles those; syslog has no file */
	/* what was logged before the reopen goes to the old file (bounded wait) */
	logq_flush();
	struct log_line l;
	char why[PATH_MAX + 300];
	int fd = log_open_append(c->access_log.path, why, sizeof why);
	if (fd < 0 || dup3(fd, logq_target_fd(s->target), O_CLOEXEC) < 0) {
		log_begin(&l, LOG_ERROR, "access log: cannot reopen; still writing to the old file");
		log_str(&l, "file", c->access_log.path);
		log_str(&l, "error", fd < 0 ? why : strerror(errno));
	} else {
		log_begin(&l, LOG_INFO, "access log reopened");
		log_str(&l, "file", c->access_log.path);
	}
	log_end(&l);
	if (fd >= 0)
		close(fd);
}

struct jbuf {
	char *buf;
	size_t len;
	size_t cap;
};

static void jraw(struct jbuf *j, const char *s, size_t n)
{
	if (j->len + n >= j->cap)
		n = j->cap - j->len - 1;
	memcpy(j->buf + j->len, s, n);
	j->len += n;
}

static void jkey(struct jbuf *j, const char *key)
{
	jraw(j, ",\"", 2);
	jraw(j, key, strlen(key));
	jraw(j, "\":", 2);
}

static void jstr(struct jbuf *j, const char *key, const char *value)
{
	jkey(j, key);
	jraw(j, "\"", 1);
	size_t len = j->len;
	log_json_escape(j->buf, j->cap - 2, &len, value ? value : "", value ? strlen(value) : 0);
	j->len = len;
	jraw(j, "\"", 1);
}

/* v in decimal, written backwards ending at end; returns its first digit.
 * The log phase formats a dozen numbers per request: snprintf cost more than
 * the rest of the line together (callgrind). */
static char *jdec(uint64_t v, char *end)
{
	char *p = end;
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return p;
}

static void jnum(struct jbuf *j, const char *key, unsigned long long value)
{
	char num[24];
	char *end = num + sizeof num;
	char *p = jdec(value, end);
	jkey(j, key);
	jraw(j, p, (size_t)(end - p));
}

/* microseconds as milliseconds with three decimals: 12.345 */
static void jms(struct jbuf *j, const char *key, uint64_t us)
{
	char num[32];
	char *end = num + sizeof num;
	unsigned frac = (unsigned)(us % 1000);
	end[-1] = (char)('0' + frac % 10);
	end[-2] = (char)('0' + frac / 10 % 10);
	end[-3] = (char)('0' + frac / 100);
	end[-4] = '.';
	char *p = jdec(us / 1000, end - 4);
	jkey(j, key);
	jraw(j, p, (size_t)(end - p));
}

bool accesslog_is_field(const char *name)
{
	static const char *const fields[] = {
	    "time", "request_id", "client_ip", "client_port", "listener", "scheme", "protocol", "tls_version",
	    "tls_cipher", "tls_sni", "tls_client_subject", "tls_resumed", "method", "host", "target", "route",
	    "service", "pool", "upstream", "upstream_status", "status", "reason", "bytes_in", "bytes_out", "attempts",
	    "duration_ms", "upstream_connect_ms", "upstream_header_ms", "upstream_duration_ms", "http_version",
	    "stream_id", "generation", "trace_id", "span_id", "parent_span_id", "trace_sampled", "policy",
	    "upstream_span_id",
	    "policy_error", NULL,
	};
	for (const char *const *f = fields; *f; f++)
		if (strcmp(*f, name) == 0)
			return true;
	return false;
}

size_t accesslog_format(const struct request *r, char *buf, size_t cap)
{
	const struct conf *c = r->snap->conf;
	char ts[32];
	struct jbuf j = {buf, 0, cap - 2};
	log_format_time(r->start_wall_us, ts);
	jraw(&j, "{\"time\":\"", 9);
	jraw(&j, ts, strlen(ts));
	jraw(&j, "\"", 1);
	jstr(&j, "request_id", r->request_id);
	jstr(&j, "client_ip", r->client_ip);
	jnum(&j, "client_port", r->client_port);
	jstr(&j, "listener", r->listener);
	jstr(&j, "scheme", r->scheme);
	jstr(&j, "protocol", r->protocol);
	const char *proto = r->protocol ? r->protocol : "";
	jstr(&j, "http_version", strcmp(proto, "HTTP/2.0") == 0 ? "2" : strncmp(proto, "HTTP/", 5) == 0 ? proto + 5 : proto);
	jnum(&j, "stream_id", r->stream_id);
	struct tls_info ti;
	if (pipeline_tls_info(r, &ti)) {
		jstr(&j, "tls_version", ti.version);
		jstr(&j, "tls_cipher", ti.cipher);
		jstr(&j, "tls_sni", ti.sni);
		jstr(&j, "tls_client_subject", ti.client_subject);
		jstr(&j, "tls_resumed", ti.resumed ? "yes" : "no");
	}
	jstr(&j, "method", r->method);
	jstr(&j, "host", r->host);
	jstr(&j, "target", r->target);
	jstr(&j, "route", r->route_name);
	jstr(&j, "service", r->service >= 0 ? c->services[r->service].name : "");
	jstr(&j, "pool", r->pool >= 0 ? c->pools[r->pool].name : "");
	jstr(&j, "upstream", r->upstream);
	jnum(&j, "upstream_status", (unsigned)r->upstream_status);
	jnum(&j, "status", (unsigned)r->status);
	jstr(&j, "reason", reason_name(r->reason));
	jnum(&j, "bytes_in", r->bytes_in);
	jnum(&j, "bytes_out", r->bytes_out);
	jnum(&j, "attempts", r->attempts);
	uint64_t end = clock_elapsed_us(r->start_mono_us, r->end_mono_us);
	jms(&j, "duration_ms", end);
	jms(&j, "upstream_connect_ms", r->upstream_connect_us);
	jms(&j, "upstream_header_ms", r->upstream_header_us);
	/* the last attempt, from its start to the end of the response (the
	 * transaction's clock is only this request's once an upstream was chosen) */
	const struct exchange *ex = (const struct exchange *)r;
	jms(&j, "upstream_duration_ms",
	    r->upstream[0] && ex->txn.attempt_start_us ? clock_elapsed_us(ex->txn.attempt_start_us, r->end_mono_us) : 0);
	jnum(&j, "generation", r->snap->generation);
	if (r->traced) {
		char hex[33];
		trace_hex(r->trace_id, sizeof r->trace_id, hex);
		jstr(&j, "trace_id", hex);
		trace_hex(r->span_id, sizeof r->span_id, hex);
		jstr(&j, "span_id", hex);
		bool root = trace_id_is_zero(r->parent_span_id, sizeof r->parent_span_id);
		if (!root)
			trace_hex(r->parent_span_id, sizeof r->parent_span_id, hex);
		jstr(&j, "parent_span_id", root ? "" : hex);
		if (r->attempts)
			trace_hex(r->upstream_span_id, sizeof r->upstream_span_id, hex);
		jstr(&j, "upstream_span_id", r->attempts ? hex : "");
		const char *sampled = (r->trace_flags & TRACE_FLAG_SAMPLED) ? ",\"trace_sampled\":true" : ",\"trace_sampled\":false";
		jraw(&j, sampled, strlen(sampled));
	}
	/* fields a Lua policy added (r:log): keys checked by the policy module */
	for (size_t i = 0; i < r->log_fields.n; i++) {
		const struct http_header *h = &r->log_fields.v[i];
		jraw(&j, ",\"", 2);
		jraw(&j, h->name, h->name_len);
		jraw(&j, "\":\"", 3);
		size_t len = j.len;
		log_json_escape(j.buf, j.cap - 2, &len, h->value, h->value_len);
		j.len = len;
		jraw(&j, "\"", 1);
	}
	j.buf[j.len++] = '}';
	j.buf[j.len++] = '\n';
	return j.len;
}

static int accesslog_worker_init(struct worker *w, void **worker_state)
{
	struct accesslog_worker *aw = calloc(1, sizeof(*aw));
	if (!aw)
		return -1;
	if (!logq_writer_get()) {
		free(aw);
		return -1;
	}
	aw->w = w;
	*worker_state = aw;
	return 0;
}

static void accesslog_worker_free(void *worker_state)
{
	struct accesslog_worker *aw = worker_state;
	if (aw->sys && logsys_dropped(aw->sys) > 0) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "access log: lines not delivered to syslog");
		log_int(&l, "dropped", (long long)logsys_dropped(aw->sys));
		log_end(&l);
	}
	logsys_free(aw->sys);
	free(aw->url);
	/* the last worker's put writes what is queued before the process goes on to exit */
	logq_ring_retire(aw->ring);
	logq_writer_put();
	free(aw);
}

/* A reload that changes access_log.queue: a ring of the new size, read by
 * the writer only once this worker's previous one is written. */
static void accesslog_worker_adopt(struct worker *w, void *worker_state, const void *snapshot_state)
{
	(void)w;
	struct accesslog_worker *aw = worker_state;
	const struct accesslog_state *s = snapshot_state;
	if (!aw || !aw->ring || !s || !s->target || logq_ring_capacity(aw->ring) == logq_ring_size(s->queue_bytes))
		return;
	struct logq_ring *r = logq_ring_new(s->queue_bytes, aw->w->counters, aw->ring);
	if (!r)
		return; /* keeps the old one */
	logq_ring_retire(aw->ring);
	aw->ring = r;
}

/* The worker's syslog sender for s: kept while the target stays the same
 * across reloads, made anew when it changes. */
static struct logsys *worker_syslog(struct accesslog_worker *aw, const struct accesslog_state *s)
{
	/* compared by value: a freed snapshot's state may share an address with a new one */
	if (!aw->sys || !aw->url || strcmp(aw->url, s->syslog_url) != 0) {
		logsys_free(aw->sys);
		free(aw->url);
		aw->url = strdup(s->syslog_url);
		aw->syslog_queue = 0;
		aw->sys = aw->url ? logsys_new(aw->w->base, &s->syslog_target, s->syslog_facility, s->syslog_app) : NULL;
		/* `ctl flush-logs` waits for what it holds (untracked if out of memory: it still sends) */
		if (aw->sys && !logsys_track(aw->sys, s->syslog_url))
			log_msg(LOG_WARN, "access log: out of memory: flush-logs will not wait for this worker's syslog lines");
		aw->dropped_logged = 0;
		aw->dropped_counted = 0;
	}
	/* access_log.queue bounds the sender too (a reload may change it) */
	if (aw->sys && aw->syslog_queue != s->queue_bytes) {
		logsys_set_max_queue(aw->sys, s->queue_bytes);
		aw->syslog_queue = s->queue_bytes;
	}
	return aw->sys;
}

static void accesslog_log(const struct request *r, const void *snapshot_state, void *worker_state)
{
	const struct accesslog_state *s = snapshot_state;
	if (!s)
		return;
	char line[8192];
	size_t n = accesslog_format(r, line, sizeof(line));
	struct accesslog_worker *aw = worker_state;
	if (s->target && aw) {
		/* never a write here: a full disk, a slow one or a pipe nobody reads
		 * must not stall request handling (the log writer waits instead) */
		if (!aw->ring)
			aw->ring = logq_ring_new(s->queue_bytes, aw->w->counters, NULL);
		if (aw->ring)
			logq_push(aw->ring, s->target, line, n);
		else
			CTR_GLOBAL_ADD(aw->w->counters, ACCESS_LOG_DROPPED, logq_target_output(s->target), 1);
	}
	if (s->syslog && aw) {
		struct logsys *sys = worker_syslog(aw, s);
		if (!sys)
			return;
		logsys_send(sys, 6, line, n, r->start_wall_us);
		uint64_t d = logsys_dropped(sys);
		if (d > aw->dropped_counted) {
			CTR_GLOBAL_ADD(aw->w->counters, ACCESS_LOG_DROPPED, CTR_LOG_OUT_SYSLOG, d - aw->dropped_counted);
			aw->dropped_counted = d;
		}
		/* the first drop, then every 1000th: visible without flooding */
		if (d > aw->dropped_logged && (aw->dropped_logged == 0 || d >= aw->dropped_logged + 1000)) {
			struct log_line l;
			log_begin(&l, LOG_WARN, "access log: syslog collector unreachable or slow; lines dropped");
			log_str(&l, "syslog", s->syslog_url);
			log_int(&l, "dropped", (long long)d);
			log_end(&l);
			aw->dropped_logged = d;
		}
	}
}

const struct module accesslog_module = {
    .name = "access_log",
    .snapshot_init = accesslog_snapshot_init,
    .snapshot_free = accesslog_snapshot_free,
    .worker_init = accesslog_worker_init,
    .worker_free = accesslog_worker_free,
    .worker_adopt = accesslog_worker_adopt,
    .reopen = accesslog_reopen,
    .log = accesslog_log,
};
