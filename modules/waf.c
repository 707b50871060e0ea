/* waf.c - the WAF module (waf.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _GNU_SOURCE
#endif

#include "waf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "conf_waf.h"
#include "counters.h"
#include "exchange.h"
#include "log.h"
#include "snapshot.h"
#include "waf_eval.h"
#include "waf_policy.h"
#include "waf_rules.h"
#include "worker.h"

struct waf_route_policy {
	bool on;
	bool detect;
	bool plan_shared; /* pol.plan is an earlier route's (the same rules run): not freed here */
	struct waf_policy pol; /* arrays below, owned */
	uint32_t *ids, *detect_ids;
	const char **tags;
	struct waf_exclusion *targets;
};

struct waf_snap {
	struct waf_ruleset *rs;
	bool body_limit_deny; /* waf.on_body_limit = "deny" */
	int audit_fd; /* -1: none */
	struct waf_route_policy *routes;
	size_t num_routes;
};

/* An evaluator belongs to one rule set, found by its snapshot's generation
 * (a freed rule set's address may come back for a later one); a worker
 * keeps the one for the current snapshot and the one before it (requests
 * still on it). */
struct waf_worker {
	uint64_t generation[2];
	struct waf_eval *ev[2];
};

#define MERGE(dst, n, a, an, b, bn)                                           \
	do {                                                                  \
		(n) = (an) + (bn);                                            \
		(dst) = calloc((n) ? (n) : 1, sizeof(*(dst)));                \
		if (!(dst))                                                   \
			goto oom;                                             \
		for (size_t k_ = 0; k_ < (an); k_++)                          \
			(dst)[k_] = (a)[k_];                                  \
		for (size_t k_ = 0; k_ < (bn); k_++)                          \
			(dst)[(an) + k_] = (b)[k_];                           \
	} while (0)

static bool build_route(struct waf_route_policy *p, const struct conf_waf_opts *top, const struct conf_waf_opts *own)
{
	static const struct conf_waf_opts none;
	if (!own)
		own = &none;
	p->on = true;
	p->pol.paranoia = own->has_paranoia ? own->paranoia : top->has_paranoia ? top->paranoia : 1;
	p->pol.threshold = own->has_threshold ? own->threshold : top->has_threshold ? top->threshold : 5;
	p->detect = own->has_mode ? own->detect : top->has_mode ? top->detect : false;
	size_t n;
	MERGE(p->ids, n, top->exclude_ids, top->num_exclude_ids, own->exclude_ids, own->num_exclude_ids);
	p->pol.exclude_ids = p->ids;
	p->pol.nexclude_ids = n;
	MERGE(p->detect_ids, n, top->detect_ids, top->num_detect_ids, own->detect_ids, own->num_detect_ids);
	p->pol.detect_ids = p->detect_ids;
	p->pol.ndetect_ids = n;
	MERGE(p->tags, n, top->exclude_tags, top->num_exclude_tags, own->exclude_tags, own->num_exclude_tags);
	p->pol.exclude_tags = p->tags;
	p->pol.nexclude_tags = n;
	MERGE(p->targets, n, top->exclude_targets, top->num_exclude_targets, own->exclude_targets,
	      own->num_exclude_targets);
	p->pol.exclude_targets = p->targets;
	p->pol.nexclude_targets = n;
	return true;
oom:
	return false;
}

static bool same_ids(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
	return na == nb && (na == 0 || memcmp(a, b, na * sizeof(*a)) == 0);
}

/* Whether two policies run the same rules (what a plan holds: the
 * threshold and target exclusions are applied per request). */
static bool same_rules(const struct waf_policy *a, const struct waf_policy *b)
{
	if (a->paranoia != b->paranoia || !same_ids(a->exclude_ids, a->nexclude_ids, b->exclude_ids, b->nexclude_ids) ||
	    !same_ids(a->detect_ids, a->ndetect_ids, b->detect_ids, b->ndetect_ids) ||
	    a->nexclude_tags != b->nexclude_tags)
		return false;
	for (size_t i = 0; i < a->nexclude_tags; i++)
		if (strcmp(a->exclude_tags[i], b->exclude_tags[i]) != 0)
			return false;
	return true;
}

static void snap_free(void *state)
{
	struct waf_snap *s = state;
	if (!s)
		return;
	for (size_t i = 0; i < s->num_routes; i++) {
		if (s->routes[i].plan_shared)
			s->routes[i].pol.plan = NULL;
		waf_policy_release(&s->routes[i].pol);
		free(s->routes[i].ids);
		free(s->routes[i].detect_ids);
		free(s->routes[i].tags);
		free(s->routes[i].targets);
	}
	free(s->routes);
	if (s->audit_fd >= 0)
		close(s->audit_fd);
	waf_rules_free(s->rs);
	free(s);
}

static int snap_init(const struct conf *c, void **state, struct conf_errors *errs)
{
	*state = NULL;
	const struct conf_waf *cw = c->waf;
	if (!cw)
		return 0;
	struct waf_snap *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->audit_fd = -1;
	s->body_limit_deny = cw->body_limit_deny;
	s->routes = calloc(c->num_routes ? c->num_routes : 1, sizeof(*s->routes));
	if (!s->routes)
		goto fail;
	s->num_routes = c->num_routes;
	bool any = false;
	for (size_t i = 0; i < c->num_routes; i++) {
		const struct conf_waf_route *wr = i < cw->num_routes ? &cw->routes[i] : NULL;
		enum conf_waf_route_state st = wr ? wr->state : CONF_WAF_INHERIT;
		if (st == CONF_WAF_OFF || (st == CONF_WAF_INHERIT && !cw->top))
			continue;
		if (!build_route(&s->routes[i], &cw->opts, st == CONF_WAF_OWN ? &wr->opts : NULL))
			goto fail;
		any = true;
	}
	if (!any && !cw->top) {
		snap_free(s);
		return 0;
	}
	char *def = NULL;
	const char *dir = cw->rules_dir;
	if (!dir) {
		def = strdup(SLUICE_SRCDIR "/lua/waf");
		dir = def;
	}
	s->rs = dir ? waf_rules_load(dir, errs) : NULL;
	free(def);
	if (!s->rs)
		goto fail;
	/* routes that run the same rules share one plan (most inherit the
	 * top-level settings): a plan is some kilobytes per route */
	for (size_t i = 0; i < s->num_routes; i++) {
		struct waf_route_policy *rp = &s->routes[i];
		if (!rp->on)
			continue;
		for (size_t j = 0; j < i && !rp->plan_shared; j++)
			if (s->routes[j].on && same_rules(&s->routes[j].pol, &rp->pol)) {
				rp->pol.plan = s->routes[j].pol.plan;
				rp->plan_shared = true;
			}
		if (!rp->plan_shared && !waf_policy_prepare(s->rs, &rp->pol)) {
			conf_errors_add(errs, "waf: out of memory planning the rules of route %zu", i + 1);
			goto fail;
		}
	}
	if (cw->audit_log) {
		s->audit_fd = open(cw->audit_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (s->audit_fd < 0) {
			conf_errors_add(errs, "waf.audit_log: cannot open %s: %s", cw->audit_log, strerror(errno));
			goto fail;
		}
	}
	*state = s;
	return 0;
fail:
	snap_free(s);
	return -1;
}

static void snap_reopen(const struct conf *c, void *state)
{
	struct waf_snap *s = state;
	if (!s || s->audit_fd < 0 || !c->waf || !c->waf->audit_log)
		return;
	int fd = open(c->waf->audit_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	struct log_line l;
	if (fd < 0 || dup3(fd, s->audit_fd, O_CLOEXEC) < 0) {
		log_begin(&l, LOG_ERROR, "waf audit log: cannot reopen; still writing to the old file");
		log_str(&l, "file", c->waf->audit_log);
		log_str(&l, "error", strerror(errno));
	} else {
		log_begin(&l, LOG_INFO, "waf audit log reopened");
		log_str(&l, "file", c->waf->audit_log);
	}
	log_end(&l);
	if (fd >= 0)
		close(fd);
}

static int waf_worker_init(struct worker *w, void **state)
{
	(void)w;
	*state = calloc(1, sizeof(struct waf_worker));
	return *state ? 0 : -1;
}

static void waf_worker_free(void *state)
{
	struct waf_worker *ww = state;
	if (!ww)
		return;
	waf_eval_free(ww->ev[0]);
	waf_eval_free(ww->ev[1]);
	free(ww);
}

static struct waf_eval *eval_for(struct waf_worker *ww, const struct waf_ruleset *rs, uint64_t generation)
{
	for (int i = 0; i < 2; i++)
		if (ww->generation[i] == generation && ww->ev[i])
			return ww->ev[i];
	/* the older slot goes: its snapshot has no requests left on this worker
	 * by the time a third one is adopted, or it is rebuilt if one comes */
	waf_eval_free(ww->ev[1]);
	ww->ev[1] = ww->ev[0];
	ww->generation[1] = ww->generation[0];
	ww->ev[0] = waf_eval_new(rs);
	ww->generation[0] = ww->ev[0] ? generation : 0;
	return ww->ev[0];
}

static char *adup(struct request *r, const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = arena_alloc(&r->arena, n);
	memcpy(p, s, n);
	return p;
}

struct abuf {
	char b[8192];
	size_t len;
};

static void araw(struct abuf *a, const char *s, size_t n)
{
	if (a->len + n < sizeof(a->b) - 2) {
		memcpy(a->b + a->len, s, n);
		a->len += n;
	}
}

static void astr(struct abuf *a, const char *key, const char *v, size_t n)
{
	araw(a, "\"", 1);
	araw(a, key, strlen(key));
	araw(a, "\":\"", 3);
	(void)log_json_escape(a->b, sizeof(a->b) - 64, &a->len, v, n);
	araw(a, "\"", 1);
}

static void audit(const struct waf_snap *s, struct request *r, const struct waf_verdict *v, const char *action)
{
	struct abuf a;
	a.len = 0;
	char ts[32], num[32];
	log_format_time(r->start_wall_us, ts);
	araw(&a, "{", 1);
	astr(&a, "time", ts, strlen(ts));
	araw(&a, ",", 1);
	astr(&a, "request_id", r->request_id, strlen(r->request_id));
	araw(&a, ",", 1);
	astr(&a, "client_ip", r->client_ip, strlen(r->client_ip));
	araw(&a, ",", 1);
	astr(&a, "method", r->method, strlen(r->method));
	araw(&a, ",", 1);
	astr(&a, "path", r->path, strnlen(r->path, 256));
	araw(&a, ",", 1);
	astr(&a, "route", r->route_name ? r->route_name : "", r->route_name ? strlen(r->route_name) : 0);
	araw(&a, ",", 1);
	astr(&a, "action", action, strlen(action));
	int k = snprintf(num, sizeof(num), ",\"score\":%d,\"matches\":[", v->score);
	araw(&a, num, (size_t)k);
	for (size_t i = 0; i < v->nhits; i++) {
		const struct waf_hit *h = &v->hits[i];
		k = snprintf(num, sizeof(num), "%s{\"rule\":%u,", i ? "," : "", h->rule_id);
		araw(&a, num, (size_t)k);
		char target[80];
		int tl = snprintf(target, sizeof(target), "%s%s%s", waf_target_name(h->target), h->name[0] ? ":" : "",
		                  h->name);
		astr(&a, "target", target, (size_t)(tl > 0 ? tl : 0) < sizeof(target) ? (size_t)tl : sizeof(target) - 1);
		araw(&a, ",", 1);
		astr(&a, "snippet", h->snippet, strlen(h->snippet));
		araw(&a, ",", 1);
		astr(&a, "message", h->message, strlen(h->message));
		if (h->detect_only)
			araw(&a, ",\"detect_only\":true", 19);
		araw(&a, "}", 1);
	}
	araw(&a, "]}\n", 3);
	/* one write per line: lines from several workers never interleave */
	ssize_t w = write(s->audit_fd, a.b, a.len);
	(void)w;
}

/* The route's sluice_route_waf_total{outcome}, and for a block its
 * sluice_route_waf_blocks_total{group} of every group matched. */
static void count(const struct request *r, enum ctr_waf_outcome o, uint32_t groups)
{
	counters_route_add(r, CTR_ROUTE_WAF + o, 1);
	for (unsigned g = 0; o == CTR_WAF_BLOCKED && g < CTR_WAF_GROUP__COUNT; g++)
		if (groups & (1u << g))
			counters_route_add(r, CTR_ROUTE_WAF_BLOCKS + g, 1);
}

static enum phase_result waf_access(struct request *r, const void *snapshot_state, void *worker_state,
                                    struct phase_deny *deny)
{
	const struct waf_snap *s = snapshot_state;
	if (!s || r->route < 0 || (size_t)r->route >= s->num_routes || !s->routes[r->route].on)
		return PHASE_CONTINUE;
	const struct waf_route_policy *rp = &s->routes[r->route];
	struct waf_eval *ev = eval_for(worker_state, s->rs, r->snap->generation);
	if (!ev) {
		count(r, CTR_WAF_ERROR, 0);
		return PHASE_ERROR; /* out of memory: policy_error, never an uninspected pass */
	}
	size_t nh = r->headers.n;
	struct waf_field *hf = arena_alloc(&r->arena, (nh ? nh : 1) * sizeof(*hf));
	for (size_t i = 0; i < nh; i++) {
		const struct http_header *h = &r->headers.v[i];
		hf[i] = (struct waf_field){h->name, h->name_len, h->value, h->value_len};
	}
	const char *target = r->origin_target ? r->origin_target : r->target;
	struct waf_request req = {
	    .method = r->method,
	    .method_len = strlen(r->method),
	    .target = target,
	    .target_len = strlen(target),
	    .headers = hf,
	    .nheaders = nh,
	};
	/* the body read before this phase (waf.body_limit): inspected when whole */
	struct exchange *ex = ex_of(r);
	size_t held = ex->body_buf ? evbuffer_get_length(ex->body_buf) : 0;
	bool over_limit = held && !ex->body_done; /* larger than waf.body_limit: the head alone is inspected */
	if (held && ex->body_done) {
		req.body = (const char *)evbuffer_pullup(ex->body_buf, -1);
		req.body_len = req.body ? held : 0;
	} else if (held && s->body_limit_deny && !rp->detect) {
		/* larger than waf.body_limit: not inspectable, refused on request */
		if (!r->log_fields.arena)
			fields_init(&r->log_fields, &r->arena);
		fields_set(&r->log_fields, "waf_action", "body_limit");
		count(r, CTR_WAF_BODY_LIMIT, 0);
		phase_deny_init(deny, r, 413, REASON_WAF_DENIED);
		return PHASE_DENY;
	}
	struct waf_verdict v;
	waf_evaluate(ev, &rp->pol, &req, &v);
	bool block = v.block && !rp->detect;
	count(r,
	      block            ? CTR_WAF_BLOCKED
	      : v.total_hits   ? CTR_WAF_DETECTED
	      : over_limit     ? CTR_WAF_BODY_LIMIT
	      : v.regex_limits ? CTR_WAF_BUDGET
	                       : CTR_WAF_PASSED,
	      v.groups);
	if (v.total_hits == 0)
		return PHASE_CONTINUE;
	const char *action = block ? "block" : "detect";
	/* the access-log line: score, rule ids, what was done */
	char ids[WAF_MAX_HITS * 12 + 1];
	size_t il = 0;
	ids[0] = '\0';
	for (size_t i = 0; i < v.nhits; i++)
		il += (size_t)snprintf(ids + il, sizeof(ids) - il, "%s%u", i ? "," : "", v.hits[i].rule_id);
	char score[16];
	snprintf(score, sizeof(score), "%d", v.score);
	if (!r->log_fields.arena)
		fields_init(&r->log_fields, &r->arena);
	fields_set(&r->log_fields, "waf_score", adup(r, score));
	fields_set(&r->log_fields, "waf_rules", adup(r, ids));
	fields_set(&r->log_fields, "waf_action", action);
	if (s->audit_fd >= 0)
		audit(s, r, &v, action);
	if (!block)
		return PHASE_CONTINUE;
	phase_deny_init(deny, r, 403, REASON_WAF_DENIED);
	char body[160];
	int bl = snprintf(body, sizeof(body), "403 Forbidden: blocked by the web application firewall (request id %s)\n",
	                  r->request_id);
	deny->body = adup(r, body);
	deny->body_len = (size_t)bl < sizeof(body) ? (size_t)bl : sizeof(body) - 1;
	return PHASE_DENY;
}

const struct module waf_module = {
    .name = "waf",
    .snapshot_init = snap_init,
    .snapshot_free = snap_free,
    .worker_init = waf_worker_init,
    .worker_free = waf_worker_free,
    .reopen = snap_reopen,
    .access = waf_access,
    .conf = &conf_waf_section,
};
