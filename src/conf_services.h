/* conf_services.h - the `services` section: named splits of traffic over
 * pools by weight, plus the implicit one-pool services ("pool:NAME") behind
 * a route's `pool = "NAME"`. Walk after the pools. Contract: conf_schema.h rules. */
#ifndef SLUICE_CONF_SERVICES_H
#define SLUICE_CONF_SERVICES_H

#include "conf_schema.h"

void conf_walk_services(struct conf_walker *w, int root);
/* The implicit service for pool (index into conf.pools), created on first use. */
size_t conf_implicit_service(struct conf_walker *w, size_t pool);

#endif
