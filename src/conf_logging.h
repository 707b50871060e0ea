/* conf_logging.h - the `access_log` section: where the access log goes
 * ("stdout", "stderr", "off" or a file, relative to the config file's
 * directory). Contract: conf_schema.h rules. */
#ifndef SLUICE_CONF_LOGGING_H
#define SLUICE_CONF_LOGGING_H

#include "conf_schema.h"

void conf_walk_access_log(struct conf_walker *w, int root);

#endif
