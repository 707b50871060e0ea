/* conf_limits.h - the `limits` section: what a client may send and how long
 * it may take (sizes, counts, client timeouts). Contract: conf_schema.h rules. */
#ifndef SLUICE_CONF_LIMITS_H
#define SLUICE_CONF_LIMITS_H

#include "conf_schema.h"

void conf_walk_limits(struct conf_walker *w, int root);

#endif
