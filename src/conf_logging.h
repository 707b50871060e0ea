/* conf_logging.h - the `access_log` and `error_log` sections: where the
 * access log and sluice's own messages go ("stdout", "stderr", "off" or a
 * file, relative to the config file's directory; and a syslog collector).
 * Contract: conf_schema.h rules. */
#ifndef SLUICE_CONF_LOGGING_H
#define SLUICE_CONF_LOGGING_H

#include "conf_schema.h"

void conf_walk_access_log(struct conf_walker *w, int root);
void conf_walk_error_log(struct conf_walker *w, int root);

#endif
