/* conf_routes.h - the `routes` section: an ordered list of { name, match,
 * pool | service | respond, rate_limit }. Walk after pools, services and rate
 * limits, which routes refer to by name. Contract: conf_schema.h rules. */
#ifndef SLUICE_CONF_ROUTES_H
#define SLUICE_CONF_ROUTES_H

#include "conf_schema.h"

void conf_walk_routes(struct conf_walker *w, int root);

#endif
