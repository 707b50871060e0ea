/* rollout.c - the canary rollout controller (rollout.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "rollout.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin_reply.h"
#include "clock.h"
#include "conf.h"
#include "counters.h"
#include "log.h"
#include "runtime.h"
#include "snapshot.h"
#include "statefile.h"

#define ROLLOUT_TICK_MS 100
#define ROLLOUT_HISTORY 32
/* a state-file line is at most 1023 bytes: "rollout ", a service name of up to 64, this */
#define ROLLOUT_LINE_MAX 900
/* the split a step sets is out of this total (weights go up to 1000 in ctl) */
#define ROLLOUT_WEIGHT_TOTAL 1000

enum rollout_state { RO_RUNNING, RO_PAUSED, RO_COMPLETED, RO_ABORTED, RO_ROLLED_BACK, RO_STOPPED };
static const char *const state_names[] = { "running", "paused", "completed", "aborted", "rolled_back", "stopped" };

struct rollout_event {
	uint64_t wall_us;
	char text[240];
};

/* The figures of one judged interval. */
struct rollout_judged {
	bool set;
	uint64_t canary_requests, canary_errors, stable_requests, stable_errors;
	unsigned canary_p99_ms, stable_p99_ms;
};

struct rollout {
	char *service, *canary;
	unsigned steps[ROLLOUT_MAX_STEPS];
	size_t num_steps, step; /* step: index of the current step */
	uint64_t interval_ms;
	double max_error_rate;
	uint64_t max_p99_ms; /* 0: no latency limit */
	uint64_t min_requests;
	enum rollout_state state;
	/* the split before the rollout, by pool name, for abort and rollback */
	char **start_pools;
	unsigned *start_weights;
	size_t num_start;
	/* the current interval */
	uint64_t interval_start_ms;
	struct runtime_figures base_canary, base_stable;
	struct rollout_judged last;
	char verdict[256];
	struct rollout_event history[ROLLOUT_HISTORY];
	size_t num_history; /* total ever; the last ROLLOUT_HISTORY are kept */
};

struct rollout_ctl {
	struct runtime *rt;
	struct snapshot *const *snap;
	struct statefile *sf;
	struct event *tick;
	bool held; /* a binary upgrade: the new process drives the rollouts (rollout_ctl_hold) */
	struct rollout **rollouts;
	size_t num_rollouts;
	const struct rollout_fleet_ops *fleet; /* NULL: this instance alone */
	void *fleet_arg;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void rollout_free(struct rollout *ro)
{
	if (!ro)
		return;
	free(ro->service);
	free(ro->canary);
	for (size_t i = 0; i < ro->num_start; i++)
		free(ro->start_pools[i]);
	free(ro->start_pools);
	free(ro->start_weights);
	free(ro);
}

/* ---- parsing ---------------------------------------------------------- */

bool rollout_parse_rate(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !isfinite(v) || v < 0)
		return false;
	if (*end == '%') {
		v /= 100;
		end++;
	}
	if (*end || v > 1)
		return false;
	*out = v;
	return true;
}

bool rollout_parse_steps(const char *s, unsigned *steps, size_t *n)
{
	size_t k = 0;
	const char *p = s;
	while (*p) {
		if (k == ROLLOUT_MAX_STEPS || *p < '0' || *p > '9')
			return false;
		unsigned v = 0;
		while (*p >= '0' && *p <= '9' && v <= 100)
			v = v * 10 + (unsigned)(*p++ - '0');
		if (v < 1 || v > 100 || (k && v <= steps[k - 1]))
			return false;
		steps[k++] = v;
		if (*p == ',' && p[1])
			p++;
		else if (*p)
			return false;
	}
	*n = k;
	return k > 0;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	if (!*s)
		return false;
	uint64_t v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

/* ---- the service's pools ---------------------------------------------- */

static const struct conf *cur_conf(const struct rollout_ctl *rc)
{
	return (*rc->snap)->conf;
}

static const struct conf_service *find_service(const struct conf *c, const char *name)
{
	int i = conf_find_service(c, name);
	return i < 0 ? NULL : &c->services[i];
}

static const char *pool_name(const struct conf *c, const struct conf_service *sv, size_t i)
{
	return c->pools[sv->pools[i].pool].name;
}

static unsigned start_weight(const struct rollout *ro, const char *pool)
{
	for (size_t i = 0; i < ro->num_start; i++)
		if (strcmp(ro->start_pools[i], pool) == 0)
			return ro->start_weights[i];
	return 0;
}

/* Is the canary (and the service) still in the config? */
static bool still_configured(const struct conf *c, const struct rollout *ro, const struct conf_service **svp)
{
	const struct conf_service *sv = find_service(c, ro->service);
	if (!sv)
		return false;
	for (size_t i = 0; i < sv->num_pools; i++)
		if (strcmp(pool_name(c, sv, i), ro->canary) == 0) {
			*svp = sv;
			return true;
		}
	return false;
}

/* The canary's figures and the sum of the stable pools' (those with a start
 * weight above 0). */
static void read_figures(struct rollout_ctl *rc, const struct conf_service *sv, const struct rollout *ro,
                         struct runtime_figures *canary, struct runtime_figures *stable)
{
	const struct conf *c = cur_conf(rc);
	memset(canary, 0, sizeof *canary);
	memset(stable, 0, sizeof *stable);
	for (size_t i = 0; i < sv->num_pools; i++) {
		const char *name = pool_name(c, sv, i);
		struct runtime_pool *p = runtime_find_pool(rc->rt, name);
		if (!p)
			continue;
		struct runtime_figures f;
		runtime_outcome_read(p, &f);
		if (rc->fleet)
			rc->fleet->add_figures(rc->fleet_arg, name, &f);
		bool is_canary = strcmp(name, ro->canary) == 0;
		if (!is_canary && start_weight(ro, name) == 0)
			continue;
		struct runtime_figures *into = is_canary ? canary : stable;
		into->attempts += f.attempts;
		into->errors += f.errors;
		for (size_t b = 0; b < RUNTIME_LATENCY_BUCKETS; b++)
			into->latency[b] += f.latency[b];
	}
}

static void new_interval(struct rollout_ctl *rc, const struct conf_service *sv, struct rollout *ro)
{
	ro->interval_start_ms = mono_ms();
	read_figures(rc, sv, ro, &ro->base_canary, &ro->base_stable);
}

/* Weights for a canary share of pct percent (0..100). */
static void set_share(struct rollout_ctl *rc, const struct conf_service *sv, const struct rollout *ro, unsigned pct)
{
	const struct conf *c = cur_conf(rc);
	unsigned *w = calloc(sv->num_pools, sizeof *w);
	if (!w) {
		log_msg(LOG_ERROR, "rollout: out of memory setting weights");
		return;
	}
	uint64_t stable_total = 0;
	for (size_t i = 0; i < sv->num_pools; i++)
		if (strcmp(pool_name(c, sv, i), ro->canary) != 0)
			stable_total += start_weight(ro, pool_name(c, sv, i));
	unsigned rest = ROLLOUT_WEIGHT_TOTAL - pct * (ROLLOUT_WEIGHT_TOTAL / 100), given = 0;
	size_t first_stable = sv->num_pools;
	for (size_t i = 0; i < sv->num_pools; i++) {
		const char *name = pool_name(c, sv, i);
		if (strcmp(name, ro->canary) == 0) {
			w[i] = pct * (ROLLOUT_WEIGHT_TOTAL / 100);
		} else if (stable_total) {
			w[i] = (unsigned)((uint64_t)rest * start_weight(ro, name) / stable_total);
			given += w[i];
			if (first_stable == sv->num_pools && start_weight(ro, name))
				first_stable = i;
		}
	}
	if (first_stable < sv->num_pools)
		w[first_stable] += rest - given; /* the rounding remainder */
	runtime_set_service_weights(rc->rt, c, sv, w);
	free(w);
}

static void set_start_weights(struct rollout_ctl *rc, const struct conf_service *sv, const struct rollout *ro)
{
	const struct conf *c = cur_conf(rc);
	unsigned *w = calloc(sv->num_pools, sizeof *w);
	if (!w) {
		log_msg(LOG_ERROR, "rollout: out of memory setting weights");
		return;
	}
	uint64_t total = 0;
	for (size_t i = 0; i < sv->num_pools; i++)
		total += w[i] = start_weight(ro, pool_name(c, sv, i));
	if (total == 0) /* a pool added since: keep the canary rather than leave nothing */
		for (size_t i = 0; i < sv->num_pools; i++)
			w[i] = strcmp(pool_name(c, sv, i), ro->canary) == 0;
	runtime_set_service_weights(rc->rt, c, sv, w);
	free(w);
}

/* ---- persistence ------------------------------------------------------ */

static void save(struct rollout_ctl *rc, struct rollout *ro)
{
	char line[ROLLOUT_LINE_MAX];
	int len = snprintf(line, sizeof line, "to=%s steps=", ro->canary);
	for (size_t i = 0; i < ro->num_steps; i++)
		len += snprintf(line + len, sizeof line - (size_t)len, "%s%u", i ? "," : "", ro->steps[i]);
	len += snprintf(line + len, sizeof line - (size_t)len,
	                " interval_ms=%llu max_error_rate=%.6f max_p99_ms=%llu min_requests=%llu step=%zu state=%s start=",
	                (unsigned long long)ro->interval_ms, ro->max_error_rate, (unsigned long long)ro->max_p99_ms,
	                (unsigned long long)ro->min_requests, ro->step, state_names[ro->state]);
	for (size_t i = 0; i < ro->num_start && len > 0 && (size_t)len < sizeof line; i++)
		len += snprintf(line + len, sizeof line - (size_t)len, "%s%s:%u", i ? "," : "", ro->start_pools[i],
		                ro->start_weights[i]);
	if (len < 0 || (size_t)len >= sizeof line) {
		log_msg(LOG_WARN, "rollout: too many pools to keep in the state file");
		return;
	}
	if (runtime_set_rollout_line(rc->rt, ro->service, line) != 0) {
		log_msg(LOG_ERROR, "rollout: out of memory");
		return;
	}
	char err[512];
	if (rc->sf && statefile_save(rc->sf, rc->rt, false, err, sizeof err) != 0) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "rollout: not saved in the state file");
		log_str(&l, "service", ro->service);
		log_str(&l, "error", err);
		log_end(&l);
	}
	if (rc->fleet)
		rc->fleet->changed(rc->fleet_arg);
}

static char *xstrndup(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

static bool parse_start(struct rollout *ro, const char *v)
{
	size_t n = 1;
	for (const char *p = v; *p; p++)
		n += *p == ',';
	ro->start_pools = calloc(n, sizeof *ro->start_pools);
	ro->start_weights = calloc(n, sizeof *ro->start_weights);
	if (!ro->start_pools || !ro->start_weights)
		return false;
	while (*v) {
		const char *comma = strchr(v, ',');
		size_t len = comma ? (size_t)(comma - v) : strlen(v);
		const char *colon = memchr(v, ':', len);
		uint64_t weight;
		char num[16];
		size_t nl = colon ? len - (size_t)(colon - v) - 1 : 0;
		if (!colon || colon == v || nl == 0 || nl >= sizeof num)
			return false;
		memcpy(num, colon + 1, nl);
		num[nl] = '\0';
		if (!parse_u64(num, 10000, &weight))
			return false;
		if (!(ro->start_pools[ro->num_start] = xstrndup(v, (size_t)(colon - v))))
			return false;
		ro->start_weights[ro->num_start++] = (unsigned)weight;
		v += len + (comma ? 1 : 0);
	}
	return ro->num_start > 0;
}

/* A rollout from its state-file line; NULL (why set) when malformed. */
static struct rollout *parse_line(const char *service, const char *line, const char **why)
{
	struct rollout *ro = calloc(1, sizeof *ro);
	char *copy = strdup(line);
	if (!ro || !copy || !(ro->service = strdup(service))) {
		*why = "out of memory";
		goto fail;
	}
	*why = "malformed";
	unsigned seen = 0;
	char *save_ptr = NULL;
	for (char *word = strtok_r(copy, " ", &save_ptr); word; word = strtok_r(NULL, " ", &save_ptr)) {
		char *eq = strchr(word, '=');
		if (!eq)
			goto fail;
		*eq = '\0';
		const char *k = word, *v = eq + 1;
		bool ok;
		if (strcmp(k, "to") == 0) {
			ok = *v && (ro->canary = strdup(v)) != NULL;
			seen |= 1;
		} else if (strcmp(k, "steps") == 0) {
			ok = rollout_parse_steps(v, ro->steps, &ro->num_steps);
			seen |= 2;
		} else if (strcmp(k, "interval_ms") == 0) {
			ok = parse_u64(v, 86400000, &ro->interval_ms) && ro->interval_ms > 0;
			seen |= 4;
		} else if (strcmp(k, "max_error_rate") == 0) {
			ok = rollout_parse_rate(v, &ro->max_error_rate);
			seen |= 8;
		} else if (strcmp(k, "max_p99_ms") == 0) {
			ok = parse_u64(v, 86400000, &ro->max_p99_ms);
			seen |= 16;
		} else if (strcmp(k, "min_requests") == 0) {
			ok = parse_u64(v, 1000000000, &ro->min_requests);
			seen |= 32;
		} else if (strcmp(k, "step") == 0) {
			uint64_t s = 0;
			ok = parse_u64(v, ROLLOUT_MAX_STEPS, &s);
			ro->step = (size_t)s;
			seen |= 64;
		} else if (strcmp(k, "state") == 0) {
			ok = false;
			for (size_t i = 0; i < sizeof state_names / sizeof state_names[0]; i++)
				if (strcmp(v, state_names[i]) == 0) {
					ro->state = (enum rollout_state)i;
					ok = true;
				}
			seen |= 128;
		} else if (strcmp(k, "start") == 0) {
			ok = parse_start(ro, v);
			seen |= 256;
		} else {
			ok = false;
		}
		if (!ok)
			goto fail;
	}
	if (seen != 511 || ro->step >= ro->num_steps)
		goto fail;
	free(copy);
	return ro;
fail:
	free(copy);
	rollout_free(ro);
	return NULL;
}

/* ---- history and verdicts -------------------------------------------- */

static void note(struct rollout *ro, enum log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(struct rollout *ro, enum log_level level, const char *fmt, ...)
{
	struct rollout_event *e = &ro->history[ro->num_history % ROLLOUT_HISTORY];
	ro->num_history++;
	e->wall_us = clock_wall_us();
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->text, sizeof e->text, fmt, ap);
	va_end(ap);
	struct log_line l;
	log_begin(&l, level, "rollout");
	log_str(&l, "service", ro->service);
	log_str(&l, "canary", ro->canary);
	log_str(&l, "state", state_names[ro->state]);
	log_int(&l, "step", (long long)ro->step + 1);
	log_int(&l, "percent", ro->steps[ro->step]);
	log_str(&l, "event", e->text);
	log_end(&l);
}

static double rate(uint64_t errors, uint64_t total)
{
	return total ? (double)errors / (double)total : 0;
}

static int figures_text(const struct rollout_judged *j, char *buf, size_t size)
{
	return snprintf(buf, size,
	                "canary %llu requests, %.2f%% errors, p99 %u ms; stable %llu requests, %.2f%% errors, p99 %u ms",
	                (unsigned long long)j->canary_requests, 100 * rate(j->canary_errors, j->canary_requests),
	                j->canary_p99_ms, (unsigned long long)j->stable_requests,
	                100 * rate(j->stable_errors, j->stable_requests), j->stable_p99_ms);
}

/* A verdict of judge() in the registry (sluice_service_rollout_verdicts_total); sv is of the current config. */
static void count_verdict(struct rollout_ctl *rc, const struct conf_service *sv, enum ctr_rollout_verdict v)
{
	const struct snapshot *s = *rc->snap;
	counters_rollout_verdict(s->counters, (size_t)(sv - s->conf->services), v);
}

static void judge(struct rollout_ctl *rc, const struct conf_service *sv, struct rollout *ro)
{
	struct runtime_figures now_c, now_s, dc, ds;
	read_figures(rc, sv, ro, &now_c, &now_s);
	runtime_figures_sub(&now_c, &ro->base_canary, &dc);
	runtime_figures_sub(&now_s, &ro->base_stable, &ds);
	struct rollout_judged j = {
		.set = true,
		.canary_requests = dc.attempts,
		.canary_errors = dc.errors,
		.stable_requests = ds.attempts,
		.stable_errors = ds.errors,
		.canary_p99_ms = runtime_figures_quantile_ms(&dc, 0.99),
		.stable_p99_ms = runtime_figures_quantile_ms(&ds, 0.99),
	};
	ro->last = j;
	char figs[200];
	figures_text(&j, figs, sizeof figs);
	if (dc.attempts < ro->min_requests) {
		/* the interval goes on until the canary has enough requests */
		snprintf(ro->verdict, sizeof ro->verdict, "waiting: %llu of %llu requests on the canary",
		         (unsigned long long)dc.attempts, (unsigned long long)ro->min_requests);
		count_verdict(rc, sv, CTR_VERDICT_WAITING);
		return;
	}
	double err_c = rate(dc.errors, dc.attempts), err_s = rate(ds.errors, ds.attempts);
	bool stable_judged = ds.attempts >= ro->min_requests;
	bool over_err = err_c > ro->max_error_rate;
	bool over_p99 = ro->max_p99_ms && j.canary_p99_ms > ro->max_p99_ms;
	/* the canary is to blame only when the stable pools did better */
	bool blame_err = over_err && !(stable_judged && err_s >= err_c);
	bool blame_p99 = over_p99 && !(stable_judged && j.stable_p99_ms >= j.canary_p99_ms);
	if (blame_err || blame_p99) {
		char why[120];
		if (blame_err)
			snprintf(why, sizeof why, "error rate %.2f%% over the limit %.2f%%", 100 * err_c,
			         100 * ro->max_error_rate);
		else
			snprintf(why, sizeof why, "p99 %u ms over the limit %llu ms", j.canary_p99_ms,
			         (unsigned long long)ro->max_p99_ms);
		ro->state = RO_ROLLED_BACK;
		set_start_weights(rc, sv, ro);
		snprintf(ro->verdict, sizeof ro->verdict, "rolled back: %s", why);
		count_verdict(rc, sv, CTR_VERDICT_ROLLED_BACK);
		note(ro, LOG_WARN, "rolled back at step %zu (%u%%): %s (%s)", ro->step + 1, ro->steps[ro->step], why, figs);
		save(rc, ro);
		return;
	}
	if (over_err || over_p99) {
		snprintf(ro->verdict, sizeof ro->verdict, "holding: the canary is over a limit, but the stable pools are as bad");
		count_verdict(rc, sv, CTR_VERDICT_HOLDING);
		note(ro, LOG_WARN, "held at step %zu (%u%%): over a limit with the stable pools as bad (%s)", ro->step + 1,
		     ro->steps[ro->step], figs);
		new_interval(rc, sv, ro);
		return;
	}
	if (ro->step + 1 == ro->num_steps) {
		ro->state = RO_COMPLETED;
		snprintf(ro->verdict, sizeof ro->verdict, "completed");
		count_verdict(rc, sv, CTR_VERDICT_COMPLETED);
		note(ro, LOG_INFO, "completed at %u%% (%s)", ro->steps[ro->step], figs);
	} else {
		ro->step++;
		set_share(rc, sv, ro, ro->steps[ro->step]);
		snprintf(ro->verdict, sizeof ro->verdict, "promoted to step %zu (%u%%)", ro->step + 1, ro->steps[ro->step]);
		count_verdict(rc, sv, CTR_VERDICT_PROMOTED);
		note(ro, LOG_INFO, "promoted to step %zu (%u%%) (%s)", ro->step + 1, ro->steps[ro->step], figs);
		new_interval(rc, sv, ro);
	}
	save(rc, ro);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct rollout_ctl *rc = arg;
	if (rc->held)
		return;
	const struct conf *c = cur_conf(rc);
	uint64_t now = mono_ms();
	for (size_t i = 0; i < rc->num_rollouts; i++) {
		struct rollout *ro = rc->rollouts[i];
		if (ro->state != RO_RUNNING && ro->state != RO_PAUSED)
			continue;
		if (rc->fleet && !rc->fleet->may_drive(rc->fleet_arg, ro->service))
			continue; /* another instance drives it */
		const struct conf_service *sv;
		if (!still_configured(c, ro, &sv)) {
			ro->state = RO_STOPPED;
			snprintf(ro->verdict, sizeof ro->verdict, "stopped: the service or its canary pool left the config");
			note(ro, LOG_WARN, "stopped: the service or its canary pool left the config");
			save(rc, ro);
			continue;
		}
		if (ro->state == RO_RUNNING && now - ro->interval_start_ms >= ro->interval_ms)
			judge(rc, sv, ro);
	}
}

/* ---- the controller --------------------------------------------------- */

void rollout_ctl_hold(struct rollout_ctl *rc, bool held)
{
	rc->held = held;
}

static struct rollout *find(struct rollout_ctl *rc, const char *service, size_t *index)
{
	for (size_t i = 0; i < rc->num_rollouts; i++)
		if (strcmp(rc->rollouts[i]->service, service) == 0) {
			if (index)
				*index = i;
			return rc->rollouts[i];
		}
	return NULL;
}

static bool add(struct rollout_ctl *rc, struct rollout *ro)
{
	struct rollout **grown = realloc(rc->rollouts, (rc->num_rollouts + 1) * sizeof *grown);
	if (!grown)
		return false;
	rc->rollouts = grown;
	rc->rollouts[rc->num_rollouts++] = ro;
	return true;
}

struct rollout_ctl *rollout_ctl_new(struct event_base *base, struct runtime *rt, struct snapshot *const *snap,
                                    struct statefile *sf)
{
	struct rollout_ctl *rc = calloc(1, sizeof *rc);
	if (!rc)
		return NULL;
	rc->rt = rt;
	rc->snap = snap;
	rc->sf = sf;
	rc->tick = event_new(base, -1, EV_PERSIST, tick_cb, rc);
	struct timeval tv = { 0, ROLLOUT_TICK_MS * 1000 };
	if (!rc->tick || event_add(rc->tick, &tv) != 0) {
		rollout_ctl_free(rc);
		return NULL;
	}
	const struct conf *c = cur_conf(rc);
	for (size_t i = 0; i < rt->num_rollouts; i++) {
		const char *why;
		struct rollout *ro = parse_line(rt->rollouts[i].service, rt->rollouts[i].line, &why);
		const struct conf_service *sv = NULL;
		if (!ro || !still_configured(c, ro, &sv) || !add(rc, ro)) {
			struct log_line l;
			log_begin(&l, LOG_WARN, "rollout: state-file entry dropped");
			log_str(&l, "service", rt->rollouts[i].service);
			log_str(&l, "why", !ro ? why : !sv ? "the service or its canary pool is not in the config" : "out of memory");
			log_end(&l);
			rollout_free(ro);
			continue;
		}
		snprintf(ro->verdict, sizeof ro->verdict, "resumed after a restart");
		if (ro->state == RO_RUNNING || ro->state == RO_PAUSED) {
			note(ro, LOG_INFO, "resumed at step %zu (%u%%) after a restart, with a fresh interval", ro->step + 1,
			     ro->steps[ro->step]);
			new_interval(rc, sv, ro);
		}
	}
	return rc;
}

bool rollout_ctl_check_line(struct rollout_ctl *rc, const char *service, const char *line, const char **why)
{
	struct rollout *ro = parse_line(service, line, why);
	const struct conf_service *sv = NULL;
	bool ok = ro && still_configured(cur_conf(rc), ro, &sv);
	if (ro && !ok)
		*why = "the service or its canary pool is not in the running config";
	rollout_free(ro);
	return ok;
}

bool rollout_ctl_restore(struct rollout_ctl *rc, const char *service, const char *line, const char **why)
{
	struct rollout *ro = parse_line(service, line, why);
	const struct conf_service *sv = NULL;
	if (!ro || !still_configured(cur_conf(rc), ro, &sv)) {
		if (ro)
			*why = "the service or its canary pool is not in the running config";
		rollout_free(ro);
		return false;
	}
	size_t index;
	struct rollout *old = find(rc, service, &index);
	if (old) {
		rollout_free(old);
		rc->rollouts[index] = ro;
	} else if (!add(rc, ro)) {
		*why = "out of memory";
		rollout_free(ro);
		return false;
	}
	snprintf(ro->verdict, sizeof ro->verdict, "restored by restore-state");
	if (ro->state == RO_RUNNING || ro->state == RO_PAUSED) {
		note(ro, LOG_INFO, "restored at step %zu (%u%%) by restore-state, with a fresh interval", ro->step + 1,
		     ro->steps[ro->step]);
		new_interval(rc, sv, ro);
	}
	if (runtime_set_rollout_line(rc->rt, service, line) != 0) {
		*why = "out of memory";
		return false;
	}
	return true;
}

void rollout_ctl_free(struct rollout_ctl *rc)
{
	if (!rc)
		return;
	if (rc->tick)
		event_free(rc->tick);
	for (size_t i = 0; i < rc->num_rollouts; i++)
		rollout_free(rc->rollouts[i]);
	free(rc->rollouts);
	free(rc);
}

void rollout_ctl_set_fleet(struct rollout_ctl *rc, const struct rollout_fleet_ops *ops, void *arg)
{
	rc->fleet = ops;
	rc->fleet_arg = arg;
}

const char *rollout_ctl_verdict(const struct rollout_ctl *rc, const char *service)
{
	for (size_t i = 0; i < rc->num_rollouts; i++)
		if (strcmp(rc->rollouts[i]->service, service) == 0)
			return rc->rollouts[i]->verdict;
	return NULL;
}

void rollout_ctl_adopt(struct rollout_ctl *rc, const char *service, const char *verdict)
{
	size_t index;
	struct rollout *old = find(rc, service, &index);
	const char *line = runtime_rollout_line(rc->rt, service);
	if (!line) { /* gone from the fleet */
		if (old) {
			rollout_free(old);
			rc->rollouts[index] = rc->rollouts[--rc->num_rollouts];
		}
		return;
	}
	const char *why;
	const struct conf_service *sv = NULL;
	struct rollout *ro = parse_line(service, line, &why);
	if (!ro || !still_configured(cur_conf(rc), ro, &sv)) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "rollout: fleet change not taken");
		log_str(&l, "service", service);
		log_str(&l, "why", !ro ? why : "the service or its canary pool is not in the config");
		log_end(&l);
		rollout_free(ro);
		return;
	}
	if (old) { /* the story so far stays */
		memcpy(ro->history, old->history, sizeof ro->history);
		ro->num_history = old->num_history;
		ro->last = old->last;
		memcpy(ro->verdict, old->verdict, sizeof ro->verdict);
		rollout_free(old);
		rc->rollouts[index] = ro;
	} else if (!add(rc, ro)) {
		log_msg(LOG_ERROR, "rollout: out of memory");
		rollout_free(ro);
		return;
	}
	if (verdict && strcmp(verdict, ro->verdict) != 0) {
		snprintf(ro->verdict, sizeof ro->verdict, "%s", verdict);
		note(ro, LOG_INFO, "fleet: %s", verdict);
	}
	if (ro->state == RO_RUNNING || ro->state == RO_PAUSED)
		new_interval(rc, sv, ro);
}

/* ---- commands --------------------------------------------------------- */

static void reply_ok(struct evbuffer *out, bool json, const char *msg)
{
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"message\":");
		admin_reply_json_str(out, msg);
		evbuffer_add_printf(out, "}\n");
	} else {
		evbuffer_add_printf(out, "%s\n", msg);
	}
}

static void weights_text(struct rollout_ctl *rc, const struct rollout *ro, char *buf, size_t size)
{
	const struct conf *c = cur_conf(rc);
	const struct conf_service *sv = find_service(c, ro->service);
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; sv && i < sv->num_pools && len < size; i++) {
		struct runtime_split *sp = runtime_service_split(rc->rt, c, sv, i);
		if (sp)
			len += (size_t)snprintf(buf + len, size - len, "%s%s %u", len ? ", " : "", sp->pool,
			                        atomic_load(&sp->weight));
	}
}

static void status_one(struct rollout_ctl *rc, const struct rollout *ro, bool json, struct evbuffer *out, bool first)
{
	char weights[512];
	weights_text(rc, ro, weights, sizeof weights);
	size_t kept = ro->num_history < ROLLOUT_HISTORY ? ro->num_history : ROLLOUT_HISTORY;
	size_t from = ro->num_history - kept;
	if (json) {
		evbuffer_add_printf(out, "%s{\"service\":", first ? "" : ",");
		admin_reply_json_str(out, ro->service);
		evbuffer_add_printf(out, ",\"canary\":");
		admin_reply_json_str(out, ro->canary);
		evbuffer_add_printf(out, ",\"state\":\"%s\",\"step\":%zu,\"steps\":[", state_names[ro->state], ro->step + 1);
		for (size_t i = 0; i < ro->num_steps; i++)
			evbuffer_add_printf(out, "%s%u", i ? "," : "", ro->steps[i]);
		evbuffer_add_printf(out,
		                    "],\"percent\":%u,\"interval_ms\":%llu,\"max_error_rate\":%.6f,\"max_p99_ms\":%llu,"
		                    "\"min_requests\":%llu,\"weights\":",
		                    ro->steps[ro->step], (unsigned long long)ro->interval_ms, ro->max_error_rate,
		                    (unsigned long long)ro->max_p99_ms, (unsigned long long)ro->min_requests);
		admin_reply_json_str(out, weights);
		evbuffer_add_printf(out, ",\"start_weights\":{");
		for (size_t i = 0; i < ro->num_start; i++) {
			evbuffer_add_printf(out, "%s", i ? "," : "");
			admin_reply_json_str(out, ro->start_pools[i]);
			evbuffer_add_printf(out, ":%u", ro->start_weights[i]);
		}
		evbuffer_add_printf(out, "},\"verdict\":");
		admin_reply_json_str(out, ro->verdict);
		if (rc->fleet) {
			char driver[256];
			rc->fleet->driver(rc->fleet_arg, ro->service, driver, sizeof driver);
			evbuffer_add_printf(out, ",\"driver\":");
			admin_reply_json_str(out, driver);
		}
		if (ro->last.set)
			evbuffer_add_printf(out,
			                    ",\"last_interval\":{\"canary_requests\":%llu,\"canary_errors\":%llu,"
			                    "\"canary_error_rate\":%.6f,\"canary_p99_ms\":%u,\"stable_requests\":%llu,"
			                    "\"stable_errors\":%llu,\"stable_error_rate\":%.6f,\"stable_p99_ms\":%u}",
			                    (unsigned long long)ro->last.canary_requests,
			                    (unsigned long long)ro->last.canary_errors,
			                    rate(ro->last.canary_errors, ro->last.canary_requests), ro->last.canary_p99_ms,
			                    (unsigned long long)ro->last.stable_requests,
			                    (unsigned long long)ro->last.stable_errors,
			                    rate(ro->last.stable_errors, ro->last.stable_requests), ro->last.stable_p99_ms);
		else
			evbuffer_add_printf(out, ",\"last_interval\":null");
		evbuffer_add_printf(out, ",\"history\":[");
		for (size_t i = from; i < ro->num_history; i++) {
			const struct rollout_event *e = &ro->history[i % ROLLOUT_HISTORY];
			evbuffer_add_printf(out, "%s{\"time_ms\":%llu,\"event\":", i > from ? "," : "",
			                    (unsigned long long)(e->wall_us / 1000));
			admin_reply_json_str(out, e->text);
			evbuffer_add_printf(out, "}");
		}
		evbuffer_add_printf(out, "]}");
		return;
	}
	evbuffer_add_printf(out, "service %s: %s, step %zu of %zu (%u%%) to %s\n", ro->service, state_names[ro->state],
	                    ro->step + 1, ro->num_steps, ro->steps[ro->step], ro->canary);
	evbuffer_add_printf(out, "  weights   %s\n", weights);
	evbuffer_add_printf(out, "  limits    error rate %.2f%%, p99 ", 100 * ro->max_error_rate);
	if (ro->max_p99_ms)
		evbuffer_add_printf(out, "%llu ms", (unsigned long long)ro->max_p99_ms);
	else
		evbuffer_add_printf(out, "off");
	evbuffer_add_printf(out, ", at least %llu requests, interval %llu ms\n", (unsigned long long)ro->min_requests,
	                    (unsigned long long)ro->interval_ms);
	if (ro->last.set) {
		char figs[200];
		figures_text(&ro->last, figs, sizeof figs);
		evbuffer_add_printf(out, "  judged    %s\n", figs);
	}
	if (rc->fleet) {
		char driver[256];
		rc->fleet->driver(rc->fleet_arg, ro->service, driver, sizeof driver);
		evbuffer_add_printf(out, "  driver    %s\n", driver);
	}
	evbuffer_add_printf(out, "  verdict   %s\n", ro->verdict);
	for (size_t i = from; i < ro->num_history; i++) {
		const struct rollout_event *e = &ro->history[i % ROLLOUT_HISTORY];
		time_t t = (time_t)(e->wall_us / 1000000);
		struct tm tm;
		char when[32] = "";
		if (gmtime_r(&t, &tm))
			strftime(when, sizeof when, "%H:%M:%S", &tm);
		evbuffer_add_printf(out, "  %s  %s\n", when, e->text);
	}
}

static void cmd_status(struct rollout_ctl *rc, char **w, size_t n, bool json, struct evbuffer *out)
{
	if (n > 3) {
		admin_reply_error(out, json, "usage: rollout status [SERVICE]");
		return;
	}
	if (n == 3 && !find(rc, w[2], NULL)) {
		admin_reply_error(out, json, "no rollout for service \"%s\" (rollout status lists them)", w[2]);
		return;
	}
	if (json)
		evbuffer_add_printf(out, "{\"ok\":true,\"rollouts\":[");
	size_t shown = 0;
	for (size_t i = 0; i < rc->num_rollouts; i++)
		if (n < 3 || strcmp(rc->rollouts[i]->service, w[2]) == 0)
			status_one(rc, rc->rollouts[i], json, out, shown++ == 0);
	if (json)
		evbuffer_add_printf(out, "]}\n");
	else if (!shown)
		evbuffer_add_printf(out, "no rollouts (rollout start SERVICE --to POOL ... starts one)\n");
}

static bool cmd_start(struct rollout_ctl *rc, char **w, size_t n, bool json, struct evbuffer *out)
{
	static const char usage[] = "usage: rollout start SERVICE --to POOL [--steps 5,25,50,100] [--interval 30s] "
	                            "[--max-error-rate 1%] [--max-p99 500ms] [--min-requests 100]";
	if (n < 3) {
		admin_reply_error(out, json, "%s", usage);
		return false;
	}
	const struct conf *c = cur_conf(rc);
	const struct conf_service *sv = find_service(c, w[2]);
	if (!sv) {
		admin_reply_error(out, json, "unknown service \"%s\"", w[2]);
		return false;
	}
	struct rollout *old = find(rc, sv->name, NULL);
	if (old && (old->state == RO_RUNNING || old->state == RO_PAUSED)) {
		admin_reply_error(out, json, "service %s has a rollout %s (rollout abort %s first)", sv->name,
		                  state_names[old->state], sv->name);
		return false;
	}
	struct rollout *ro = calloc(1, sizeof *ro);
	if (!ro) {
		admin_reply_error(out, json, "out of memory");
		return false;
	}
	static const unsigned default_steps[] = { 5, 25, 50, 100 };
	memcpy(ro->steps, default_steps, sizeof default_steps);
	ro->num_steps = 4;
	ro->interval_ms = 30000;
	ro->max_error_rate = 0.01;
	ro->min_requests = 100;
	const char *to = NULL;
	for (size_t i = 3; i < n; i += 2) {
		const char *opt = w[i], *v = i + 1 < n ? w[i + 1] : NULL;
		conf_msec ms;
		if (!v) {
			admin_reply_error(out, json, "%s needs a value (%s)", opt, usage);
			goto fail;
		}
		if (strcmp(opt, "--to") == 0) {
			to = v;
		} else if (strcmp(opt, "--steps") == 0) {
			if (!rollout_parse_steps(v, ro->steps, &ro->num_steps)) {
				admin_reply_error(out, json, "invalid --steps \"%s\" (increasing percentages from 1 to 100, at most %d, "
				                  "like 5,25,50,100)", v, ROLLOUT_MAX_STEPS);
				goto fail;
			}
		} else if (strcmp(opt, "--interval") == 0) {
			if (!conf_parse_duration(v, &ms) || ms == 0 || ms > 86400000) {
				admin_reply_error(out, json, "invalid --interval \"%s\" (a duration like 30s, 1m, 500ms)", v);
				goto fail;
			}
			ro->interval_ms = ms;
		} else if (strcmp(opt, "--max-error-rate") == 0) {
			if (!rollout_parse_rate(v, &ro->max_error_rate)) {
				admin_reply_error(out, json, "invalid --max-error-rate \"%s\" (a percentage like 1%% or 0.5%%)", v);
				goto fail;
			}
		} else if (strcmp(opt, "--max-p99") == 0) {
			if (!conf_parse_duration(v, &ms) || ms > 86400000) {
				admin_reply_error(out, json, "invalid --max-p99 \"%s\" (a duration like 500ms; 0 turns it off)", v);
				goto fail;
			}
			ro->max_p99_ms = ms;
		} else if (strcmp(opt, "--min-requests") == 0) {
			if (!parse_u64(v, 1000000000, &ro->min_requests)) {
				admin_reply_error(out, json, "invalid --min-requests \"%s\" (a whole number)", v);
				goto fail;
			}
		} else {
			admin_reply_error(out, json, "unknown option \"%s\" (%s)", opt, usage);
			goto fail;
		}
	}
	if (!to) {
		admin_reply_error(out, json, "missing --to POOL (%s)", usage);
		goto fail;
	}
	ro->service = strdup(sv->name);
	ro->canary = strdup(to);
	ro->start_pools = calloc(sv->num_pools, sizeof *ro->start_pools);
	ro->start_weights = calloc(sv->num_pools, sizeof *ro->start_weights);
	if (!ro->service || !ro->canary || !ro->start_pools || !ro->start_weights) {
		admin_reply_error(out, json, "out of memory");
		goto fail;
	}
	bool has_canary = false;
	uint64_t stable = 0;
	for (size_t i = 0; i < sv->num_pools; i++) {
		struct runtime_split *sp = runtime_service_split(rc->rt, c, sv, i);
		const char *name = pool_name(c, sv, i);
		if (!(ro->start_pools[i] = strdup(name))) {
			admin_reply_error(out, json, "out of memory");
			goto fail;
		}
		ro->num_start++;
		ro->start_weights[i] = sp ? atomic_load(&sp->weight) : 0;
		if (strcmp(name, to) == 0)
			has_canary = true;
		else
			stable += ro->start_weights[i];
	}
	if (!has_canary) {
		admin_reply_error(out, json, "service %s has no pool \"%s\"", sv->name, to);
		goto fail;
	}
	if (stable == 0) {
		admin_reply_error(out, json, "service %s has no other pool with a weight above 0 to shift from", sv->name);
		goto fail;
	}
	size_t index;
	if (find(rc, sv->name, &index)) {
		rollout_free(rc->rollouts[index]);
		rc->rollouts[index] = ro;
	} else if (!add(rc, ro)) {
		admin_reply_error(out, json, "out of memory");
		goto fail;
	}
	set_share(rc, sv, ro, ro->steps[0]);
	new_interval(rc, sv, ro);
	snprintf(ro->verdict, sizeof ro->verdict, "started");
	char weights[512], msg[800];
	weights_text(rc, ro, weights, sizeof weights);
	note(ro, LOG_INFO, "started: step 1 of %zu (%u%%): %s", ro->num_steps, ro->steps[0], weights);
	save(rc, ro);
	snprintf(msg, sizeof msg, "rollout of service %s to %s started: step 1 of %zu (%u%%): %s", sv->name, to,
	         ro->num_steps, ro->steps[0], weights);
	reply_ok(out, json, msg);
	return true;
fail:
	rollout_free(ro);
	return false;
}

static bool cmd_change(struct rollout_ctl *rc, char **w, size_t n, bool json, unsigned uid, struct evbuffer *out)
{
	const char *verb = w[1];
	if (n != 3) {
		admin_reply_error(out, json, "usage: rollout %s SERVICE", verb);
		return false;
	}
	struct rollout *ro = find(rc, w[2], NULL);
	if (!ro) {
		admin_reply_error(out, json, "no rollout for service \"%s\" (rollout status lists them)", w[2]);
		return false;
	}
	const struct conf_service *sv;
	if (!still_configured(cur_conf(rc), ro, &sv)) {
		admin_reply_error(out, json, "service %s or its pool %s is no longer in the config", ro->service, ro->canary);
		return false;
	}
	bool live = ro->state == RO_RUNNING || ro->state == RO_PAUSED;
	if (!live) {
		admin_reply_error(out, json, "the rollout of service %s is %s (nothing to %s)", ro->service, state_names[ro->state],
		                  verb);
		return false;
	}
	if (strcmp(verb, "pause") == 0) {
		if (ro->state == RO_PAUSED) {
			admin_reply_error(out, json, "the rollout of service %s is already paused", ro->service);
			return false;
		}
		ro->state = RO_PAUSED;
		snprintf(ro->verdict, sizeof ro->verdict, "paused by uid %u", uid);
		note(ro, LOG_INFO, "paused by uid %u at step %zu (%u%%)", uid, ro->step + 1, ro->steps[ro->step]);
	} else if (strcmp(verb, "resume") == 0) {
		if (ro->state == RO_RUNNING) {
			admin_reply_error(out, json, "the rollout of service %s is not paused", ro->service);
			return false;
		}
		ro->state = RO_RUNNING;
		new_interval(rc, sv, ro);
		snprintf(ro->verdict, sizeof ro->verdict, "resumed by uid %u", uid);
		note(ro, LOG_INFO, "resumed by uid %u at step %zu (%u%%), with a fresh interval", uid, ro->step + 1,
		     ro->steps[ro->step]);
	} else if (strcmp(verb, "abort") == 0) {
		ro->state = RO_ABORTED;
		set_start_weights(rc, sv, ro);
		snprintf(ro->verdict, sizeof ro->verdict, "aborted by uid %u: back to the start weights", uid);
		note(ro, LOG_WARN, "aborted by uid %u at step %zu (%u%%): back to the start weights", uid, ro->step + 1,
		     ro->steps[ro->step]);
	} else { /* promote */
		ro->state = RO_COMPLETED;
		set_share(rc, sv, ro, 100);
		snprintf(ro->verdict, sizeof ro->verdict, "promoted to 100%% by uid %u", uid);
		note(ro, LOG_INFO, "promoted to 100%% by uid %u from step %zu (%u%%)", uid, ro->step + 1,
		     ro->steps[ro->step]);
	}
	save(rc, ro);
	char weights[512], msg[800];
	weights_text(rc, ro, weights, sizeof weights);
	snprintf(msg, sizeof msg, "rollout of service %s: %s: %s", ro->service, state_names[ro->state], weights);
	reply_ok(out, json, msg);
	return true;
}

bool rollout_command(struct rollout_ctl *rc, char **w, size_t n, bool json, unsigned uid, struct evbuffer *out)
{
	if (n >= 2 && strcmp(w[1], "status") == 0) {
		cmd_status(rc, w, n, json, out);
		return false;
	}
	if (n >= 2 && strcmp(w[1], "start") == 0)
		return cmd_start(rc, w, n, json, out);
	if (n >= 2 && (strcmp(w[1], "pause") == 0 || strcmp(w[1], "resume") == 0 || strcmp(w[1], "abort") == 0 ||
	               strcmp(w[1], "promote") == 0))
		return cmd_change(rc, w, n, json, uid, out);
	admin_reply_error(out, json, "usage: rollout start SERVICE --to POOL ... | rollout status [SERVICE] | "
	                             "rollout pause|resume|abort|promote SERVICE");
	return false;
}
