/* admin_http.h - the admin HTTP listener (`admin = { http = "127.0.0.1:9901" }`):
 * GET /metrics (Prometheus text, or OpenMetrics when Accept asks for
 * application/openmetrics-text), /healthz (200 while the process runs),
 * /readyz (200 once the config is loaded and every listener bound, 503
 * before that and while draining), / (the status page; /?json the same as
 * JSON). Anything else is 404; a method other than GET or HEAD is 405.
 *
 * Strict and small: requests are parsed by h1.h with tight limits (4 KiB
 * request line, 8 KiB head, 32 fields), a request with a body is refused
 * (413) and the connection closed, at most ADMIN_HTTP_MAX_CONNECTIONS
 * connections at once (more are closed at accept), idle ones closed after
 * ADMIN_HTTP_IDLE_SECONDS, and a connection whose unsent answers pass 1 MiB
 * is not read until they drain. Keep-alive and pipelining work, answered
 * in order.
 *
 * With admin.http_token_file every request must carry
 * "Authorization: Bearer TOKEN" (compared in constant time) or gets 401;
 * conf_admin.c refuses a non-loopback address without a token.
 *
 * Ownership: main thread only. The metrics view must outlive the listener. */
#ifndef SLUICE_ADMIN_HTTP_H
#define SLUICE_ADMIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#define ADMIN_HTTP_MAX_CONNECTIONS 64
#define ADMIN_HTTP_IDLE_SECONDS 10

struct admin_http;
struct conf_admin;
struct metrics;

/* Listen on conf->http_addr, or on fd when fd >= 0 (a listening socket a
 * binary upgrade handed over, upgrade.h; taken over even on failure). NULL
 * (after logging why) on failure. */
struct admin_http *admin_http_start(struct event_base *base, const struct conf_admin *conf, struct metrics *m,
                                    int fd);
/* A reload changed admin.http_token_file: requests from now on need conf's
 * token (none: conf has none). 0, or -1 (out of memory; the old one stays). */
int admin_http_set_token(struct admin_http *h, const struct conf_admin *conf);
/* The listening socket (for a binary upgrade to hand over). */
int admin_http_fd(const struct admin_http *h);
/* Close the listener and every connection. NULL is fine. */
void admin_http_stop(struct admin_http *h);

/* Whether token[0..n) equals the configured one, in time that depends only
 * on the lengths. Exposed for the unit test. */
bool admin_http_token_equal(const char *want, size_t want_len, const char *got, size_t got_len);

#endif
