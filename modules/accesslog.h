/* accesslog.h - the access log module: one JSON object a line per request,
 * written in the log phase to access_log.path ("stdout", "stderr" or a file
 * opened for appending). The file is opened per snapshot (so a reload can
 * move it); each line goes out with a single write(2), so lines from several
 * workers never interleave. */
#ifndef SLUICE_ACCESSLOG_H
#define SLUICE_ACCESSLOG_H

#include "module.h"

extern const struct module accesslog_module;

/* Whether name is a field the access log writes itself (policies may not
 * add one of that name with r:log; "policy" and "policy_error" are the
 * policy module's). */
bool accesslog_is_field(const char *name);

/* Format r as one JSON line (with the trailing newline) into buf; returns its length. */
size_t accesslog_format(const struct request *r, char *buf, size_t cap);

#endif
