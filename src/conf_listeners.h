/* conf_listeners.h - the `listeners` section: a list of { name, address,
 * tls, h2c, http2 } (TLS and HTTP/2 keys are conf_tls.c's). Names and
 * addresses must be unique. Contract: conf_schema.h rules. */
#ifndef SLUICE_CONF_LISTENERS_H
#define SLUICE_CONF_LISTENERS_H

#include "conf_schema.h"

void conf_walk_listeners(struct conf_walker *w, int root);

#endif
