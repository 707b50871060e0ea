/* conf.c - load a config: evaluate the Lua file in the sandbox
 * (conf_sandbox.c), then check the table it returns section by section
 * (conf_listeners.c, conf_pools.c, ... with the toolkit of conf_schema.c) and
 * turn it into a struct conf (see conf.h).
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
#include "conf_admin.h"
#include "conf_metrics.h"
#include "conf_control.h"
#include "conf_limits.h"
#include "conf_listeners.h"
#include "conf_logging.h"
#include "conf_pools.h"
#include "conf_resilience.h"
#include "conf_routes.h"
#include "conf_sandbox.h"
#include "conf_schema.h"
#include "conf_services.h"
#include "conf_tls.h"
#include "module.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

static const size_t config_file_max_bytes = (size_t)16 << 20;

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
	c->limits.client_body_min_rate = 1024;
	c->limits.client_body_deadline = 300000;
	c->limits.send_timeout = 60000;
	c->limits.keepalive_timeout = 75000;
	c->limits.max_connections = 0;
	c->limits.regex_match_limit = CONF_REGEX_MATCH_LIMIT_DEFAULT;
	c->access_log.enabled = false;
	c->access_log.path = NULL;
}

static void walk_workers(struct conf_walker *w, int root)
{
	conf_field_unsigned(w, root, "workers", 1, 1024, &w->c->workers);
}

static int walk_protected(lua_State *L)
{
	static const char *const core_keys[] = {
		"workers", "drain_timeout", "heap_keep_free", "listeners", "pools", "services", "routes", "limits", "access_log",
		"error_log", "admin", "state_file", "user", "metrics", "control", NULL,
	};
	struct conf_walker *w = lua_touserdata(L, 1);
	const int root = 2;
	conf_check_record_keys(w, root, conf_keys_with_modules(w, core_keys, false));
	walk_workers(w, root);
	conf_field_duration(w, root, "drain_timeout", true, &w->c->drain_timeout);
	conf_field_size(w, root, "heap_keep_free", 0, (uint64_t)1 << 30, &w->c->heap_keep_free);
	conf_walk_listeners(w, root);
	conf_walk_pools(w, root);
	conf_walk_services(w, root);
	for (size_t i = 0; i < w->num_modules; i++)
		if (w->modules[i]->walk)
			w->modules[i]->walk(w, root);
	conf_walk_control(w, root); /* after the modules: it may name their redis block */
	conf_walk_routes(w, root);
	conf_walk_limits(w, root);
	conf_walk_access_log(w, root);
	conf_walk_error_log(w, root);
	conf_walk_admin(w, root);
	conf_walk_metrics(w, root);
	conf_tls_walk_user(w, root);
	return 0;
}

/* ---- loading ---- */

/* The modules' own config sections (module.h), in registration order. */
static const struct conf_section **module_sections(size_t *n)
{
	const struct conf_section **out = conf_xcalloc(module_count, sizeof *out);
	*n = 0;
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i]->conf)
			out[(*n)++] = module_list[i]->conf;
	return out;
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
	struct conf_sandbox sb;
	lua_State *L = conf_sandbox_new(&sb, base_dir);
	if (!L) {
		conf_errors_add(errs, "%s: cannot create a Lua state (out of memory)", name);
		free(base_dir);
		return NULL;
	}
	size_t num_modules;
	const struct conf_section **modules = module_sections(&num_modules);
	struct conf_walker w = {
		.L = L, .errs = errs, .source = name, .base_dir = base_dir, .trace = tr,
		.modules = modules, .num_modules = num_modules,
	};
	if (conf_sandbox_run(L, name, src, len, errs)) {
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
	free(modules);
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

char *conf_read_file(const char *path, size_t *len, struct conf_errors *errs)
{
	struct stat st;
	char why[160];
	int fd = conf_open_regular_file(path, &st, why, sizeof why);
	if (fd < 0) {
		conf_errors_add(errs, "%s: cannot read: %s", path, why);
		return NULL;
	}
	/* st_size is only a hint (a file being written, a /proc file reports 0):
	 * read up to the cap plus one byte, whatever it says. */
	size_t cap = (uintmax_t)st.st_size < config_file_max_bytes ? (size_t)st.st_size + 1 : config_file_max_bytes + 1;
	char *buf = conf_xmalloc(cap + 1);
	size_t got = 0;
	int read_errno = 0;
	for (;;) {
		if (got == cap) {
			if (cap > config_file_max_bytes)
				break;
			cap = cap * 2 < config_file_max_bytes + 1 ? cap * 2 : config_file_max_bytes + 1;
			buf = conf_xreallocarray(buf, cap + 1, 1);
		}
		ssize_t r = read(fd, buf + got, cap - got);
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
	if (got > config_file_max_bytes) {
		conf_errors_add(errs, "%s: cannot read: larger than %zu MiB, the most a config file may have", path,
		                config_file_max_bytes >> 20);
		free(buf);
		return NULL;
	}
	buf[got] = '\0';
	*len = got;
	return buf;
}

struct conf *conf_load(const char *path, struct conf_errors *errs)
{
	size_t len;
	char *buf = conf_read_file(path, &len, errs);
	if (!buf)
		return NULL;
	struct conf *c = load_chunk(path, buf, len, errs, NULL);
	free(buf);
	return c;
}

void conf_free(struct conf *c)
{
	if (!c)
		return;
	free(c->source);
	conf_control_free(c->control);
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
		free(c->services[i].sticky.name);
		for (size_t o = 0; o < c->services[i].num_overrides; o++) {
			free(c->services[i].overrides[o].key.name);
			free(c->services[i].overrides[o].value);
		}
		free(c->services[i].overrides);
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
	/* Modules first: their data may hang off routes (a route's rate limits). */
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i]->conf && module_list[i]->conf->free)
			module_list[i]->conf->free(c);
	free(c->routes);
	free(c->access_log.path);
	free(c->access_log.syslog);
	free(c->access_log.syslog_app);
	free(c->error_log.path);
	free(c->error_log.syslog);
	free(c->error_log.syslog_app);
	free(c->user);
	conf_admin_free(c);
	free(c);
}

