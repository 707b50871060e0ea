/* conf_metrics.c - the `metrics` section (conf_metrics.h). */
#include "conf_metrics.h"

#include <math.h>
#include <string.h>

#include <lauxlib.h>

static const uint64_t default_buckets_us[] = {5000,   10000,   25000,   50000,   100000,  250000,
                                              500000, 1000000, 2500000, 5000000, 10000000};

#define BUCKETS_EXAMPLE "{ 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }"
#define BUCKET_MAX_US 3600000000ull /* one hour */

static void walk_buckets(struct conf_walker *w, int t, struct conf_metrics *m)
{
	struct conf_field f;
	if (!conf_field_open(w, t, "histogram_buckets", &f))
		return;
	int list = lua_gettop(w->L);
	size_t n;
	if (lua_type(w->L, list) != LUA_TTABLE) {
		conf_type_error(w, list, "a list of upper bounds in seconds like " BUCKETS_EXAMPLE);
		goto out;
	}
	if (!conf_list_length(w, list, BUCKETS_EXAMPLE, &n))
		goto out;
	if (n == 0 || n > CONF_METRICS_MAX_BUCKETS) {
		conf_werr(w, "%zu bounds: give 1 to %d (the +Inf bucket is added by itself), e.g. " BUCKETS_EXAMPLE, n,
		          CONF_METRICS_MAX_BUCKETS);
		goto out;
	}
	uint64_t us[CONF_METRICS_MAX_BUCKETS];
	bool ok = true;
	for (size_t i = 1; i <= n; i++) {
		struct conf_field item;
		conf_item_open(w, list, i, &item);
		int v = lua_gettop(w->L);
		if (lua_type(w->L, v) != LUA_TNUMBER) {
			conf_type_error(w, v, "an upper bound in seconds (a number like 0.25)");
			ok = false;
		} else {
			double s = lua_tonumber(w->L, v);
			double micro = s * 1e6;
			if (!isfinite(s) || micro < 1 || micro > (double)BUCKET_MAX_US) {
				conf_werr(w, "%g is out of range: a bound is 0.000001 (1 µs) to 3600 seconds", s);
				ok = false;
			} else if (fabs(micro - round(micro)) > 1e-3) {
				conf_werr(w, "%g: bounds are counted in whole microseconds (at most 6 decimals)", s);
				ok = false;
			} else {
				us[i - 1] = (uint64_t)llround(micro);
				if (i > 1 && ok && us[i - 1] <= us[i - 2]) {
					conf_werr(w, "%g is not above the bound before it (%g): list bounds in increasing order, "
					             "each once", s, (double)us[i - 2] / 1e6);
					ok = false;
				}
			}
		}
		conf_field_close(w, &item);
	}
	if (ok) {
		memcpy(m->buckets_us, us, n * sizeof us[0]);
		m->num_buckets = (unsigned)n;
	}
out:
	conf_field_close(w, &f);
}

void conf_walk_metrics(struct conf_walker *w, int root)
{
	static const char *const keys[] = {"histogram_buckets", NULL};
	struct conf_metrics *m = &w->c->metrics;
	memcpy(m->buckets_us, default_buckets_us, sizeof default_buckets_us);
	m->num_buckets = sizeof default_buckets_us / sizeof default_buckets_us[0];
	struct conf_field f;
	if (!conf_field_open_record(w, root, "metrics", keys, "a table like { histogram_buckets = " BUCKETS_EXAMPLE " }",
	                            &f))
		return;
	walk_buckets(w, lua_gettop(w->L), m);
	conf_field_close(w, &f);
}

bool conf_metrics_buckets_differ(const struct conf *a, const struct conf *b)
{
	return a->metrics.num_buckets != b->metrics.num_buckets ||
	       memcmp(a->metrics.buckets_us, b->metrics.buckets_us, a->metrics.num_buckets * sizeof(uint64_t)) != 0;
}
