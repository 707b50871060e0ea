#include "tls_accept.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "conf_tls.h"
#include "counters.h"
#include "log.h"
#include "snapshot.h"
#include "tls_ctx.h"
#include "tls_io.h"
#include "worker.h"

/* ---- pending connections (handshake, h2c sniffing) ---- */

/* the failure reasons are a fixed label set of the counter registry (counters.h) */
#define TLS_FAIL_LIST(X) CTR_TLS_FAIL_LIST(X)

enum tls_fail {
#define TLS_FAIL_ENUM(sym, str) TLS_FAIL_##sym,
	TLS_FAIL_LIST(TLS_FAIL_ENUM)
#undef TLS_FAIL_ENUM
	TLS_FAIL__COUNT
};

static const char *const tls_fail_names[] = {
#define TLS_FAIL_STR(sym, str) str,
    TLS_FAIL_LIST(TLS_FAIL_STR)
#undef TLS_FAIL_STR
};

struct tls_pending {
	struct worker *w;
	struct snapshot *snap; /* one reference while linked: the listener's TLS contexts belong to it */
	size_t listener;
	struct bufferevent *bev;
	bool tls;
	struct sockaddr_storage peer; /* AF_INET or AF_INET6; else only the family is set */
	char ip[64]; /* peer's address as text ("" if none): what it counts under in w->conns_by_addr */
	struct tls_pending *prev, *next;
};

struct tls_worker {
	tls_dispatch_fn dispatch;
	struct tls_pending *pending;
	struct tls_io_worker io;
};

struct tls_worker *tls_worker_new(tls_dispatch_fn dispatch)
{
	struct tls_worker *tw = calloc(1, sizeof(struct tls_worker));
	if (tw)
		tw->dispatch = dispatch;
	return tw;
}

static void pending_unlink(struct tls_pending *p)
{
	struct tls_worker *tw = p->w->tls;
	if (p->prev)
		p->prev->next = p->next;
	else
		tw->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	snapshot_unref(p->snap);
	p->snap = NULL;
}

/* Ends a pending connection that never became a client connection. */
static void pending_close(struct tls_pending *p)
{
	struct worker *w = p->w;
	pending_unlink(p);
	bufferevent_free(p->bev);
	worker_conn_hold_release(w, p->ip);
	free(p);
	worker_conn_closed(w);
}

/* Hands the connection to the worker's dispatcher: the worker's count moves with it. */
static void pending_handoff(struct tls_pending *p, enum tls_proto proto)
{
	struct worker *w = p->w;
	struct sockaddr_storage peer = p->peer; /* p is freed before the call */
	char ip[sizeof(p->ip)];
	memcpy(ip, p->ip, sizeof(ip));
	struct snapshot *snap = p->snap;
	snapshot_ref(snap); /* pending_unlink drops p's */
	struct tls_handoff h = {
	    .listener = p->listener,
	    .snap = snap,
	    .bev = p->bev,
	    .proto = proto,
	    .tls = p->tls,
	    .peer = (const struct sockaddr *)&peer,
	};
	tls_dispatch_fn dispatch = w->tls->dispatch;
	pending_unlink(p);
	free(p);
	w->num_conns--;
	bufferevent_setcb(h.bev, NULL, NULL, NULL, NULL);
	worker_conn_hold_offer(w); /* p's place in its address's count goes to what the dispatcher makes */
	dispatch(w, &h);
	worker_conn_hold_settle(w, ip);
	snapshot_unref(snap);
	if (w->draining && w->num_conns == 0)
		event_base_loopexit(w->base, NULL);
}

static enum tls_fail classify(unsigned long first, short what)
{
	if (what & BEV_EVENT_TIMEOUT)
		return TLS_FAIL_TIMEOUT;
	if (!first)
		return (what & BEV_EVENT_EOF) || !(what & BEV_EVENT_ERROR) || EVUTIL_SOCKET_ERROR() != 0 ? TLS_FAIL_CLOSED
		                                                                                           : TLS_FAIL_OTHER;
	if (ERR_GET_LIB(first) != ERR_LIB_SSL)
		return TLS_FAIL_OTHER;
	int r = ERR_GET_REASON(first);
	switch (r) {
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_UNKNOWN_PROTOCOL:
		return TLS_FAIL_PROTOCOL_VERSION;
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SHARED_GROUPS:
	case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
		return TLS_FAIL_NO_SHARED_CIPHER;
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
		return TLS_FAIL_NOT_TLS;
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
		return TLS_FAIL_CLIENT_CERTIFICATE;
	default:
		return r >= SSL_AD_REASON_OFFSET ? TLS_FAIL_CLIENT_ALERT : TLS_FAIL_OTHER;
	}
}

static void handshake_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tls_pending *p = arg;
	SSL *ssl = tls_bev_ssl(bev);
	if ((what & BEV_EVENT_CONNECTED) && ssl) {
		CTR_GLOBAL_ADD(p->w->counters, TLS_HANDSHAKES, 0, 1);
		int v = SSL_version(ssl);
		enum ctr_tls_version tv = v == TLS1_3_VERSION ? CTR_TLSV_TLS1_3 : v == TLS1_2_VERSION ? CTR_TLSV_TLS1_2 : CTR_TLSV_OTHER;
		CTR_GLOBAL_ADD(p->w->counters, TLS_VERSIONS, tv, 1);
		if (SSL_session_reused(ssl))
			CTR_GLOBAL_ADD(p->w->counters, TLS_RESUMED, tv, 1);
		const unsigned char *alpn = NULL;
		unsigned alpn_len = 0;
		SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
		bool h2 = alpn_len == 2 && memcmp(alpn, "h2", 2) == 0;
		pending_handoff(p, h2 ? TLS_PROTO_H2 : TLS_PROTO_HTTP1);
		return;
	}
	enum tls_fail f = classify(tls_bev_error(bev), what);
	CTR_GLOBAL_ADD(p->w->counters, TLS_FAILURES, f, 1);
	if (log_enabled(LOG_DEBUG)) {
		struct log_line l;
		log_begin(&l, LOG_DEBUG, "TLS handshake failed");
		log_str(&l, "reason", tls_fail_names[f]);
		log_str(&l, "client_ip", p->ip);
		log_end(&l);
	}
	ERR_clear_error();
	pending_close(p);
}

static struct tls_pending *pending_new(struct worker *w, size_t listener, const struct sockaddr *sa, const char *ip,
                                       bool tls)
{
	struct tls_pending *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->w = w;
	p->listener = listener;
	p->tls = tls;
	if (sa->sa_family == AF_INET)
		memcpy(&p->peer, sa, sizeof(struct sockaddr_in));
	else if (sa->sa_family == AF_INET6)
		memcpy(&p->peer, sa, sizeof(struct sockaddr_in6));
	else
		p->peer.ss_family = sa->sa_family;
	size_t n = strnlen(ip, sizeof(p->ip) - 1); /* p is zeroed: terminated */
	memcpy(p->ip, ip, n);
	return p;
}

static void pending_link(struct tls_pending *p)
{
	struct tls_worker *tw = p->w->tls;
	snapshot_ref(p->w->snap);
	p->snap = p->w->snap;
	p->next = tw->pending;
	if (tw->pending)
		tw->pending->prev = p;
	tw->pending = p;
	p->w->num_conns++;
	worker_conn_hold_take(p->w, p->ip);
}

/* The socket is already non-blocking: the worker accepts with SOCK_NONBLOCK. */
static void prepare_socket(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
		log_msg(LOG_DEBUG, "TCP_NODELAY failed on a client socket");
}

void tls_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa, const char *ip)
{
	const struct conf_listener *cl = conf_listener_by_id(w->snap->conf, (unsigned)listener, NULL);
	prepare_socket(fd);
	struct tls_pending *p = cl && cl->tls ? pending_new(w, listener, sa, ip, true) : NULL;
	SSL *ssl = p ? tls_server_ssl_new(cl->tls->server) : NULL;
	struct bufferevent *bev = ssl ? tls_io_accept(w, &w->tls->io, ssl, fd) : NULL;
	if (!bev) {
		ERR_clear_error();
		free(p);
		close(fd);
		return;
	}
	p->bev = bev;
	pending_link(p);
	struct timeval tv = worker_timeval(w, cl->tls->handshake_timeout);
	bufferevent_setcb(bev, NULL, NULL, handshake_event_cb, p);
	/* reading on first: a filter arms its read timeout only while it reads */
	if (bufferevent_enable(bev, EV_READ) != 0 || bufferevent_set_timeouts(bev, &tv, NULL) != 0)
		pending_close(p);
}

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void sniff_read_cb(struct bufferevent *bev, void *arg)
{
	struct tls_pending *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t have = evbuffer_get_length(in);
	size_t n = have < sizeof(h2_preface) - 1 ? have : sizeof(h2_preface) - 1;
	unsigned char buf[sizeof(h2_preface)];
	if (evbuffer_copyout(in, buf, n) != (ev_ssize_t)n) {
		pending_close(p);
		return;
	}
	if (memcmp(buf, h2_preface, n) != 0) {
		pending_handoff(p, TLS_PROTO_HTTP1);
		return;
	}
	if (n == sizeof(h2_preface) - 1)
		pending_handoff(p, TLS_PROTO_H2);
	/* else: a prefix of the preface, wait for more */
}

static void sniff_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	pending_close(arg);
}

void tls_accept_h2c(struct worker *w, size_t listener, int fd, const struct sockaddr *sa, const char *ip)
{
	prepare_socket(fd);
	struct tls_pending *p = pending_new(w, listener, sa, ip, false);
	if (!p) {
		close(fd);
		return;
	}
	p->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!p->bev) {
		free(p);
		close(fd);
		return;
	}
	pending_link(p);
	struct timeval tv = worker_timeval(w, w->snap->conf->limits.client_header_timeout);
	bufferevent_setcb(p->bev, sniff_read_cb, NULL, sniff_event_cb, p);
	if (bufferevent_set_timeouts(p->bev, &tv, NULL) != 0 || bufferevent_enable(p->bev, EV_READ) != 0)
		pending_close(p);
}

void tls_worker_close_pending(struct worker *w)
{
	if (!w->tls)
		return;
	while (w->tls->pending)
		pending_close(w->tls->pending);
}

void tls_worker_close_listener(struct worker *w, size_t listener)
{
	if (!w->tls)
		return;
	struct tls_pending *p = w->tls->pending;
	while (p) {
		struct tls_pending *next = p->next;
		if (p->listener == listener)
			pending_close(p);
		p = next;
	}
}

void tls_worker_free(struct worker *w)
{
	struct tls_worker *tw = w->tls;
	if (!tw)
		return;
	while (tw->pending) {
		struct tls_pending *p = tw->pending;
		pending_unlink(p);
		bufferevent_free(p->bev);
		worker_conn_hold_release(w, p->ip);
		free(p);
	}
	tls_io_worker_end(&tw->io);
	/* this worker's share of the registry's totals (ctl show counters has the sum) */
	uint64_t total = 0, completed = w->counters ? ctr_global_own(w->counters, CTR_TLS_HANDSHAKES) : 0;
	for (int i = 0; w->counters && i < TLS_FAIL__COUNT; i++)
		total += ctr_global_own(w->counters, CTR_TLS_FAILURES + (unsigned)i);
	if (completed || total) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "TLS handshakes");
		log_int(&l, "worker", w->id);
		log_int(&l, "completed", (long long)completed);
		log_int(&l, "failed", (long long)total);
		for (int i = 0; i < TLS_FAIL__COUNT; i++) {
			uint64_t n = ctr_global_own(w->counters, CTR_TLS_FAILURES + (unsigned)i);
			if (n)
				log_int(&l, tls_fail_names[i], (long long)n);
		}
		log_end(&l);
	}
	free(tw);
	w->tls = NULL;
}
