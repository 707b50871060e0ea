/* conf_redis.c - one Redis endpoint in the config (conf_redis.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>

#include "conf_schema.h"

#define SECRET_MAX 1023
#define SENTINELS_MAX 64

static const char *const endpoint_keys[] = { "address", "sentinels", "master", "sentinel_password_file",
	                                     "password_file", "db", "timeout", "connect_timeout" };
#define NUM_ENDPOINT_KEYS (sizeof endpoint_keys / sizeof endpoint_keys[0])

static bool present(struct conf_walker *w, int t, const char *key)
{
	lua_pushstring(w->L, key);
	bool yes = lua_rawget(w->L, t) != LUA_TNIL;
	lua_pop(w->L, 1);
	return yes;
}

/* A secret: the file's one line (a trailing newline is fine), into *out;
 * what names it in errors. Never a FIFO or device (conf_open_regular_file). */
static void read_secret(struct conf_walker *w, const char *file, const char *what, char **out)
{
	char *path = conf_resolve_path(w, file);
	char *q = conf_quoted(path);
	struct stat st;
	char why[160];
	char buf[SECRET_MAX + 2];
	size_t got = 0;
	int fd = conf_open_regular_file(path, &st, why, sizeof why);
	bool readable = fd >= 0;
	while (readable && got < sizeof buf) {
		ssize_t n = read(fd, buf + got, sizeof buf - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(why, sizeof why, "%s", strerror(errno));
			readable = false;
		} else if (n == 0) {
			break;
		} else {
			got += (size_t)n;
		}
	}
	if (fd >= 0)
		close(fd);
	bool more = got == sizeof buf;
	while (!more && got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == '\r'))
		got--;
	if (!readable)
		conf_werr(w, "cannot read %s: %s (give a readable file holding the %s)", q, why, what);
	else if (more || got > SECRET_MAX)
		conf_werr(w, "%s is larger than %d bytes (it must hold only the %s)", q, SECRET_MAX, what);
	else if (got == 0)
		conf_werr(w, "%s is empty (write the %s into it, or remove the key)", q, what);
	else if (memchr(buf, '\n', got) || memchr(buf, '\r', got))
		conf_werr(w, "%s holds more than one line (it must hold only the %s, on one line)", q, what);
	else if (memchr(buf, '\0', got))
		conf_werr(w, "%s holds a NUL byte (it must hold only the %s, as text)", q, what);
	else
		*out = conf_xstrndup(buf, got);
	memset(buf, 0, sizeof buf);
	free(q);
	free(path);
}

static void walk_secret(struct conf_walker *w, int t, const char *key, const char *what, char **out)
{
	struct conf_field g;
	if (!conf_field_open(w, t, key, &g))
		return;
	const char *s = conf_value_string(w, lua_gettop(w->L));
	if (s && *s)
		read_secret(w, s, what, out);
	else if (s)
		conf_werr(w, "must not be empty (a path to a file holding the %s)", what);
	conf_field_close(w, &g);
}

/* The address string at stack slot v: numeric host and port for hiredis. */
static bool walk_hostport(struct conf_walker *w, int v, char **address, char **host_out, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	const char *s = conf_value_address(w, v, &ss, &len);
	if (!s || len == 0)
		return false;
	char host[INET6_ADDRSTRLEN] = "";
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		*port = ntohs(in->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		*port = ntohs(in6->sin6_port);
	}
	if (!host[0]) {
		conf_werr(w, "not an IPv4 or IPv6 address (write \"127.0.0.1:6379\")");
		return false;
	}
	*address = conf_xstrdup(s);
	*host_out = conf_xstrdup(host);
	return true;
}

/* sentinels = { "127.0.0.1:26379", ... } */
static void walk_sentinels(struct conf_walker *w, int t, struct conf_redis *r)
{
	struct conf_field g;
	if (!conf_field_open(w, t, "sentinels", &g))
		return;
	int v = lua_gettop(w->L);
	size_t n;
	if (lua_type(w->L, v) != LUA_TTABLE) {
		conf_type_error(w, v, "a list like { \"127.0.0.1:26379\", \"127.0.0.1:26380\", \"127.0.0.1:26381\" }");
	} else if (conf_list_length(w, v, "{ \"127.0.0.1:26379\", \"127.0.0.1:26380\" }", &n)) {
		if (n == 0)
			conf_werr(w, "empty (list the sentinels, e.g. { \"127.0.0.1:26379\", \"127.0.0.1:26380\" })");
		else if (n > SENTINELS_MAX)
			conf_werr(w, "%zu sentinels (at most %d)", n, SENTINELS_MAX);
		r->sentinels = conf_xcalloc(n ? n : 1, sizeof *r->sentinels);
		for (size_t i = 1; i <= n && i <= SENTINELS_MAX; i++) {
			struct conf_field item;
			conf_item_open(w, v, i, &item);
			struct conf_redis_sentinel *s = &r->sentinels[r->num_sentinels];
			if (walk_hostport(w, lua_gettop(w->L), &s->address, &s->host, &s->port)) {
				bool dup = false;
				for (size_t j = 0; j < r->num_sentinels; j++)
					dup = dup || (r->sentinels[j].port == s->port && strcmp(r->sentinels[j].host, s->host) == 0);
				if (dup) {
					conf_werr(w, "%s is listed twice", s->address);
					free(s->address);
					free(s->host);
					s->address = s->host = NULL;
				} else {
					r->num_sentinels++;
				}
			}
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &g);
}

static void walk_master(struct conf_walker *w, int t, struct conf_redis *r)
{
	struct conf_field g;
	if (!conf_field_open(w, t, "master", &g)) {
		conf_werr_key(w, "master", "missing (the name the sentinels monitor, e.g. master = \"edge\": "
		                           "`sentinel monitor edge 127.0.0.1 6379 2` in sentinel.conf)");
		return;
	}
	const char *s = conf_value_string(w, lua_gettop(w->L));
	bool ok = s && *s && strlen(s) <= 200;
	for (const char *p = s; ok && *p; p++)
		ok = *p > ' ' && *p < 0x7f;
	if (ok)
		r->master = conf_xstrdup(s);
	else if (s)
		conf_werr(w, "must be the master's name as the sentinels know it (printable, no spaces, at most "
		             "200 bytes; e.g. master = \"edge\")");
	conf_field_close(w, &g);
}

/* With sentinels, `address` describes where the master is found (logs, `ctl show`). */
static char *describe_sentinels(const struct conf_redis *r)
{
	size_t len = 0;
	for (size_t i = 0; i < r->num_sentinels; i++)
		len += strlen(r->sentinels[i].address) + 1;
	char *list = conf_xcalloc(1, len + 1);
	for (size_t i = 0; i < r->num_sentinels; i++) {
		if (i)
			strcat(list, ",");
		strcat(list, r->sentinels[i].address);
	}
	char *out = conf_xasprintf("sentinel master %s via %s", r->master, list);
	free(list);
	return out;
}

static void check_keys(struct conf_walker *w, int t, const char *const *more)
{
	const char *keys[NUM_ENDPOINT_KEYS + 8 + 1];
	size_t n = 0;
	for (size_t i = 0; i < NUM_ENDPOINT_KEYS; i++)
		keys[n++] = endpoint_keys[i];
	for (size_t i = 0; more && more[i] && n < NUM_ENDPOINT_KEYS + 8; i++)
		keys[n++] = more[i];
	keys[n] = NULL;
	conf_check_record_keys(w, t, keys);
}

void conf_redis_walk(struct conf_walker *w, int t, const char *const *more, struct conf_redis *r)
{
	if (lua_type(w->L, t) != LUA_TTABLE) {
		conf_type_error(w, t, "a table like { address = \"127.0.0.1:6379\" } or "
		                      "{ sentinels = { \"127.0.0.1:26379\" }, master = \"edge\" }");
		return;
	}
	check_keys(w, t, more);
	r->enabled = true;
	bool has_address = present(w, t, "address"), has_sentinels = present(w, t, "sentinels");
	struct conf_field g;
	if (has_address && has_sentinels) {
		conf_werr_key(w, "sentinels", "`address` and `sentinels` exclude each other: give `address` for one Redis, "
		                              "or `sentinels` and `master` to find the master through Redis Sentinel");
	} else if (has_address) {
		if (conf_field_open(w, t, "address", &g)) {
			walk_hostport(w, lua_gettop(w->L), &r->address, &r->host, &r->port);
			conf_field_close(w, &g);
		}
		if (present(w, t, "master"))
			conf_werr_key(w, "master", "only with `sentinels` (the name the sentinels monitor); remove it, or "
			                           "replace `address` with sentinels = { \"HOST:PORT\", ... }");
		if (present(w, t, "sentinel_password_file"))
			conf_werr_key(w, "sentinel_password_file", "only with `sentinels`; remove it");
	} else if (has_sentinels) {
		walk_sentinels(w, t, r);
		walk_master(w, t, r);
		walk_secret(w, t, "sentinel_password_file", "sentinel password", &r->sentinel_password);
		if (r->master && r->num_sentinels)
			r->address = describe_sentinels(r);
	} else {
		conf_werr_key(w, "address", "missing (write address = \"127.0.0.1:6379\", or sentinels = { "
		                            "\"127.0.0.1:26379\", ... } with master = \"NAME\" for Redis Sentinel)");
	}
	walk_secret(w, t, "password_file", "Redis password", &r->password);
	conf_field_unsigned(w, t, "db", 0, 1000000, &r->db);
	conf_field_duration(w, t, "timeout", false, &r->timeout);
	conf_field_duration(w, t, "connect_timeout", false, &r->connect_timeout);
}

static char *dup_or_null(const char *s)
{
	return s ? conf_xstrdup(s) : NULL;
}

void conf_redis_copy(struct conf_redis *to, const struct conf_redis *from)
{
	*to = *from;
	to->address = dup_or_null(from->address);
	to->host = dup_or_null(from->host);
	to->password = dup_or_null(from->password);
	to->sentinel_password = dup_or_null(from->sentinel_password);
	to->master = dup_or_null(from->master);
	to->sentinels = NULL;
	to->num_sentinels = 0;
	if (from->num_sentinels) {
		to->sentinels = conf_xcalloc(from->num_sentinels, sizeof *to->sentinels);
		for (size_t i = 0; i < from->num_sentinels; i++) {
			to->sentinels[i].address = dup_or_null(from->sentinels[i].address);
			to->sentinels[i].host = dup_or_null(from->sentinels[i].host);
			to->sentinels[i].port = from->sentinels[i].port;
		}
		to->num_sentinels = from->num_sentinels;
	}
}

static void free_secret(char *s)
{
	if (!s)
		return;
	/* do not leave it in freed memory */
	volatile char *p = s;
	while (*p)
		*p++ = 0;
	free(s);
}

void conf_redis_clear(struct conf_redis *r)
{
	free(r->address);
	free(r->host);
	free_secret(r->password);
	free_secret(r->sentinel_password);
	for (size_t i = 0; i < r->num_sentinels; i++) {
		free(r->sentinels[i].address);
		free(r->sentinels[i].host);
	}
	free(r->sentinels);
	free(r->master);
	memset(r, 0, sizeof *r);
}

bool conf_redis_same(const struct conf_redis *a, const struct conf_redis *b)
{
	if (a->enabled != b->enabled || !conf_same_str(a->host, b->host) || a->port != b->port ||
	    !conf_same_str(a->password, b->password) || a->db != b->db || a->timeout != b->timeout ||
	    a->connect_timeout != b->connect_timeout || a->num_sentinels != b->num_sentinels ||
	    !conf_same_str(a->master, b->master) || !conf_same_str(a->sentinel_password, b->sentinel_password))
		return false;
	for (size_t i = 0; i < a->num_sentinels; i++)
		if (!conf_same_str(a->sentinels[i].host, b->sentinels[i].host) || a->sentinels[i].port != b->sentinels[i].port)
			return false;
	return true;
}
