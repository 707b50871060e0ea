/* trace_client.c - the OTLP collector's HTTP/1.1 keep-alive client (trace_client.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "trace_client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "h1.h"
#include "trace_otlp.h"

void trace_client_init(struct trace_client *c)
{
	memset(c, 0, sizeof *c);
	c->fd = -1;
}

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

/* After an SSL call returned rc: when it wants the socket readable or
 * writable, wait for that; false when it failed or the deadline passed. */
static bool tls_wait(struct trace_client *c, int rc, uint64_t deadline_us)
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
 * its IP address must be in the certificate. The last session with this
 * collector is offered for resumption. */
static bool tls_start(struct trace_client *c, const struct trace_export_conf *ec, uint64_t deadline_us, char *why,
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
	/* a session that will not resume (expired) only costs the full handshake */
	if (c->session && SSL_set_session(c->ssl, c->session) != 1)
		ERR_clear_error();
	for (;;) {
		ERR_clear_error();
		int rc = SSL_connect(c->ssl);
		if (rc == 1) {
			c->resumed += SSL_session_reused(c->ssl) == 1;
			return true;
		}
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

/* Closes the connection; a TLS one leaves its session for the next, when
 * it can be resumed. */
static void conn_close(struct trace_client *c)
{
	if (c->ssl) {
		SSL_SESSION *s = SSL_get1_session(c->ssl);
		if (s && SSL_SESSION_is_resumable(s)) {
			SSL_SESSION_free(c->session);
			c->session = s;
		} else {
			SSL_SESSION_free(s);
		}
		(void)SSL_shutdown(c->ssl); /* one try: a close_notify if the socket takes it */
		SSL_free(c->ssl);
		c->ssl = NULL;
		ERR_clear_error();
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->in_len = 0;
}

/* The connection, the session and the settings they were for go. */
static void forget(struct trace_client *c)
{
	conn_close(c);
	SSL_SESSION_free(c->session);
	c->session = NULL;
	trace_export_conf_unref(c->ec);
	c->ec = NULL;
}

void trace_client_reset(struct trace_client *c)
{
	forget(c);
	free(c->out);
	c->out = NULL;
	c->out_cap = 0;
}

void trace_client_close_idle(struct trace_client *c, uint64_t idle_us)
{
	if (c->fd >= 0 && clock_mono_us() - c->last_used_us >= idle_us)
		conn_close(c);
}

/* An idle kept-alive connection is usable when nothing is readable on it:
 * a readable one was closed by the collector (or holds bytes nobody asked
 * for). Over TLS, records that carry no data (a session ticket, a key
 * update) are read and leave it usable. */
static bool conn_idle_clean(struct trace_client *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLIN};
	int rc = poll(&p, 1, 0);
	if (rc == 0)
		return true;
	if (rc < 0 || !c->ssl || (p.revents & (POLLERR | POLLHUP)))
		return false;
	char b;
	ERR_clear_error();
	int r = SSL_read(c->ssl, &b, 1);
	bool clean = r <= 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ;
	ERR_clear_error();
	return clean;
}

static bool conn_open(struct trace_client *c, struct trace_export_conf *ec, uint64_t deadline_us, char *why,
                      size_t why_size)
{
	c->fd = connect_to(ec, deadline_us, why, why_size);
	if (c->fd < 0)
		return false;
	c->connects++;
	if (ec->ssl_ctx && !tls_start(c, ec, deadline_us, why, why_size)) {
		conn_close(c);
		return false;
	}
	return true;
}

/* Sends iov[0..n) whole (a plain connection: one sendmsg for the head and
 * the body, unless the socket takes less). */
static bool send_plain(struct trace_client *c, struct iovec *iov, int n, uint64_t deadline_us)
{
	while (n > 0) {
		struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(c->fd, POLLOUT, deadline_us) <= 0)
				return false;
			continue;
		}
		if (w <= 0)
			return false;
		size_t left = (size_t)w;
		while (n > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	return true;
}

/* Over TLS the head and the body go as one buffer: one SSL_write, so the
 * head does not take a record (and a write) of its own. */
static bool send_tls(struct trace_client *c, const struct iovec *iov, int n, uint64_t deadline_us)
{
	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (total > c->out_cap) {
		char *p = realloc(c->out, total);
		if (!p) {
			errno = ENOMEM;
			return false;
		}
		c->out = p;
		c->out_cap = total;
	}
	size_t o = 0;
	for (int i = 0; i < n; i++) {
		memcpy(c->out + o, iov[i].iov_base, iov[i].iov_len);
		o += iov[i].iov_len;
	}
	const char *p = c->out;
	while (total > 0) {
		ERR_clear_error();
		int w = SSL_write(c->ssl, p, total > INT_MAX ? INT_MAX : (int)total);
		if (w > 0) {
			p += w;
			total -= (size_t)w;
		} else if (!tls_wait(c, w, deadline_us)) {
			return false; /* retried with the same buffer, as SSL_write wants */
		}
	}
	return true;
}

/* Bytes read into the input buffer (> 0), 0 at the end, -1 on an error, -2
 * past the deadline. Waits for the socket first: an answer is never there
 * the moment it is asked for. */
static ssize_t conn_fill(struct trace_client *c, uint64_t deadline_us)
{
	char *buf = c->in + c->in_len;
	size_t cap = sizeof c->in - c->in_len;
	if (c->ssl && SSL_pending(c->ssl) == 0 && wait_fd(c->fd, POLLIN, deadline_us) <= 0)
		return -2;
	for (;;) {
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_read(c->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
			if (r > 0) {
				c->in_len += (size_t)r;
				return r;
			}
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
		if (r > 0)
			c->in_len += (size_t)r;
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

static void consume(struct trace_client *c, size_t n)
{
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
}

/* The answer's body, as far as it is kept (limit bytes). */
static void keep(struct trace_client *c, char *body, size_t *blen, size_t n, size_t limit)
{
	size_t room = limit - *blen;
	memcpy(body + *blen, c->in, n < room ? n : room);
	*blen += n < room ? n : room;
}

long trace_client_retry_after(const char *v, size_t n, int64_t now_s)
{
	static const long max_s = 86400;
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	while (n && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	if (n && v[0] >= '0' && v[0] <= '9') {
		long s = 0;
		for (size_t i = 0; i < n; i++) {
			if (v[i] < '0' || v[i] > '9')
				return -1;
			s = s >= max_s ? max_s : s * 10 + (v[i] - '0');
		}
		return s > max_s ? max_s : s;
	}
	/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	char buf[32], mon[4] = "";
	if (n != 29)
		return -1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	int d, y, hh, mm, ss, used = 0;
	if (sscanf(buf, "%*3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", &d, mon, &y, &hh, &mm, &ss, &used) != 6 ||
	    used != 29)
		return -1;
	const char *mp = strlen(mon) == 3 ? strstr(months, mon) : NULL;
	if (!mp || (mp - months) % 3 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60)
		return -1;
	/* days from the civil date (proleptic Gregorian), as in H. Hinnant's algorithm */
	int m = (int)((mp - months) / 3) + 1;
	int yy = m <= 2 ? y - 1 : y;
	int era = yy / 400;
	int yoe = yy - era * 400;
	int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	int64_t days = (int64_t)era * 146097 + doe - 719468;
	int64_t at = days * 86400 + hh * 3600 + mm * 60 + ss;
	if (at <= now_s)
		return 0;
	return at - now_s > max_s ? max_s : (long)(at - now_s);
}

enum read_result { READ_OK, READ_FAILED, READ_NOTHING };

static enum read_result read_fail(struct trace_client *c, ssize_t r, bool nothing_yet, char *why, size_t why_size)
{
	const struct trace_export_conf *ec = c->ec;
	if (r == -2)
		snprintf(why, why_size, "no answer from %s:%s within %u ms", ec->host, ec->port, ec->timeout_ms);
	else if (r == 0)
		snprintf(why, why_size, "%s:%s closed the connection %s", ec->host, ec->port,
		         nothing_yet ? "without an answer" : "in the middle of its answer");
	else
		snprintf(why, why_size, "reading from %s:%s: %s", ec->host, ec->port,
		         c->ssl ? "TLS error" : strerror(errno));
	/* a kept-alive connection the collector had closed: nothing was taken */
	return nothing_yet && r != -2 ? READ_NOTHING : READ_FAILED;
}

/* Reads one whole answer: skips interim (1xx) heads, reads the body to its
 * end. *reuse: the connection may carry the next request. */
static enum read_result read_answer(struct trace_client *c, uint64_t deadline, struct trace_answer *ans,
                                    bool *reuse, char *why, size_t why_size)
{
	char *body = c->body;
	static const struct h1_limits lim = {.max_request_line = 1024, .max_head = TRACE_CLIENT_HEAD_MAX - 1,
	                                     .max_headers = 64};
	struct h1_response res;
	bool nothing_yet = true;
	int head;
	for (;;) {
		const char *bad = NULL;
		head = c->in_len ? h1_parse_response(c->in, c->in_len, &lim, false, &res, &bad) : H1_INCOMPLETE;
		if (head == H1_ERROR) {
			snprintf(why, why_size, "the collector's answer is not HTTP/1.1: %s", bad ? bad : "malformed");
			return READ_FAILED;
		}
		if (head > 0 && res.status >= 200)
			break;
		if (head > 0) { /* 100 Continue or another interim answer */
			consume(c, (size_t)head);
			continue;
		}
		ssize_t r = conn_fill(c, deadline);
		if (r <= 0)
			return read_fail(c, r, nothing_yet, why, why_size);
		nothing_yet = false;
	}
	ans->status = res.status;
	ans->content_type[0] = '\0';
	ans->retry_after_s = -1;
	for (size_t i = 0; i < res.num_headers; i++) {
		if (http_name_is(&res.headers[i], "retry-after"))
			ans->retry_after_s = trace_client_retry_after(res.headers[i].value, res.headers[i].value_len,
			                                              (int64_t)(clock_wall_us() / 1000000));
		if (!http_name_is(&res.headers[i], "content-type"))
			continue;
		size_t n = 0;
		const char *v = res.headers[i].value;
		while (n < res.headers[i].value_len && n < sizeof ans->content_type - 1 && v[n] != ';' && v[n] != ' ') {
			ans->content_type[n] = (char)tolower((unsigned char)v[n]);
			n++;
		}
		ans->content_type[n] = '\0';
	}
	enum h1_body framing = res.body;
	uint64_t left = res.content_length;
	*reuse = res.keep_alive && framing != H1_BODY_CLOSE;
	consume(c, (size_t)head);
	size_t blen = 0;
	/* a refusal's reason is in its first bytes: the rest is not waited for */
	bool refusal = res.status > 299;
	size_t limit = refusal ? TRACE_CLIENT_ERROR_BODY_KEEP : TRACE_CLIENT_BODY_KEEP;
	struct h1_chunked ch;
	h1_chunked_init(&ch, 1024, 8192);
	for (;;) {
		if (framing == H1_BODY_NONE || (framing == H1_BODY_LENGTH && left == 0))
			break;
		if (refusal && blen >= limit) {
			*reuse = false; /* the rest of the body is still coming: the connection goes */
			break;
		}
		if (framing == H1_BODY_LENGTH && c->in_len) {
			size_t n = c->in_len < left ? c->in_len : (size_t)left;
			keep(c, body, &blen, n, limit);
			consume(c, n);
			left -= n;
			continue;
		}
		if (framing == H1_BODY_CLOSE && c->in_len) {
			keep(c, body, &blen, c->in_len, limit);
			consume(c, c->in_len);
		}
		if (framing == H1_BODY_CHUNKED && c->in_len) {
			enum h1_chunk_event ev;
			ssize_t n = h1_chunked_feed(&ch, c->in, c->in_len, &ev, NULL, NULL);
			if (n < 0) {
				snprintf(why, why_size, "the collector's chunked answer is malformed: %s", ch.why);
				return READ_FAILED;
			}
			if (ev == H1_CHUNK_DATA)
				keep(c, body, &blen, (size_t)n, limit);
			consume(c, (size_t)n);
			if (ev == H1_CHUNK_DONE)
				break;
			if (ev != H1_CHUNK_NEED_MORE)
				continue;
			if (c->in_len == sizeof c->in) {
				snprintf(why, why_size, "the collector's chunked answer has a line too long");
				return READ_FAILED;
			}
		}
		ssize_t r = conn_fill(c, deadline);
		if (r == 0 && framing == H1_BODY_CLOSE)
			break;
		if (r <= 0)
			return read_fail(c, r, false, why, why_size);
	}
	/* bytes beyond the answer: the connection is out of step */
	if (c->in_len)
		*reuse = false;
	ans->body = body;
	ans->body_len = blen;
	return READ_OK;
}

/* One request and its answer on the open connection. */
static enum read_result exchange(struct trace_client *c, const void *body, size_t len, uint64_t deadline,
                                 struct trace_answer *ans, bool *reuse, char *why, size_t why_size)
{
	const struct trace_export_conf *ec = c->ec;
	char head[1024 + 64];
	bool v6 = strchr(ec->host, ':') != NULL;
	int hn = snprintf(head, sizeof head,
	                  "POST %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nContent-Type: %s\r\n"
	                  "Content-Length: %zu\r\nUser-Agent: sluice/" PACKAGE_VERSION "\r\n",
	                  ec->path, v6 ? "[" : "", ec->host, v6 ? "]" : "", ec->port,
	                  trace_otlp_content_type(ec->protocol), len);
	if (hn < 0 || (size_t)hn >= sizeof head) {
		snprintf(why, why_size, "the collector's path is too long");
		return READ_FAILED;
	}
	struct iovec iov[4] = {{head, (size_t)hn},
	                       {ec->extra_headers, strlen(ec->extra_headers)},
	                       {(char *)"\r\n", 2},
	                       {(void *)body, len}};
	errno = 0;
	bool sent = c->ssl ? send_tls(c, iov, 4, deadline) : send_plain(c, iov, 4, deadline);
	if (!sent) {
		int err = errno;
		snprintf(why, why_size, "sending to %s:%s: %s", ec->host, ec->port, err ? strerror(err) : "timed out");
		/* a send refused outright (the collector had closed) took nothing */
		return err == EPIPE || err == ECONNRESET ? READ_NOTHING : READ_FAILED;
	}
	return read_answer(c, deadline, ans, reuse, why, why_size);
}

int trace_client_post(struct trace_client *c, struct trace_export_conf *ec, const void *body, size_t len,
                      struct trace_answer *ans, char *why, size_t why_size)
{
	uint64_t deadline = clock_mono_us() + (uint64_t)ec->timeout_ms * 1000;
	if (c->ec != ec) {
		/* other settings (a reload): their own connection, and a session of their own context */
		forget(c);
		trace_export_conf_ref(ec);
		c->ec = ec;
	}
	if (c->fd >= 0 && !conn_idle_clean(c))
		conn_close(c);
	for (int attempt = 0;; attempt++) {
		bool reused = c->fd >= 0;
		if (!reused && !conn_open(c, ec, deadline, why, why_size))
			return -1;
		bool reuse = false;
		enum read_result rr = exchange(c, body, len, deadline, ans, &reuse, why, why_size);
		if (rr == READ_OK) {
			c->last_used_us = clock_mono_us();
			if (!reuse)
				conn_close(c);
			return ans->status;
		}
		conn_close(c);
		/* once more on a new connection when the reused one had been closed under it */
		if (!(rr == READ_NOTHING && reused && attempt == 0 && clock_mono_us() < deadline))
			return -1;
	}
}
