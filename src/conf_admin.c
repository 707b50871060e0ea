/* conf_admin.c - the `admin` and `state_file` sections (conf_admin.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_admin.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

static char *resolve_path(struct conf_walker *w, const char *s)
{
	if (s[0] == '/' || strcmp(w->base_dir, ".") == 0)
		return conf_xstrdup(s);
	return conf_xasprintf("%s/%s", w->base_dir, s);
}

/* 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8: only this host can connect. */
static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return false;
}

/* The token is the file's first line, without its line end and trailing
 * blanks; the rest of the file is ignored. Read at load (before privileges
 * are dropped), so a root-only file works. */
static void read_token(struct conf_walker *w, struct conf_admin *a)
{
	struct stat st;
	char why[160];
	int fd = conf_open_regular_file(a->http_token_file, &st, why, sizeof why);
	if (fd < 0) {
		conf_werr(w, "cannot read %s: %s (write the token into that file, or fix the path)", a->http_token_file,
		          why);
		return;
	}
	char buf[1025];
	size_t got = 0;
	while (got < sizeof buf - 1) {
		ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	size_t n = strcspn(buf, "\r\n");
	while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		n--;
	bool printable = true;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)buf[i] <= ' ' || (unsigned char)buf[i] >= 0x7f)
			printable = false;
	if (n < 16 || n > 512 || !printable) {
		conf_werr(w, "%s: the token (its first line) must be 16 to 512 printable characters without spaces "
		             "(e.g. the output of `openssl rand -hex 32`)", a->http_token_file);
	} else {
		a->http_token = conf_xstrndup(buf, n);
		a->http_token_len = n;
	}
	memset(buf, 0, sizeof buf);
}

static void walk_admin_http(struct conf_walker *w, int v, struct conf_admin *a)
{
	struct conf_field g;
	if (conf_field_open(w, v, "http", &g)) {
		const char *s = conf_value_address(w, lua_gettop(w->L), &a->http_addr, &a->http_addr_len);
		if (s)
			a->http = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, v, "http_token_file", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "must not be empty");
		else if (s) {
			a->http_token_file = resolve_path(w, s);
			read_token(w, a);
		}
		conf_field_close(w, &g);
	}
	if (a->http_token_file && !a->http)
		conf_werr_key(w, "http_token_file", "set without admin.http (add http = \"127.0.0.1:9901\" or remove it)");
	if (a->http && a->http_addr_len > 0 && !is_loopback(&a->http_addr) && !a->http_token_file)
		conf_werr_key(w, "http",
		              "%s is not a loopback address: anyone who can reach it could read the metrics and status; "
		              "set http_token_file (scrapers then send \"Authorization: Bearer TOKEN\") or listen on "
		              "127.0.0.1",
		              a->http);
}

static void walk_admin(struct conf_walker *w, int root)
{
	static const char *const keys[] = { "socket", "mode", "max_connections", "http", "http_token_file", NULL };
	struct conf_admin *a = &w->c->admin;
	a->mode = 0600;
	a->max_connections = CONF_ADMIN_MAX_CONNECTIONS_DEFAULT;
	struct conf_field f;
	if (!conf_field_open_record(w, root, "admin", keys,
	                            "a table like { socket = \"/run/sluice/admin.sock\", mode = \"0600\" }", &f))
		return;
	int v = lua_gettop(w->L);
	walk_admin_http(w, v, a);
	struct conf_field g;
	if (conf_field_open(w, v, "socket", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		/* sun_path holds 108 bytes with the NUL */
		if (s && (!*s || strlen(s) > 100))
			conf_werr(w, "must be a path of 1 to 100 bytes");
		else if (s)
			a->socket = resolve_path(w, s);
		conf_field_close(w, &g);
	} else if (!a->http) {
		conf_werr_key(w, "socket", "missing (write a path like \"/run/sluice/admin.sock\", or http = "
		                           "\"127.0.0.1:9901\" for the admin HTTP listener alone)");
	}
	if (conf_field_open(w, v, "mode", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s) {
			char *end = NULL;
			unsigned long m = strtoul(s, &end, 8);
			if (!*s || *end || m > 0777 || (m & 0600) != 0600) {
				char *q = conf_quoted(s);
				conf_werr(w, "invalid mode %s (an octal string like \"0600\", with owner read and write)", q);
				free(q);
			} else {
				a->mode = (unsigned)m;
			}
		}
		conf_field_close(w, &g);
	}
	conf_field_unsigned(w, v, "max_connections", 1, CONF_ADMIN_MAX_CONNECTIONS_MAX, &a->max_connections);
	conf_field_close(w, &f);
}

void conf_walk_admin(struct conf_walker *w, int root)
{
	walk_admin(w, root);
	struct conf_field f;
	if (conf_field_open(w, root, "state_file", &f)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "must not be empty");
		else if (s)
			w->c->state_file = resolve_path(w, s);
		conf_field_close(w, &f);
	}
}

void conf_admin_free(struct conf *c)
{
	free(c->admin.socket);
	free(c->admin.http);
	free(c->admin.http_token_file);
	if (c->admin.http_token) {
		memset(c->admin.http_token, 0, c->admin.http_token_len);
		free(c->admin.http_token);
	}
	free(c->state_file);
}
