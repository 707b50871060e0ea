/* conf_tracing.c - the `tracing` config section (conf_tracing.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_tracing.h"

#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf_tls.h"
#include "tls_ctx.h"

#define TRACING_EXAMPLE "tracing = { otlp = \"http://127.0.0.1:4318/v1/traces\", sample = 0.05, service_name = \"sluice\" }"

bool conf_tracing_parse_url(const char *url, bool *tls, char **host, char **port, char **path, char *why,
                            size_t why_size)
{
	*host = *port = *path = NULL;
	*tls = strncmp(url, "https://", 8) == 0;
	if (!*tls && strncmp(url, "http://", 7) != 0) {
		snprintf(why, why_size,
		         "\"%s\" is not an http:// or https:// URL (write e.g. \"http://127.0.0.1:4318/v1/traces\")", url);
		return false;
	}
	const char *h = url + (*tls ? 8 : 7);
	const char *slash = strchr(h, '/');
	size_t hp_len = slash ? (size_t)(slash - h) : strlen(h);
	const char *hend, *pstart = NULL;
	if (hp_len > 0 && h[0] == '[') {
		const char *rb = memchr(h, ']', hp_len);
		if (!rb) {
			snprintf(why, why_size, "unterminated IPv6 address in \"%s\"", url);
			return false;
		}
		hend = rb + 1;
		if (hend < h + hp_len) {
			if (*hend != ':') {
				snprintf(why, why_size, "unexpected text after the IPv6 address in \"%s\"", url);
				return false;
			}
			pstart = hend + 1;
		}
	} else {
		const char *colon = memchr(h, ':', hp_len);
		hend = colon ? colon : h + hp_len;
		pstart = colon ? colon + 1 : NULL;
	}
	const char *hs = h[0] == '[' ? h + 1 : h;
	size_t hn = (size_t)(hend - hs) - (h[0] == '[' ? 1 : 0);
	if (hn == 0) {
		snprintf(why, why_size, "no host in \"%s\"", url);
		return false;
	}
	for (size_t i = 0; i < hn; i++) {
		char c = hs[i];
		if (!(conf_is_alpha(c) || conf_is_digit(c) || c == '.' || c == '-' || c == ':' || c == '_')) {
			snprintf(why, why_size, "invalid host in \"%s\"", url);
			return false;
		}
	}
	unsigned long p = *tls ? 443 : 80;
	if (pstart) {
		size_t pn = (size_t)(h + hp_len - pstart);
		char *end = NULL;
		p = pn && pn <= 5 && conf_is_digit(pstart[0]) ? strtoul(pstart, &end, 10) : 0;
		if (!end || end != pstart + pn || p == 0 || p > 65535) {
			snprintf(why, why_size, "invalid port in \"%s\" (1 to 65535)", url);
			return false;
		}
	}
	const char *pth = slash ? slash : "/v1/traces";
	for (const char *c = pth; *c; c++) {
		if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '#') {
			snprintf(why, why_size, "invalid character in the path of \"%s\"", url);
			return false;
		}
	}
	*host = conf_xstrndup(hs, hn);
	*port = conf_xasprintf("%lu", p);
	*path = conf_xstrdup(pth);
	return true;
}

static void walk_headers(struct conf_walker *w, int t, struct conf_tracing *ct)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "headers", &f))
		return;
	int map = lua_gettop(w->L);
	size_t n;
	const char **names = conf_map_keys(w, map, "headers = { [\"x-api-key\"] = env(\"OTLP_KEY\") }", &n);
	ct->headers = conf_xcalloc(n ? n : 1, sizeof *ct->headers);
	for (size_t i = 0; i < n; i++) {
		struct conf_field e;
		conf_entry_open(w, map, names[i], &e);
		const char *v = conf_value_string(w, lua_gettop(w->L));
		if (!conf_is_token(names[i])) {
			conf_werr(w, "\"%s\" is not a header field name (letters, digits and !#$%%&'*+-.^_`|~)", names[i]);
		} else if (strcasecmp(names[i], "content-type") == 0 || strcasecmp(names[i], "content-length") == 0 ||
		           strcasecmp(names[i], "host") == 0 || strcasecmp(names[i], "connection") == 0 ||
		           strcasecmp(names[i], "transfer-encoding") == 0) {
			conf_werr(w, "\"%s\" is set by the exporter itself; remove it", names[i]);
		} else if (v && strpbrk(v, "\r\n")) {
			conf_werr(w, "a header value may not contain CR or LF");
		} else if (v) {
			struct conf_tracing_header *hd = &ct->headers[ct->num_headers++];
			hd->name = conf_xstrdup(names[i]);
			for (char *c = hd->name; *c; c++)
				*c = conf_ascii_lower(*c);
			hd->value = conf_xstrdup(v);
		}
		conf_field_close(w, &e);
	}
	conf_field_close(w, &f);
}

/* ca_file, and the client context of an https:// collector (verified
 * against ca_file or the system store, and by its name or address) */
static void walk_tls(struct conf_walker *w, int t, struct conf_tracing *ct)
{
	struct conf_field g;
	if (conf_field_open(w, t, "ca_file", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "empty path");
		else if (s && ct->otlp && !ct->otlp_tls)
			conf_werr(w, "a CA file is for an https:// collector, and otlp is http://");
		else if (s)
			ct->ca_file = conf_resolve_path(w, s);
		conf_field_close(w, &g);
	}
	if (!ct->otlp || !ct->otlp_tls)
		return;
	struct conf_upstream_tls u = {.ca = ct->ca_file, .verify = true};
	struct tls_error e;
	ct->tls = tls_client_new(&u, &e);
	if (!ct->tls)
		conf_werr_key(w, ct->ca_file ? "ca_file" : "otlp", "%s", e.msg);
}

static void walk_root(struct conf_walker *w, int root)
{
	static const char *const keys[] = {"otlp",       "protocol",   "ca_file",    "sample",  "parent_based",
	                                   "service_name", "headers",  "batch_size", "queue_size", "timeout",
	                                   "interval",   NULL};
	struct conf_field f;
	if (!conf_field_open_record(w, root, "tracing", keys, TRACING_EXAMPLE, &f))
		return;
	int t = lua_gettop(w->L);
	struct conf_tracing *ct = conf_xcalloc(1, sizeof *ct);
	w->c->tracing = ct;
	ct->sample = 1.0;
	ct->parent_based = true;
	ct->batch_size = 512;
	ct->queue_size = 2048;
	ct->timeout = 5000;
	ct->interval = 1000;
	struct conf_field g;
	if (conf_field_open(w, t, "otlp", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		char why[256];
		if (s && !conf_tracing_parse_url(s, &ct->otlp_tls, &ct->otlp_host, &ct->otlp_port, &ct->otlp_path, why,
		                                 sizeof why))
			conf_werr(w, "%s", why);
		else if (s)
			ct->otlp = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, t, "protocol", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && strcmp(s, "http/protobuf") == 0)
			ct->protocol = CONF_TRACING_HTTP_PROTOBUF;
		else if (s && strcmp(s, "grpc") == 0)
			conf_werr(w, "OTLP over gRPC is not supported: use \"http/protobuf\" (or \"http/json\") and the "
			             "collector's OTLP/HTTP port, usually 4318");
		else if (s && strcmp(s, "http/json") != 0)
			conf_werr(w, "\"%s\" is not an OTLP protocol: \"http/json\" (the default) or \"http/protobuf\"", s);
		conf_field_close(w, &g);
	}
	walk_tls(w, t, ct);
	if (conf_field_open(w, t, "sample", &g)) {
		int v = lua_gettop(w->L);
		if (lua_type(w->L, v) != LUA_TNUMBER)
			conf_type_error(w, v, "a number from 0 (no new trace sampled) to 1 (all), e.g. 0.05");
		else if (!(lua_tonumber(w->L, v) >= 0.0 && lua_tonumber(w->L, v) <= 1.0))
			conf_werr(w, "%g is not between 0 and 1 (a ratio: 0.05 samples 5%% of new traces)",
			          (double)lua_tonumber(w->L, v));
		else
			ct->sample = (double)lua_tonumber(w->L, v);
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, t, "parent_based", &g)) {
		int v = lua_gettop(w->L);
		if (lua_type(w->L, v) != LUA_TBOOLEAN)
			conf_type_error(w, v, "true or false");
		else
			ct->parent_based = lua_toboolean(w->L, v);
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, t, "service_name", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && (!*s || strlen(s) > 128))
			conf_werr(w, "must be 1 to 128 characters");
		else if (s)
			ct->service_name = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	if (!ct->service_name)
		ct->service_name = conf_xstrdup("sluice");
	walk_headers(w, t, ct);
	conf_field_unsigned(w, t, "batch_size", 1, 10000, &ct->batch_size);
	conf_field_unsigned(w, t, "queue_size", 16, 1u << 20, &ct->queue_size);
	conf_field_duration(w, t, "timeout", false, &ct->timeout);
	conf_field_duration(w, t, "interval", false, &ct->interval);
	conf_field_close(w, &f);
}

static void free_section(struct conf *c)
{
	struct conf_tracing *ct = c->tracing;
	if (!ct)
		return;
	free(ct->otlp);
	free(ct->otlp_host);
	free(ct->otlp_port);
	free(ct->otlp_path);
	free(ct->ca_file);
	tls_client_free(ct->tls);
	free(ct->service_name);
	for (size_t i = 0; i < ct->num_headers; i++) {
		free(ct->headers[i].name);
		free(ct->headers[i].value);
	}
	free(ct->headers);
	free(ct);
	c->tracing = NULL;
}

static const char *const root_keys[] = {"tracing", NULL};

const struct conf_section conf_tracing_section = {
    .root_keys = root_keys,
    .walk = walk_root,
    .free = free_section,
};
