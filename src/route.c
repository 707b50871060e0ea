#define PCRE2_CODE_UNIT_WIDTH 8

#include "route.h"

#include <limits.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "counters.h"
#include "log.h"

/* Paths are attacker-controlled while patterns are not, so a pattern with
 * catastrophic backtracking must not let one request pin a worker: past
 * limits.regex_match_limit internal steps (CONF_REGEX_MATCH_LIMIT_DEFAULT
 * unless set) the match is abandoned, counted, logged and taken as "no match". */

/* At most one log line per worker per interval about abandoned matches; the
 * others are counted in the next line's "suppressed". */
#define ROUTE_REGEX_LOG_INTERVAL_MS 1000u

/* The default JIT stack (32 KiB on the machine stack) is too small for some
 * legitimate patterns, and running out silently turns into "no match"; a
 * per-worker heap stack that grows to this bound avoids that. */
#define ROUTE_JIT_STACK_START (32u * 1024u)
#define ROUTE_JIT_STACK_MAX (512u * 1024u)

enum host_rule { HOST_ANY, HOST_EXACT, HOST_WILDCARD };

/* A host pattern reduced to what matching needs: for HOST_WILDCARD the
 * suffix keeps its leading dot (".example.com"), so a match is one length
 * check and one compare from the end. */
struct host_pattern {
	enum host_rule rule;
	const char *text;
	size_t len;
	bool text_is_lower; /* then only the request's side needs folding */
};

struct sized_str {
	const char *ptr;
	size_t len;
};

struct compiled_header {
	struct sized_str name;
	struct sized_str value;
};

struct compiled_route {
	struct host_pattern host; /* its text is host_lower, folded once at build */
	char *host_lower;

	bool has_path;
	struct sized_str path;
	bool has_prefix;
	struct sized_str prefix;

	pcre2_code *regex; /* NULL when the route has no path_regex */
	bool regex_jit;
	const char *name; /* the conf route's name, for log lines */

	struct sized_str *methods; /* NULL when any method matches */
	size_t num_methods;

	struct compiled_header *headers;
	size_t num_headers;

	bool has_client_subject;
	struct sized_str client_subject; /* exact RFC 2253 subject of the verified client certificate */
};

/* The compiled routes point into the conf's strings rather than copying
 * them, which is why the conf must outlive the table. */
struct route_table {
	size_t num_routes;
	uint32_t regex_match_limit;
	bool uses_client_subject; /* some route has has_client_subject */
	struct compiled_route routes[];
};

struct route_scratch {
	pcre2_match_data *match_data;
	pcre2_match_context *match_context;
	pcre2_jit_stack *jit_stack;
	uint32_t match_limit;         /* what match_context holds now (tables may differ across reloads) */
	uint64_t regex_gave_up;       /* matches abandoned at a limit, since the scratch was made */
	struct ctr_worker *counters;  /* the worker's registry set (sluice_route_regex_give_ups_total) */
	uint64_t regex_unlogged;      /* of those, not yet in a log line */
	uint64_t regex_last_log_ms;   /* monotonic; 0: never logged */
};

static unsigned char ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Locale-independent on purpose: host names and header names are ASCII
 * protocol elements, and strncasecmp would follow the process locale. */
static bool ascii_case_equal(const char *a, const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
			return false;
	return true;
}

static bool ascii_equal_to_lower(const char *mixed, const char *lower, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (ascii_lower((unsigned char)mixed[i]) != (unsigned char)lower[i])
			return false;
	return true;
}

static bool bytes_equal(const char *a, size_t a_len, const char *b, size_t b_len)
{
	return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

/* "example.com." names the same host as "example.com" (the root label), and
 * clients do send it; ignoring it keeps such requests on their routes. */
static size_t host_without_root_dot(const char *host, size_t host_len)
{
	if (host_len > 0 && host[host_len - 1] == '.')
		return host_len - 1;
	return host_len;
}

static struct host_pattern host_pattern_parse(const char *pattern)
{
	struct host_pattern hp = { HOST_ANY, NULL, 0, false };
	if (pattern == NULL)
		return hp;
	hp.rule = HOST_EXACT;
	hp.text = pattern;
	if (pattern[0] == '*' && pattern[1] == '.') {
		hp.rule = HOST_WILDCARD;
		hp.text = pattern + 1;
	}
	hp.len = host_without_root_dot(hp.text, strlen(hp.text));
	return hp;
}

static bool host_pattern_matches(const struct host_pattern *hp, const char *host, size_t host_len)
{
	if (hp->rule == HOST_ANY)
		return true;
	if (host == NULL)
		return false;
	host_len = host_without_root_dot(host, host_len);
	const char *compared = host;
	if (hp->rule == HOST_EXACT) {
		if (host_len != hp->len)
			return false;
	} else {
		/* strictly longer than the suffix: at least one label before the
		 * dot, so the apex itself does not match */
		if (host_len <= hp->len)
			return false;
		compared = host + host_len - hp->len;
	}
	if (hp->text_is_lower)
		return ascii_equal_to_lower(compared, hp->text, hp->len);
	return ascii_case_equal(compared, hp->text, hp->len);
}

int route_host_matches(const char *pattern, const char *host, size_t host_len)
{
	struct host_pattern hp = host_pattern_parse(pattern);
	return host_pattern_matches(&hp, host, host_len);
}

static bool method_matches(const struct compiled_route *r, const char *method, size_t method_len)
{
	if (r->methods == NULL)
		return true;
	if (method == NULL)
		return false;
	for (size_t i = 0; i < r->num_methods; i++)
		if (bytes_equal(r->methods[i].ptr, r->methods[i].len, method, method_len))
			return true;
	return false;
}

static bool header_present(const struct compiled_header *want, const struct http_header *hs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct http_header *h = &hs[i];
		if (h->name_len == want->name.len && ascii_case_equal(h->name, want->name.ptr, h->name_len) &&
		    bytes_equal(h->value, h->value_len, want->value.ptr, want->value.len))
			return true;
	}
	return false;
}

static bool headers_match(const struct compiled_route *r, const struct http_header *hs, size_t n)
{
	for (size_t i = 0; i < r->num_headers; i++)
		if (!header_present(&r->headers[i], hs, n))
			return false;
	return true;
}

static uint64_t monotonic_ms(void)
{
	return clock_mono_us() / 1000u;
}

/* A match abandoned at a limit (match, depth, heap or JIT stack): the request
 * falls through to the next route, which must not happen silently. */
static void regex_gave_up(const struct compiled_route *r, struct route_scratch *s, int rc)
{
	s->regex_gave_up++;
	CTR_GLOBAL_ADD(s->counters, ROUTE_REGEX_GIVE_UPS, 0, 1);
	s->regex_unlogged++;
	uint64_t now = monotonic_ms();
	if (s->regex_last_log_ms != 0 && now - s->regex_last_log_ms < ROUTE_REGEX_LOG_INTERVAL_MS)
		return;
	s->regex_last_log_ms = now ? now : 1;
	char why[128];
	if (pcre2_get_error_message(rc, (PCRE2_UCHAR *)why, sizeof why) < 0)
		snprintf(why, sizeof why, "PCRE2 error %d", rc);
	struct log_line l;
	log_begin(&l, LOG_WARN, "route path_regex gave up on a path; taken as no match, the next routes were tried");
	log_str(&l, "route", r->name);
	log_str(&l, "error", why);
	log_int(&l, "regex_match_limit", (long long)s->match_limit);
	log_int(&l, "count", (long long)s->regex_unlogged);
	log_int(&l, "total", (long long)s->regex_gave_up);
	log_end(&l);
	s->regex_unlogged = 0;
}

static bool regex_matches(const struct compiled_route *r, struct route_scratch *s, const char *path, size_t path_len)
{
	/* not every PCRE2 release accepts a NULL subject, even an empty one */
	PCRE2_SPTR subject = (PCRE2_SPTR)(path != NULL ? path : "");
	int rc;
	if (r->regex_jit)
		rc = pcre2_jit_match(r->regex, subject, path_len, 0, 0, s->match_data, s->match_context);
	else
		rc = pcre2_match(r->regex, subject, path_len, 0, 0, s->match_data, s->match_context);
	/* 0 means "matched, but the one-pair ovector could not hold the groups":
	 * still a match. Every error, including the match limit, is a non-match. */
	if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
		regex_gave_up(r, s, rc);
	return rc >= 0;
}

int route_match(const struct route_table *t, struct route_scratch *s, const struct route_input *in)
{
	if (s->match_limit != t->regex_match_limit && pcre2_set_match_limit(s->match_context, t->regex_match_limit) == 0)
		s->match_limit = t->regex_match_limit;
	for (size_t i = 0; i < t->num_routes; i++) {
		const struct compiled_route *r = &t->routes[i];
		/* cheapest tests first; the regex runs only when all else holds */
		if (!host_pattern_matches(&r->host, in->host, in->host_len))
			continue;
		if (!method_matches(r, in->method, in->method_len))
			continue;
		if (r->has_path && !bytes_equal(in->path, in->path_len, r->path.ptr, r->path.len))
			continue;
		if (r->has_prefix && (in->path_len < r->prefix.len ||
		                      (r->prefix.len > 0 && memcmp(in->path, r->prefix.ptr, r->prefix.len) != 0)))
			continue;
		if (r->num_headers > 0 && !headers_match(r, in->headers, in->num_headers))
			continue;
		/* Exact and case-sensitive, as sluice prints the subject (the access log's
		 * tls_client_subject); no verified certificate never matches. */
		if (r->has_client_subject &&
		    (in->client_subject == NULL ||
		     !bytes_equal(in->client_subject, strlen(in->client_subject), r->client_subject.ptr,
		                  r->client_subject.len)))
			continue;
		if (r->regex != NULL && !regex_matches(r, s, in->path, in->path_len))
			continue;
		return (int)i; /* route_table_build keeps num_routes <= INT_MAX */
	}
	return -1;
}

bool route_table_uses_client_subject(const struct route_table *t)
{
	return t->uses_client_subject;
}

bool route_regex_uses_jit(const struct route_table *t, size_t route_index)
{
	return route_index < t->num_routes && t->routes[route_index].regex_jit;
}

static struct sized_str sized(const char *s)
{
	struct sized_str out = { s, s != NULL ? strlen(s) : 0 };
	return out;
}

static bool compile_host(struct compiled_route *cr, const char *host)
{
	cr->host = host_pattern_parse(host);
	if (cr->host.rule == HOST_ANY)
		return true;
	cr->host_lower = malloc(cr->host.len + 1);
	if (cr->host_lower == NULL)
		return false;
	for (size_t i = 0; i < cr->host.len; i++)
		cr->host_lower[i] = (char)ascii_lower((unsigned char)cr->host.text[i]);
	cr->host_lower[cr->host.len] = '\0';
	cr->host.text = cr->host_lower;
	cr->host.text_is_lower = true;
	return true;
}

static bool compile_methods(struct compiled_route *cr, const struct conf_route *route)
{
	if (route->methods == NULL || route->num_methods == 0)
		return true;
	cr->methods = calloc(route->num_methods, sizeof(*cr->methods));
	if (cr->methods == NULL)
		return false;
	for (size_t i = 0; i < route->num_methods; i++)
		cr->methods[i] = sized(route->methods[i]);
	cr->num_methods = route->num_methods;
	return true;
}

static bool compile_headers(struct compiled_route *cr, const struct conf_route *route)
{
	if (route->headers == NULL || route->num_headers == 0)
		return true;
	cr->headers = calloc(route->num_headers, sizeof(*cr->headers));
	if (cr->headers == NULL)
		return false;
	for (size_t i = 0; i < route->num_headers; i++) {
		cr->headers[i].name = sized(route->headers[i].name);
		cr->headers[i].value = sized(route->headers[i].value);
	}
	cr->num_headers = route->num_headers;
	return true;
}

enum regex_outcome { REGEX_OK, REGEX_BAD_PATTERN, REGEX_NO_MEMORY };

static enum regex_outcome compile_regex(struct compiled_route *cr, const char *pattern, const char *source,
                                        size_t route_index, struct conf_errors *errs)
{
	if (pattern == NULL)
		return REGEX_OK;
	int error_code = 0;
	PCRE2_SIZE error_offset = 0;
	cr->regex = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &error_code, &error_offset, NULL);
	if (cr->regex == NULL) {
		if (error_code == PCRE2_ERROR_NOMEMORY)
			return REGEX_NO_MEMORY;
		PCRE2_UCHAR message[256];
		if (pcre2_get_error_message(error_code, message, sizeof(message)) < 0)
			strcpy((char *)message, "invalid regular expression");
		conf_errors_add(errs, "%s: routes[%zu].match.path_regex: %s at offset %zu", source,
		                route_index + 1, (const char *)message, (size_t)error_offset);
		return REGEX_BAD_PATTERN;
	}
	/* JIT may be missing (built without it, or W^X memory policy); the
	 * interpreter gives the same answers, only slower, so it is not an error. */
	cr->regex_jit = pcre2_jit_compile(cr->regex, PCRE2_JIT_COMPLETE) == 0;
	return REGEX_OK;
}

static void compiled_route_release(struct compiled_route *cr)
{
	free(cr->host_lower);
	free(cr->methods);
	free(cr->headers);
	pcre2_code_free(cr->regex);
}

void route_table_free(struct route_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->num_routes; i++)
		compiled_route_release(&t->routes[i]);
	free(t);
}

struct route_table *route_table_build(const struct conf *c, struct conf_errors *errs)
{
	const char *source = c->source != NULL ? c->source : "config";
	if (c->num_routes > (SIZE_MAX - sizeof(struct route_table)) / sizeof(struct compiled_route) ||
	    c->num_routes > (size_t)INT_MAX) {
		conf_errors_add(errs, "%s: routes: too many routes (%zu)", source, c->num_routes);
		return NULL;
	}
	/* calloc so that a partly built table can be released by route_table_free */
	struct route_table *t = calloc(1, sizeof(*t) + c->num_routes * sizeof(struct compiled_route));
	if (t == NULL) {
		conf_errors_add(errs, "%s: routes: out of memory compiling the route table", source);
		return NULL;
	}
	t->num_routes = c->num_routes;
	t->regex_match_limit = c->limits.regex_match_limit ? c->limits.regex_match_limit : CONF_REGEX_MATCH_LIMIT_DEFAULT;

	bool failed = false;
	for (size_t i = 0; i < c->num_routes; i++) {
		struct compiled_route *cr = &t->routes[i];
		const struct conf_route *route = &c->routes[i];
		cr->name = route->name;
		cr->has_path = route->path != NULL;
		cr->path = sized(route->path);
		cr->has_prefix = route->path_prefix != NULL;
		cr->prefix = sized(route->path_prefix);
		cr->has_client_subject = route->client_cert_subject != NULL;
		cr->client_subject = sized(route->client_cert_subject);
		t->uses_client_subject |= cr->has_client_subject;
		if (!compile_host(cr, route->host) || !compile_methods(cr, route) || !compile_headers(cr, route)) {
			conf_errors_add(errs, "%s: routes[%zu]: out of memory compiling the route", source, i + 1);
			route_table_free(t);
			return NULL;
		}
		/* keep going past a bad pattern so that every one is reported at once */
		switch (compile_regex(cr, route->path_regex, source, i, errs)) {
		case REGEX_OK:
			break;
		case REGEX_BAD_PATTERN:
			failed = true;
			break;
		case REGEX_NO_MEMORY:
			conf_errors_add(errs, "%s: routes[%zu].match.path_regex: out of memory", source, i + 1);
			route_table_free(t);
			return NULL;
		}
	}
	if (failed) {
		route_table_free(t);
		return NULL;
	}
	return t;
}

struct route_scratch *route_scratch_new(void)
{
	struct route_scratch *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	/* one pair: the router only needs to know whether a pattern matched, and
	 * a fixed size keeps the scratch independent of any one table, so it
	 * survives reloads */
	s->match_data = pcre2_match_data_create(1, NULL);
	s->match_context = pcre2_match_context_create(NULL);
	if (s->match_data == NULL || s->match_context == NULL ||
	    pcre2_set_match_limit(s->match_context, CONF_REGEX_MATCH_LIMIT_DEFAULT) != 0) {
		route_scratch_free(s);
		return NULL;
	}
	/* without JIT support there is no JIT stack to make (creation would fail),
	 * and the interpreter does not need one */
	uint32_t jit_available = 0;
	if (pcre2_config(PCRE2_CONFIG_JIT, &jit_available) >= 0 && jit_available) {
		s->jit_stack = pcre2_jit_stack_create(ROUTE_JIT_STACK_START, ROUTE_JIT_STACK_MAX, NULL);
		if (s->jit_stack == NULL) {
			route_scratch_free(s);
			return NULL;
		}
		pcre2_jit_stack_assign(s->match_context, NULL, s->jit_stack);
	}
	s->match_limit = CONF_REGEX_MATCH_LIMIT_DEFAULT;
	return s;
}

void route_scratch_count_into(struct route_scratch *s, struct ctr_worker *cw)
{
	s->counters = cw;
}

uint64_t route_scratch_regex_gave_up(const struct route_scratch *s)
{
	return s->regex_gave_up;
}

void route_scratch_free(struct route_scratch *s)
{
	if (s == NULL)
		return;
	pcre2_match_data_free(s->match_data);
	pcre2_match_context_free(s->match_context);
	pcre2_jit_stack_free(s->jit_stack);
	free(s);
}
