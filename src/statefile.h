/* statefile.h - the deployers' changes (weight overrides, drain and disable
 * marks, service weights) kept in a small text file so that a restart does
 * not undo them. One change a line, in the words of the admin commands:
 *   weight POOL ADDRESS W
 *   drain POOL ADDRESS
 *   disable POOL ADDRESS
 *   service-weight SERVICE POOL W
 *   service-saved-weight SERVICE POOL W   (the weight before `ctl switch`, for `switch --back`)
 *   rollout SERVICE WORDS...               (a rollout's progress, rollout.h)
 * (statefile_parse.h parses it.)
 *
 * statefile_open() reads it once at start and applies it: a line naming a
 * pool, server or service the config does not have, or a malformed line, is
 * logged and skipped (at most STATEFILE_MAX_WARNINGS lines, then one summary
 * with the count), never fatal. What it found decides whether sluice may
 * write the file later:
 *   - absent, or a regular file read whole: written on every change;
 *   - a regular file that could not be read (permissions, an I/O error, over
 *     STATEFILE_MAX_BYTES): not written, so the changes it holds are not
 *     lost, until an operator runs `sluice ctl save-state --force`;
 *   - anything else at the path (a symlink, device, FIFO, directory): never
 *     read (a FIFO or /dev/zero would hang or flood) and never replaced.
 * statefile_save() writes the whole current set atomically: a temporary file
 * created (O_EXCL, O_NOFOLLOW) in the state file's directory, fsync, rename
 * within that same directory (by descriptor, so no symlink can move it
 * elsewhere), fsync of the directory: a crash leaves the old file or the
 * new one, never a mix. Main thread only. */
#ifndef SLUICE_STATEFILE_H
#define SLUICE_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime.h"

#define STATEFILE_MAX_BYTES (16u << 20)
#define STATEFILE_MAX_WARNINGS 20

enum statefile_status {
	STATEFILE_READ,        /* read and applied (or absent): written on change */
	STATEFILE_UNREADABLE,  /* a regular file that could not be read: writes wait for --force */
	STATEFILE_NOT_REGULAR, /* not a regular file: never read or written */
};

struct statefile {
	char *path;
	enum statefile_status status;
	char problem[512];  /* why, when status is not STATEFILE_READ (names the path) */
	unsigned applied;   /* changes applied at start */
	unsigned skipped;   /* lines skipped at start */
	bool forced;        /* an operator ran save-state --force */
};

/* Read and apply path. NULL only when out of memory (logged). */
struct statefile *statefile_open(const char *path, struct runtime *rt);
void statefile_free(struct statefile *sf);
/* True when a change would be written now. */
bool statefile_writable(const struct statefile *sf);
/* Write the current state. force lifts the STATEFILE_UNREADABLE hold (never
 * STATEFILE_NOT_REGULAR). Returns 0, or -1 with the reason (naming the path)
 * in err. */
int statefile_save(struct statefile *sf, const struct runtime *rt, bool force, char *err, size_t err_size);
/* The state file's text for rt (malloc'd, *len bytes; NULL when out of
 * memory): what statefile_save writes, and what dump-state keeps. */
char *statefile_render(const struct runtime *rt, size_t *len);

#endif
