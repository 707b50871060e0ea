/* conf_logging.c - the `access_log` section (conf_logging.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_logging.h"
#include "log_queue.h"
#include "log_syslog.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* syslog, syslog_facility, syslog_app: the same keys in access_log and error_log */
static void walk_syslog(struct conf_walker *w, int t, char **syslog, int *facility, char **app)
{
	*facility = 16;
	struct conf_field g;
	if (conf_field_open(w, t, "syslog", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		struct logsys_target target;
		char why[256];
		if (s && !logsys_parse(s, &target, why, sizeof why))
			conf_werr(w, "%s", why);
		else if (s)
			*syslog = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, t, "syslog_facility", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		int f = s ? logsys_facility(s) : -1;
		if (s && f < 0)
			conf_werr(w, "unknown facility \"%s\" (write \"local0\" to \"local7\", \"user\" or \"daemon\")", s);
		else if (s)
			*facility = f;
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, t, "syslog_app", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && (!*s || strlen(s) > 48))
			conf_werr(w, "must be 1 to 48 characters");
		else if (s)
			*app = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
}

/* a log file path: absolute, or relative to the config file's directory */
static char *log_path(struct conf_walker *w, const char *s)
{
	if (strcmp(s, "stdout") == 0 || strcmp(s, "stderr") == 0 || s[0] == '/' || strcmp(w->base_dir, ".") == 0)
		return conf_xstrdup(s);
	return conf_xasprintf("%s/%s", w->base_dir, s);
}

void conf_walk_access_log(struct conf_walker *w, int root)
{
	static const char *const keys[] = { "path", "syslog", "syslog_facility", "syslog_app", "queue", NULL };
	struct conf_field f;
	if (!conf_field_open_record(w, root, "access_log", keys, "a table like { path = \"stdout\" }", &f))
		return;
	int t = lua_gettop(w->L);
	struct conf_access_log *a = &w->c->access_log;
	walk_syslog(w, t, &a->syslog, &a->syslog_facility, &a->syslog_app);
	conf_field_size(w, t, "queue", LOGQ_MIN_BYTES, LOGQ_MAX_BYTES, &a->queue);
	struct conf_field g;
	if (conf_field_open(w, t, "path", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s) {
			conf_werr(w, "must not be empty (write \"stdout\", \"stderr\", \"off\" or a file path)");
		} else if (s && strcmp(s, "off") != 0) {
			w->c->access_log.enabled = true;
			w->c->access_log.path = log_path(w, s);
		}
		conf_field_close(w, &g);
	} else if (!w->c->access_log.syslog) {
		conf_werr_key(w, "path", "missing (write \"stdout\", \"stderr\", \"off\" or a file path)");
	}
	if (w->c->access_log.syslog)
		w->c->access_log.enabled = true;
	conf_field_close(w, &f);
}

void conf_walk_error_log(struct conf_walker *w, int root)
{
	static const char *const keys[] = {"path", "syslog", "syslog_facility", "syslog_app", NULL};
	struct conf_error_log *e = &w->c->error_log;
	e->syslog_facility = 16;
	struct conf_field f;
	if (!conf_field_open_record(w, root, "error_log", keys,
	                            "a table like { path = \"/var/log/sluice/error.log\", syslog = \"tcp://127.0.0.1:601\" }",
	                            &f))
		return;
	int t = lua_gettop(w->L);
	walk_syslog(w, t, &e->syslog, &e->syslog_facility, &e->syslog_app);
	struct conf_field g;
	if (conf_field_open(w, t, "path", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && !*s)
			conf_werr(w, "must not be empty (write \"stderr\", \"stdout\", \"off\" or a file path)");
		else if (s && strcmp(s, "off") == 0 && !e->syslog)
			conf_werr(w, "\"off\" needs error_log.syslog: sluice's messages must go somewhere");
		else if (s && strcmp(s, "off") == 0)
			e->off = true;
		else if (s && strcmp(s, "stderr") != 0)
			e->path = log_path(w, s);
		conf_field_close(w, &g);
	}
	conf_field_close(w, &f);
}
