/* trace_client.h - the exporter thread's HTTP/1.1 client for the OTLP
 * collector (docs/tracing.md, "Export").
 *
 * One connection, kept open across exports (keep-alive): a POST reuses it
 * when it is to the same collector settings (the same trace_export_conf)
 * and still idle-clean (nothing readable: the collector has not closed
 * it); otherwise, or after the collector's `Connection: close`, an error or
 * a timeout, the connection is closed and the next POST opens a new one. An
 * https:// connection offers the last TLS session it had with that
 * collector, so a reconnect resumes instead of a full handshake.
 *
 * The whole answer is read before the next request (status, head, a body
 * framed by Content-Length, chunked, or the close), so the connection
 * stays in step; the first TRACE_CLIENT_BODY_KEEP bytes of the body are
 * kept for the caller (a partial success). A refusal (a final status not
 * 2xx) is read only up to TRACE_CLIENT_ERROR_BODY_KEEP bytes of its body
 * (what carries its reason): a longer or endless one is cut there and the
 * connection closed, so it costs no more than that.
 *
 * Retry: a POST on a reused connection that the collector had closed (the
 * send fails, or the connection ends before any byte of an answer) is sent
 * once more on a new connection. That is the only resend; a collector that
 * closes after taking a batch but before answering gets it twice.
 *
 * Blocking, bounded by the conf's timeout per POST; exporter thread only.
 */
#ifndef SLUICE_TRACE_CLIENT_H
#define SLUICE_TRACE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trace_export.h"

#define TRACE_CLIENT_HEAD_MAX 16384
#define TRACE_CLIENT_BODY_KEEP 65536
#define TRACE_CLIENT_ERROR_BODY_KEEP 4096

struct ssl_st;
struct ssl_session_st;

struct trace_client {
	int fd;                           /* -1: no connection */
	struct ssl_st *ssl;               /* https only */
	struct trace_export_conf *ec;     /* the settings fd and session are for (a reference), or NULL */
	struct ssl_session_st *session;   /* the last resumable TLS session with ec's collector */
	uint64_t last_used_us;            /* monotonic: the end of the last exchange */
	uint64_t connects;                /* connections opened */
	uint64_t resumed;                 /* of them, TLS sessions resumed */
	size_t in_len;
	char in[TRACE_CLIENT_HEAD_MAX];   /* bytes read and not yet consumed */
	char body[TRACE_CLIENT_BODY_KEEP]; /* the last answer's body, as far as it is kept */
	char *out;                        /* an https request, head and body in one buffer */
	size_t out_cap;
};

/* The collector's answer to one POST: valid until the next call. */
struct trace_answer {
	int status;
	char content_type[64]; /* without parameters, lower case; "" when absent */
	const char *body;      /* the body's first body_len bytes (at most TRACE_CLIENT_BODY_KEEP) */
	size_t body_len;
	long retry_after_s;    /* the Retry-After header in seconds from now; -1: none, or unreadable */
};

void trace_client_init(struct trace_client *c);
/* Closes the connection and forgets the session and settings. */
void trace_client_reset(struct trace_client *c);

/* POSTs body (len bytes, content_type) to ec's collector. Returns the
 * answer's status (any: the caller judges it) with ans filled, or -1 with
 * why filled (connect, TLS, send, timeout, an answer that is not HTTP). */
int trace_client_post(struct trace_client *c, struct trace_export_conf *ec, const void *body, size_t len,
                      struct trace_answer *ans, char *why, size_t why_size);

/* A Retry-After value (delta-seconds, or an HTTP-date: IMF-fixdate) as
 * seconds from now_s (Unix time; a date already past is 0; capped at one
 * day); -1 when it is neither. */
long trace_client_retry_after(const char *v, size_t n, int64_t now_s);

/* Closes a connection unused for idle_us (a collector behind a load
 * balancer gets a fresh pick now and then). */
void trace_client_close_idle(struct trace_client *c, uint64_t idle_us);

#endif
