/* trace_export.c - the span queues and the OTLP/HTTP exporter thread (trace_export.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "trace_export.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "counters.h"
#include "log.h"
#include "tls_ctx.h"
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
	struct trace_span *batch;
	size_t batch_cap;
	bool failing;
	uint64_t failed_since_log;
	uint64_t last_fail_log_us;
};

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

/* ---- the HTTP client (exporter thread) ---- */

static int wait_fd(int fd, short events, uint64_t deadline_us)
{
	for (;;) {
		uint64_t now = clock_mono_us();
		if (now >= deadline_us)
			return 0;
		struct pollfd p = {.fd = fd, .events = events};
		int rc = poll(&p, 1, (int)((deadline_us - now + 999) / 1000));
		if (rc < 0 && errno == EINTR)
			continue;
		return rc;
	}
}

static int connect_to(const struct trace_export_conf *ec, uint64_t deadline_us, char *why, size_t why_size)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(ec->host, ec->port, &hints, &res);
	if (rc != 0) {
		snprintf(why, why_size, "cannot resolve %s: %s", ec->host, gai_strerror(rc));
		return -1;
	}
	int fd = -1;
	snprintf(why, why_size, "no address for %s", ec->host);
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			snprintf(why, why_size, "socket: %s", strerror(errno));
			continue;
		}
		int err = 0;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
			err = errno;
			if (err == EINPROGRESS) {
				socklen_t elen = sizeof err;
				if (wait_fd(fd, POLLOUT, deadline_us) <= 0)
					err = ETIMEDOUT;
				else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
					err = errno;
			}
		}
		if (err) {
			snprintf(why, why_size, "connect to %s:%s: %s", ec->host, ec->port, strerror(err));
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	return fd;
}

/* One connection to the collector: plain, or TLS over the socket (ssl set). */
struct otlp_conn {
	int fd;
	SSL *ssl;
};

/* After an SSL call returned rc: when it wants the socket readable or
 * writable, wait for that; false when it failed or the deadline passed. */
static bool tls_wait(struct otlp_conn *c, int rc, uint64_t deadline_us)
{
	int err = SSL_get_error(c->ssl, rc);
	if (err == SSL_ERROR_WANT_READ)
		return wait_fd(c->fd, POLLIN, deadline_us) > 0;
	if (err == SSL_ERROR_WANT_WRITE)
		return wait_fd(c->fd, POLLOUT, deadline_us) > 0;
	return false;
}

/* The TLS handshake with an https:// collector, verified against the CA
 * file or the system store and by name: its DNS name (also sent as SNI) or
 * its IP address must be in the certificate. */
static bool tls_start(const struct trace_export_conf *ec, struct otlp_conn *c, uint64_t deadline_us, char *why,
                      size_t why_size)
{
	c->ssl = SSL_new(ec->ssl_ctx);
	if (!c->ssl) {
		snprintf(why, why_size, "out of memory for a TLS connection");
		return false;
	}
	unsigned char addr[sizeof(struct in6_addr)];
	bool ip = inet_pton(AF_INET, ec->host, addr) == 1 || inet_pton(AF_INET6, ec->host, addr) == 1;
	bool ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), ec->host) == 1
	             : SSL_set_tlsext_host_name(c->ssl, ec->host) == 1 && SSL_set1_host(c->ssl, ec->host) == 1;
	/* a collector that closes without close_notify after its answer is not an error */
	SSL_set_options(c->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (!ok || SSL_set_fd(c->ssl, c->fd) != 1) {
		snprintf(why, why_size, "cannot set up TLS to %s", ec->host);
		ERR_clear_error();
		return false;
	}
	for (;;) {
		ERR_clear_error();
		int rc = SSL_connect(c->ssl);
		if (rc == 1)
			return true;
		if (tls_wait(c, rc, deadline_us))
			continue;
		long v = SSL_get_verify_result(c->ssl);
		unsigned long e = ERR_peek_last_error();
		if (v != X509_V_OK)
			snprintf(why, why_size, "TLS handshake with %s:%s: the collector's certificate is not trusted: %s",
			         ec->host, ec->port, X509_verify_cert_error_string(v));
		else if (clock_mono_us() >= deadline_us)
			snprintf(why, why_size, "TLS handshake with %s:%s: no answer within %u ms", ec->host, ec->port,
			         ec->timeout_ms);
		else
			snprintf(why, why_size, "TLS handshake with %s:%s failed: %s", ec->host, ec->port,
			         e && ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "the connection closed");
		ERR_clear_error();
		return false;
	}
}

static void conn_close(struct otlp_conn *c)
{
	if (c->ssl) {
		(void)SSL_shutdown(c->ssl); /* one try: a close_notify if the socket takes it */
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	close(c->fd);
}

static bool conn_send(struct otlp_conn *c, const void *buf, size_t n, uint64_t deadline_us)
{
	const char *p = buf;
	while (n > 0) {
		if (c->ssl) {
			ERR_clear_error();
			int w = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
			if (w > 0) {
				p += w;
				n -= (size_t)w;
			} else if (!tls_wait(c, w, deadline_us)) {
				return false; /* retried with the same buffer, as SSL_write wants */
			}
			continue;
		}
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(c->fd, POLLOUT, deadline_us) <= 0)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/* Bytes read (> 0), 0 at the end, -1 on an error, -2 past the deadline. */
static ssize_t conn_recv(struct otlp_conn *c, char *buf, size_t cap, uint64_t deadline_us)
{
	for (;;) {
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_read(c->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
			if (r > 0)
				return r;
			int err = SSL_get_error(c->ssl, r);
			if (err == SSL_ERROR_ZERO_RETURN)
				return 0;
			if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
				return -1;
			if (!tls_wait(c, r, deadline_us))
				return -2;
			continue;
		}
		ssize_t r = recv(c->fd, buf, cap, 0);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		if (wait_fd(c->fd, POLLIN, deadline_us) <= 0)
			return -2;
	}
}

/* POSTs body; returns the response status, or -1 with why filled. */
static int otlp_post(const struct trace_export_conf *ec, const void *body, size_t len, char *why, size_t why_size)
{
	uint64_t deadline = clock_mono_us() + (uint64_t)ec->timeout_ms * 1000;
	struct otlp_conn c = {.fd = connect_to(ec, deadline, why, why_size)};
	if (c.fd < 0)
		return -1;
	if (ec->ssl_ctx && !tls_start(ec, &c, deadline, why, why_size)) {
		conn_close(&c);
		return -1;
	}
	char head[1024 + 64];
	bool v6 = strchr(ec->host, ':') != NULL;
	int hn = snprintf(head, sizeof head,
	                  "POST %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nContent-Type: %s\r\n"
	                  "Content-Length: %zu\r\nConnection: close\r\nUser-Agent: sluice/" PACKAGE_VERSION "\r\n",
	                  ec->path, v6 ? "[" : "", ec->host, v6 ? "]" : "", ec->port,
	                  trace_otlp_content_type(ec->protocol), len);
	int status = -1;
	errno = 0;
	if (hn < 0 || (size_t)hn >= sizeof head) {
		snprintf(why, why_size, "the collector's path is too long");
	} else if (!conn_send(&c, head, (size_t)hn, deadline) ||
	           !conn_send(&c, ec->extra_headers, strlen(ec->extra_headers), deadline) ||
	           !conn_send(&c, "\r\n", 2, deadline) || !conn_send(&c, body, len, deadline)) {
		snprintf(why, why_size, "sending to %s:%s: %s", ec->host, ec->port,
		         errno ? strerror(errno) : "timed out");
	} else {
		/* the status line and the end of the head are all this needs */
		char resp[2048];
		size_t got = 0;
		while (got < sizeof resp - 1 && !memmem(resp, got, "\r\n\r\n", 4)) {
			ssize_t r = conn_recv(&c, resp + got, sizeof resp - 1 - got, deadline);
			if (r == 0)
				break;
			if (r < 0) {
				if (r == -2)
					snprintf(why, why_size, "no answer from %s:%s within %u ms", ec->host, ec->port,
					         ec->timeout_ms);
				else
					snprintf(why, why_size, "reading from %s:%s: %s", ec->host, ec->port,
					         errno ? strerror(errno) : "TLS error");
				got = 0;
				break;
			}
			got += (size_t)r;
		}
		resp[got] = '\0';
		unsigned code;
		if (got && sscanf(resp, "HTTP/1.%*1[01] %3u", &code) == 1 && code >= 100 && code <= 599) {
			status = (int)code;
			if (status < 200 || status > 299)
				snprintf(why, why_size, "the collector answered %d", status);
		} else if (got) {
			snprintf(why, why_size, "the collector's answer is not HTTP");
		}
	}
	conn_close(&c);
	return status;
}

/* ---- the exporter thread ---- */

static void export_batch(struct trace_exporter *ex, const struct trace_export_conf *ec, size_t n)
{
	if (!ec) {
		CTR_GLOBAL_ADD(ex->cw, TRACE_SPANS_DROPPED, 0, n);
		return;
	}
	size_t len = 0;
	void *body = ec->protocol == CONF_TRACING_HTTP_PROTOBUF ? (void *)trace_otlp_protobuf(ec, ex->batch, n, &len)
	                                                       : (void *)trace_otlp_json(ec, ex->batch, n, &len);
	char why[256] = "out of memory";
	int status = body ? otlp_post(ec, body, len, why, sizeof why) : -1;
	free(body);
	if (status >= 200 && status <= 299) {
		CTR_GLOBAL_ADD(ex->cw, TRACE_SPANS_EXPORTED, 0, n);
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
	ex->failed_since_log += n;
	uint64_t now = clock_mono_us();
	/* the first failure, then at most one line a minute */
	if (!ex->failing || now - ex->last_fail_log_us >= 60000000) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "tracing: span export failed; spans dropped");
		log_str(&l, "error", why);
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
	int rc = pthread_create(&ex->thread, NULL, exporter_main, ex);
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
