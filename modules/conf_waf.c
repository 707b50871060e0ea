/* conf_waf.c - the `waf` config section (conf_waf.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "conf_waf.h"

#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf.h"

/* bytes of request body the WAF inspects unless waf.body_limit says otherwise */
#define CONF_WAF_DEFAULT_BODY_LIMIT (64u << 10)

static struct conf_waf *waf_of(struct conf *c)
{
	if (!c->waf) {
		c->waf = conf_xcalloc(1, sizeof *c->waf);
		c->waf->body_limit = CONF_WAF_DEFAULT_BODY_LIMIT;
	}
	return c->waf;
}

static void waf_route_buffers(const struct conf_waf *cw, const struct conf_waf_route *wr, struct conf_route *r);
static void walk_route_waf(struct conf_walker *w, int t, struct conf_route *r);

static void walk_ids(struct conf_walker *w, int t, const char *key, uint32_t **out, size_t *n)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return;
	int v = lua_gettop(w->L);
	size_t len;
	if (conf_list_length(w, v, "{ 19001, 18002 }", &len)) {
		*out = conf_xreallocarray(*out, *n + len + 1, sizeof **out);
		for (size_t i = 1; i <= len; i++) {
			struct conf_field item;
			conf_item_open(w, v, i, &item);
			long long id;
			if (conf_value_integer(w, lua_gettop(w->L), 1, 0xffffffffLL, &id))
				(*out)[(*n)++] = (uint32_t)id;
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &f);
}

static void walk_strings(struct conf_walker *w, int t, const char *key, char ***out, size_t *n)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return;
	int v = lua_gettop(w->L);
	size_t len;
	if (conf_list_length(w, v, "{ \"attack-xss\" }", &len)) {
		*out = conf_xreallocarray(*out, *n + len + 1, sizeof **out);
		for (size_t i = 1; i <= len; i++) {
			struct conf_field item;
			conf_item_open(w, v, i, &item);
			const char *s = conf_value_string(w, lua_gettop(w->L));
			if (s)
				(*out)[(*n)++] = conf_xstrdup(s);
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &f);
}

static void add_target(struct conf_walker *w, struct conf_waf_opts *o, const char *spec, uint32_t rule)
{
	enum waf_target kind;
	const char *name;
	if (!waf_target_parse(spec, &kind, &name)) {
		conf_werr(w, "unknown target \"%s\" (args:NAME, cookies:NAME, headers:NAME, args, path, ...; docs/waf.md)",
		          spec);
		return;
	}
	o->exclude_targets = conf_xreallocarray(o->exclude_targets, o->num_exclude_targets + 1, sizeof *o->exclude_targets);
	struct waf_exclusion *x = &o->exclude_targets[o->num_exclude_targets++];
	x->rule_id = rule;
	x->kind = kind;
	x->name = name ? conf_xstrdup(name) : NULL;
}

static void walk_targets(struct conf_walker *w, int t, struct conf_waf_opts *o)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "targets", &f))
		return;
	int v = lua_gettop(w->L);
	size_t len;
	if (conf_list_length(w, v, "{ \"args:password\", { target = \"args:q\", rules = { 19001 } } }", &len)) {
		for (size_t i = 1; i <= len; i++) {
			struct conf_field item;
			conf_item_open(w, v, i, &item);
			int e = lua_gettop(w->L);
			if (lua_type(w->L, e) == LUA_TSTRING) {
				add_target(w, o, lua_tostring(w->L, e), 0);
			} else if (lua_type(w->L, e) == LUA_TTABLE) {
				static const char *const keys[] = {"target", "rules", NULL};
				conf_check_record_keys(w, e, keys);
				uint32_t *ids = NULL;
				size_t nids = 0;
				walk_ids(w, e, "rules", &ids, &nids);
				struct conf_field tf;
				if (conf_field_open(w, e, "target", &tf)) {
					const char *s = conf_value_string(w, lua_gettop(w->L));
					if (s && nids == 0)
						add_target(w, o, s, 0);
					for (size_t k = 0; s && k < nids; k++)
						add_target(w, o, s, ids[k]);
					conf_field_close(w, &tf);
				} else {
					conf_werr(w, "target is required, e.g. { target = \"args:q\", rules = { 19001 } }");
				}
				free(ids);
			} else {
				conf_type_error(w, e, "\"args:NAME\" or { target = \"args:NAME\", rules = { ID } }");
			}
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &f);
}

static const char *const top_keys[] = {"paranoia", "mode", "threshold", "rules", "audit_log", "exclude",
                                       "detect_rules", "body_limit", "on_body_limit", NULL};
static const char *const route_only_keys[] = {"paranoia", "mode", "threshold", "exclude", "detect_rules", NULL};

static void walk_opts(struct conf_walker *w, int t, struct conf_waf_opts *o)
{
	unsigned u;
	if (conf_field_unsigned(w, t, "paranoia", 1, 4, &u) == CONF_FIELD_SET) {
		o->paranoia = (int)u;
		o->has_paranoia = true;
	}
	if (conf_field_unsigned(w, t, "threshold", 1, 10000, &u) == CONF_FIELD_SET) {
		o->threshold = (int)u;
		o->has_threshold = true;
	}
	struct conf_field f;
	if (conf_field_open(w, t, "mode", &f)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && strcmp(s, "block") != 0 && strcmp(s, "detect") != 0)
			conf_werr(w, "\"%s\" is not \"block\" or \"detect\"", s);
		else if (s) {
			o->detect = strcmp(s, "detect") == 0;
			o->has_mode = true;
		}
		conf_field_close(w, &f);
	}
	static const char *const exclude_keys[] = {"rules", "tags", "targets", NULL};
	if (conf_field_open_record(w, t, "exclude", exclude_keys,
	                           "exclude = { rules = { 19001 }, tags = { \"attack-xss\" }, targets = { \"args:password\" } }",
	                           &f)) {
		int e = lua_gettop(w->L);
		walk_ids(w, e, "rules", &o->exclude_ids, &o->num_exclude_ids);
		walk_strings(w, e, "tags", &o->exclude_tags, &o->num_exclude_tags);
		walk_targets(w, e, o);
		conf_field_close(w, &f);
	}
	walk_ids(w, t, "detect_rules", &o->detect_ids, &o->num_detect_ids);
}

/* The shipped rules: lua/waf next to the config, else the source tree's. */
static char *default_rules(const struct conf_walker *w)
{
	char *p = conf_resolve_path(w, "lua/waf");
	struct stat st;
	if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
		return p;
	free(p);
	return conf_xstrdup(SLUICE_SRCDIR "/lua/waf");
}

static void walk_root(struct conf_walker *w, int root)
{
	struct conf_field f;
	if (!conf_field_open_record(w, root, "waf", top_keys, "waf = { paranoia = 1, mode = \"block\" }", &f))
		return;
	int t = lua_gettop(w->L);
	struct conf_waf *cw = waf_of(w->c);
	cw->top = true;
	walk_opts(w, t, &cw->opts);
	struct conf_field g;
	if (conf_field_open(w, t, "rules", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s)
			cw->rules_dir = conf_resolve_path(w, s);
		conf_field_close(w, &g);
	} else {
		cw->rules_dir = default_rules(w);
	}
	if (conf_field_open(w, t, "audit_log", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s)
			cw->audit_log = conf_resolve_path(w, s);
		conf_field_close(w, &g);
	}
	conf_field_size(w, t, "body_limit", 0, CONF_REQUEST_BUFFERING_MAX, &cw->body_limit);
	if (conf_field_open(w, t, "on_body_limit", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && strcmp(s, "pass") != 0 && strcmp(s, "deny") != 0)
			conf_werr(w, "\"%s\" is not \"pass\" or \"deny\"", s);
		else if (s)
			cw->body_limit_deny = strcmp(s, "deny") == 0;
		conf_field_close(w, &g);
	}
	conf_field_close(w, &f);
	/* routes walked before this table: those the WAF covers read the body first */
	for (size_t i = 0; i < w->c->num_routes && i < cw->num_routes; i++)
		waf_route_buffers(cw, &cw->routes[i], &w->c->routes[i]);
	if (!cw->routes)
		for (size_t i = 0; i < w->c->num_routes; i++)
			waf_route_buffers(cw, NULL, &w->c->routes[i]);
}

/* A route the WAF inspects reads up to body_limit of the request body before
 * the access phase (routes[N].request_buffering), so the WAF sees it. */
static void waf_route_buffers(const struct conf_waf *cw, const struct conf_waf_route *wr, struct conf_route *r)
{
	enum conf_waf_route_state st = wr ? wr->state : CONF_WAF_INHERIT;
	bool on = st == CONF_WAF_OWN || (st == CONF_WAF_INHERIT && cw->top);
	if (on && cw->body_limit > r->request_buffering)
		r->request_buffering = cw->body_limit;
}

static void walk_route(struct conf_walker *w, int t, struct conf_route *r)
{
	walk_route_waf(w, t, r);
	struct conf_waf *cw = w->c->waf;
	if (cw) {
		size_t idx = (size_t)(r - w->c->routes);
		waf_route_buffers(cw, idx < cw->num_routes ? &cw->routes[idx] : NULL, r);
	}
}

static void walk_route_waf(struct conf_walker *w, int t, struct conf_route *r)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "waf", &f))
		return;
	int v = lua_gettop(w->L);
	struct conf *c = w->c;
	struct conf_waf *cw = waf_of(c);
	if (!cw->routes) {
		cw->routes = conf_xcalloc(c->num_routes ? c->num_routes : 1, sizeof *cw->routes);
		cw->num_routes = c->num_routes;
	}
	size_t idx = (size_t)(r - c->routes);
	struct conf_waf_route *wr = &cw->routes[idx];
	if (lua_type(w->L, v) == LUA_TBOOLEAN) {
		if (lua_toboolean(w->L, v))
			conf_werr(w, "waf = true is not a setting: the top-level waf table enables it; use waf = false to opt "
			             "out or waf = { paranoia = 2 } to override");
		else
			wr->state = CONF_WAF_OFF;
	} else if (lua_type(w->L, v) == LUA_TTABLE) {
		conf_check_record_keys(w, v, route_only_keys);
		wr->state = CONF_WAF_OWN;
		walk_opts(w, v, &wr->opts);
	} else {
		conf_type_error(w, v, "false, or a table like { paranoia = 2, exclude = { targets = { \"args:q\" } } }");
	}
	conf_field_close(w, &f);
}

static void free_opts(struct conf_waf_opts *o)
{
	free(o->exclude_ids);
	for (size_t i = 0; i < o->num_exclude_tags; i++)
		free(o->exclude_tags[i]);
	free(o->exclude_tags);
	for (size_t i = 0; i < o->num_exclude_targets; i++)
		free(o->exclude_targets[i].name);
	free(o->exclude_targets);
	free(o->detect_ids);
}

static void free_section(struct conf *c)
{
	struct conf_waf *cw = c->waf;
	if (!cw)
		return;
	free_opts(&cw->opts);
	for (size_t i = 0; i < cw->num_routes; i++)
		free_opts(&cw->routes[i].opts);
	free(cw->routes);
	free(cw->rules_dir);
	free(cw->audit_log);
	free(cw);
	c->waf = NULL;
}

static const char *const root_keys[] = {"waf", NULL};
static const char *const route_keys[] = {"waf", NULL};

const struct conf_section conf_waf_section = {
    .root_keys = root_keys,
    .walk = walk_root,
    .route_keys = route_keys,
    .walk_route = walk_route,
    .free = free_section,
};
