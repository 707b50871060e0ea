/* conf.c - evaluate the Lua config file in a sandbox, then check the table it
 * returns against the schema and turn it into a struct conf (see conf.h).
 *
 * Two stages share one lua_State: evaluation (untrusted Lua, bounded by an
 * instruction budget and a memory cap) and the schema walk (our C code, run
 * under lua_pcall so that a Lua memory error cannot longjmp past our own
 * cleanup). The walk reads the table with raw accesses only, so no Lua code
 * (metamethods) runs during it.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf.h"
#include "conf_walk.h"
#include "conf_resilience.h"
#include "conf_ratelimit.h"
#include "conf_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* Evaluation bounds: far above what any real config needs, low enough that a
 * runaway loop or allocation fails within about a second. */
enum { SANDBOX_HOOK_INTERVAL = 10000 };
static const uint64_t sandbox_instruction_limit = 50000000;
static const size_t sandbox_memory_limit = (size_t)256 << 20;
static const size_t config_file_max_bytes = (size_t)16 << 20;

/* Timers downstream add durations to clock readings; a day is far beyond any
 * sensible timeout and keeps that arithmetic comfortably in range. */
static const conf_msec duration_max_ms = (conf_msec)24 * 3600 * 1000;

enum { NAME_MAX_LEN = 64, LABEL_MAX_LEN = 128, HOST_MAX_LEN = 253 };

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

/* ---- character classes (ASCII only: config syntax must not depend on locale) ---- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static char ascii_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* RFC 9110 tchar: what method and header names are made of. */
static bool is_tchar(char c)
{
	return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!is_tchar(*s))
			return false;
	return true;
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
		if (!is_digit(*p))
			return false;
		uint64_t whole = 0;
		for (; is_digit(*p); p++)
			if (!accumulate_digit(&whole, *p))
				return false;
		uint64_t frac = 0, frac_scale = 1;
		if (*p == '.') {
			p++;
			if (!is_digit(*p))
				return false;
			for (; is_digit(*p); p++) {
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
	if (!s || !is_digit(*s))
		return false;
	uint64_t v = 0;
	for (; is_digit(*s); s++)
		if (!accumulate_digit(&v, *s))
			return false;
	uint64_t mult = 1;
	switch (ascii_lower(*s)) {
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
		if (!is_digit(*p))
			return address_fail(why, why_size, "port \"%s\" is not a number", port);
		if (port_num <= 65535)
			port_num = port_num * 10 + (unsigned long)(*p - '0');
	}
	if (port_num == 0 || port_num > 65535)
		return address_fail(why, why_size, "port out of range (1 to 65535)");

	size_t host_len = (size_t)(host_end - host);
	if (host_len > HOST_MAX_LEN)
		return address_fail(why, why_size, "host name too long");
	for (const char *p = host; p < host_end; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return address_fail(why, why_size, "the host contains a space or control character");
	char host_buf[HOST_MAX_LEN + 1];
	memcpy(host_buf, host, host_len);
	host_buf[host_len] = '\0';

	/* Numeric first: a literal address must never trigger a DNS lookup. */
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST;
	int rc = getaddrinfo(host_buf, NULL, &hints, &res);
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

static bool sockaddr_equal(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                           socklen_t blen)
{
	if (alen == 0 || blen == 0 || a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
		return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
	}
	return alen == blen && memcmp(a, b, alen) == 0;
}

/* ---- the sandbox ---- */

struct sandbox {
	size_t mem_used;
	size_t mem_limit;
	uint64_t instructions;
	uint64_t instruction_limit;
	const char *base_dir; /* file() resolves relative paths here */
};

static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct sandbox *sb = ud;
	size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag, not a size */
	if (nsize == 0) {
		free(ptr);
		sb->mem_used -= old;
		return NULL;
	}
	if (nsize > old && nsize - old > sb->mem_limit - sb->mem_used)
		return NULL;
	void *p = realloc(ptr, nsize);
	if (!p)
		return NULL;
	sb->mem_used = sb->mem_used - old + nsize;
	return p;
}

static struct sandbox *sandbox_of(lua_State *L)
{
	void *ud = NULL;
	lua_getallocf(L, &ud);
	return ud;
}

static void sandbox_hook(lua_State *L, lua_Debug *ar)
{
	struct sandbox *sb = sandbox_of(L);
	if (sb->instructions < sb->instruction_limit) {
		sb->instructions += SANDBOX_HOOK_INTERVAL;
		if (sb->instructions < sb->instruction_limit)
			return;
		/* From now on fail at every instruction: a pcall in the config may
		 * catch one error, but then the code around it fails too. */
		lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, 1);
	}
	/* luaL_error would name the caller's line; the loop is in this function. */
	if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
		lua_pushfstring(L, "%s:%d: ", ar->short_src, ar->currentline);
	else
		lua_pushliteral(L, "");
	lua_pushfstring(L, "config took too long (stopped after %d million Lua instructions)",
	                (int)(sb->instruction_limit / 1000000));
	lua_concat(L, 2);
	lua_error(L);
}

static int sandbox_env(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *value = getenv(name);
	if (value)
		lua_pushstring(L, value);
	else
		lua_pushnil(L);
	return 1;
}

static int sandbox_file(lua_State *L)
{
	const struct sandbox *sb = sandbox_of(L);
	size_t name_len;
	const char *name = luaL_checklstring(L, 1, &name_len);
	if (name_len == 0 || strlen(name) != name_len)
		return luaL_error(L, "file(): expected a file path");
	const char *full = name[0] == '/' ? name : lua_pushfstring(L, "%s/%s", sb->base_dir, name);

	/* Size the buffer first, as a userdata: if Lua runs out of memory it raises
	 * before the file is open, so no descriptor can leak through the longjmp. */
	struct stat st;
	if (stat(full, &st) != 0)
		return luaL_error(L, "file(\"%s\"): cannot read %s: %s", name, full, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return luaL_error(L, "file(\"%s\"): %s is not a regular file", name, full);
	if ((uintmax_t)st.st_size > sb->mem_limit)
		return luaL_error(L, "file(\"%s\"): %s is too large", name, full);
	size_t size = (size_t)st.st_size;
	char *buf = lua_newuserdatauv(L, size ? size : 1, 0);

	int fd = open(full, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return luaL_error(L, "file(\"%s\"): cannot read %s: %s", name, full, strerror(errno));
	size_t got = 0;
	int read_errno = 0;
	while (got < size) {
		ssize_t r = read(fd, buf + got, size - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			read_errno = errno;
			break;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	if (close(fd) != 0 && read_errno == 0)
		read_errno = errno;
	if (read_errno)
		return luaL_error(L, "file(\"%s\"): cannot read %s: %s", name, full, strerror(read_errno));
	lua_pushlstring(L, buf, got);
	return 1;
}

/* setmetatable without __gc: Lua runs finalizers with hooks off, so a
 * finalizer would escape the instruction budget. Lua marks an object for
 * finalization only when it gets its metatable, so checking here suffices. */
static int sandbox_setmetatable(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc metamethods are not allowed in the config");
		lua_pop(L, 1);
	}
	int nargs = lua_gettop(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, nargs, 1);
	return 1;
}

/* Builds the config's whole world: an empty table plus the listed helpers. */
static int sandbox_open(lua_State *L)
{
	static const char *const base_functions[] = {
		"pairs", "ipairs", "next", "select", "type", "tostring", "tonumber", "error", "assert", "pcall",
		"getmetatable", "rawget", "rawequal", "rawlen", "rawset", NULL,
	};
	static const struct {
		const char *name;
		lua_CFunction open;
	} libraries[] = {
		{ LUA_STRLIBNAME, luaopen_string },
		{ LUA_TABLIBNAME, luaopen_table },
		{ LUA_MATHLIBNAME, luaopen_math },
		{ LUA_UTF8LIBNAME, luaopen_utf8 },
	};

	luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
	int globals = lua_gettop(L);
	lua_newtable(L);
	int env = lua_gettop(L);
	for (const char *const *name = base_functions; *name; name++) {
		lua_getfield(L, globals, *name);
		lua_setfield(L, env, *name);
	}
	lua_getfield(L, globals, "setmetatable");
	lua_pushcclosure(L, sandbox_setmetatable, 1);
	lua_setfield(L, env, "setmetatable");
	for (size_t i = 0; i < sizeof libraries / sizeof libraries[0]; i++) {
		luaL_requiref(L, libraries[i].name, libraries[i].open, 0);
		lua_setfield(L, env, libraries[i].name);
	}
	/* string.dump only produces bytecode, which nothing here may load. */
	lua_getfield(L, env, LUA_STRLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	lua_pushcfunction(L, sandbox_env);
	lua_setfield(L, env, "env");
	lua_pushcfunction(L, sandbox_file);
	lua_setfield(L, env, "file");
	lua_settop(L, env);
	return 1;
}

/* Lua shortens chunk names to LUA_IDSIZE ("...tail/of/name.lua:3: msg"); put
 * the whole name back so that every message starts with the same FILE. */
static void add_lua_error(struct conf_errors *errs, const char *name, lua_State *L, int status)
{
	if (status == LUA_ERRMEM) {
		conf_errors_add(errs, "%s: config used too much memory (limit %zu MiB)", name,
		                sandbox_memory_limit >> 20);
		return;
	}
	int type = lua_type(L, -1);
	if (type != LUA_TSTRING && type != LUA_TNUMBER) {
		conf_errors_add(errs, "%s: error raised with a %s value instead of a message", name,
		                lua_typename(L, type));
		return;
	}
	const char *msg = lua_tostring(L, -1);
	size_t name_len = strlen(name);
	if (strncmp(msg, name, name_len) == 0 && msg[name_len] == ':') {
		conf_errors_add(errs, "%s", msg);
		return;
	}
	if (strncmp(msg, "...", 3) == 0) {
		const char *tail = msg + 3;
		for (const char *colon = strchr(tail, ':'); colon; colon = strchr(colon + 1, ':')) {
			size_t tail_len = (size_t)(colon - tail);
			if (tail_len <= name_len && memcmp(name + name_len - tail_len, tail, tail_len) == 0) {
				conf_errors_add(errs, "%s%s", name, colon);
				return;
			}
		}
	}
	conf_errors_add(errs, "%s: %s", name, msg);
}

/* ---- the schema walk ---- */


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
	if (!is_alpha(*s) && *s != '_')
		return false;
	for (s++; *s; s++)
		if (!is_alpha(*s) && !is_digit(*s) && *s != '_')
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
			unsigned cost = ascii_lower(a[i - 1]) == ascii_lower(b[j - 1]) ? 0 : 1;
			unsigned best = prev[j] + 1;
			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			if (prev[j - 1] + cost < best)
				best = prev[j - 1] + cost;
			if (i > 1 && j > 1 && ascii_lower(a[i - 1]) == ascii_lower(b[j - 2]) &&
			    ascii_lower(a[i - 2]) == ascii_lower(b[j - 1]) && prev2[j - 2] + 1 < best)
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

struct suggestion {
	const char *best;
	unsigned distance;
};

static void suggest_consider(struct suggestion *s, const char *word, const char *candidate)
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
static char *suggestion_text(const struct suggestion *s)
{
	if (!s->best)
		return conf_xstrdup("");
	char *q = conf_quoted(s->best);
	char *text = conf_xasprintf(" (did you mean %s?)", q);
	free(q);
	return text;
}

/* ---- table shapes ---- */

static size_t count_entries(lua_State *L, int t)
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
	size_t total = count_entries(L, t);
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
		struct suggestion s = { NULL, 0 };
		for (const char *const *k = known; *k; k++)
			suggest_consider(&s, unknown[i], *k);
		char *hint = suggestion_text(&s);
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
	size_t total = count_entries(L, t);
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
	size_t total = count_entries(L, t);
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
static bool check_object_name(struct conf_walker *w, const char *kind, const char *name)
{
	size_t n = strlen(name);
	bool ok = n > 0 && n <= NAME_MAX_LEN;
	for (const char *p = name; ok && *p; p++)
		ok = is_alpha(*p) || is_digit(*p) || *p == '_' || *p == '-' || *p == '.';
	if (!ok) {
		char *q = conf_quoted(name);
		conf_werr(w, "invalid %s name %s (use 1 to %d letters, digits, \"_\", \"-\" or \".\")", kind, q, NAME_MAX_LEN);
		free(q);
	}
	return ok;
}

/* Listener and route names: free text, but kept printable and free of quotes
 * so they can go into JSON log lines and metric labels unescaped. */
static const char *value_label(struct conf_walker *w, int v)
{
	const char *s = conf_value_string(w, v);
	if (!s)
		return NULL;
	size_t n = strlen(s);
	bool ok = n > 0 && n <= LABEL_MAX_LEN;
	for (const char *p = s; ok && *p; p++)
		ok = *p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\';
	if (!ok) {
		char *q = conf_quoted(s);
		conf_werr(w, "invalid name %s (use 1 to %d printable ASCII characters, no quotes or backslashes)", q,
		     LABEL_MAX_LEN);
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

/* ---- top-level scalars ---- */

static unsigned online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > 1024 ? 1024 : (unsigned)n;
}

static void set_defaults(struct conf *c)
{
	c->workers = online_cpus();
	c->drain_timeout = 30000;
	c->heap_keep_free = (uint64_t)64 << 20;
	c->limits.header_bytes = 16384;
	c->limits.request_line_bytes = 8192;
	c->limits.max_headers = 100;
	c->limits.body_bytes = (uint64_t)10 << 20;
	c->limits.client_header_timeout = 10000;
	c->limits.client_body_timeout = 60000;
	c->limits.send_timeout = 60000;
	c->limits.keepalive_timeout = 75000;
	c->limits.max_connections = 0;
	c->access_log.enabled = false;
	c->access_log.path = NULL;
}

/* ---- listeners ---- */

static void walk_listener(struct conf_walker *w, int t, size_t index, struct conf_listener *l)
{
	static const char *const keys[] = { "name", "address", "tls", "h2c", "http2", NULL };
	conf_check_record_keys(w, t, keys);
	struct conf_field f;
	if (conf_field_open(w, t, "name", &f)) {
		const char *name = value_label(w, lua_gettop(w->L));
		if (name)
			l->name = conf_xstrdup(name);
		conf_field_close(w, &f);
	}
	if (!l->name)
		l->name = conf_xasprintf("listener[%zu]", index);
	if (conf_field_open(w, t, "address", &f)) {
		const char *address = conf_value_address(w, lua_gettop(w->L), &l->addr, &l->addr_len);
		if (address)
			l->address = conf_xstrdup(address);
		conf_field_close(w, &f);
	} else {
		conf_werr_key(w, "address", "missing (write address = \"0.0.0.0:8080\")");
	}
	conf_tls_walk_listener(w, t, l);
}

/* Opens t[key] as a list that must hold at least one item. Returns false after
 * reporting why (missing, not a table, not a list, empty) with the field
 * already closed; on true the caller walks *list (n items) and closes f. */
static bool open_required_list(struct conf_walker *w, int t, const char *key, const char *missing,
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

static void walk_listeners(struct conf_walker *w, int root)
{
	struct conf *c = w->c;
	struct conf_field f;
	int list;
	size_t n;
	if (!open_required_list(w, root, "listeners",
	                        "missing (at least one is needed: listeners = { { address = \"0.0.0.0:8080\" } })",
	                        "a list of listeners", "{ { address = \"0.0.0.0:8080\" } }",
	                        "empty (at least one listener is needed)", &f, &list, &n))
		return;
	c->listeners = conf_xcalloc(n, sizeof *c->listeners);
	c->num_listeners = n;
	for (size_t i = 1; i <= n; i++) {
		struct conf_field item;
		conf_item_open(w, list, i, &item);
		int v = lua_gettop(w->L);
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_listener(w, v, i, &c->listeners[i - 1]);
		else
			conf_type_error(w, v, "a table like { name = \"public\", address = \"0.0.0.0:8080\" }");
		if (!c->listeners[i - 1].name)
			c->listeners[i - 1].name = conf_xasprintf("listener[%zu]", i);
		conf_field_close(w, &item);
	}
	for (size_t i = 1; i < n; i++) {
		const struct conf_listener *l = &c->listeners[i];
		for (size_t j = 0; j < i; j++) {
			const struct conf_listener *o = &c->listeners[j];
			if (strcmp(l->name, o->name) == 0) {
				size_t mark = conf_path_push_index(w, i + 1);
				char *q = conf_quoted(l->name);
				conf_werr_key(w, "name", "duplicate listener name %s (also listeners[%zu])", q, j + 1);
				free(q);
				conf_path_pop(w, mark);
				break;
			}
		}
		for (size_t j = 0; j < i; j++) {
			const struct conf_listener *o = &c->listeners[j];
			if (sockaddr_equal(&l->addr, l->addr_len, &o->addr, o->addr_len)) {
				size_t mark = conf_path_push_index(w, i + 1);
				conf_werr_key(w, "address", "duplicate listener address %s (also listeners[%zu])", l->address,
				         j + 1);
				conf_path_pop(w, mark);
				break;
			}
		}
	}
	conf_field_close(w, &f);
}

/* ---- pools ---- */

static const char *const balance_names[] = {
	[CONF_BALANCE_ROUND_ROBIN] = "round_robin",
	[CONF_BALANCE_LEAST_CONN] = "least_conn",
	[CONF_BALANCE_HASH] = "hash",
};

static void walk_server(struct conf_walker *w, int v, struct conf_server *s)
{
	s->weight = 1;
	if (lua_type(w->L, v) == LUA_TSTRING) {
		const char *address = conf_value_address(w, v, &s->addr, &s->addr_len);
		if (address)
			s->address = conf_xstrdup(address);
		return;
	}
	if (lua_type(w->L, v) != LUA_TTABLE) {
		conf_type_error(w, v, "a server address string or a table like { address = \"10.0.0.1:80\", weight = 1 }");
		return;
	}
	static const char *const keys[] = { "address", "weight", NULL };
	conf_check_record_keys(w, v, keys);
	struct conf_field f;
	if (conf_field_open(w, v, "address", &f)) {
		const char *address = conf_value_address(w, lua_gettop(w->L), &s->addr, &s->addr_len);
		if (address)
			s->address = conf_xstrdup(address);
		conf_field_close(w, &f);
	} else {
		conf_werr_key(w, "address", "missing (write address = \"10.0.0.1:80\")");
	}
	conf_field_unsigned(w, v, "weight", 0, 1000, &s->weight);
}

static void walk_servers(struct conf_walker *w, int pool_table, struct conf_pool *p)
{
	struct conf_field f;
	int list;
	size_t n;
	if (!open_required_list(w, pool_table, "servers",
	                        "missing (a pool needs at least one server: servers = { \"10.0.0.1:80\" })",
	                        "a list of servers", "{ \"10.0.0.1:80\", { address = \"10.0.0.2:80\", weight = 2 } }",
	                        "empty (a pool needs at least one server)", &f, &list, &n))
		return;
	p->servers = conf_xcalloc(n, sizeof *p->servers);
	p->num_servers = n;
	for (size_t i = 1; i <= n; i++) {
		struct conf_field item;
		conf_item_open(w, list, i, &item);
		walk_server(w, lua_gettop(w->L), &p->servers[i - 1]);
		conf_field_close(w, &item);
	}
	for (size_t i = 1; i < n; i++) {
		const struct conf_server *s = &p->servers[i];
		for (size_t j = 0; j < i; j++) {
			const struct conf_server *o = &p->servers[j];
			if (sockaddr_equal(&s->addr, s->addr_len, &o->addr, o->addr_len)) {
				size_t mark = conf_path_push_index(w, i + 1);
				char *q = conf_quoted(p->name);
				conf_werr_key(w, "address", "duplicate server %s in pool %s (also servers[%zu])", s->address, q,
				         j + 1);
				free(q);
				conf_path_pop(w, mark);
				break;
			}
		}
	}
	conf_field_close(w, &f);
}

static void walk_hash_key(struct conf_walker *w, const char *s, struct conf_key *key)
{
	static const struct {
		const char *prefix;
		enum conf_key_kind kind;
		const char *what;
	} named[] = { { "header:", CONF_KEY_HEADER, "header" }, { "cookie:", CONF_KEY_COOKIE, "cookie" } };

	if (strcmp(s, "client_ip") == 0) {
		key->kind = CONF_KEY_CLIENT_IP;
		return;
	}
	if (strcmp(s, "path") == 0) {
		key->kind = CONF_KEY_PATH;
		return;
	}
	if (strcmp(s, "host") == 0) {
		key->kind = CONF_KEY_HOST;
		return;
	}
	for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
		size_t plen = strlen(named[i].prefix);
		if (strncmp(s, named[i].prefix, plen) != 0)
			continue;
		const char *name = s + plen;
		if (!*name) {
			conf_werr(w, "missing the %s name (write \"%sNAME\")", named[i].what, named[i].prefix);
			return;
		}
		if (!is_token(name)) {
			char *q = conf_quoted(name);
			conf_werr(w, "%s is not a valid %s name", q, named[i].what);
			free(q);
			return;
		}
		key->kind = named[i].kind;
		key->name = conf_xstrdup(name);
		/* Header names are case-insensitive; cookie names are not (RFC 6265). */
		if (key->kind == CONF_KEY_HEADER)
			for (char *c = key->name; *c; c++)
				*c = ascii_lower(*c);
		return;
	}
	char *q = conf_quoted(s);
	conf_werr(w, "unknown value %s (expected client_ip, path, host, header:NAME or cookie:NAME)", q);
	free(q);
}

static void walk_pool(struct conf_walker *w, int t, struct conf_pool *p)
{
	static const char *const keys[] = { "servers", "balance", "hash_key", "keepalive", "timeouts",
	                                    CONF_RESILIENCE_POOL_KEYS, "tls", NULL };
	conf_check_record_keys(w, t, keys);
	walk_servers(w, t, p);
	conf_resilience_walk_pool(w, t, p);
	conf_tls_walk_pool(w, t, p);

	struct conf_field f;
	if (conf_field_open(w, t, "balance", &f)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s) {
			size_t i;
			for (i = 0; i < sizeof balance_names / sizeof balance_names[0]; i++)
				if (strcmp(s, balance_names[i]) == 0)
					break;
			if (i < sizeof balance_names / sizeof balance_names[0]) {
				p->balance = (enum conf_balance)i;
			} else {
				char *q = conf_quoted(s);
				conf_werr(w, "unknown value %s (expected round_robin, least_conn or hash)", q);
				free(q);
			}
		}
		conf_field_close(w, &f);
	}
	if (conf_field_open(w, t, "hash_key", &f)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s) {
			walk_hash_key(w, s, &p->hash_key);
			if (p->balance != CONF_BALANCE_HASH)
				conf_werr(w, "only used with balance = \"hash\"");
		}
		conf_field_close(w, &f);
	}
	static const char *const keepalive_keys[] = { "idle", "idle_timeout", NULL };
	if (conf_field_open_record(w, t, "keepalive", keepalive_keys, "a table like { idle = 32, idle_timeout = \"60s\" }",
	                      &f)) {
		int v = lua_gettop(w->L);
		conf_field_unsigned(w, v, "idle", 0, 10000, &p->keepalive_idle);
		conf_field_duration(w, v, "idle_timeout", false, &p->keepalive_idle_timeout);
		conf_field_close(w, &f);
	}
	static const char *const timeout_keys[] = { "connect", "response", NULL };
	if (conf_field_open_record(w, t, "timeouts", timeout_keys, "a table like { connect = \"1s\", response = \"30s\" }",
	                      &f)) {
		int v = lua_gettop(w->L);
		conf_field_duration(w, v, "connect", false, &p->connect_timeout);
		conf_field_duration(w, v, "response", false, &p->response_timeout);
		conf_field_close(w, &f);
	}
}

static void walk_pools(struct conf_walker *w, int root)
{
	struct conf *c = w->c;
	struct conf_field f;
	if (!conf_field_open(w, root, "pools", &f))
		return;
	int map = lua_gettop(w->L);
	if (lua_type(w->L, map) != LUA_TTABLE) {
		conf_type_error(w, map, "a table of named pools");
		conf_field_close(w, &f);
		return;
	}
	size_t n;
	const char **names = conf_map_keys(w, map, "pools = { web = { servers = { ... } } }", &n);
	c->pools = conf_xcalloc(n, sizeof *c->pools);
	c->num_pools = n;
	/* Every pool gets its name before any is checked, so a reference to a
	 * pool with a mistake inside is not reported a second time as unknown. */
	for (size_t i = 0; i < n; i++) {
		struct conf_pool *p = &c->pools[i];
		p->name = conf_xstrdup(names[i]);
		p->balance = CONF_BALANCE_ROUND_ROBIN;
		p->hash_key.kind = CONF_KEY_CLIENT_IP;
		p->hash_key.name = NULL;
		p->keepalive_idle = 32;
		p->keepalive_idle_timeout = 60000;
		p->connect_timeout = 5000;
		p->response_timeout = 30000;
	}
	for (size_t i = 0; i < n; i++) {
		struct conf_field entry;
		conf_entry_open(w, map, names[i], &entry);
		int v = lua_gettop(w->L);
		check_object_name(w, "pool", names[i]);
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_pool(w, v, &c->pools[i]);
		else
			conf_type_error(w, v, "a table like { servers = { \"10.0.0.1:80\" } }");
		conf_field_close(w, &entry);
	}
	conf_field_close(w, &f);
}

int conf_find_pool(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->num_pools; i++)
		if (strcmp(c->pools[i].name, name) == 0)
			return (int)i;
	return -1;
}

int conf_find_service(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->num_services; i++)
		if (strcmp(c->services[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* ---- services ---- */

static struct conf_service *add_service(struct conf_walker *w, const char *name)
{
	struct conf *c = w->c;
	if (c->num_services == w->services_cap) {
		w->services_cap = w->services_cap ? w->services_cap * 2 : 8;
		c->services = conf_xreallocarray(c->services, w->services_cap, sizeof *c->services);
	}
	struct conf_service *s = &c->services[c->num_services++];
	memset(s, 0, sizeof *s);
	s->name = conf_xstrdup(name);
	return s;
}

static void unknown_pool_error(struct conf_walker *w, const char *name)
{
	struct suggestion s = { NULL, 0 };
	for (size_t i = 0; i < w->c->num_pools; i++)
		suggest_consider(&s, name, w->c->pools[i].name);
	char *hint = suggestion_text(&s);
	char *q = conf_quoted(name);
	conf_werr(w, "unknown pool %s%s", q, hint);
	free(q);
	free(hint);
}

static void walk_service(struct conf_walker *w, int t, struct conf_service *s)
{
	static const char *const keys[] = { "pools", NULL };
	conf_check_record_keys(w, t, keys);
	struct conf_field f;
	if (!conf_field_open(w, t, "pools", &f)) {
		conf_werr_key(w, "pools", "missing (write pools = { web = 100 })");
		return;
	}
	int map = lua_gettop(w->L);
	if (lua_type(w->L, map) != LUA_TTABLE) {
		conf_type_error(w, map, "a table of pool weights like { web = 90, canary = 10 }");
		conf_field_close(w, &f);
		return;
	}
	size_t n;
	const char **names = conf_map_keys(w, map, "pools = { web = 90, canary = 10 }", &n);
	if (n == 0 && count_entries(w->L, map) == 0)
		conf_werr(w, "empty (a service needs at least one pool)");
	s->pools = conf_xcalloc(n, sizeof *s->pools);
	bool all_valid = n > 0;
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++) {
		struct conf_field entry;
		conf_entry_open(w, map, names[i], &entry);
		long long weight;
		bool weight_ok = conf_value_integer(w, lua_gettop(w->L), 0, 10000, &weight);
		int pool = conf_find_pool(w->c, names[i]);
		if (pool < 0)
			unknown_pool_error(w, names[i]);
		if (weight_ok && pool >= 0) {
			s->pools[s->num_pools].pool = (size_t)pool;
			s->pools[s->num_pools].weight = (unsigned)weight;
			s->num_pools++;
			sum += (uint64_t)weight;
		} else {
			all_valid = false;
		}
		conf_field_close(w, &entry);
	}
	if (all_valid && sum == 0)
		conf_werr(w, "weights add up to 0 (give at least one pool a weight above 0)");
	conf_field_close(w, &f);
}

static void walk_services(struct conf_walker *w, int root)
{
	struct conf_field f;
	if (!conf_field_open(w, root, "services", &f))
		return;
	int map = lua_gettop(w->L);
	if (lua_type(w->L, map) != LUA_TTABLE) {
		conf_type_error(w, map, "a table of named services");
		conf_field_close(w, &f);
		return;
	}
	size_t n;
	const char **names = conf_map_keys(w, map, "services = { web = { pools = { web = 100 } } }", &n);
	for (size_t i = 0; i < n; i++) {
		struct conf_service *s = add_service(w, names[i]);
		struct conf_field entry;
		conf_entry_open(w, map, names[i], &entry);
		int v = lua_gettop(w->L);
		check_object_name(w, "service", names[i]);
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_service(w, v, s);
		else
			conf_type_error(w, v, "a table like { pools = { web = 100 } }");
		conf_field_close(w, &entry);
	}
	conf_field_close(w, &f);
}

/* The service behind a route's `pool = "x"`: one per pool, shared by every such route. */
static size_t implicit_service(struct conf_walker *w, size_t pool)
{
	struct conf *c = w->c;
	for (size_t i = 0; i < c->num_services; i++)
		if (c->services[i].implicit && c->services[i].num_pools == 1 && c->services[i].pools[0].pool == pool)
			return i;
	char *name = conf_xasprintf("pool:%s", c->pools[pool].name);
	struct conf_service *s = add_service(w, name);
	free(name);
	s->implicit = true;
	s->pools = conf_xcalloc(1, sizeof *s->pools);
	s->pools[0].pool = pool;
	s->pools[0].weight = 100;
	s->num_pools = 1;
	return c->num_services - 1;
}

/* ---- routes ---- */

/* Lower-cases h in place; returns what is wrong with it as a host pattern, or NULL. */
static const char *host_pattern_problem(char *h)
{
	for (char *p = h; *p; p++)
		*p = ascii_lower(*p);
	if (!*h)
		return "must not be empty (leave host out to match any host)";
	if (strcmp(h, "*") == 0)
		return "\"*\" is not needed: leave host out to match any host";
	if (strchr(h, ':'))
		return "must not include a port";
	const char *name = h;
	if (strncmp(h, "*.", 2) == 0)
		name = h + 2;
	if (strchr(name, '*'))
		return "only a leading \"*.\" wildcard is allowed (e.g. \"*.example.com\")";
	if (strlen(name) > HOST_MAX_LEN)
		return "is too long for a host name";
	size_t label = 0;
	for (const char *p = name;; p++) {
		if (*p == '.' || *p == '\0') {
			if (label == 0)
				return "is not a valid host name (empty label)";
			if (*p == '\0')
				break;
			label = 0;
		} else if (is_alpha(*p) || is_digit(*p) || *p == '-' || *p == '_') {
			label++;
		} else {
			return "is not a valid host name (use letters, digits, \"-\" and \".\")";
		}
	}
	return NULL;
}

static const char *path_problem(const char *p)
{
	if (p[0] != '/')
		return "must start with \"/\"";
	for (; *p; p++) {
		if (*p == '?' || *p == '#')
			return "must not contain \"?\" or \"#\" (only the path is matched, not the query)";
		if (*p <= 0x20 || *p >= 0x7f)
			return "must contain only visible ASCII characters (percent-encode others)";
	}
	return NULL;
}

static char *field_path_pattern(struct conf_walker *w, int t, const char *key)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return NULL;
	char *out = NULL;
	const char *s = conf_value_string(w, lua_gettop(w->L));
	if (s) {
		const char *problem = path_problem(s);
		if (problem) {
			char *q = conf_quoted(s);
			conf_werr(w, "%s: %s", q, problem);
			free(q);
		} else {
			out = conf_xstrdup(s);
		}
	}
	conf_field_close(w, &f);
	return out;
}

static void walk_methods(struct conf_walker *w, int t, struct conf_route *r)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "methods", &f))
		return;
	int list = lua_gettop(w->L);
	size_t n;
	if (lua_type(w->L, list) != LUA_TTABLE) {
		conf_type_error(w, list, "a list of methods like { \"GET\", \"POST\" }");
		goto out;
	}
	if (!conf_list_length(w, list, "{ \"GET\", \"POST\" }", &n))
		goto out;
	if (n == 0) {
		conf_werr(w, "empty (leave methods out to match any method)");
		goto out;
	}
	r->methods = conf_xcalloc(n, sizeof *r->methods);
	for (size_t i = 1; i <= n; i++) {
		struct conf_field item;
		conf_item_open(w, list, i, &item);
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !is_token(s)) {
			char *q = conf_quoted(s);
			conf_werr(w, "%s is not a valid method name", q);
			free(q);
		} else if (s) {
			char *m = conf_xstrdup(s);
			for (char *c = m; *c; c++)
				*c = ascii_upper(*c);
			bool duplicate = false;
			for (size_t j = 0; j < r->num_methods && !duplicate; j++)
				duplicate = strcmp(r->methods[j], m) == 0;
			if (duplicate) {
				conf_werr(w, "duplicate method \"%s\"", m);
				free(m);
			} else {
				r->methods[r->num_methods++] = m;
			}
		}
		conf_field_close(w, &item);
	}
out:
	conf_field_close(w, &f);
}

static void walk_header_matches(struct conf_walker *w, int t, struct conf_route *r)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "headers", &f))
		return;
	int map = lua_gettop(w->L);
	if (lua_type(w->L, map) != LUA_TTABLE) {
		conf_type_error(w, map, "a table like { [\"x-env\"] = \"prod\" }");
		conf_field_close(w, &f);
		return;
	}
	size_t n;
	const char **names = conf_map_keys(w, map, "headers = { [\"x-env\"] = \"prod\" }", &n);
	r->headers = conf_xcalloc(n, sizeof *r->headers);
	for (size_t i = 0; i < n; i++) {
		struct conf_field entry;
		conf_entry_open(w, map, names[i], &entry);
		const char *value = conf_value_string(w, lua_gettop(w->L));
		bool ok = value != NULL;
		if (!is_token(names[i])) {
			char *q = conf_quoted(names[i]);
			conf_werr(w, "%s is not a valid header name", q);
			free(q);
			ok = false;
		}
		for (const char *p = value; ok && *p; p++) {
			if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
				conf_werr(w, "the value must not contain control characters (CR, LF, ...)");
				ok = false;
			}
		}
		if (ok) {
			char *name = conf_xstrdup(names[i]);
			for (char *c = name; *c; c++)
				*c = ascii_lower(*c);
			bool duplicate = false;
			for (size_t j = 0; j < r->num_headers && !duplicate; j++)
				duplicate = strcmp(r->headers[j].name, name) == 0;
			if (duplicate) {
				conf_werr(w, "duplicate header \"%s\" (header names are case-insensitive)", name);
				free(name);
			} else {
				r->headers[r->num_headers].name = name;
				r->headers[r->num_headers].value = conf_xstrdup(value);
				r->num_headers++;
			}
		}
		conf_field_close(w, &entry);
	}
	conf_field_close(w, &f);
}

static void walk_match(struct conf_walker *w, int route_table, struct conf_route *r)
{
	static const char *const keys[] = { "host", "path", "path_prefix", "path_regex", "methods", "headers",
		                            "client_cert_subject", NULL };
	struct conf_field f;
	if (!conf_field_open_record(w, route_table, "match", keys,
	                       "a table like { host = \"example.com\", path_prefix = \"/\" }", &f))
		return;
	int t = lua_gettop(w->L);
	struct conf_field g;
	if (conf_field_open(w, t, "host", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s) {
			char *host = conf_xstrdup(s);
			const char *problem = host_pattern_problem(host);
			if (problem) {
				char *q = conf_quoted(s);
				conf_werr(w, "%s: %s", q, problem);
				free(q);
				free(host);
			} else {
				r->host = host;
			}
		}
		conf_field_close(w, &g);
	}
	r->path = field_path_pattern(w, t, "path");
	r->path_prefix = field_path_pattern(w, t, "path_prefix");
	if (conf_field_open(w, t, "path_regex", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "must not be empty");
		else if (s)
			r->path_regex = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	walk_methods(w, t, r);
	walk_header_matches(w, t, r);
	/* Compared exactly with the verified certificate's RFC 2253 subject, as the access log prints it. */
	if (conf_field_open(w, t, "client_cert_subject", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "must not be empty (write the subject as the access log's tls_client_subject "
			             "shows it, e.g. \"CN=ops,O=Example\")");
		else if (s)
			r->client_cert_subject = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	conf_field_close(w, &f);
}

static void walk_respond(struct conf_walker *w, int route_table, struct conf_route *r)
{
	static const char *const keys[] = { "status", "body", "content_type", NULL };
	struct conf_field f;
	if (!conf_field_open_record(w, route_table, "respond", keys,
	                       "a table like { status = 200, body = \"ok\\n\" }", &f))
		return;
	int t = lua_gettop(w->L);
	unsigned status = 200;
	conf_field_unsigned(w, t, "status", 100, 599, &status);
	r->respond_status = (int)status;
	struct conf_field g;
	if (conf_field_open(w, t, "body", &g)) {
		int v = lua_gettop(w->L);
		if (lua_type(w->L, v) == LUA_TSTRING) {
			size_t len;
			const char *body = lua_tolstring(w->L, v, &len);
			/* The body is sent as is: any bytes, NUL included. */
			r->respond_body = conf_xstrndup(body, len);
			r->respond_body_len = len;
			if (status < 200 || status == 204 || status == 304)
				conf_werr(w, "a %u response cannot have a body", status);
		} else {
			conf_type_error(w, v, "a string");
		}
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, t, "content_type", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		bool ok = s && *s;
		if (s && !*s)
			conf_werr(w, "must not be empty");
		for (const char *p = s; ok && *p; p++) {
			if (*p < 0x20 || *p == 0x7f) {
				conf_werr(w, "must not contain control characters");
				ok = false;
			}
		}
		if (ok)
			r->respond_content_type = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	if (!r->respond_content_type)
		r->respond_content_type = conf_xstrdup("text/plain");
	conf_field_close(w, &f);
}

static void walk_route_service(struct conf_walker *w, int route_table, struct conf_route *r, size_t explicit_services)
{
	struct conf_field f;
	if (!conf_field_open(w, route_table, "service", &f))
		return;
	const char *name = conf_value_string(w, lua_gettop(w->L));
	if (name) {
		/* Only services from the file: "pool:x" names are internal. */
		int found = -1;
		for (size_t i = 0; i < explicit_services && found < 0; i++)
			if (strcmp(w->c->services[i].name, name) == 0)
				found = (int)i;
		if (found >= 0) {
			r->service = (size_t)found;
		} else {
			struct suggestion s = { NULL, 0 };
			for (size_t i = 0; i < explicit_services; i++)
				suggest_consider(&s, name, w->c->services[i].name);
			char *hint = suggestion_text(&s);
			char *q = conf_quoted(name);
			conf_werr(w, "unknown service %s%s", q, hint);
			free(q);
			free(hint);
		}
	}
	conf_field_close(w, &f);
}

static void walk_route_pool(struct conf_walker *w, int route_table, struct conf_route *r)
{
	struct conf_field f;
	if (!conf_field_open(w, route_table, "pool", &f))
		return;
	const char *name = conf_value_string(w, lua_gettop(w->L));
	if (name) {
		int pool = conf_find_pool(w->c, name);
		if (pool >= 0)
			r->service = implicit_service(w, (size_t)pool);
		else
			unknown_pool_error(w, name);
	}
	conf_field_close(w, &f);
}

static void walk_route(struct conf_walker *w, int t, size_t index, struct conf_route *r, size_t explicit_services)
{
	static const char *const keys[] = { "name", "match", "pool", "service", "respond", "rate_limit", NULL };
	static const char *const actions[] = { "pool", "service", "respond" };
	conf_check_record_keys(w, t, keys);
	struct conf_field f;
	if (conf_field_open(w, t, "name", &f)) {
		const char *name = value_label(w, lua_gettop(w->L));
		if (name)
			r->name = conf_xstrdup(name);
		conf_field_close(w, &f);
	}
	if (!r->name)
		r->name = conf_xasprintf("routes[%zu]", index);
	walk_match(w, t, r);

	const char *present[3];
	size_t num_present = 0;
	for (size_t i = 0; i < 3; i++) {
		lua_pushstring(w->L, actions[i]);
		if (lua_rawget(w->L, t) != LUA_TNIL)
			present[num_present++] = actions[i];
		lua_pop(w->L, 1);
	}
	if (num_present == 0)
		conf_werr(w, "no action: set one of pool, service or respond");
	else if (num_present > 1)
		conf_werr(w, "several actions (%s and %s%s%s): set only one of pool, service or respond", present[0],
		     present[1], num_present > 2 ? " and " : "", num_present > 2 ? present[2] : "");
	/* Check every action given, even when there are several, so each mistake shows at once. */
	walk_route_pool(w, t, r);
	walk_route_service(w, t, r, explicit_services);
	walk_respond(w, t, r);
	conf_rl_walk_route(w, t, r);
	r->action = num_present == 1 && strcmp(present[0], "respond") == 0 ? CONF_ROUTE_RESPOND : CONF_ROUTE_PROXY;
}

static void walk_routes(struct conf_walker *w, int root)
{
	struct conf *c = w->c;
	struct conf_field f;
	if (!conf_field_open(w, root, "routes", &f))
		return;
	int list = lua_gettop(w->L);
	size_t n;
	if (lua_type(w->L, list) != LUA_TTABLE) {
		conf_type_error(w, list, "a list of routes");
		goto out;
	}
	if (!conf_list_length(w, list, "{ { match = { path_prefix = \"/\" }, service = \"web\" } }", &n))
		goto out;
	c->routes = conf_xcalloc(n, sizeof *c->routes);
	c->num_routes = n;
	size_t explicit_services = c->num_services;
	for (size_t i = 1; i <= n; i++) {
		struct conf_field item;
		conf_item_open(w, list, i, &item);
		int v = lua_gettop(w->L);
		struct conf_route *r = &c->routes[i - 1];
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_route(w, v, i, r, explicit_services);
		else
			conf_type_error(w, v, "a table like { match = { path_prefix = \"/\" }, service = \"web\" }");
		if (!r->name)
			r->name = conf_xasprintf("routes[%zu]", i);
		conf_field_close(w, &item);
	}
	for (size_t i = 1; i < n; i++) {
		for (size_t j = 0; j < i; j++) {
			if (strcmp(c->routes[i].name, c->routes[j].name) == 0) {
				size_t mark = conf_path_push_index(w, i + 1);
				char *q = conf_quoted(c->routes[i].name);
				conf_werr_key(w, "name", "duplicate route name %s (also routes[%zu])", q, j + 1);
				free(q);
				conf_path_pop(w, mark);
				break;
			}
		}
	}
out:
	conf_field_close(w, &f);
}

/* ---- limits and access log ---- */

static void walk_limits(struct conf_walker *w, int root)
{
	static const char *const keys[] = {
		"header_bytes", "request_line_bytes", "max_headers", "body_bytes", "client_header_timeout",
		"client_body_timeout", "send_timeout", "keepalive_timeout", "max_connections", NULL,
	};
	struct conf_limits *l = &w->c->limits;
	struct conf_field f;
	if (!conf_field_open_record(w, root, "limits", keys, "a table like { header_bytes = \"16k\" }", &f))
		return;
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
	conf_field_duration(w, t, "send_timeout", false, &l->send_timeout);
	conf_field_duration(w, t, "keepalive_timeout", true, &l->keepalive_timeout);
	conf_field_unsigned(w, t, "max_connections", 0, 10000000, &l->max_connections);
	conf_field_close(w, &f);
}

static void walk_access_log(struct conf_walker *w, int root)
{
	static const char *const keys[] = { "path", NULL };
	struct conf_field f;
	if (!conf_field_open_record(w, root, "access_log", keys, "a table like { path = \"stdout\" }", &f))
		return;
	int t = lua_gettop(w->L);
	struct conf_field g;
	if (conf_field_open(w, t, "path", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s) {
			conf_werr(w, "must not be empty (write \"stdout\", \"stderr\", \"off\" or a file path)");
		} else if (s && strcmp(s, "off") != 0) {
			w->c->access_log.enabled = true;
			if (strcmp(s, "stdout") == 0 || strcmp(s, "stderr") == 0 || s[0] == '/' ||
			    strcmp(w->base_dir, ".") == 0)
				w->c->access_log.path = conf_xstrdup(s);
			else
				w->c->access_log.path = conf_xasprintf("%s/%s", w->base_dir, s);
		}
		conf_field_close(w, &g);
	} else {
		conf_werr_key(w, "path", "missing (write \"stdout\", \"stderr\", \"off\" or a file path)");
	}
	conf_field_close(w, &f);
}

static void walk_workers(struct conf_walker *w, int root)
{
	conf_field_unsigned(w, root, "workers", 1, 1024, &w->c->workers);
}

static int walk_protected(lua_State *L)
{
	static const char *const keys[] = {
		"workers", "drain_timeout", "heap_keep_free", "listeners", "pools", "services", "routes", "limits", "access_log",
		"rate_limits", "redis", CONF_RESILIENCE_ROOT_KEYS, "user", NULL,
	};
	struct conf_walker *w = lua_touserdata(L, 1);
	const int root = 2;
	conf_check_record_keys(w, root, keys);
	walk_workers(w, root);
	conf_field_duration(w, root, "drain_timeout", true, &w->c->drain_timeout);
	conf_field_size(w, root, "heap_keep_free", 0, (uint64_t)1 << 30, &w->c->heap_keep_free);
	walk_listeners(w, root);
	walk_pools(w, root);
	walk_services(w, root);
	conf_rl_walk_redis(w, root);
	conf_rl_walk_limits(w, root);
	walk_routes(w, root);
	walk_limits(w, root);
	walk_access_log(w, root);
	conf_resilience_walk_root(w, root);
	conf_tls_walk_user(w, root);
	return 0;
}

/* ---- loading ---- */

/* Evaluates the chunk; on success leaves the returned table on the stack top. */
static bool run_config(lua_State *L, const char *name, const char *src, size_t len, struct conf_errors *errs)
{
	lua_pushcfunction(L, sandbox_open);
	int status = lua_pcall(L, 0, 1, 0);
	if (status != LUA_OK) {
		add_lua_error(errs, name, L, status);
		return false;
	}
	int env = lua_gettop(L);
	if (len > 0 && src[0] == LUA_SIGNATURE[0]) {
		conf_errors_add(errs, "%s: precompiled (bytecode) chunks are refused; the config must be Lua source text",
		                name);
		return false;
	}
	char *chunkname = conf_xasprintf("@%s", name);
	status = luaL_loadbufferx(L, src, len, chunkname, "t");
	free(chunkname);
	if (status != LUA_OK) {
		add_lua_error(errs, name, L, status);
		return false;
	}
	lua_pushvalue(L, env);
	if (!lua_setupvalue(L, -2, 1)) {
		/* A main chunk always has _ENV as its only upvalue; without it the sandbox would not apply. */
		conf_errors_add(errs, "%s: cannot install the sandbox", name);
		return false;
	}
	lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, SANDBOX_HOOK_INTERVAL);
	status = lua_pcall(L, 0, 1, 0);
	if (status != LUA_OK) {
		add_lua_error(errs, name, L, status);
		return false;
	}
	if (lua_type(L, -1) != LUA_TTABLE) {
		conf_errors_add(errs, "%s: the config must return a table (return { ... }), got %s", name,
		                luaL_typename(L, -1));
		return false;
	}
	return true;
}

static char *directory_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return conf_xstrdup(".");
	if (slash == path)
		return conf_xstrdup("/");
	return conf_xstrndup(path, (size_t)(slash - path));
}

static struct conf *load_chunk(const char *name, const char *src, size_t len, struct conf_errors *errs,
                               const struct conf_trace *tr)
{
	size_t errors_before = errs->count;
	char *base_dir = directory_of(name);
	struct sandbox sb = {
		.mem_used = 0,
		.mem_limit = sandbox_memory_limit,
		.instructions = 0,
		.instruction_limit = sandbox_instruction_limit,
		.base_dir = base_dir,
	};
	lua_State *L = lua_newstate(sandbox_alloc, &sb);
	if (!L) {
		conf_errors_add(errs, "%s: cannot create a Lua state (out of memory)", name);
		free(base_dir);
		return NULL;
	}
	struct conf_walker w = { .L = L, .errs = errs, .source = name, .base_dir = base_dir, .trace = tr };
	if (run_config(L, name, src, len, errs)) {
		/* No collection, hence no finalizer from the config, while C code
		 * walks the table and holds pointers to its strings. */
		lua_gc(L, LUA_GCSTOP);
		w.c = conf_xcalloc(1, sizeof *w.c);
		set_defaults(w.c);
		w.c->source = conf_xstrdup(name);
		int result = lua_gettop(L);
		lua_pushcfunction(L, walk_protected);
		lua_pushlightuserdata(L, &w);
		lua_pushvalue(L, result);
		int status = lua_pcall(L, 2, 0, 0);
		if (status == LUA_ERRMEM)
			conf_errors_add(errs, "%s: out of memory while checking the config", name);
		else if (status != LUA_OK)
			conf_errors_add(errs, "%s: cannot check the config: %s", name,
			                lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "unknown error");
	}
	lua_close(L);
	free(w.path);
	free(base_dir);
	if (errs->count > errors_before) {
		conf_free(w.c);
		return NULL;
	}
	return w.c;
}

struct conf *conf_load_string(const char *chunkname, const char *lua_source, struct conf_errors *errs)
{
	return load_chunk(chunkname, lua_source, strlen(lua_source), errs, NULL);
}

struct conf *conf_load_string_traced(const char *chunkname, const char *lua_source, struct conf_errors *errs,
                                     const struct conf_trace *trace)
{
	return load_chunk(chunkname, lua_source, strlen(lua_source), errs, trace);
}

struct conf *conf_load(const char *path, struct conf_errors *errs)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		conf_errors_add(errs, "%s: cannot read: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	char problem[128] = "";
	if (fstat(fd, &st) != 0)
		snprintf(problem, sizeof problem, "%s", strerror(errno));
	else if (S_ISDIR(st.st_mode))
		snprintf(problem, sizeof problem, "is a directory");
	else if (!S_ISREG(st.st_mode))
		snprintf(problem, sizeof problem, "not a regular file");
	else if ((uintmax_t)st.st_size > config_file_max_bytes)
		snprintf(problem, sizeof problem, "larger than %zu MiB, too large for a config file",
		         config_file_max_bytes >> 20);
	if (problem[0]) {
		conf_errors_add(errs, "%s: cannot read: %s", path, problem);
		if (close(fd) != 0)
			conf_errors_add(errs, "%s: cannot close: %s", path, strerror(errno));
		return NULL;
	}
	size_t size = (size_t)st.st_size;
	char *buf = conf_xmalloc(size + 1);
	size_t got = 0;
	int read_errno = 0;
	while (got < size) {
		ssize_t r = read(fd, buf + got, size - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			read_errno = errno;
			break;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	if (close(fd) != 0 && read_errno == 0)
		read_errno = errno;
	if (read_errno) {
		conf_errors_add(errs, "%s: cannot read: %s", path, strerror(read_errno));
		free(buf);
		return NULL;
	}
	buf[got] = '\0';
	struct conf *c = load_chunk(path, buf, got, errs, NULL);
	free(buf);
	return c;
}

void conf_free(struct conf *c)
{
	if (!c)
		return;
	free(c->source);
	for (size_t i = 0; i < c->num_listeners; i++) {
		free(c->listeners[i].name);
		free(c->listeners[i].address);
		conf_tls_free_listener(&c->listeners[i]);
	}
	free(c->listeners);
	for (size_t i = 0; i < c->num_pools; i++) {
		struct conf_pool *p = &c->pools[i];
		free(p->name);
		for (size_t j = 0; j < p->num_servers; j++)
			free(p->servers[j].address);
		free(p->servers);
		free(p->hash_key.name);
		conf_tls_free_pool(p);
		conf_resilience_free_pool(p);
	}
	free(c->pools);
	for (size_t i = 0; i < c->num_services; i++) {
		free(c->services[i].name);
		free(c->services[i].pools);
	}
	free(c->services);
	for (size_t i = 0; i < c->num_routes; i++) {
		struct conf_route *r = &c->routes[i];
		free(r->name);
		free(r->host);
		free(r->path);
		free(r->path_prefix);
		free(r->path_regex);
		free(r->client_cert_subject);
		for (size_t j = 0; j < r->num_methods; j++)
			free(r->methods[j]);
		free(r->methods);
		for (size_t j = 0; j < r->num_headers; j++) {
			free(r->headers[j].name);
			free(r->headers[j].value);
		}
		free(r->headers);
		free(r->respond_body);
		free(r->respond_content_type);
	}
	conf_rl_free(c); /* before the routes: it frees their rate_limit lists */
	free(c->routes);
	free(c->access_log.path);
	free(c->user);
	conf_resilience_free_root(c);
	free(c);
}
