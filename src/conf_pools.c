/* conf_pools.c - the `pools` section (conf_pools.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_pools.h"

#include "conf_resilience.h"
#include "conf_tls.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

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

static int compare_server_addresses(const void *a, const void *b)
{
	const struct conf_server *x = a, *y = b;
	return conf_sockaddr_compare(&x->addr, x->addr_len, &y->addr, y->addr_len);
}

static void walk_servers(struct conf_walker *w, int pool_table, struct conf_pool *p)
{
	struct conf_field f;
	int list;
	size_t n;
	if (!conf_open_required_list(w, pool_table, "servers",
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
	struct conf_duplicate *dups = conf_xcalloc(n, sizeof *dups);
	size_t num_dups = conf_find_duplicates(p->servers, n, sizeof *p->servers, compare_server_addresses, dups);
	for (size_t k = 0; k < num_dups; k++) {
		size_t mark = conf_path_push_index(w, dups[k].index + 1);
		char *q = conf_quoted(p->name);
		conf_werr_key(w, "address", "duplicate server %s in pool %s (also servers[%zu])",
		              p->servers[dups[k].index].address, q, dups[k].first + 1);
		free(q);
		conf_path_pop(w, mark);
	}
	free(dups);
	conf_field_close(w, &f);
}

void conf_walk_key(struct conf_walker *w, const char *s, struct conf_key *key)
{
	static const struct {
		const char *prefix;
		enum conf_key_kind kind;
		const char *what;
	} named[] = { { "header:", CONF_KEY_HEADER, "header" },
		      { "cookie:", CONF_KEY_COOKIE, "cookie" },
		      { "query:", CONF_KEY_QUERY, "query argument" } };

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
	if (strcmp(s, "tls_subject") == 0) {
		key->kind = CONF_KEY_TLS_SUBJECT;
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
		if (!conf_is_token(name)) {
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
				*c = conf_ascii_lower(*c);
		return;
	}
	char *q = conf_quoted(s);
	conf_werr(w, "unknown value %s (expected client_ip, path, host, tls_subject, header:NAME, cookie:NAME or query:NAME)", q);
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
			conf_walk_key(w, s, &p->hash_key);
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

void conf_walk_pools(struct conf_walker *w, int root)
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
		conf_check_object_name(w, "pool", names[i]);
		if (lua_type(w->L, v) == LUA_TTABLE)
			walk_pool(w, v, &c->pools[i]);
		else
			conf_type_error(w, v, "a table like { servers = { \"10.0.0.1:80\" } }");
		conf_field_close(w, &entry);
	}
	conf_field_close(w, &f);
}

static int compare_pool_name(const void *name, const void *pool)
{
	return strcmp(name, ((const struct conf_pool *)pool)->name);
}

int conf_find_pool(const struct conf *c, const char *name)
{
	const struct conf_pool *p = c->num_pools ? bsearch(name, c->pools, c->num_pools, sizeof *c->pools,
	                                                   compare_pool_name)
	                                         : NULL;
	return p ? (int)(p - c->pools) : -1;
}

void conf_unknown_pool_error(struct conf_walker *w, const char *name)
{
	struct conf_suggestion s = { NULL, 0 };
	for (size_t i = 0; i < w->c->num_pools; i++)
		conf_suggest_consider(&s, name, w->c->pools[i].name);
	char *hint = conf_suggestion_text(&s);
	char *q = conf_quoted(name);
	conf_werr(w, "unknown pool %s%s", q, hint);
	free(q);
	free(hint);
}
