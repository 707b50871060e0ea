#include "reqkey.h"

#include <string.h>

#include "exchange.h"
#include "fields.h"
#include "tls_io.h"

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

bool reqkey_cookie(const char *header, size_t header_len, const char *name, size_t name_len, const char **val,
                   size_t *len)
{
	const char *p = header, *end = header + header_len;
	while (p < end) {
		while (p < end && (is_ows(*p) || *p == ';'))
			p++;
		const char *pair = p;
		while (p < end && *p != ';')
			p++;
		const char *pair_end = p;
		while (pair_end > pair && is_ows(pair_end[-1]))
			pair_end--;
		const char *eq = memchr(pair, '=', (size_t)(pair_end - pair));
		if (!eq)
			continue; /* a pair without '=' has no name (RFC 6265 5.2 step 2) */
		const char *ne = eq;
		while (ne > pair && is_ows(ne[-1]))
			ne--;
		if ((size_t)(ne - pair) != name_len || memcmp(pair, name, name_len) != 0)
			continue;
		const char *v = eq + 1;
		while (v < pair_end && is_ows(*v))
			v++;
		*val = v;
		*len = (size_t)(pair_end - v);
		return true;
	}
	return false;
}

bool reqkey_query(const char *target, const char *name, size_t name_len, const char **val, size_t *len)
{
	const char *q = strchr(target, '?');
	if (!q)
		return false;
	const char *p = q + 1;
	const char *end = p + strcspn(p, "#");
	while (p < end) {
		const char *arg = p;
		while (p < end && *p != '&')
			p++;
		const char *arg_end = p;
		if (p < end)
			p++;
		const char *eq = memchr(arg, '=', (size_t)(arg_end - arg));
		const char *ne = eq ? eq : arg_end;
		if ((size_t)(ne - arg) != name_len || memcmp(arg, name, name_len) != 0)
			continue;
		*val = eq ? eq + 1 : arg_end;
		*len = (size_t)(arg_end - *val);
		return true;
	}
	return false;
}

static bool reqkey_string(const char *s, const char **val, size_t *len)
{
	if (!s)
		return false;
	*val = s;
	*len = strlen(s);
	return true;
}

bool reqkey_get(const struct request *r, enum reqkey_kind kind, const char *name, const char **val, size_t *len)
{
	switch (kind) {
	case REQKEY_CLIENT_IP:
		return reqkey_string(r->client_ip, val, len);
	case REQKEY_PATH:
		return reqkey_string(r->path, val, len);
	case REQKEY_HOST:
		return r->host && r->host[0] && reqkey_string(r->host, val, len);
	case REQKEY_ROUTE:
		return reqkey_string(r->route_name, val, len);
	case REQKEY_HEADER:
		*val = fields_value(&r->headers, name, len);
		return *val != NULL;
	case REQKEY_POLICY:
		*val = fields_value(&r->policy_keys, name, len);
		return *val != NULL;
	case REQKEY_COOKIE: {
		size_t nlen = strlen(name);
		for (int i = fields_find(&r->headers, "cookie", 0); i >= 0; i = fields_find(&r->headers, "cookie", (size_t)i + 1))
			if (reqkey_cookie(r->headers.v[i].value, r->headers.v[i].value_len, name, nlen, val, len))
				return true;
		return false;
	}
	case REQKEY_QUERY:
		return r->target && reqkey_query(r->target, name, strlen(name), val, len);
	case REQKEY_TLS_SUBJECT: {
		/* a request is the first member of its exchange, whose protocol asks the transport */
		const struct exchange *ex = (const struct exchange *)r;
		struct tls_info ti;
		if (!ex->ops || !ex->ops->tls_info(ex, &ti) || !ti.client_subject || !ti.client_subject[0])
			return false;
		return reqkey_string(ti.client_subject, val, len);
	}
	}
	return false;
}

enum reqkey_kind reqkey_of_hash_key(enum conf_key_kind k)
{
	switch (k) {
	case CONF_KEY_HEADER:
		return REQKEY_HEADER;
	case CONF_KEY_COOKIE:
		return REQKEY_COOKIE;
	case CONF_KEY_PATH:
		return REQKEY_PATH;
	case CONF_KEY_HOST:
		return REQKEY_HOST;
	case CONF_KEY_QUERY:
		return REQKEY_QUERY;
	case CONF_KEY_TLS_SUBJECT:
		return REQKEY_TLS_SUBJECT;
	case CONF_KEY_CLIENT_IP:
	default:
		return REQKEY_CLIENT_IP;
	}
}

enum reqkey_kind reqkey_of_rate_key(enum conf_rl_key_kind k)
{
	switch (k) {
	case CONF_RL_KEY_HEADER:
		return REQKEY_HEADER;
	case CONF_RL_KEY_COOKIE:
		return REQKEY_COOKIE;
	case CONF_RL_KEY_PATH:
		return REQKEY_PATH;
	case CONF_RL_KEY_ROUTE:
		return REQKEY_ROUTE;
	case CONF_RL_KEY_HOST:
		return REQKEY_HOST;
	case CONF_RL_KEY_POLICY:
		return REQKEY_POLICY;
	case CONF_RL_KEY_CLIENT_IP:
	default:
		return REQKEY_CLIENT_IP;
	}
}
