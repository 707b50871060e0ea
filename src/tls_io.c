#include "tls_io.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h> /* the TLS filter's write timer: see tls_flush() */
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conf.h"
#include "io.h"
#include "snapshot.h"
#include "worker.h"

/* ---- process-wide, set once by tls_io_init() ---- */

static pthread_once_t tls_io_once = PTHREAD_ONCE_INIT;
static int tls_conn_index = -1;    /* SSL -> cached client subject (malloc'd string) */
static BIO_METHOD *tls_bio_method; /* the BIO of accepted connections (see tls_conn) */

static void tls_bio_init(void);

/* Runs inside SSL_free() before OpenSSL drops "badly shut down" sessions
 * from the cache: connections are closed by the pipeline without waiting for
 * close_notify (as nginx does with quiet shutdown), and a connection that
 * completed its handshake must stay resumable. */
static void tls_conn_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	SSL *ssl = parent;
	if (ssl && SSL_is_server(ssl) && SSL_is_init_finished(ssl))
		SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}


static void tls_io_init_once(void)
{
	tls_conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, tls_conn_data_free);
	tls_bio_init();
	ERR_clear_error();
}

bool tls_io_init(void)
{
	return pthread_once(&tls_io_once, tls_io_init_once) == 0 && tls_conn_index >= 0 && tls_bio_method;
}

/* ---- the transport of accepted TLS connections ----
 *
 * libevent's TLS bufferevent over a socket re-arms its events on every
 * WANT_READ and WANT_WRITE (two epoll_ctl per response, about ten per
 * handshake), reads each record with two read(2) (plus one that fails with
 * EAGAIN) and writes each record with its own write(2); over another
 * bufferevent it encrypts every evbuffer_add() into a record of its own and
 * calls SSL_read() whenever reading is enabled again. Instead, the SSL sits in
 * a generic filter bufferevent (the one the rest of sluice gets) over a
 * socket bufferevent, `under`, with a BIO on under's buffers:
 * - reading: under's read event stays armed; libevent reads up to 4 KiB into
 *   under's input, the input filter decrypts it (SSL_read() only when there
 *   is something to read), and the BIO reads whatever else the socket holds
 *   straight into OpenSSL's buffer, up to a bound;
 * - writing: the output filter only schedules under's io_flusher; once the
 *   current callbacks are done, tls_flush() encrypts what the filter's output
 *   holds (a record per piece of up to 16 KiB, pieces smaller than that
 *   gathered into one record while they fit) and writes under's output with
 *   one write(2). The write event is armed only when the socket would block;
 * - events (handshake done, a TLS failure, the client's close_notify) reach
 *   the filter's event callback from tls_flush(), never from inside
 *   libevent's filter code.
 *
 * What users of the filter must not notice, and how it is hidden:
 * - The filter's output empties into under's output, not into the socket.
 *   under takes about TLS_UNDER_HIGH bytes (the filter keeps the rest, so
 *   back-pressure on the filter's output still works); tls_bev_shutdown()
 *   waits for under before the half-close; and a filter freed while under
 *   still holds records (an HTTP/2 session ending on a full socket) leaves
 *   under behind until they are written, the client goes, or the send
 *   timeout passes.
 * - The filter's write timeout is a plain timer that libevent arms whatever
 *   the output holds: it is disarmed whenever the output is empty, and under
 *   has the send timeout for a socket that does not drain.
 * - A TCP close without close_notify is an EOF, not an error (what
 *   bufferevent_openssl_set_allow_dirty_shutdown() gives libevent's).
 * - The handshake timeout is the filter's read timeout: one deadline for the
 *   whole handshake. */

#define TLS_UNDER_HIGH (64 * 1024) /* encrypted bytes waiting in under's output */
#define TLS_READ_MORE (64 * 1024)  /* what one wakeup reads from the socket at most, beyond under's 4 KiB */
#define TLS_RECORD 16384           /* plaintext per record */
#define TLS_WRITE_MAX (64 * 1024)  /* plaintext per SSL_write() (OpenSSL cuts it into records) */

struct tls_conn {
	struct worker *w;
	struct tls_io_worker *iow;
	SSL *ssl;
	struct bufferevent *under;
	struct bufferevent *bev; /* the filter */
	struct io_flusher flusher;
	/* the filter's callbacks on under, wrapped */
	bufferevent_data_cb readcb;
	bufferevent_event_cb eventcb;
	void *cbarg;
	unsigned long error; /* the OpenSSL error of a failure */
	short event;         /* BEV_EVENT_EOF or _ERROR (| _READING/_WRITING) once TLS failed or the client closed */
	bool event_sent;
	bool ready;             /* handshake done */
	bool connected_pending; /* BEV_EVENT_CONNECTED not delivered yet */
	bool notify_flushed;    /* tls_bev_shutdown() waits for under's output to be written */
	bool send_timeout_set;  /* under's write timeout, set the first time the socket is full */
	bool read_through;      /* tls_filter_in() runs under its bound: the BIO may read the socket */
	bool drained;           /* the socket had nothing more at the last look */
	bool hold;              /* tls_bev_hold(): leave a short output for the bytes that follow */
	struct tls_conn *prev, *next; /* in the worker's lingering list */
};

static int tls_bio_read(BIO *b, char *out, int len)
{
	struct tls_conn *tc = BIO_get_data(b);
	struct evbuffer *in = bufferevent_get_input(tc->under);
	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (evbuffer_get_length(in) > 0)
		return evbuffer_remove(in, out, (size_t)len);
	/* what under did not read (it reads 4 KiB per wakeup) comes straight into
	 * OpenSSL's buffer: no copy through under's input */
	if (tc->read_through && !tc->drained) {
		ssize_t n = recv(bufferevent_getfd(tc->under), out, (size_t)len, 0);
		if (n > 0) {
			if (n < len)
				tc->drained = true;
			return (int)n;
		}
		if (n == 0)
			return 0; /* EOF: OpenSSL reports it */
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1; /* an error: OpenSSL reports it */
		tc->drained = true;
	}
	BIO_set_retry_read(b);
	return -1;
}

static int tls_bio_write(BIO *b, const char *data, int len)
{
	struct tls_conn *tc = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	/* every record is copied into under and all of them leave in one writev:
	 * writing a large record straight from OpenSSL's buffer saved that copy
	 * but cost a system call per record, and over loopback the receiver's
	 * work too (wrk and h2load ran 7-15% slower against it) */
	if (evbuffer_add(bufferevent_get_output(tc->under), data, (size_t)len) != 0)
		return -1;
	return len;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH || cmd == BIO_CTRL_DUP ? 1 : 0;
}

static int tls_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void tls_bio_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sluice");
	if (m && BIO_meth_set_write(m, tls_bio_write) && BIO_meth_set_read(m, tls_bio_read) &&
	    BIO_meth_set_ctrl(m, tls_bio_ctrl) && BIO_meth_set_create(m, tls_bio_create))
		tls_bio_method = m;
	else
		BIO_meth_free(m);
}

static void under_readcb(struct bufferevent *under, void *arg);

/* The connection behind a filter we made, or NULL (its callbacks on under are
 * ours until the filter is freed). */
static struct tls_conn *tls_conn_of(struct bufferevent *bev)
{
	struct bufferevent *under = bev ? bufferevent_get_underlying(bev) : NULL;
	if (!under)
		return NULL;
	bufferevent_data_cb readcb = NULL;
	void *arg = NULL;
	bufferevent_getcb(under, &readcb, NULL, NULL, &arg);
	struct tls_conn *tc = readcb == under_readcb ? arg : NULL;
	return tc && tc->bev == bev ? tc : NULL;
}

/* False once the filter was freed (it dropped its callbacks on under). */
static bool tls_conn_linked(const struct tls_conn *tc)
{
	bufferevent_data_cb readcb = NULL;
	bufferevent_getcb(tc->under, &readcb, NULL, NULL, NULL);
	return readcb == under_readcb;
}

/* An SSL call returned r <= 0: a fatal error or the client's close_notify
 * becomes the event tls_flush() delivers; WANT_READ is just "wait". */
static void tls_conn_failed(struct tls_conn *tc, int r, short when)
{
	/* the BIO ran dry: only "wait", whatever an unrelated error left in this
	 * thread's queue (SSL_get_error() would report that one first, and the
	 * queue is not cleared before every call: that costs more than the call) */
	if (SSL_want_read(tc->ssl) && BIO_should_read(SSL_get_rbio(tc->ssl)))
		return;
	int e = SSL_get_error(tc->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	unsigned long code = ERR_peek_last_error();
	ERR_clear_error();
	if (tc->event)
		return;
	tc->error = code;
	/* a close_notify, or the socket closed without one, is an end, not an error */
	bool eof = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && code == 0);
	tc->event = (short)(when | (eof ? BEV_EVENT_EOF : BEV_EVENT_ERROR));
	io_flusher_schedule(&tc->flusher);
}

/* under's write event times out after the send timeout without progress. Set
 * only once the socket was full: before that under's write event is off. */
static void tls_conn_send_timeout(struct tls_conn *tc)
{
	if (tc->send_timeout_set)
		return;
	tc->send_timeout_set = true;
	struct timeval tv = worker_timeval(tc->w, tc->w->snap->conf->limits.send_timeout);
	bufferevent_set_timeouts(tc->under, NULL, &tv);
}

/* The filter's input: decrypt what under read. */
static enum bufferevent_filter_result tls_filter_in(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
                                                    enum bufferevent_flush_mode mode, void *ctx)
{
	(void)mode;
	struct tls_conn *tc = ctx;
	if (tc->event)
		return BEV_ERROR;
	bool progress = false;
	if (!tc->ready) {
		int r = SSL_do_handshake(tc->ssl);
		if (r != 1) {
			tls_conn_failed(tc, r, BEV_EVENT_READING);
			return tc->event ? BEV_ERROR : BEV_NEED_MORE;
		}
		tc->ready = true;
		tc->connected_pending = true;
		io_flusher_schedule(&tc->flusher);
		progress = true;
	}
	size_t got = 0;
	size_t bound = limit >= 0 && (size_t)limit < TLS_READ_MORE ? (size_t)limit : TLS_READ_MORE;
	/* Everything under and OpenSSL hold is decrypted, past the filter's read
	 * high-water mark if need be: libevent only comes back to under's input
	 * when the socket has more, and reading from the socket is suspended while
	 * the filter is full or not reading, so ciphertext left behind could wait
	 * forever. The socket itself is read further only while a whole record
	 * still fits under the bound: filling the filter up to its high-water mark
	 * would suspend and resume reading (two epoll_ctl) for every batch. */
	for (;;) {
		tc->read_through = !tc->drained && got + TLS_RECORD < bound;
		if (!tc->read_through && !SSL_has_pending(tc->ssl) && evbuffer_get_length(src) == 0)
			break;
		/* room for the next record's plaintext, as its header announces */
		size_t want = TLS_RECORD;
		struct evbuffer_iovec h;
		if (SSL_pending(tc->ssl) == 0 && evbuffer_peek(src, 5, NULL, &h, 1) >= 1 && h.iov_len >= 5) {
			const unsigned char *hp = h.iov_base;
			size_t rec = ((size_t)hp[3] << 8) | hp[4];
			want = rec < 256 ? 256 : rec < TLS_RECORD ? rec : TLS_RECORD;
		}
		struct evbuffer_iovec v;
		if (evbuffer_reserve_space(dst, (ev_ssize_t)want, &v, 1) < 1)
			return BEV_ERROR;
		int r = SSL_read(tc->ssl, v.iov_base, (int)(v.iov_len < TLS_RECORD ? v.iov_len : TLS_RECORD));
		if (r <= 0) {
			evbuffer_commit_space(dst, &v, 0);
			tls_conn_failed(tc, r, BEV_EVENT_READING);
			break;
		}
		v.iov_len = (size_t)r;
		evbuffer_commit_space(dst, &v, 1);
		got += (size_t)r;
	}
	tc->read_through = false;
	if (got > 0 || progress)
		return BEV_OK;
	return tc->event ? BEV_ERROR : BEV_NEED_MORE;
}

/* The filter's output: encrypted later, by tls_flush(). */
static enum bufferevent_filter_result tls_filter_out(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
                                                     enum bufferevent_flush_mode mode, void *ctx)
{
	(void)src;
	(void)dst;
	(void)limit;
	(void)mode;
	struct tls_conn *tc = ctx;
	io_flusher_schedule(&tc->flusher);
	return BEV_NEED_MORE;
}

/* Encrypt the filter's output into under's output while under has room. */
static void tls_encrypt(struct tls_conn *tc)
{
	struct evbuffer *src = bufferevent_get_output(tc->bev);
	struct evbuffer *dst = bufferevent_get_output(tc->under);
	while (evbuffer_get_length(src) > 0 && evbuffer_get_length(dst) < TLS_UNDER_HIGH && !tc->event) {
		/* one SSL_write() per piece of the output (records of up to 16 KiB),
		 * except that pieces shorter than a record are copied together into
		 * one while they fit: a response head and the first piece of its body
		 * make one record, not two */
		struct evbuffer_iovec v[8];
		int nv = evbuffer_peek(src, -1, NULL, v, 8);
		if (nv > 8)
			nv = 8;
		const unsigned char *p = v[0].iov_base;
		size_t n = v[0].iov_len < TLS_WRITE_MAX ? v[0].iov_len : TLS_WRITE_MAX;
		if (n == 0) { /* an empty piece first: gather whatever follows */
			size_t len = evbuffer_get_length(src);
			n = len < TLS_RECORD ? len : TLS_RECORD;
			p = evbuffer_pullup(src, (ev_ssize_t)n);
		} else if (n < TLS_RECORD) {
			size_t sum = n;
			int k = 1;
			while (k < nv && sum + v[k].iov_len <= TLS_RECORD)
				sum += v[k++].iov_len;
			if (k > 1) {
				n = sum;
				p = evbuffer_pullup(src, (ev_ssize_t)n);
			}
		}
		int r = p ? SSL_write(tc->ssl, p, (int)n) : -1;
		if (r <= 0) {
			tls_conn_failed(tc, r, BEV_EVENT_WRITING);
			if (!tc->event) { /* cannot happen: the BIO takes everything */
				tc->event = BEV_EVENT_WRITING | BEV_EVENT_ERROR;
				io_flusher_schedule(&tc->flusher);
			}
			break;
		}
		evbuffer_drain(src, (size_t)r);
	}
}

/* under's flusher: encrypt, tell the filter's user, write, deliver events. */
static void tls_flush(struct io_flusher *f, void *arg)
{
	struct tls_conn *tc = arg;
	struct bufferevent *bev = tc->bev;
	if (!tls_conn_linked(tc)) {
		if (!io_flusher_write(f)) /* the filter is gone: what is encrypted still goes out */
			tls_conn_send_timeout(tc);
		return;
	}
	if (tc->connected_pending) {
		tc->connected_pending = false;
		bufferevent_trigger_event(bev, BEV_EVENT_CONNECTED, 0);
		if (!tls_conn_linked(tc)) {
			io_flusher_write(f);
			return;
		}
	}
	struct evbuffer *out = bufferevent_get_output(bev);
	size_t low = 0;
	bufferevent_getwatermark(bev, EV_WRITE, &low, NULL);
	for (;;) {
		size_t before = evbuffer_get_length(out);
		if (tc->ready && before > 0 && (!tc->hold || before >= TLS_RECORD))
			tls_encrypt(tc);
		size_t after = evbuffer_get_length(out);
		if (after < before && after <= low) {
			/* the user may write more (encrypted on the next round, into the
			 * same write), or end the connection */
			bufferevent_trigger(bev, EV_WRITE, 0);
			if (!tls_conn_linked(tc)) {
				io_flusher_write(f);
				return;
			}
			if (evbuffer_get_length(out) > after && !tc->event &&
			    evbuffer_get_length(bufferevent_get_output(tc->under)) < TLS_UNDER_HIGH)
				continue;
		}
		bool flushed = io_flusher_write(f);
		if (!flushed) {
			tls_conn_send_timeout(tc);
			break;
		}
		/* under is empty and the filter still holds data: next batch */
		size_t left = evbuffer_get_length(out);
		if (left == 0 || tc->event || !tc->ready || (tc->hold && left < TLS_RECORD))
			break;
	}
	if (evbuffer_get_length(out) == 0 || tc->hold)
		event_del(&bev->ev_write); /* nothing for the write timeout to time (held bytes are not the client's fault) */
	if (tc->notify_flushed && evbuffer_get_length(bufferevent_get_output(tc->under)) == 0) {
		tc->notify_flushed = false;
		bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
		if (!tls_conn_linked(tc))
			return;
	}
	if (tc->event && !tc->event_sent) {
		tc->event_sent = true;
		bufferevent_trigger_event(bev, tc->event, 0);
	}
}

static void under_readcb(struct bufferevent *under, void *arg)
{
	struct tls_conn *tc = arg;
	/* libevent read what the socket held, up to 4 KiB: less means there is no more */
	tc->drained = evbuffer_get_length(bufferevent_get_input(under)) < 4096;
	tc->readcb(under, tc->cbarg);
}

static void under_writecb(struct bufferevent *under, void *arg)
{
	(void)under;
	struct tls_conn *tc = arg;
	/* the socket took what waited: back to direct writes, and encrypt more */
	io_flusher_drained(&tc->flusher);
	io_flusher_schedule(&tc->flusher);
}

static void under_eventcb(struct bufferevent *under, short what, void *arg)
{
	struct tls_conn *tc = arg;
	tc->eventcb(under, what, tc->cbarg);
}

static void linger_end(struct tls_conn *tc)
{
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		tc->iow->lingering = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	bufferevent_setcb(tc->under, NULL, NULL, NULL, NULL);
	bufferevent_decref(tc->under); /* the last reference: closes the socket */
	free(tc);
}

static void linger_readcb(struct bufferevent *under, void *arg)
{
	(void)arg;
	struct evbuffer *in = bufferevent_get_input(under);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void linger_writecb(struct bufferevent *under, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(under)) == 0)
		linger_end(arg);
}

static void linger_eventcb(struct bufferevent *under, short what, void *arg)
{
	(void)under;
	if ((what & BEV_EVENT_EOF) && !(what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return; /* the client is done sending; it may still read */
	linger_end(arg);
}

/* The filter is being destroyed (under has lost its callbacks and lives until
 * the filter is gone). */
static void tls_conn_free(void *arg)
{
	struct tls_conn *tc = arg;
	io_flusher_free(&tc->flusher);
	SSL_free(tc->ssl);
	tc->ssl = NULL;
	struct bufferevent *under = tc->under;
	struct tls_io_worker *iow = tc->iow;
	if (evbuffer_get_length(bufferevent_get_output(under)) == 0) {
		free(tc);
		return;
	}
	/* records still wait (the socket was full): keep under until they are
	 * written, the client goes away, or the send timeout passes */
	bufferevent_incref(under);
	tls_conn_send_timeout(tc);
	bufferevent_setcb(under, linger_readcb, linger_writecb, linger_eventcb, tc);
	bufferevent_enable(under, EV_READ | EV_WRITE);
	tc->prev = NULL;
	tc->next = iow->lingering;
	if (iow->lingering)
		iow->lingering->prev = tc;
	iow->lingering = tc;
}

void tls_io_worker_end(struct tls_io_worker *iow)
{
	while (iow->lingering)
		linger_end(iow->lingering);
}

struct bufferevent *tls_io_accept(struct worker *w, struct tls_io_worker *iow, SSL *ssl, int fd)
{
	struct tls_conn *tc = calloc(1, sizeof(*tc));
	BIO *bio = tc ? BIO_new(tls_bio_method) : NULL;
	/* under gets the socket once everything is set up, so that arming its
	 * read event is the only epoll_ctl */
	struct bufferevent *under = bio ? bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE) : NULL;
	struct bufferevent *bev = NULL;
	if (under) {
		tc->w = w;
		tc->iow = iow;
		tc->ssl = ssl;
		tc->under = under;
		BIO_set_data(bio, tc);
		SSL_set_bio(ssl, bio, bio);
		bio = NULL; /* the SSL's now */
		SSL_set_accept_state(ssl);
		if (io_flusher_init(&tc->flusher, &w->flush_queue, under) == 0) {
			io_flusher_set_cb(&tc->flusher, tls_flush, tc);
			bev = bufferevent_filter_new(under, tls_filter_in, tls_filter_out, BEV_OPT_CLOSE_ON_FREE,
			                             tls_conn_free, tc);
		}
	}
	if (!bev) {
		ERR_clear_error();
		if (under) {
			io_flusher_free(&tc->flusher);
			bufferevent_free(under);
		}
		BIO_free(bio);
		SSL_free(ssl);
		free(tc);
		return NULL;
	}
	/* from here on the filter owns tc, ssl and under */
	tc->bev = bev;
	bufferevent_data_cb writecb = NULL;
	bufferevent_getcb(under, &tc->readcb, &writecb, &tc->eventcb, &tc->cbarg);
	bufferevent_setcb(under, under_readcb, under_writecb, under_eventcb, tc);
	/* the filter turned writing on: records go out through the flusher instead */
	bufferevent_disable(under, EV_WRITE);
	bufferevent_setfd(under, fd); /* under owns the socket now */
	return bev;
}

SSL *tls_bev_ssl(struct bufferevent *bev)
{
	struct tls_conn *tc = tls_conn_of(bev);
	return tc ? tc->ssl : bev ? bufferevent_openssl_get_ssl(bev) : NULL;
}

unsigned long tls_bev_error(struct bufferevent *bev)
{
	struct tls_conn *tc = tls_conn_of(bev);
	return tc ? tc->error : 0;
}

void tls_bev_hold(struct bufferevent *bev, bool hold)
{
	struct tls_conn *tc = tls_conn_of(bev);
	if (!tc || tc->hold == hold)
		return;
	tc->hold = hold;
	if (!hold && evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		io_flusher_schedule(&tc->flusher);
}

int tls_bev_shutdown(struct bufferevent *bev, bool half_close)
{
	struct tls_conn *tc = tls_conn_of(bev);
	tls_bev_hold(bev, false);
	if (!tc) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		if (ssl && SSL_shutdown(ssl) < 0)
			ERR_clear_error();
		if (!half_close)
			return bufferevent_getfd(bev) >= 0 ? 1 : -1;
		return shutdown(bufferevent_getfd(bev), SHUT_WR) == 0 ? 1 : -1;
	}
	/* a TLS close_notify before the TCP half-close: the client can tell a
	 * complete response from a truncated one, and keep its session */
	if (tc->ready && !tc->event && !(SSL_get_shutdown(tc->ssl) & SSL_SENT_SHUTDOWN) && SSL_shutdown(tc->ssl) < 0)
		ERR_clear_error();
	if (evbuffer_get_length(bufferevent_get_output(tc->under)) > 0) {
		tc->notify_flushed = true;
		io_flusher_schedule(&tc->flusher);
		return 0;
	}
	if (!half_close)
		return 1;
	return shutdown(bufferevent_getfd(tc->under), SHUT_WR) == 0 ? 1 : -1;
}

/* ---- facts of a connection ---- */

bool tls_bev_info(struct bufferevent *bev, struct tls_info *out)
{
	SSL *ssl = tls_bev_ssl(bev);
	if (!ssl)
		return false;
	out->version = SSL_get_version(ssl);
	out->cipher = SSL_get_cipher_name(ssl);
	const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	out->sni = sn ? sn : "";
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
	out->alpn = alpn_len == 2 && memcmp(alpn, "h2", 2) == 0 ? "h2" : alpn_len ? "http/1.1" : "";
	out->resumed = SSL_session_reused(ssl) == 1;
	out->client_subject = "";
	char *subject = SSL_get_ex_data(ssl, tls_conn_index);
	if (!subject) {
		X509 *peer = SSL_get0_peer_certificate(ssl);
		if (peer && SSL_get_verify_result(ssl) == X509_V_OK) {
			BIO *b = BIO_new(BIO_s_mem());
			if (b && X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
				char *data = NULL;
				long len = BIO_get_mem_data(b, &data);
				if (len >= 0 && (subject = malloc((size_t)len + 1)) != NULL) {
					memcpy(subject, data, (size_t)len);
					subject[len] = '\0';
					if (SSL_set_ex_data(ssl, tls_conn_index, subject) != 1) {
						free(subject);
						subject = NULL;
					}
				}
			}
			BIO_free(b);
			ERR_clear_error();
		}
	}
	if (subject)
		out->client_subject = subject;
	return true;
}
