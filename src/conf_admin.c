/* conf_admin.c - the `admin` and `state_file` sections (conf_admin.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_admin.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

static char *resolve_path(struct conf_walker *w, const char *s)
{
	if (s[0] == '/' || strcmp(w->base_dir, ".") == 0)
		return conf_xstrdup(s);
	return conf_xasprintf("%s/%s", w->base_dir, s);
}

static void walk_admin(struct conf_walker *w, int root)
{
	static const char *const keys[] = { "socket", "mode", "max_connections", NULL };
	struct conf_admin *a = &w->c->admin;
	a->mode = 0600;
	a->max_connections = CONF_ADMIN_MAX_CONNECTIONS_DEFAULT;
	struct conf_field f;
	if (!conf_field_open_record(w, root, "admin", keys,
	                            "a table like { socket = \"/run/sluice/admin.sock\", mode = \"0600\" }", &f))
		return;
	int v = lua_gettop(w->L);
	struct conf_field g;
	if (conf_field_open(w, v, "socket", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		/* sun_path holds 108 bytes with the NUL */
		if (s && (!*s || strlen(s) > 100))
			conf_werr(w, "must be a path of 1 to 100 bytes");
		else if (s)
			a->socket = resolve_path(w, s);
		conf_field_close(w, &g);
	} else {
		conf_werr_key(w, "socket", "missing (write a path like \"/run/sluice/admin.sock\")");
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
	free(c->state_file);
}
