/* statefile_parse.h - the state file's line parser (statefile.h has the
 * format), apart from files and the runtime so it can be fuzzed
 * (t/fuzz/fuzz_statefile.c).
 *
 * Input is bytes with a length, never a C string: lines end at LF (a CR
 * before it is dropped); a line longer than STATEFILE_MAX_LINE bytes, or with
 * a NUL or another control byte (TAB aside), is rejected whole, so no tail of
 * a line can ever be read as a line of its own. Words are split on spaces and
 * tabs. No allocation: an entry's words are copied into the entry. */
#ifndef SLUICE_STATEFILE_PARSE_H
#define SLUICE_STATEFILE_PARSE_H

#include <stddef.h>

#define STATEFILE_MAX_LINE 1023

enum statefile_kind {
	STATEFILE_NOTHING,        /* blank line or comment */
	STATEFILE_WEIGHT,         /* weight POOL ADDRESS W */
	STATEFILE_DRAIN,          /* drain POOL ADDRESS */
	STATEFILE_DISABLE,        /* disable POOL ADDRESS */
	STATEFILE_SERVICE_WEIGHT, /* service-weight SERVICE POOL W */
	STATEFILE_SERVICE_SAVED,  /* service-saved-weight SERVICE POOL W: the weight before `ctl switch` */
	STATEFILE_ROLLOUT,        /* rollout SERVICE WORDS...: target holds WORDS as written (rollout.c's) */
};

struct statefile_entry {
	enum statefile_kind kind;
	char name[STATEFILE_MAX_LINE + 1];   /* POOL, or SERVICE */
	char target[STATEFILE_MAX_LINE + 1]; /* ADDRESS, or POOL */
	unsigned weight;
};

/* Parse one line (without its LF). Returns NULL, or why it is skipped. */
const char *statefile_parse_line(const char *line, size_t len, struct statefile_entry *e);

/* Every line of buf[0..len), in order: on_entry for each change, on_skip
 * (with the 1-based line number) for each line rejected. A last line without
 * its LF counts. */
typedef void (*statefile_entry_cb)(const struct statefile_entry *e, unsigned lineno, void *arg);
typedef void (*statefile_skip_cb)(unsigned lineno, const char *why, void *arg);
void statefile_parse(const char *buf, size_t len, struct statefile_entry *scratch, statefile_entry_cb on_entry,
                     statefile_skip_cb on_skip, void *arg);

#endif
