/* conf_routes.c - the `routes` section (conf_routes.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_routes.h"

#include "conf_pools.h"
#include "conf_services.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* Lower-cases h in place; returns what is wrong with it as a host pattern, or NULL. */
static const char *host_pattern_problem(char *h)
{
	for (char *p = h; *p; p++)
		*p = conf_ascii_lower(*p);
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
	if (strlen(name) > CONF_HOST_MAX_LEN)
		return "is too long for a host name";
	size_t label = 0;
	for (const char *p = name;; p++) {
		if (*p == '.' || *p == '\0') {
			if (label == 0)
				return "is not a valid host name (empty label)";
			if (*p == '\0')
				break;
			label = 0;
		} else if (conf_is_alpha(*p) || conf_is_digit(*p) || *p == '-' || *p == '_') {
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
		if (s && !conf_is_token(s)) {
			char *q = conf_quoted(s);
			conf_werr(w, "%s is not a valid method name", q);
			free(q);
		} else if (s) {
			char *m = conf_xstrdup(s);
			for (char *c = m; *c; c++)
				*c = conf_ascii_upper(*c);
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
		if (!conf_is_token(names[i])) {
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
				*c = conf_ascii_lower(*c);
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
		int found = conf_find_service_in(w->c, explicit_services, name);
		if (found >= 0) {
			r->service = (size_t)found;
		} else {
			struct conf_suggestion s = { NULL, 0 };
			for (size_t i = 0; i < explicit_services; i++)
				conf_suggest_consider(&s, name, w->c->services[i].name);
			char *hint = conf_suggestion_text(&s);
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
			r->service = conf_implicit_service(w, (size_t)pool);
		else
			conf_unknown_pool_error(w, name);
	}
	conf_field_close(w, &f);
}

static void walk_route(struct conf_walker *w, int t, size_t index, struct conf_route *r, size_t explicit_services,
                       const char *const *keys)
{
	static const char *const actions[] = { "pool", "service", "respond" };
	conf_check_record_keys(w, t, keys);
	struct conf_field f;
	if (conf_field_open(w, t, "name", &f)) {
		const char *name = conf_value_label(w, lua_gettop(w->L));
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
	/* bodies up to this size never hold an upstream connection while they
	 * arrive (a slow client costs a buffer, not upstream capacity) */
	conf_field_size(w, t, "request_buffering", 0, CONF_REQUEST_BUFFERING_MAX, &r->request_buffering);
	for (size_t i = 0; i < w->num_modules; i++)
		if (w->modules[i]->walk_route)
			w->modules[i]->walk_route(w, t, r);
	r->action = num_present == 1 && strcmp(present[0], "respond") == 0 ? CONF_ROUTE_RESPOND : CONF_ROUTE_PROXY;
}

static int compare_route_names(const void *a, const void *b)
{
	return strcmp(((const struct conf_route *)a)->name, ((const struct conf_route *)b)->name);
}

/* Every route whose name an earlier route already has, each naming the first. */
static void report_duplicate_names(struct conf_walker *w, const struct conf *c)
{
	struct conf_duplicate *dups = conf_xcalloc(c->num_routes, sizeof *dups);
	size_t n = conf_find_duplicates(c->routes, c->num_routes, sizeof *c->routes, compare_route_names, dups);
	for (size_t k = 0; k < n; k++) {
		size_t mark = conf_path_push_index(w, dups[k].index + 1);
		char *q = conf_quoted(c->routes[dups[k].index].name);
		conf_werr_key(w, "name", "duplicate route name %s (also routes[%zu])", q, dups[k].first + 1);
		free(q);
		conf_path_pop(w, mark);
	}
	free(dups);
}

void conf_walk_routes(struct conf_walker *w, int root)
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
	static const char *const core_keys[] = { "name", "match", "pool", "service", "respond", "request_buffering", NULL };
	const char *const *keys = conf_keys_with_modules(w, core_keys, true);
	c->routes = conf_xcalloc(n, sizeof *c->routes);
	c->num_routes = n;
	size_t explicit_services = c->num_services;
	for (size_t i = 1; i <= n; i++) {
		struct conf_field item;
		conf_item_open(w, list, i, &item);
		int v = lua_gettop(w->L);
		struct conf_route *r = &c->routes[i - 1];
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_route(w, v, i, r, explicit_services, keys);
		else
			conf_type_error(w, v, "a table like { match = { path_prefix = \"/\" }, service = \"web\" }");
		if (!r->name)
			r->name = conf_xasprintf("routes[%zu]", i);
		conf_field_close(w, &item);
	}
	report_duplicate_names(w, c);
out:
	conf_field_close(w, &f);
}

