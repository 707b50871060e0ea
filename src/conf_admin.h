/* conf_admin.h - the operator's side of the config: `admin` (the admin
 * socket: path, permission bits) and `state_file` (where deployer changes
 * are saved and re-applied at start). Relative paths resolve against the
 * config file's directory. Contract: conf_schema.h rules; conf_admin_free
 * releases what conf_walk_admin allocated. */
#ifndef SLUICE_CONF_ADMIN_H
#define SLUICE_CONF_ADMIN_H

#include "conf_schema.h"

/* The root table's `admin` and `state_file`. */
void conf_walk_admin(struct conf_walker *w, int root);
void conf_admin_free(struct conf *c);

#endif
