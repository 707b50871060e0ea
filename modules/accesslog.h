/* accesslog.h - the access log module: one JSON object a line per request,
 * formatted in the log phase and sent to access_log.path ("stdout",
 * "stderr" or a file opened for appending) and/or access_log.syslog.
 *
 * The worker never writes: a path's lines go into the worker's bounded queue
 * and the log writer thread writes them (log_queue.h: whole lines only, a
 * full queue drops and counts); syslog lines go to the worker's own
 * non-blocking sender (log_syslog.h), its queue bounded by access_log.queue
 * too and tracked for `ctl flush-logs`. The file is opened per snapshot (so a
 * reload can move it) and closed by the writer once the old snapshot's
 * queued lines are written; SIGUSR1 reopens it on the same descriptor. */
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
