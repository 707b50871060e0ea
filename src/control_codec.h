/* control_codec.h - fleet control's data, apart from Redis and the runtime so
 * that it can be unit-tested (t/unit/check_control.c).
 *
 * The fleet's state is a set of entries, one per thing a deployer can change,
 * each keyed by what it changes and valued by a state-file line (statefile.h)
 * or by a tombstone when the change was undone:
 *   key "weight POOL ADDRESS"              line "weight POOL ADDRESS W"
 *   key "drain POOL ADDRESS"               line "drain POOL ADDRESS"
 *   key "disable POOL ADDRESS"             line "disable POOL ADDRESS"
 *   key "service-weight SERVICE POOL"      line "service-weight SERVICE POOL W"
 *   key "service-saved-weight SERVICE POOL" line "service-saved-weight SERVICE POOL W"
 *   key "rollout SERVICE"                  line "rollout SERVICE WORDS..."
 *   key "verdict SERVICE"                  line "verdict SERVICE TEXT..." (the rollout's last verdict)
 * In Redis an entry's value is "VERSION ORIGIN LINE" (LINE "-" for a
 * tombstone): VERSION is the fleet's change counter when it was written (an
 * INCR, so later changes have higher versions) and ORIGIN the instance that
 * wrote it, so that an instance knows its own changes when they come back.
 *
 * struct control_set holds entries sorted by key (binary search; a diff is a
 * merge). Lines and keys are copied in; the set owns them. */
#ifndef SLUICE_CONTROL_CODEC_H
#define SLUICE_CONTROL_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONTROL_TOMBSTONE "-"
#define CONTROL_ORIGIN_MAX 160

struct control_item {
	char *key;
	char *line;       /* NULL: a tombstone (or, in the known set, not known) */
	uint64_t version; /* the fleet version it was written at (0: never written) */
	unsigned pending; /* writes of it in flight */
	bool unknown;     /* a write of it failed: what Redis holds is not known */
	bool inapplicable; /* read from Redis but not applied here (the config lacks it): not a local undo */
};

struct control_set {
	struct control_item *items;
	size_t n, cap;
	bool sorted;
};

/* The entry key of a line (a state-file line or a "verdict SERVICE TEXT"
 * line) into key; false when the line is none of those. */
bool control_entry_key(const char *line, char *key, size_t size);

/* "VERSION ORIGIN LINE"; line NULL writes the tombstone. Returns the length,
 * or -1 when it does not fit. */
int control_value_format(char *buf, size_t size, uint64_t version, const char *origin, const char *line);
/* Splits a value; *line points into s (NULL for a tombstone), origin is
 * copied. False when malformed. */
bool control_value_parse(const char *s, uint64_t *version, char *origin, size_t origin_size, const char **line);

void control_set_init(struct control_set *s);
void control_set_free(struct control_set *s);
void control_set_clear(struct control_set *s);
/* Adds or replaces the entry for key (line NULL: tombstone). Returns the
 * entry (valid until the set changes), NULL on out-of-memory. */
struct control_item *control_set_put(struct control_set *s, const char *key, const char *line);
struct control_item *control_set_find(struct control_set *s, const char *key);
/* Every change line of a state-file text (statefile.h), keyed; comments and
 * lines that are no change are skipped. Returns -1 on out-of-memory. */
int control_set_add_text(struct control_set *s, const char *text, size_t len);

/* What differs between the current local set and the known one (what Redis
 * holds as far as this instance knows): each key whose current line differs
 * (an entry known as unknown always differs), with the current line, NULL
 * when it is gone locally (to be written as a tombstone; never for an entry
 * known as inapplicable: it was never here to be undone). */
typedef void control_diff_cb(void *arg, const char *key, const char *line, const struct control_item *known);
size_t control_set_diff(struct control_set *cur, struct control_set *known, control_diff_cb *cb, void *arg);

/* What to do with an entry read from Redis. */
enum control_action {
	CONTROL_KEEP,  /* not newer than what this instance has: nothing */
	CONTROL_WAIT,  /* this instance's own write of it is in flight: its reply decides */
	CONTROL_ACK,   /* this instance's own write, confirmed: record the version only */
	CONTROL_APPLY, /* another instance's newer change: apply it */
};
/* remote: the entry's version and origin; known: this instance's entry for
 * the key (NULL: none), floor the version the local state already includes
 * (from the last run), me this instance's origin. */
enum control_action control_decide(uint64_t remote_version, const char *remote_origin,
                                   const struct control_item *known, uint64_t floor, const char *me);

#endif
