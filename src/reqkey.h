/* reqkey.h - the one request-key extractor: what a balancing hash key, a
 * rate-limit key (and next, a sticky traffic split and Lua) read from a
 * request: a header, a cookie, the client IP, the path, a query argument, the
 * TLS client-certificate subject, the host or the route.
 *
 * reqkey_get() returns the value in place (pointing into the request, its
 * arena or its connection; valid while the request lives), never copies and
 * never allocates. A key that is absent (no such header, cookie or query
 * argument, no host, a plaintext connection or no verified client
 * certificate) returns false; a present but empty value returns true with
 * length 0. Values are taken as sent: a header's first field, a cookie's
 * value without surrounding whitespace, a query argument's value without
 * percent-decoding.
 *
 * Cookies are parsed in one place, reqkey_cookie(), as RFC 6265 section 5.2
 * reads a Cookie header: pairs split on ';', whitespace around a pair
 * ignored, the name compared exactly (cookie names are case-sensitive), the
 * first match wins, HTTP/2 crumbs joined by the protocol layer first. */
#ifndef SLUICE_REQKEY_H
#define SLUICE_REQKEY_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "request.h"

enum reqkey_kind {
	REQKEY_CLIENT_IP,
	REQKEY_HEADER,      /* name: lower-case header name */
	REQKEY_COOKIE,      /* name: cookie name, case-sensitive */
	REQKEY_PATH,
	REQKEY_QUERY,       /* name: query argument name, case-sensitive */
	REQKEY_TLS_SUBJECT, /* RFC 2253 subject of a verified client certificate */
	REQKEY_HOST,
	REQKEY_ROUTE,
	REQKEY_POLICY,      /* name: a key a Lua policy set (r:set_limit_key), lower-case */
};

/* The value of key (kind, name) in r, the request of an exchange
 * (exchange.h); false when absent. */
bool reqkey_get(const struct request *r, enum reqkey_kind kind, const char *name, const char **val, size_t *len);

/* The value of cookie name in one Cookie header value; false when absent. */
bool reqkey_cookie(const char *header, size_t header_len, const char *name, size_t name_len, const char **val,
                   size_t *len);
/* The value of query argument name in target ("/path?a=1&b=2"); false when
 * absent. An argument without '=' has an empty value. */
bool reqkey_query(const char *target, const char *name, size_t name_len, const char **val, size_t *len);

/* The config's key spellings (conf.h) as extractor kinds. */
enum reqkey_kind reqkey_of_hash_key(enum conf_key_kind k);
enum reqkey_kind reqkey_of_rate_key(enum conf_rl_key_kind k);

#endif
