/* conf_limits.c - the `limits` section (conf_limits.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_limits.h"

#include <lauxlib.h>

/* A listener without its own max_connections_per_client takes the limits'
 * one (listeners are walked first). */
static void limits_to_listeners(struct conf *c)
{
	for (size_t i = 0; i < c->num_listeners; i++)
		if (!c->listeners[i].max_connections_per_client_set)
			c->listeners[i].max_connections_per_client = c->limits.max_connections_per_client;
}

void conf_walk_limits(struct conf_walker *w, int root)
{
	static const char *const keys[] = {
		"header_bytes", "request_line_bytes", "max_headers", "body_bytes", "client_header_timeout",
		"client_body_timeout", "client_body_min_rate", "client_body_deadline", "send_timeout", "keepalive_timeout",
		"max_connections", "max_connections_per_client", "regex_match_limit", NULL,
	};
	struct conf_limits *l = &w->c->limits;
	struct conf_field f;
	if (!conf_field_open_record(w, root, "limits", keys, "a table like { header_bytes = \"16k\" }", &f)) {
		limits_to_listeners(w->c);
		return;
	}
	int t = lua_gettop(w->L);
	uint64_t v;
	if (conf_field_size(w, t, "header_bytes", 1024, (uint64_t)1 << 20, &v) == CONF_FIELD_SET)
		l->header_bytes = (size_t)v;
	enum conf_field_status line = conf_field_size(w, t, "request_line_bytes", 256, (uint64_t)1 << 20, &v);
	if (line == CONF_FIELD_SET) {
		if (v > l->header_bytes) {
			size_t mark = conf_path_push_key(w, "request_line_bytes");
			conf_werr(w, "%llu is larger than limits.header_bytes (%zu)", (unsigned long long)v, l->header_bytes);
			conf_path_pop(w, mark);
		} else {
			l->request_line_bytes = (size_t)v;
		}
	} else if (l->request_line_bytes > l->header_bytes) {
		l->request_line_bytes = l->header_bytes;
	}
	unsigned max_headers = (unsigned)l->max_headers;
	if (conf_field_unsigned(w, t, "max_headers", 1, 10000, &max_headers) == CONF_FIELD_SET)
		l->max_headers = max_headers;
	conf_field_size(w, t, "body_bytes", 0, UINT64_MAX, &l->body_bytes);
	conf_field_duration(w, t, "client_header_timeout", false, &l->client_header_timeout);
	conf_field_duration(w, t, "client_body_timeout", false, &l->client_body_timeout);
	conf_field_size(w, t, "client_body_min_rate", 0, (uint64_t)1 << 40, &l->client_body_min_rate);
	conf_field_duration(w, t, "client_body_deadline", true, &l->client_body_deadline);
	conf_field_duration(w, t, "send_timeout", false, &l->send_timeout);
	conf_field_duration(w, t, "keepalive_timeout", true, &l->keepalive_timeout);
	conf_field_unsigned(w, t, "max_connections", 0, 10000000, &l->max_connections);
	conf_field_unsigned(w, t, "max_connections_per_client", 0, CONF_MAX_CONNECTIONS_PER_CLIENT_MAX,
	                    &l->max_connections_per_client);
	unsigned regex_limit = l->regex_match_limit;
	if (conf_field_unsigned(w, t, "regex_match_limit", 1000, 100000000, &regex_limit) == CONF_FIELD_SET)
		l->regex_match_limit = regex_limit;
	conf_field_close(w, &f);
	limits_to_listeners(w->c);
}

