/* statefile.h - the deployers' changes (weight overrides, drain and disable
 * marks, service weights) kept in a small text file so that a restart does
 * not undo them. One change a line, in the words of the admin commands:
 *   weight POOL ADDRESS W
 *   drain POOL ADDRESS
 *   disable POOL ADDRESS
 *   service-weight SERVICE POOL W
 * statefile_save writes the whole current set atomically (temporary file in
 * the same directory, fsync, rename, fsync of the directory), so a crash
 * leaves the old file or the new one, never a mix. statefile_apply reads it
 * at start: a line naming a pool, server or service the config does not have,
 * or a malformed line, is logged and skipped, never fatal. Main thread only. */
#ifndef SLUICE_STATEFILE_H
#define SLUICE_STATEFILE_H

#include <stddef.h>

#include "runtime.h"

/* Returns 0, or -1 with a message in err. */
int statefile_save(const char *path, const struct runtime *rt, char *err, size_t err_size);
/* Returns the number of changes applied, or -1 if the file exists but cannot be read (logged). */
int statefile_apply(const char *path, struct runtime *rt);

#endif
