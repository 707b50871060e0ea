#include "conf_resilience.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "conf_schema.h"

/* ---- small value readers ---- */

/* A number in [lo, hi] (rates such as 0.5). */
static bool value_rate(struct conf_walker *w, int v, double lo, double hi, double *out)
{
	if (lua_type(w->L, v) != LUA_TNUMBER) {
		conf_type_error(w, v, "a number between 0 and 1");
		return false;
	}
	double d = (double)lua_tonumber(w->L, v);
	if (!(d >= lo && d <= hi)) {
		conf_werr(w, "%.14g is out of range (%g to %g)", d, lo, hi);
		return false;
	}
	*out = d;
	return true;
}

static void field_rate(struct conf_walker *w, int t, const char *key, double *out)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return;
	value_rate(w, lua_gettop(w->L), 0.0, 1.0, out);
	conf_field_close(w, &f);
}

/* An HTTP status written as 503 or "503". */
static bool value_status(struct conf_walker *w, int v, int *out)
{
	long long n = 0;
	if (lua_type(w->L, v) == LUA_TSTRING) {
		const char *s = conf_value_string(w, v);
		if (!s)
			return false;
		if (strlen(s) != 3 || s[0] < '1' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9') {
			char *q = conf_quoted(s);
			conf_werr(w, "invalid status %s (expected 100 to 599)", q);
			free(q);
			return false;
		}
		n = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	} else if (!conf_value_integer(w, v, 100, 599, &n)) {
		return false;
	}
	*out = (int)n;
	return true;
}

/* "200-399", "200" or 200 -> a range. */
static bool value_status_range(struct conf_walker *w, int v, int *lo, int *hi)
{
	if (lua_type(w->L, v) == LUA_TNUMBER) {
		int s;
		if (!value_status(w, v, &s))
			return false;
		*lo = *hi = s;
		return true;
	}
	const char *s = conf_value_string(w, v);
	if (!s)
		return false;
	int a = 0, b = 0;
	char tail = 0;
	int n = sscanf(s, "%3d-%3d%c", &a, &b, &tail);
	if (n == 1 && strlen(s) == 3)
		b = a;
	if (!((n == 2) || (n == 1 && strlen(s) == 3)) || a < 100 || b > 599 || a > b) {
		char *q = conf_quoted(s);
		conf_werr(w, "invalid status range %s (write \"200-399\" or \"200\")", q);
		free(q);
		return false;
	}
	*lo = a;
	*hi = b;
	return true;
}

/* A list of statuses; returns false when the field is absent. */
static bool field_status_list(struct conf_walker *w, int t, const char *key, int *out, size_t cap, size_t *n_out)
{
	struct conf_field f;
	if (!conf_field_open(w, t, key, &f))
		return false;
	int list = lua_gettop(w->L);
	size_t n = 0;
	*n_out = 0;
	if (conf_list_length(w, list, "{ 502, 503, 504 }", &n)) {
		if (n > cap) {
			conf_werr(w, "at most %zu statuses", cap);
			n = cap;
		}
		for (size_t i = 1; i <= n; i++) {
			struct conf_field item;
			conf_item_open(w, list, i, &item);
			int s;
			if (value_status(w, lua_gettop(w->L), &s))
				out[(*n_out)++] = s;
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &f);
	return true;
}

/* ---- health_check ---- */

static void walk_health_check(struct conf_walker *w, int t, struct conf_pool *p)
{
	static const char *const keys[] = { "type", "path", "expect", "interval", "timeout", "rise", "fall", "host", NULL };
	struct conf_health_check *h = &p->health_check;
	struct conf_field f;
	if (!conf_field_open_record(w, t, "health_check", keys,
	                            "a table like { type = \"http\", path = \"/healthz\", interval = \"2s\" }", &f))
		return;
	int v = lua_gettop(w->L);
	h->type = CONF_HEALTH_HTTP;
	h->expect_lo = 200;
	h->expect_hi = 399;
	h->interval = 2000;
	h->timeout = 1000;
	h->rise = 2;
	h->fall = 3;
	struct conf_field g;
	if (conf_field_open(w, v, "type", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && strcmp(s, "http") == 0) {
			h->type = CONF_HEALTH_HTTP;
		} else if (s && strcmp(s, "tcp") == 0) {
			h->type = CONF_HEALTH_TCP;
		} else if (s) {
			char *q = conf_quoted(s);
			conf_werr(w, "unknown value %s (expected \"http\" or \"tcp\")", q);
			free(q);
		}
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, v, "path", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && (s[0] != '/' || strpbrk(s, " \t\r\n") != NULL))
			conf_werr(w, "must start with \"/\" and contain no spaces or line breaks");
		else if (s)
			h->path = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, v, "host", &g)) {
		const char *s = conf_value_string(w, lua_gettop(w->L));
		if (s && (!*s || strpbrk(s, " \t\r\n/") != NULL))
			conf_werr(w, "must be a non-empty host name (no spaces, line breaks or \"/\")");
		else if (s)
			h->host = conf_xstrdup(s);
		conf_field_close(w, &g);
	}
	if (conf_field_open(w, v, "expect", &g)) {
		value_status_range(w, lua_gettop(w->L), &h->expect_lo, &h->expect_hi);
		conf_field_close(w, &g);
	}
	conf_field_duration(w, v, "interval", false, &h->interval);
	conf_field_duration(w, v, "timeout", false, &h->timeout);
	conf_field_unsigned(w, v, "rise", 1, 100, &h->rise);
	conf_field_unsigned(w, v, "fall", 1, 100, &h->fall);
	if (h->timeout > h->interval)
		conf_werr_key(w, "timeout", "must not be longer than interval");
	if (h->type == CONF_HEALTH_TCP && (h->path || h->host))
		conf_werr(w, "path and host are only used with type = \"http\"");
	if (h->type == CONF_HEALTH_HTTP && !h->path)
		h->path = conf_xstrdup("/healthz");
	conf_field_close(w, &f);
}

/* ---- breaker ---- */

static void walk_breaker(struct conf_walker *w, int t, struct conf_pool *p)
{
	static const char *const keys[] = { "consecutive_failures", "error_rate", "slow_call", "slow_rate", "window",
		                            "min_requests", "open_for", "max_open_for", "half_open_probes", NULL };
	struct conf_breaker *b = &p->breaker;
	struct conf_field f;
	if (!conf_field_open_record(w, t, "breaker", keys,
	                            "a table like { consecutive_failures = 5, error_rate = 0.5, open_for = \"5s\" }", &f))
		return;
	int v = lua_gettop(w->L);
	b->enabled = true;
	b->consecutive_failures = 5;
	b->error_rate = 0.5;
	b->slow_call = 0;
	b->slow_rate = 0.8;
	b->window = 10000;
	b->min_requests = 20;
	b->open_for = 5000;
	b->max_open_for = 60000;
	b->half_open_probes = 3;
	conf_field_unsigned(w, v, "consecutive_failures", 0, 100000, &b->consecutive_failures);
	field_rate(w, v, "error_rate", &b->error_rate);
	conf_field_duration(w, v, "slow_call", true, &b->slow_call);
	field_rate(w, v, "slow_rate", &b->slow_rate);
	conf_field_duration(w, v, "window", false, &b->window);
	conf_field_unsigned(w, v, "min_requests", 1, 1000000, &b->min_requests);
	conf_field_duration(w, v, "open_for", false, &b->open_for);
	enum conf_field_status max = conf_field_duration(w, v, "max_open_for", false, &b->max_open_for);
	conf_field_unsigned(w, v, "half_open_probes", 1, 1000, &b->half_open_probes);
	if (b->max_open_for < b->open_for) {
		if (max == CONF_FIELD_SET)
			conf_werr_key(w, "max_open_for", "must not be shorter than open_for");
		else
			b->max_open_for = b->open_for;
	}
	if (b->window < 100)
		conf_werr_key(w, "window", "must be at least \"100ms\"");
	if (b->consecutive_failures == 0 && b->error_rate == 0 && b->slow_call == 0)
		conf_werr(w, "every trigger is off (set consecutive_failures, error_rate or slow_call)");
	conf_field_close(w, &f);
}

/* ---- limits ---- */

static void walk_pool_limits(struct conf_walker *w, int t, struct conf_pool *p)
{
	static const char *const keys[] = { "max_connections", "max_pending", "max_requests", "max_retries", NULL };
	struct conf_pool_limits *l = &p->pool_limits;
	struct conf_field f;
	if (!conf_field_open_record(w, t, "limits", keys, "a table like { max_connections = 1024, max_requests = 1024 }",
	                            &f))
		return;
	int v = lua_gettop(w->L);
	conf_field_unsigned(w, v, "max_connections", 0, 10000000, &l->max_connections);
	conf_field_unsigned(w, v, "max_pending", 0, 10000000, &l->max_pending);
	conf_field_unsigned(w, v, "max_requests", 0, 10000000, &l->max_requests);
	conf_field_unsigned(w, v, "max_retries", 0, 10000000, &l->max_retries);
	conf_field_close(w, &f);
}

/* ---- retry ---- */

static void walk_retry_on(struct conf_walker *w, int t, struct conf_retry *r)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "on", &f))
		return;
	int list = lua_gettop(w->L);
	size_t n;
	r->on = 0;
	if (conf_list_length(w, list, "{ \"connect-failure\", \"reset\", \"503\" }", &n)) {
		for (size_t i = 1; i <= n; i++) {
			struct conf_field item;
			conf_item_open(w, list, i, &item);
			int v = lua_gettop(w->L);
			const char *s = lua_type(w->L, v) == LUA_TSTRING ? lua_tostring(w->L, v) : NULL;
			if (s && strcmp(s, "connect-failure") == 0) {
				r->on |= CONF_RETRY_CONNECT_FAILURE;
			} else if (s && strcmp(s, "reset") == 0) {
				r->on |= CONF_RETRY_RESET;
			} else if (s && strcmp(s, "timeout") == 0) {
				r->on |= CONF_RETRY_TIMEOUT;
			} else if (s && strcmp(s, "5xx") == 0) {
				r->on |= CONF_RETRY_5XX;
			} else if (s && !(strlen(s) == 3 && s[0] >= '1' && s[0] <= '5')) {
				char *q = conf_quoted(s);
				conf_werr(w, "unknown retry condition %s (expected \"connect-failure\", \"reset\", \"timeout\", "
				             "\"5xx\" or a status like \"503\")",
				          q);
				free(q);
			} else {
				int st;
				if (value_status(w, v, &st)) {
					if (r->num_statuses < sizeof r->statuses / sizeof r->statuses[0])
						r->statuses[r->num_statuses++] = st;
					else
						conf_werr(w, "too many statuses (at most 16)");
				}
			}
			conf_field_close(w, &item);
		}
	}
	conf_field_close(w, &f);
}

static void walk_retry(struct conf_walker *w, int t, struct conf_pool *p)
{
	static const char *const keys[] = { "attempts", "on", "budget", "min_retries", NULL };
	struct conf_retry *r = &p->retry;
	r->attempts = 1;
	struct conf_field f;
	if (!conf_field_open_record(w, t, "retry", keys,
	                            "a table like { attempts = 2, on = { \"connect-failure\", \"503\" }, budget = 0.2 }", &f))
		return;
	int v = lua_gettop(w->L);
	r->attempts = 2;
	r->on = CONF_RETRY_CONNECT_FAILURE;
	r->budget = 0.2;
	r->min_retries = 3;
	conf_field_unsigned(w, v, "attempts", 1, 10, &r->attempts);
	walk_retry_on(w, v, r);
	field_rate(w, v, "budget", &r->budget);
	conf_field_unsigned(w, v, "min_retries", 0, 100000, &r->min_retries);
	conf_field_close(w, &f);
}

void conf_resilience_walk_pool(struct conf_walker *w, int t, struct conf_pool *p)
{
	walk_health_check(w, t, p);
	walk_breaker(w, t, p);
	walk_pool_limits(w, t, p);
	walk_retry(w, t, p);
	p->failure_statuses_set = field_status_list(w, t, "failure_statuses", p->failure_statuses,
	                                            sizeof p->failure_statuses / sizeof p->failure_statuses[0],
	                                            &p->num_failure_statuses);
}

void conf_resilience_free_pool(struct conf_pool *p)
{
	free(p->health_check.path);
	free(p->health_check.host);
}

bool conf_pool_failure_status(const struct conf_pool *p, int status)
{
	if (!p->failure_statuses_set)
		return status == 502 || status == 503 || status == 504;
	for (size_t i = 0; i < p->num_failure_statuses; i++)
		if (p->failure_statuses[i] == status)
			return true;
	return false;
}

bool conf_retry_on_status(const struct conf_retry *r, int status)
{
	if ((r->on & CONF_RETRY_5XX) && status >= 500 && status <= 599)
		return true;
	for (size_t i = 0; i < r->num_statuses; i++)
		if (r->statuses[i] == status)
			return true;
	return false;
}
