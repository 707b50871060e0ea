/* conf_limits.h - the `limits` section: what a client may send and how long
 * it may take (sizes, counts, client timeouts), and how many connections it
 * may hold. Walked after the listeners: a listener without its own
 * max_connections_per_client is given the section's. Contract: conf_schema.h
 * rules. */
#ifndef SLUICE_CONF_LIMITS_H
#define SLUICE_CONF_LIMITS_H

#include "conf_schema.h"

void conf_walk_limits(struct conf_walker *w, int root);

#endif
