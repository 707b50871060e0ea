/* conf_logging.c - the `access_log` section (conf_logging.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_logging.h"
#include "log_syslog.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

static void walk_syslog(struct conf_walker *w, int t)
{
	struct conf_access_log *a = &w->c->access_log;
	a->syslog_facility = 16;
	struct conf_field g;
	if (conf_field_open(w, t, "syslog", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		struct logsys_target target;
		char why[256];
		if (s && !logsys_parse(s, &target, why, sizeof why))
			conf_werr(w, "%s", why);
		else if (s)
			a->syslog = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, t, "syslog_facility", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		int f = s ? logsys_facility(s) : -1;
		if (s && f < 0)
			conf_werr(w, "unknown facility \"%s\" (write \"local0\" to \"local7\", \"user\" or \"daemon\")", s);
		else if (s)
			a->syslog_facility = f;
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, t, "syslog_app", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && (!*s || strlen(s) > 48))
			conf_werr(w, "must be 1 to 48 characters");
		else if (s)
			a->syslog_app = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
}

void conf_walk_access_log(struct conf_walker *w, int root)
{
	static const char *const keys[] = { "path", "syslog", "syslog_facility", "syslog_app", NULL };
	struct conf_field f;
	if (!conf_field_open_record(w, root, "access_log", keys, "a table like { path = \"stdout\" }", &f))
		return;
	int t = lua_gettop(w->L);
	walk_syslog(w, t);
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
	} else if (!w->c->access_log.syslog) {
		conf_werr_key(w, "path", "missing (write \"stdout\", \"stderr\", \"off\" or a file path)");
	}
	if (w->c->access_log.syslog)
		w->c->access_log.enabled = true;
	conf_field_close(w, &f);
}
