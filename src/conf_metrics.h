/* conf_metrics.h - the `metrics` section: how /metrics describes what the
 * counter registry measures. Today one key, `histogram_buckets`: the upper
 * bounds, in seconds, of every duration histogram's buckets (strictly
 * increasing, 1 µs to 1 hour, at most CONF_METRICS_MAX_BUCKETS; default
 * Prometheus' 5 ms .. 10 s). Contract: conf_schema.h rules; nothing to free. */
#ifndef SLUICE_CONF_METRICS_H
#define SLUICE_CONF_METRICS_H

#include "conf_schema.h"

/* The root table's `metrics`; absent: the defaults. */
void conf_walk_metrics(struct conf_walker *w, int root);
/* Whether two configs' buckets differ (a reload cannot change them). */
bool conf_metrics_buckets_differ(const struct conf *a, const struct conf *b);

#endif
