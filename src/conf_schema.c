/* conf_schema.c - the toolkit the config sections are checked with
 * (conf_schema.h): value parsers, the error list, paths and messages, table
 * shapes, typed fields, did-you-mean. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_schema.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

/* Timers downstream add durations to clock readings; a day is far beyond any
 * sensible timeout and keeps that arithmetic comfortably in range. */
static const conf_msec duration_max_ms = (conf_msec)24 * 3600 * 1000;

/* ---- allocation: config loading treats OOM as fatal, like conf_errors_add ---- */

static void out_of_memory(void)
{
	fputs("sluice: out of memory while loading the config\n", stderr);
	abort();
}

void *conf_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		out_of_memory();
	return p;
}

void *conf_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		out_of_memory();
	return p;
}

void *conf_xreallocarray(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		out_of_memory();
	size_t bytes = n * size;
	void *q = realloc(p, bytes ? bytes : 1);
	if (!q)
		out_of_memory();
	return q;
}

char *conf_xstrndup(const char *s, size_t n)
{
	char *d = conf_xmalloc(n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

char *conf_resolve_path(const struct conf_walker *w, const char *file)
{
	if (file[0] == '/' || strcmp(w->base_dir, ".") == 0)
		return conf_xstrdup(file);
	return conf_xasprintf("%s/%s", w->base_dir, file);
}

char *conf_xstrdup(const char *s)
{
	return conf_xstrndup(s, strlen(s));
}

char *conf_xvasprintf(const char *fmt, va_list ap)
{
	va_list probe;
	va_copy(probe, ap);
	int n = vsnprintf(NULL, 0, fmt, probe);
	va_end(probe);
	if (n < 0)
		out_of_memory();
	char *buf = conf_xmalloc((size_t)n + 1);
	if (vsnprintf(buf, (size_t)n + 1, fmt, ap) != n)
		out_of_memory();
	return buf;
}

char *conf_xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = conf_xvasprintf(fmt, ap);
	va_end(ap);
	return s;
}

/* ---- error list ---- */

void conf_errors_init(struct conf_errors *e)
{
	e->msgs = NULL;
	e->count = 0;
	e->cap = 0;
}

void conf_errors_add(struct conf_errors *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = conf_xvasprintf(fmt, ap);
	va_end(ap);
	if (e->count == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 8;
		e->msgs = conf_xreallocarray(e->msgs, e->cap, sizeof *e->msgs);
	}
	e->msgs[e->count++] = msg;
}

void conf_errors_free(struct conf_errors *e)
{
	for (size_t i = 0; i < e->count; i++)
		free(e->msgs[i]);
	free(e->msgs);
	conf_errors_init(e);
}

/* ---- scalar parsers ---- */

/* *v = *v * 10 + digit, unless that overflows. */
static bool accumulate_digit(uint64_t *v, char digit)
{
	uint64_t d = (uint64_t)(digit - '0');
	if (*v > (UINT64_MAX - d) / 10)
		return false;
	*v = *v * 10 + d;
	return true;
}

bool conf_parse_duration(const char *s, conf_msec *out)
{
	static const struct {
		const char *suffix;
		conf_msec ms;
	} units[] = { { "ms", 1 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 } };

	if (!s || !*s)
		return false;
	conf_msec total = 0;
	conf_msec previous_unit = UINT64_MAX;
	const char *p = s;
	/* One or more <number><unit> terms ("1m30s"), units strictly decreasing,
	 * so every duration has exactly one spelling of each part. */
	while (*p) {
		if (!conf_is_digit(*p))
			return false;
		uint64_t whole = 0;
		for (; conf_is_digit(*p); p++)
			if (!accumulate_digit(&whole, *p))
				return false;
		uint64_t frac = 0, frac_scale = 1;
		if (*p == '.') {
			p++;
			if (!conf_is_digit(*p))
				return false;
			for (; conf_is_digit(*p); p++) {
				if (frac_scale == 1000000)
					return false;
				frac = frac * 10 + (uint64_t)(*p - '0');
				frac_scale *= 10;
			}
		}
		conf_msec unit = 0;
		for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
			size_t n = strlen(units[i].suffix);
			if (strncmp(p, units[i].suffix, n) == 0) {
				unit = units[i].ms;
				p += n;
				break;
			}
		}
		if (unit == 0 || unit >= previous_unit)
			return false;
		previous_unit = unit;
		if (whole > UINT64_MAX / unit)
			return false;
		uint64_t ms = whole * unit;
		/* A fraction is fine as long as the result is whole milliseconds. */
		uint64_t frac_ms = frac * unit;
		if (frac_ms % frac_scale != 0)
			return false;
		frac_ms /= frac_scale;
		if (ms > UINT64_MAX - frac_ms)
			return false;
		ms += frac_ms;
		if (total > UINT64_MAX - ms)
			return false;
		total += ms;
	}
	*out = total;
	return true;
}

bool conf_parse_size(const char *s, uint64_t *out)
{
	if (!s || !conf_is_digit(*s))
		return false;
	uint64_t v = 0;
	for (; conf_is_digit(*s); s++)
		if (!accumulate_digit(&v, *s))
			return false;
	uint64_t mult = 1;
	switch (conf_ascii_lower(*s)) {
	case 'k': mult = (uint64_t)1 << 10; s++; break;
	case 'm': mult = (uint64_t)1 << 20; s++; break;
	case 'g': mult = (uint64_t)1 << 30; s++; break;
	case '\0': break;
	default: return false;
	}
	if (*s || v > UINT64_MAX / mult)
		return false;
	*out = v * mult;
	return true;
}

__attribute__((format(printf, 3, 4))) static bool address_fail(char *why, size_t why_size, const char *fmt, ...)
{
	if (why && why_size) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(why, why_size, fmt, ap);
		va_end(ap);
		if (n < 0)
			why[0] = '\0';
	}
	return false;
}

bool conf_parse_address_why(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *why,
                            size_t why_size)
{
	if (!s || !*s)
		return address_fail(why, why_size, "empty address (write \"host:port\")");

	const char *host, *host_end, *port;
	bool bracketed = s[0] == '[';
	if (bracketed) {
		const char *close = strchr(s, ']');
		if (!close)
			return address_fail(why, why_size, "missing \"]\" after the IPv6 address");
		if (close[1] == '\0')
			return address_fail(why, why_size, "missing port (write \"[::1]:8080\")");
		if (close[1] != ':')
			return address_fail(why, why_size, "expected \":PORT\" after \"]\"");
		host = s + 1;
		host_end = close;
		port = close + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon)
			return address_fail(why, why_size, "missing port (write \"%s:PORT\")", s);
		if (memchr(s, ':', (size_t)(colon - s)))
			return address_fail(why, why_size, "an IPv6 address needs brackets (write \"[::1]:8080\")");
		host = s;
		host_end = colon;
		port = colon + 1;
	}
	if (host_end == host)
		return address_fail(why, why_size, "missing host (write \"0.0.0.0:PORT\" for every IPv4 address)");
	if (*port == '\0')
		return address_fail(why, why_size, "missing port after \":\"");

	unsigned long port_num = 0;
	for (const char *p = port; *p; p++) {
		if (!conf_is_digit(*p))
			return address_fail(why, why_size, "port \"%s\" is not a number", port);
		if (port_num <= 65535)
			port_num = port_num * 10 + (unsigned long)(*p - '0');
	}
	if (port_num == 0 || port_num > 65535)
		return address_fail(why, why_size, "port out of range (1 to 65535)");

	size_t host_len = (size_t)(host_end - host);
	if (host_len > CONF_HOST_MAX_LEN)
		return address_fail(why, why_size, "host name too long");
	for (const char *p = host; p < host_end; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return address_fail(why, why_size, "the host contains a space or control character");
	char host_buf[CONF_HOST_MAX_LEN + 1];
	memcpy(host_buf, host, host_len);
	host_buf[host_len] = '\0';

	/* Digits and dots are an IPv4 address, never a host name to look up
	 * ("999.1.1.1" went to DNS), and only the dotted-quad spelling: "0" or
	 * "127.1" would be silently read as 0.0.0.0 and 127.0.0.1. */
	bool digits_and_dots = true;
	for (const char *p = host_buf; *p && digits_and_dots; p++)
		digits_and_dots = conf_is_digit(*p) || *p == '.';
	struct in_addr v4;
	if (!bracketed && digits_and_dots && inet_pton(AF_INET, host_buf, &v4) != 1)
		return address_fail(why, why_size,
		                    "\"%s\" is not an IPv4 address (write four numbers from 0 to 255 like \"10.0.0.1\", "
		                    "or \"0.0.0.0\" for every address)",
		                    host_buf);

	/* Numeric first: a literal address must never trigger a DNS lookup. */
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST;
	int rc = getaddrinfo(host_buf, NULL, &hints, &res);
	if (rc == 0 && res && res->ai_family == AF_INET && inet_pton(AF_INET, host_buf, &v4) != 1) {
		/* getaddrinfo also takes inet_aton's forms ("0x7f.1"): refuse them, they hide typos */
		freeaddrinfo(res);
		return address_fail(why, why_size,
		                    "\"%s\" is not a dotted IPv4 address (write four numbers from 0 to 255 like "
		                    "\"127.0.0.1\")",
		                    host_buf);
	}
	if (rc != 0) {
		if (bracketed)
			return address_fail(why, why_size, "\"%s\" is not an IPv6 address", host_buf);
		hints.ai_flags = 0;
		rc = getaddrinfo(host_buf, NULL, &hints, &res);
		if (rc != 0)
			return address_fail(why, why_size, "cannot resolve host \"%s\": %s", host_buf,
			                    rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
	}
	if (!res || res->ai_addrlen > sizeof *ss) {
		freeaddrinfo(res);
		return address_fail(why, why_size, "cannot resolve host \"%s\": no usable address", host_buf);
	}
	memset(ss, 0, sizeof *ss);
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port_num);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port_num);
	else
		return address_fail(why, why_size, "\"%s\" is neither IPv4 nor IPv6", host_buf);
	return true;
}

bool conf_parse_address(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	return conf_parse_address_why(s, ss, len, NULL, 0);
}

bool conf_same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

bool conf_sockaddr_equal(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                         socklen_t blen)
{
	return alen != 0 && blen != 0 && conf_sockaddr_compare(a, alen, b, blen) == 0;
}



static void path_append(struct conf_walker *w, const char *s, size_t n)
{
	if (w->path_len + n + 1 > w->path_cap) {
		size_t cap = w->path_cap ? w->path_cap : 64;
		while (w->path_len + n + 1 > cap)
			cap *= 2;
		w->path = conf_xreallocarray(w->path, cap, 1);
		w->path_cap = cap;
	}
	memcpy(w->path + w->path_len, s, n);
	w->path_len += n;
	w->path[w->path_len] = '\0';
}

void conf_path_pop(struct conf_walker *w, size_t mark)
{
	w->path_len = mark;
	if (w->path)
		w->path[mark] = '\0';
}

/* A user-supplied string for a message: quoted, control bytes escaped, long ones cut. */
char *conf_quoted(const char *s)
{
	enum { SHOW_MAX = 80 };
	size_t n = strlen(s);
	char *out = conf_xmalloc(SHOW_MAX * 4 + 8);
	size_t o = 0;
	out[o++] = '"';
	for (size_t i = 0; i < n && i < SHOW_MAX; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(out + o, 5, "\\x%02x", ch);
		} else {
			out[o++] = (char)ch;
		}
	}
	if (n > SHOW_MAX) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

static bool is_identifier(const char *s)
{
	if (!conf_is_alpha(*s) && *s != '_')
		return false;
	for (s++; *s; s++)
		if (!conf_is_alpha(*s) && !conf_is_digit(*s) && *s != '_')
			return false;
	return true;
}

size_t conf_path_push_key(struct conf_walker *w, const char *key)
{
	size_t mark = w->path_len;
	if (is_identifier(key)) {
		if (w->path_len)
			path_append(w, ".", 1);
		path_append(w, key, strlen(key));
	} else {
		char *q = conf_quoted(key);
		path_append(w, "[", 1);
		path_append(w, q, strlen(q));
		path_append(w, "]", 1);
		free(q);
	}
	return mark;
}

size_t conf_path_push_index(struct conf_walker *w, size_t index)
{
	size_t mark = w->path_len;
	char buf[32];
	int n = snprintf(buf, sizeof buf, "[%zu]", index);
	path_append(w, buf, (size_t)n);
	return mark;
}

void conf_werr(struct conf_walker *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = conf_xvasprintf(fmt, ap);
	va_end(ap);
	if (w->path_len)
		conf_errors_add(w->errs, "%s: %s: %s", w->source, w->path, msg);
	else
		conf_errors_add(w->errs, "%s: %s", w->source, msg);
	free(msg);
}

/* An error about a key that is not (or not validly) there, e.g. a missing one. */
void conf_werr_key(struct conf_walker *w, const char *key, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = conf_xvasprintf(fmt, ap);
	va_end(ap);
	size_t mark = conf_path_push_key(w, key);
	conf_werr(w, "%s", msg);
	conf_path_pop(w, mark);
	free(msg);
}

void conf_werr_index(struct conf_walker *w, size_t index, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = conf_xvasprintf(fmt, ap);
	va_end(ap);
	size_t mark = conf_path_push_index(w, index);
	conf_werr(w, "%s", msg);
	conf_path_pop(w, mark);
	free(msg);
}

void conf_type_error(struct conf_walker *w, int v, const char *expected)
{
	conf_werr(w, "expected %s, got %s", expected, luaL_typename(w->L, v));
}

static void trace(struct conf_walker *w, enum conf_trace_kind kind, const char *const *keys)
{
	if (w->trace)
		w->trace->visit(w->trace->ud, kind, w->path ? w->path : "", keys);
}

/* ---- did you mean ---- */

/* Optimal string alignment distance (edits plus adjacent swaps), case-insensitive. */
static unsigned edit_distance(const char *a, const char *b)
{
	enum { MAX = 64 };
	size_t n = strlen(a), m = strlen(b);
	if (n > MAX || m > MAX)
		return UINT32_MAX;
	unsigned rows[3][MAX + 1];
	unsigned *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
	for (size_t j = 0; j <= m; j++)
		prev[j] = (unsigned)j;
	for (size_t i = 1; i <= n; i++) {
		cur[0] = (unsigned)i;
		for (size_t j = 1; j <= m; j++) {
			unsigned cost = conf_ascii_lower(a[i - 1]) == conf_ascii_lower(b[j - 1]) ? 0 : 1;
			unsigned best = prev[j] + 1;
			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			if (prev[j - 1] + cost < best)
				best = prev[j - 1] + cost;
			if (i > 1 && j > 1 && conf_ascii_lower(a[i - 1]) == conf_ascii_lower(b[j - 2]) &&
			    conf_ascii_lower(a[i - 2]) == conf_ascii_lower(b[j - 1]) && prev2[j - 2] + 1 < best)
				best = prev2[j - 2] + 1;
			cur[j] = best;
		}
		unsigned *t = prev2;
		prev2 = prev;
		prev = cur;
		cur = t;
	}
	return prev[m];
}

void conf_suggest_consider(struct conf_suggestion *s, const char *word, const char *candidate)
{
	size_t len = strlen(candidate);
	unsigned allowed = len <= 3 ? 1 : len <= 6 ? 2 : 3;
	unsigned d = edit_distance(word, candidate);
	if (d <= allowed && d < len && (!s->best || d < s->distance)) {
		s->best = candidate;
		s->distance = d;
	}
}

/* " (did you mean "x"?)" or "", for appending to a message; caller frees. */
char *conf_suggestion_text(const struct conf_suggestion *s)
{
	if (!s->best)
		return conf_xstrdup("");
	char *q = conf_quoted(s->best);
	char *text = conf_xasprintf(" (did you mean %s?)", q);
	free(q);
	return text;
}

/* ---- table shapes ---- */

size_t conf_count_entries(lua_State *L, int t)
{
	size_t n = 0;
	lua_pushnil(L);
	while (lua_next(L, t)) {
		n++;
		lua_pop(L, 1);
	}
	return n;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *join_names(const char *const *names)
{
	size_t len = 1;
	for (const char *const *n = names; *n; n++)
		len += strlen(*n) + 2;
	char *out = conf_xmalloc(len);
	out[0] = '\0';
	for (const char *const *n = names; *n; n++) {
		if (n != names)
			strcat(out, ", ");
		strcat(out, *n);
	}
	return out;
}

/* Reports every key of the record t that is not in known (sorted, so the
 * output does not depend on Lua's hash order). */
void conf_check_record_keys(struct conf_walker *w, int t, const char *const *known)
{
	lua_State *L = w->L;
	if (lua_type(L, t) != LUA_TTABLE) {
		conf_type_error(w, t, "a table");
		return;
	}
	trace(w, CONF_TRACE_RECORD, known);
	luaL_checkstack(L, 4, NULL);
	size_t total = conf_count_entries(L, t);
	if (total == 0)
		return;
	const char **unknown = lua_newuserdatauv(L, total * sizeof *unknown, 0);
	size_t num_unknown = 0;
	lua_pushnil(L);
	while (lua_next(L, t)) {
		if (lua_type(L, -2) == LUA_TSTRING) {
			const char *key = lua_tostring(L, -2);
			bool found = false;
			for (const char *const *k = known; *k && !found; k++)
				found = strcmp(*k, key) == 0;
			if (!found)
				unknown[num_unknown++] = key;
		} else {
			char *names = join_names(known);
			if (lua_isinteger(L, -2) && lua_tointeger(L, -2) > 0)
				conf_werr_index(w, (size_t)lua_tointeger(L, -2),
				           "unexpected list item (this table takes named keys: %s)", names);
			else
				conf_werr(w, "unexpected %s key (this table takes named keys: %s)", luaL_typename(L, -2),
				     names);
			free(names);
		}
		lua_pop(L, 1);
	}
	qsort(unknown, num_unknown, sizeof *unknown, compare_strings);
	for (size_t i = 0; i < num_unknown; i++) {
		struct conf_suggestion s = { NULL, 0 };
		for (const char *const *k = known; *k; k++)
			conf_suggest_consider(&s, unknown[i], *k);
		char *hint = conf_suggestion_text(&s);
		conf_werr_key(w, unknown[i], "unknown key%s", hint);
		free(hint);
	}
	lua_pop(L, 1);
}

/* Checks that the table t is a list {[1]=..., [n]=...}; example shows the expected shape. */
bool conf_list_length(struct conf_walker *w, int t, const char *example, size_t *n)
{
	lua_State *L = w->L;
	*n = 0;
	if (lua_type(L, t) == LUA_TSTRING) {
		/* A likely slip: one item written without its braces. */
		char *q = conf_quoted(lua_tostring(L, t));
		conf_werr(w, "expected a list like %s, got the string %s (write { %s } for a list of one)", example, q, q);
		free(q);
		return false;
	}
	if (lua_type(L, t) != LUA_TTABLE) {
		conf_werr(w, "expected a list like %s, got %s", example, luaL_typename(L, t));
		return false;
	}
	trace(w, CONF_TRACE_LIST, NULL);
	luaL_checkstack(L, 4, NULL);
	size_t total = conf_count_entries(L, t);
	size_t in_range = 0;
	bool reported = false;
	lua_pushnil(L);
	while (lua_next(L, t)) {
		if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
		    (lua_Unsigned)lua_tointeger(L, -2) <= (lua_Unsigned)total) {
			in_range++;
		} else if (!reported) {
			reported = true;
			if (lua_type(L, -2) == LUA_TSTRING) {
				char *q = conf_quoted(lua_tostring(L, -2));
				conf_werr(w, "expected a list like %s, got a table with key %s", example, q);
				free(q);
			} else {
				conf_werr(w, "expected a list like %s, without holes or other keys", example);
			}
		}
		lua_pop(L, 1);
	}
	*n = total;
	return in_range == total;
}

/* Pushes a userdata holding the string keys of the map t, sorted; reports
 * other keys. example shows the expected shape. */
const char **conf_map_keys(struct conf_walker *w, int t, const char *example, size_t *n)
{
	lua_State *L = w->L;
	luaL_checkstack(L, 4, NULL);
	if (lua_type(L, t) != LUA_TTABLE) {
		conf_werr(w, "expected a table of named entries like %s, got %s", example, luaL_typename(L, t));
		*n = 0;
		return lua_newuserdatauv(L, sizeof(const char *), 0);
	}
	trace(w, CONF_TRACE_MAP, NULL);
	size_t total = conf_count_entries(L, t);
	const char **keys = lua_newuserdatauv(L, (total ? total : 1) * sizeof *keys, 0);
	size_t count = 0;
	lua_pushnil(L);
	while (lua_next(L, t)) {
		if (lua_type(L, -2) == LUA_TSTRING) {
			size_t len;
			const char *key = lua_tolstring(L, -2, &len);
			if (strlen(key) == len)
				keys[count++] = key;
			else
				conf_werr(w, "a name contains a NUL byte");
		} else if (lua_isinteger(L, -2) && lua_tointeger(L, -2) > 0) {
			conf_werr_index(w, (size_t)lua_tointeger(L, -2), "unexpected list item (write named entries: %s)",
			           example);
		} else {
			conf_werr(w, "unexpected %s key (write named entries: %s)", luaL_typename(L, -2), example);
		}
		lua_pop(L, 1);
	}
	qsort(keys, count, sizeof *keys, compare_strings);
	*n = count;
	return keys;
}

/* ---- fields ---- */


bool conf_field_open(struct conf_walker *w, int t, const char *key, struct conf_field *f)
{
	lua_State *L = w->L;
	luaL_checkstack(L, 4, NULL);
	f->top = lua_gettop(L);
	f->mark = w->path_len;
	lua_pushstring(L, key);
	if (lua_rawget(L, t) == LUA_TNIL) {
		lua_settop(L, f->top);
		return false;
	}
	conf_path_push_key(w, key);
	trace(w, CONF_TRACE_VALUE, NULL);
	return true;
}

void conf_item_open(struct conf_walker *w, int list, size_t index, struct conf_field *f)
{
	luaL_checkstack(w->L, 4, NULL);
	f->top = lua_gettop(w->L);
	f->mark = w->path_len;
	lua_rawgeti(w->L, list, (lua_Integer)index);
	conf_path_push_index(w, index);
	trace(w, CONF_TRACE_VALUE, NULL);
}

/* Like conf_field_open for an entry of a map whose keys came from conf_map_keys. */
void conf_entry_open(struct conf_walker *w, int map, const char *key, struct conf_field *f)
{
	luaL_checkstack(w->L, 4, NULL);
	f->top = lua_gettop(w->L);
	f->mark = w->path_len;
	lua_pushstring(w->L, key);
	lua_rawget(w->L, map);
	conf_path_push_key(w, key);
	trace(w, CONF_TRACE_VALUE, NULL);
}

void conf_field_close(struct conf_walker *w, const struct conf_field *f)
{
	lua_settop(w->L, f->top);
	conf_path_pop(w, f->mark);
}


/* A string without NUL bytes, owned by Lua (valid while the value is on the stack). */
const char *conf_value_string(struct conf_walker *w, int v)
{
	if (lua_type(w->L, v) != LUA_TSTRING) {
		conf_type_error(w, v, "a string");
		return NULL;
	}
	size_t len;
	const char *s = lua_tolstring(w->L, v, &len);
	if (strlen(s) != len) {
		conf_werr(w, "must not contain a NUL byte");
		return NULL;
	}
	return s;
}

bool conf_value_integer(struct conf_walker *w, int v, long long lo, long long hi, long long *out)
{
	lua_State *L = w->L;
	if (lua_type(L, v) != LUA_TNUMBER) {
		conf_type_error(w, v, "an integer");
		return false;
	}
	int is_int = 0;
	lua_Integer i = lua_tointegerx(L, v, &is_int);
	if (!is_int) {
		conf_werr(w, "expected an integer, got %.14g", (double)lua_tonumber(L, v));
		return false;
	}
	if (i < lo || i > hi) {
		conf_werr(w, "%lld is out of range (%lld to %lld)", (long long)i, lo, hi);
		return false;
	}
	*out = (long long)i;
	return true;
}

bool conf_value_duration(struct conf_walker *w, int v, bool allow_zero, conf_msec *out)
{
	lua_State *L = w->L;
	if (lua_type(L, v) == LUA_TNUMBER) {
		char num[64];
		if (lua_isinteger(L, v))
			snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, v));
		else
			snprintf(num, sizeof num, "%.14g", (double)lua_tonumber(L, v));
		if (lua_tonumber(L, v) >= 0)
			conf_werr(w, "expected a duration string with a unit, got the number %s (write \"%ss\")", num, num);
		else
			conf_werr(w, "expected a duration string with a unit, got the number %s", num);
		return false;
	}
	if (lua_type(L, v) != LUA_TSTRING) {
		conf_type_error(w, v, "a duration string like \"2s\"");
		return false;
	}
	const char *s = conf_value_string(w, v);
	if (!s)
		return false;
	conf_msec ms;
	char *q = conf_quoted(s);
	bool ok = false;
	if (!conf_parse_duration(s, &ms))
		conf_werr(w, "invalid duration %s (write a number and a unit: \"500ms\", \"2s\", \"1.5s\", \"5m\", \"1h\")", q);
	else if (ms > duration_max_ms)
		conf_werr(w, "%s is too long (at most \"24h\")", q);
	else if (ms == 0 && !allow_zero)
		conf_werr(w, "%s: must be greater than 0", q);
	else
		ok = true;
	free(q);
	if (ok)
		*out = ms;
	return ok;
}

static void format_size(char *buf, size_t size, uint64_t bytes)
{
	static const char suffixes[] = { 'g', 'm', 'k' };
	for (size_t i = 0; i < sizeof suffixes; i++) {
		uint64_t unit = (uint64_t)1 << (10 * (3 - i));
		if (bytes && bytes % unit == 0) {
			snprintf(buf, size, "%llu%c", (unsigned long long)(bytes / unit), suffixes[i]);
			return;
		}
	}
	snprintf(buf, size, "%llu", (unsigned long long)bytes);
}

bool conf_value_size(struct conf_walker *w, int v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	lua_State *L = w->L;
	uint64_t bytes;
	char shown[96];
	if (lua_type(L, v) == LUA_TNUMBER) {
		int is_int = 0;
		lua_Integer i = lua_tointegerx(L, v, &is_int);
		if (!is_int || i < 0) {
			conf_werr(w, "expected a size in bytes (a whole number from 0), got %.14g", (double)lua_tonumber(L, v));
			return false;
		}
		bytes = (uint64_t)i;
		snprintf(shown, sizeof shown, "%llu", (unsigned long long)bytes);
	} else if (lua_type(L, v) == LUA_TSTRING) {
		const char *s = conf_value_string(w, v);
		if (!s)
			return false;
		char *q = conf_quoted(s);
		if (!conf_parse_size(s, &bytes)) {
			conf_werr(w, "invalid size %s (write a number of bytes or use a k, m or g suffix: \"16k\", \"10m\", \"1g\")",
			     q);
			free(q);
			return false;
		}
		snprintf(shown, sizeof shown, "%s", q);
		free(q);
	} else {
		conf_type_error(w, v, "a size (bytes, or a string like \"16k\")");
		return false;
	}
	if (bytes < lo || bytes > hi) {
		char lo_s[32], hi_s[32];
		format_size(lo_s, sizeof lo_s, lo);
		format_size(hi_s, sizeof hi_s, hi);
		conf_werr(w, "%s is out of range (%s to %s)", shown, lo_s, hi_s);
		return false;
	}
	*out = bytes;
	return true;
}

enum conf_field_status conf_field_unsigned(struct conf_walker *w, int t, const char *key, unsigned lo, unsigned hi,
                                        unsigned *out)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return CONF_FIELD_ABSENT;
	long long v;
	bool ok = conf_value_integer(w, lua_gettop(w->L), lo, hi, &v);
	if (ok)
		*out = (unsigned)v;
	conf_field_close(w, &f);
	return ok ? CONF_FIELD_SET : CONF_FIELD_INVALID;
}

enum conf_field_status conf_field_duration(struct conf_walker *w, int t, const char *key, bool allow_zero,
                                        conf_msec *out)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return CONF_FIELD_ABSENT;
	bool ok = conf_value_duration(w, lua_gettop(w->L), allow_zero, out);
	conf_field_close(w, &f);
	return ok ? CONF_FIELD_SET : CONF_FIELD_INVALID;
}

enum conf_field_status conf_field_size(struct conf_walker *w, int t, const char *key, uint64_t lo, uint64_t hi,
                                    uint64_t *out)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return CONF_FIELD_ABSENT;
	bool ok = conf_value_size(w, lua_gettop(w->L), lo, hi, out);
	conf_field_close(w, &f);
	return ok ? CONF_FIELD_SET : CONF_FIELD_INVALID;
}

/* Opens t[key] as a record with the given keys; false if absent or not a table (reported). */
bool conf_field_open_record(struct conf_walker *w, int t, const char *key, const char *const *keys,
                              const char *example, struct conf_field *f)
{
	if (!conf_field_open(w, t, key, f))
		return false;
	int v = lua_gettop(w->L);
	if (lua_type(w->L, v) != LUA_TTABLE) {
		conf_type_error(w, v, example);
		conf_field_close(w, f);
		return false;
	}
	conf_check_record_keys(w, v, keys);
	return true;
}

/* ---- names ---- */

/* Pool and service names: they key runtime state, metrics and `sluice ctl`
 * commands, and ':' is kept free for implicit services ("pool:web"). */
bool conf_check_object_name(struct conf_walker *w, const char *kind, const char *name)
{
	size_t n = strlen(name);
	bool ok = n > 0 && n <= CONF_NAME_MAX_LEN;
	for (const char *p = name; ok && *p; p++)
		ok = conf_is_alpha(*p) || conf_is_digit(*p) || *p == '_' || *p == '-' || *p == '.';
	if (!ok) {
		char *q = conf_quoted(name);
		conf_werr(w, "invalid %s name %s (use 1 to %d letters, digits, \"_\", \"-\" or \".\")", kind, q, CONF_NAME_MAX_LEN);
		free(q);
	}
	return ok;
}

/* Listener and route names: free text, but kept printable and free of quotes
 * so they can go into JSON log lines and metric labels unescaped. */
const char *conf_value_label(struct conf_walker *w, int v)
{
	const char *s = conf_value_string(w, v);
	if (!s)
		return NULL;
	size_t n = strlen(s);
	bool ok = n > 0 && n <= CONF_LABEL_MAX_LEN;
	for (const char *p = s; ok && *p; p++)
		ok = *p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\';
	if (!ok) {
		char *q = conf_quoted(s);
		conf_werr(w, "invalid name %s (use 1 to %d printable ASCII characters, no quotes or backslashes)", q,
		     CONF_LABEL_MAX_LEN);
		free(q);
		return NULL;
	}
	return s;
}

/* Reads an address string and resolves it; *len stays 0 when invalid. */
const char *conf_value_address(struct conf_walker *w, int v, struct sockaddr_storage *ss, socklen_t *len)
{
	*len = 0;
	const char *s = conf_value_string(w, v);
	if (!s)
		return NULL;
	char why[320];
	if (!conf_parse_address_why(s, ss, len, why, sizeof why)) {
		*len = 0;
		bool printable = true;
		for (const char *p = s; *p && printable; p++)
			printable = *p > 0x20 && *p < 0x7f;
		if (printable && *s) {
			conf_werr(w, "%s: %s", s, why);
		} else {
			char *q = conf_quoted(s);
			conf_werr(w, "%s: %s", q, why);
			free(q);
		}
	}
	return s;
}

/* Opens t[key] as a list that must hold at least one item. Returns false after
 * reporting why (missing, not a table, not a list, empty) with the field
 * already closed; on true the caller walks *list (n items) and closes f. */
bool conf_open_required_list(struct conf_walker *w, int t, const char *key, const char *missing,
                               const char *what, const char *example, const char *empty, struct conf_field *f,
                               int *list, size_t *n)
{
	if (!conf_field_open(w, t, key, f)) {
		conf_werr_key(w, key, "%s", missing);
		return false;
	}
	*list = lua_gettop(w->L);
	*n = 0;
	if (lua_type(w->L, *list) != LUA_TTABLE) {
		conf_type_error(w, *list, what);
	} else if (conf_list_length(w, *list, example, n)) {
		if (*n > 0)
			return true;
		conf_werr(w, "%s", empty);
	}
	conf_field_close(w, f);
	return false;
}

const char **conf_keys_with_modules(const struct conf_walker *w, const char *const *base, bool route)
{
	size_t n = 0;
	for (const char *const *k = base; *k; k++)
		n++;
	for (size_t i = 0; i < w->num_modules; i++) {
		const char *const *keys = route ? w->modules[i]->route_keys : w->modules[i]->root_keys;
		for (; keys && *keys; keys++)
			n++;
	}
	const char **out = lua_newuserdatauv(w->L, (n + 1) * sizeof *out, 0);
	n = 0;
	for (const char *const *k = base; *k; k++)
		out[n++] = *k;
	for (size_t i = 0; i < w->num_modules; i++) {
		const char *const *keys = route ? w->modules[i]->route_keys : w->modules[i]->root_keys;
		for (; keys && *keys; keys++)
			out[n++] = *keys;
	}
	out[n] = NULL;
	return out;
}

static const char *file_kind_problem(mode_t mode)
{
	if (S_ISDIR(mode))
		return "is a directory, not a regular file";
	if (S_ISFIFO(mode))
		return "is a FIFO (named pipe), not a regular file";
	if (S_ISCHR(mode))
		return "is a character device (like /dev/zero), not a regular file";
	if (S_ISBLK(mode))
		return "is a block device, not a regular file";
	if (S_ISSOCK(mode))
		return "is a socket, not a regular file";
	return "is not a regular file";
}

int conf_open_regular_file(const char *path, struct stat *st, char *why, size_t why_size)
{
	/* Look before opening: opening a FIFO blocks until a writer comes, and
	 * opening some devices has effects of its own. */
	if (stat(path, st) != 0) {
		snprintf(why, why_size, "%s", strerror(errno));
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		snprintf(why, why_size, "%s", file_kind_problem(st->st_mode));
		return -1;
	}
	/* O_NONBLOCK: should the path become a FIFO in between, open still returns */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		snprintf(why, why_size, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		snprintf(why, why_size, "%s", S_ISREG(st->st_mode) ? strerror(errno) : file_kind_problem(st->st_mode));
		close(fd);
		return -1;
	}
	return fd;
}

static int compare_ints(long long a, long long b)
{
	return a < b ? -1 : a > b;
}

int conf_sockaddr_compare(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                          socklen_t blen)
{
	if (alen == 0 || blen == 0) /* unset: never equal, ordered by where they are */
		return a == b ? 0 : (uintptr_t)a < (uintptr_t)b ? -1 : 1;
	if (a->ss_family != b->ss_family)
		return compare_ints(a->ss_family, b->ss_family);
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
		if (x->sin_port != y->sin_port)
			return compare_ints(ntohs(x->sin_port), ntohs(y->sin_port));
		return compare_ints(ntohl(x->sin_addr.s_addr), ntohl(y->sin_addr.s_addr));
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
		if (x->sin6_port != y->sin6_port)
			return compare_ints(ntohs(x->sin6_port), ntohs(y->sin6_port));
		if (x->sin6_scope_id != y->sin6_scope_id)
			return compare_ints(x->sin6_scope_id, y->sin6_scope_id);
		return memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
	}
	if (alen != blen)
		return compare_ints(alen, blen);
	return memcmp(a, b, alen);
}

struct duplicate_sort {
	const char *base;
	size_t size;
	int (*compare)(const void *, const void *);
};

/* Items in order, equal ones by index (qsort is not stable). */
static int compare_item_indexes(const void *a, const void *b, void *ctx)
{
	const struct duplicate_sort *d = ctx;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	int cmp = d->compare(d->base + i * d->size, d->base + j * d->size);
	return cmp ? cmp : compare_ints((long long)i, (long long)j);
}

static int compare_duplicates(const void *a, const void *b)
{
	const struct conf_duplicate *x = a, *y = b;
	return compare_ints((long long)x->index, (long long)y->index);
}

size_t conf_find_duplicates(const void *base, size_t n, size_t size, int (*compare)(const void *, const void *),
                            struct conf_duplicate *out)
{
	if (n < 2)
		return 0;
	struct duplicate_sort d = { base, size, compare };
	size_t *order = conf_xcalloc(n, sizeof *order);
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	qsort_r(order, n, sizeof *order, compare_item_indexes, &d);
	size_t count = 0;
	for (size_t k = 1, first = 0; k < n; k++) {
		if (compare(d.base + order[k] * size, d.base + order[first] * size) != 0)
			first = k;
		else
			out[count++] = (struct conf_duplicate){ order[k], order[first] };
	}
	free(order);
	qsort(out, count, sizeof *out, compare_duplicates);
	return count;
}
