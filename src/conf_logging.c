/* conf_logging.c - the `access_log` section (conf_logging.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_logging.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

void conf_walk_access_log(struct conf_walker *w, int root)
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

