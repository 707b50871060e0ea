/* conf_listeners.c - the `listeners` section (conf_listeners.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_listeners.h"

#include "conf_tls.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

static void walk_listener(struct conf_walker *w, int t, size_t index, struct conf_listener *l)
{
	static const char *const keys[] = { "name", "address", "tls", "h2c", "http2", "max_connections_per_client", NULL };
	conf_check_record_keys(w, t, keys);
	struct conf_field f;
	if (conf_field_open(w, t, "name", &f)) {
		const char *name = conf_value_label(w, lua_gettop(w->L));
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
	/* else limits.max_connections_per_client (conf_walk_limits) */
	l->max_connections_per_client_set = conf_field_unsigned(w, t, "max_connections_per_client", 0,
	                                                        CONF_MAX_CONNECTIONS_PER_CLIENT_MAX,
	                                                        &l->max_connections_per_client) == CONF_FIELD_SET;
}

void conf_walk_listeners(struct conf_walker *w, int root)
{
	struct conf *c = w->c;
	struct conf_field f;
	int list;
	size_t n;
	if (!conf_open_required_list(w, root, "listeners",
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
		c->listeners[i - 1].id = (unsigned)(i - 1);
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
			if (conf_sockaddr_equal(&l->addr, l->addr_len, &o->addr, o->addr_len)) {
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


const struct conf_listener *conf_listener_by_id(const struct conf *c, unsigned id, size_t *index)
{
	/* the number is the index until a reload changes the listeners */
	size_t i = id;
	if (i >= c->num_listeners || c->listeners[i].id != id)
		for (i = 0; i < c->num_listeners && c->listeners[i].id != id; i++)
			;
	if (i == c->num_listeners)
		return NULL;
	if (index)
		*index = i;
	return &c->listeners[i];
}
