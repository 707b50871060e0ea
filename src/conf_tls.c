#include "conf_tls.h"

#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <openssl/ssl.h>

#include "conf_schema.h"
#include "tls_ctx.h"

/* Mozilla "intermediate" (TLS 1.2 and 1.3; no CBC, no RSA key exchange, forward secrecy only). */
#define SLUICE_TLS12_CIPHERS                                                                                            \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                   \
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                     \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define SLUICE_TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define SLUICE_TLS_GROUPS "X25519:P-256:P-384"

static bool value_bool(struct conf_walker *w, int v, bool *out)
{
	if (lua_type(w->L, v) != LUA_TBOOLEAN) {
		conf_type_error(w, v, "true or false");
		return false;
	}
	*out = lua_toboolean(w->L, v);
	return true;
}

static void field_bool(struct conf_walker *w, int t, const char *key, bool *out)
{
	struct conf_field f;
	if (conf_field_open(w, t, key, &f)) {
		value_bool(w, lua_gettop(w->L), out);
		conf_field_close(w, &f);
	}
}

/* A path as written, resolved against the config file's directory. */
static char *field_path(struct conf_walker *w, int t, const char *key)
{
	struct conf_field f;
	char *out = NULL;
	if (conf_field_open(w, t, key, &f)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "empty path");
		else if (s && s[0] == '/')
			out = conf_xstrdup(s);
		else if (s)
			out = conf_xasprintf("%s/%s", w->base_dir ? w->base_dir : ".", s);
		conf_field_close(w, &f);
	}
	return out;
}

static char *field_string(struct conf_walker *w, int t, const char *key, const char *dflt)
{
	struct conf_field f;
	char *out = NULL;
	if (conf_field_open(w, t, key, &f)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "empty");
		else if (s)
			out = conf_xstrdup(s);
		conf_field_close(w, &f);
	}
	return out ? out : dflt ? conf_xstrdup(dflt) : NULL;
}

static void walk_certificates(struct conf_walker *w, int tls_table, struct conf_tls *t)
{
	static const char *const keys[] = { "cert", "key", "ocsp", NULL };
	struct conf_field f;
	if (!conf_field_open(w, tls_table, "certificates", &f)) {
		conf_werr_key(w, "certificates", "missing (write certificates = { { cert = \"site.crt\", key = \"site.key\" } })");
		return;
	}
	int list = lua_gettop(w->L);
	size_t n = 0;
	if (lua_type(w->L, list) != LUA_TTABLE)
		conf_type_error(w, list, "a list of { cert = \"...\", key = \"...\" }");
	else if (conf_list_length(w, list, "{ { cert = \"site.crt\", key = \"site.key\" } }", &n) && n == 0)
		conf_werr(w, "empty (at least one certificate is needed)");
	if (n > 0) {
		t->certs = conf_xcalloc(n, sizeof(*t->certs));
		t->num_certs = n;
		for (size_t i = 1; i <= n; i++) {
			struct conf_field item;
			conf_item_open(w, list, i, &item);
			int v = lua_gettop(w->L);
			struct conf_tls_cert *c = &t->certs[i - 1];
			if (lua_type(w->L, v) == LUA_TTABLE) {
				conf_check_record_keys(w, v, keys);
				c->cert = field_path(w, v, "cert");
				c->key = field_path(w, v, "key");
				c->ocsp = field_path(w, v, "ocsp");
				if (!c->cert)
					conf_werr_key(w, "cert", "missing (a PEM certificate file, leaf first then its chain)");
				if (!c->key)
					conf_werr_key(w, "key", "missing (a PEM private key file, mode 0600)");
			} else {
				conf_type_error(w, v, "a table like { cert = \"site.crt\", key = \"site.key\" }");
			}
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &f);
}

static int version_of(const char *s)
{
	if (strcmp(s, "TLSv1.2") == 0)
		return TLS1_2_VERSION;
	if (strcmp(s, "TLSv1.3") == 0)
		return TLS1_3_VERSION;
	return 0;
}

static void walk_protocols(struct conf_walker *w, int tls_table, struct conf_tls *t)
{
	struct conf_field f;
	if (!conf_field_open(w, tls_table, "protocols", &f))
		return;
	int list = lua_gettop(w->L);
	size_t n = 0;
	int lo = 0, hi = 0;
	if (lua_type(w->L, list) != LUA_TTABLE)
		conf_type_error(w, list, "a list like { \"TLSv1.2\", \"TLSv1.3\" }");
	else if (conf_list_length(w, list, "{ \"TLSv1.2\", \"TLSv1.3\" }", &n) && n == 0)
		conf_werr(w, "empty (write { \"TLSv1.2\", \"TLSv1.3\" })");
	for (size_t i = 1; i <= n; i++) {
		struct conf_field item;
		conf_item_open(w, list, i, &item);
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s) {
			int v = version_of(s);
			if (!v) {
				char *q = conf_quoted(s);
				conf_werr(w, "unsupported protocol %s (TLSv1.2 and TLSv1.3 only: older versions are insecure)", q);
				free(q);
			} else {
				if (!lo || v < lo)
					lo = v;
				if (v > hi)
					hi = v;
			}
		}
		conf_field_close(w, &item);
	}
	if (lo) {
		t->min_version = lo;
		t->max_version = hi;
	}
	conf_field_close(w, &f);
}

static void report_tls_error(struct conf_walker *w, const struct tls_error *e)
{
	size_t mark = conf_path_push_key(w, "tls");
	if (e->cert_index >= 0) {
		conf_path_push_key(w, "certificates");
		conf_path_push_index(w, (size_t)e->cert_index + 1);
	}
	if (e->field)
		conf_werr_key(w, e->field, "%s", e->msg);
	else
		conf_werr(w, "%s", e->msg);
	conf_path_pop(w, mark);
}

static void walk_tls(struct conf_walker *w, int t, struct conf_listener *l)
{
	static const char *const keys[] = {
		"certificates", "protocols", "ciphers", "ciphersuites", "groups", "session_tickets", "ticket_rotate",
		"session_cache", "session_timeout", "handshake_timeout", "client_ca", "client_verify", NULL,
	};
	struct conf_field f;
	if (!conf_field_open_record(w, t, "tls", keys,
	                            "a table like { certificates = { { cert = \"site.crt\", key = \"site.key\" } } }", &f))
		return;
	int v = lua_gettop(w->L);
	struct conf_tls *tls = conf_xcalloc(1, sizeof(*tls));
	l->tls = tls;
	tls->min_version = TLS1_2_VERSION;
	tls->max_version = TLS1_3_VERSION;
	tls->session_tickets = true;
	tls->ticket_rotate = 3600000;
	tls->session_cache = 20000;
	tls->session_timeout = 3600000;
	tls->handshake_timeout = 10000;
	size_t errors_before = w->errs->count;
	walk_certificates(w, v, tls);
	walk_protocols(w, v, tls);
	tls->ciphers = field_string(w, v, "ciphers", SLUICE_TLS12_CIPHERS);
	tls->ciphersuites = field_string(w, v, "ciphersuites", SLUICE_TLS13_SUITES);
	tls->groups = field_string(w, v, "groups", SLUICE_TLS_GROUPS);
	field_bool(w, v, "session_tickets", &tls->session_tickets);
	conf_field_duration(w, v, "ticket_rotate", false, &tls->ticket_rotate);
	conf_field_unsigned(w, v, "session_cache", 0, 10000000, &tls->session_cache);
	conf_field_duration(w, v, "session_timeout", false, &tls->session_timeout);
	conf_field_duration(w, v, "handshake_timeout", false, &tls->handshake_timeout);
	tls->client_ca = field_path(w, v, "client_ca");
	tls->client_verify = tls->client_ca ? CONF_TLS_VERIFY_REQUIRE : CONF_TLS_VERIFY_OFF;
	struct conf_field vf;
	if (conf_field_open(w, v, "client_verify", &vf)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && strcmp(s, "require") == 0)
			tls->client_verify = CONF_TLS_VERIFY_REQUIRE;
		else if (s && strcmp(s, "optional") == 0)
			tls->client_verify = CONF_TLS_VERIFY_OPTIONAL;
		else if (s && strcmp(s, "off") == 0)
			tls->client_verify = CONF_TLS_VERIFY_OFF;
		else if (s) {
			char *q = conf_quoted(s);
			conf_werr(w, "unknown value %s (expected require, optional or off)", q);
			free(q);
		}
		if (tls->client_verify != CONF_TLS_VERIFY_OFF && !tls->client_ca)
			conf_werr(w, "needs client_ca (the CA bundle client certificates are checked against)");
		conf_field_close(w, &vf);
	}
	if (tls->client_verify == CONF_TLS_VERIFY_OFF && tls->client_ca) {
		free(tls->client_ca);
		tls->client_ca = NULL;
	}
	conf_field_close(w, &f);
	if (w->errs->count == errors_before) {
		struct tls_error e;
		tls->server = tls_server_new(tls, l->name ? l->name : "listener", l->http2->enabled, &e);
		if (!tls->server)
			report_tls_error(w, &e);
	}
}

static void walk_http2(struct conf_walker *w, int t, struct conf_http2 *h)
{
	static const char *const keys[] = {
		"enabled", "max_concurrent_streams", "max_header_list_size", "initial_window_size", "idle_timeout",
		"max_resets_per_s", "max_pings_per_s", "max_settings_per_s", "max_empty_frames_per_s",
		"max_continuation_frames", "max_glitches_per_s", "max_uploading_streams", "max_uploading_streams_per_client", NULL,
	};
	h->enabled = true;
	h->max_concurrent_streams = 100;
	h->max_header_list_size = 32768;
	h->initial_window_size = 262144;
	h->idle_timeout = 0; /* limits.keepalive_timeout */
	h->max_resets_per_s = 100;
	h->max_pings_per_s = 20;
	h->max_settings_per_s = 20;
	h->max_empty_frames_per_s = 50;
	h->max_continuation_frames = 4;
	h->max_glitches_per_s = 50;
	h->max_uploading_streams = 10;
	h->max_uploading_streams_per_client = 50;
	struct conf_field f;
	if (!conf_field_open_record(w, t, "http2", keys, "a table like { max_concurrent_streams = 100 }", &f))
		return;
	int v = lua_gettop(w->L);
	field_bool(w, v, "enabled", &h->enabled);
	conf_field_unsigned(w, v, "max_concurrent_streams", 1, 10000, &h->max_concurrent_streams);
	conf_field_size(w, v, "max_header_list_size", 1024, 1 << 20, &h->max_header_list_size);
	conf_field_size(w, v, "initial_window_size", 16384, (1u << 31) - 1, &h->initial_window_size);
	conf_field_duration(w, v, "idle_timeout", false, &h->idle_timeout);
	conf_field_unsigned(w, v, "max_resets_per_s", 1, 1000000, &h->max_resets_per_s);
	conf_field_unsigned(w, v, "max_pings_per_s", 1, 1000000, &h->max_pings_per_s);
	conf_field_unsigned(w, v, "max_settings_per_s", 1, 1000000, &h->max_settings_per_s);
	conf_field_unsigned(w, v, "max_empty_frames_per_s", 1, 1000000, &h->max_empty_frames_per_s);
	conf_field_unsigned(w, v, "max_continuation_frames", 1, 100000, &h->max_continuation_frames);
	conf_field_unsigned(w, v, "max_glitches_per_s", 1, 1000000, &h->max_glitches_per_s);
	conf_field_unsigned(w, v, "max_uploading_streams", 1, 10000, &h->max_uploading_streams);
	conf_field_unsigned(w, v, "max_uploading_streams_per_client", 1, 1000000, &h->max_uploading_streams_per_client);
	conf_field_close(w, &f);
}

void conf_tls_walk_listener(struct conf_walker *w, int t, struct conf_listener *l)
{
	l->http2 = conf_xcalloc(1, sizeof(*l->http2));
	walk_http2(w, t, l->http2);
	field_bool(w, t, "h2c", &l->h2c);
	walk_tls(w, t, l);
	if (l->tls && l->h2c)
		conf_werr_key(w, "h2c", "only for plaintext listeners (a TLS listener offers h2 by ALPN)");
	if (l->h2c && !l->http2->enabled)
		conf_werr_key(w, "h2c", "needs http2.enabled = true");
}

void conf_tls_walk_pool(struct conf_walker *w, int t, struct conf_pool *p)
{
	static const char *const keys[] = { "ca", "sni", "verify", "cert", "key", NULL };
	struct conf_field f;
	if (!conf_field_open(w, t, "tls", &f))
		return;
	int v = lua_gettop(w->L);
	struct conf_upstream_tls *u = NULL;
	if (lua_type(w->L, v) == LUA_TBOOLEAN) {
		if (lua_toboolean(w->L, v)) {
			u = conf_xcalloc(1, sizeof(*u));
			u->verify = true;
		}
	} else if (lua_type(w->L, v) == LUA_TTABLE) {
		size_t errors_before = w->errs->count;
		conf_check_record_keys(w, v, keys);
		u = conf_xcalloc(1, sizeof(*u));
		u->verify = true;
		u->ca = field_path(w, v, "ca");
		u->sni = field_string(w, v, "sni", NULL);
		field_bool(w, v, "verify", &u->verify);
		u->cert = field_path(w, v, "cert");
		u->key = field_path(w, v, "key");
		if (!u->cert != !u->key)
			conf_werr(w, "cert and key go together (a client certificate for the upstream)");
		if (w->errs->count > errors_before) {
			p->tls = u;
			conf_field_close(w, &f);
			return;
		}
	} else {
		conf_type_error(w, v, "true or a table like { ca = \"ca.pem\", sni = \"api.internal\" }");
	}
	if (u && u->verify && !u->sni)
		conf_werr(w, "needs sni = \"NAME\": the name the server certificate is verified against "
		             "(or verify = false, not recommended)");
	else if (u) {
		struct tls_error e;
		u->client = tls_client_new(u, &e);
		if (!u->client) {
			if (e.field)
				conf_werr_key(w, e.field, "%s", e.msg);
			else
				conf_werr(w, "%s", e.msg);
		}
	}
	p->tls = u;
	conf_field_close(w, &f);
}

void conf_tls_walk_user(struct conf_walker *w, int root)
{
	struct conf_field f;
	if (!conf_field_open(w, root, "user", &f))
		return;
	const char *s = conf_value_string(w, lua_gettop(w->L));
	if (s) {
		struct passwd pw, *res = NULL;
		char buf[4096];
		if (getpwnam_r(s, &pw, buf, sizeof buf, &res) != 0 || !res) {
			char *q = conf_quoted(s);
			conf_werr(w, "unknown user %s", q);
			free(q);
		} else {
			w->c->user = conf_xstrdup(s);
		}
	}
	conf_field_close(w, &f);
}

void conf_tls_free_listener(struct conf_listener *l)
{
	struct conf_tls *t = l->tls;
	if (t) {
		tls_server_free(t->server);
		for (size_t i = 0; i < t->num_certs; i++) {
			free(t->certs[i].cert);
			free(t->certs[i].key);
			free(t->certs[i].ocsp);
		}
		free(t->certs);
		free(t->ciphers);
		free(t->ciphersuites);
		free(t->groups);
		free(t->client_ca);
		free(t);
		l->tls = NULL;
	}
	free(l->http2);
	l->http2 = NULL;
}

void conf_tls_free_pool(struct conf_pool *p)
{
	struct conf_upstream_tls *u = p->tls;
	if (!u)
		return;
	tls_client_free(u->client);
	free(u->ca);
	free(u->sni);
	free(u->cert);
	free(u->key);
	free(u);
	p->tls = NULL;
}
