/* statedump_parse.h - the parser of `sluice ctl dump-state` files (the
 * format is in docs/admin.md, "dump-state and restore-state"), apart from
 * the runtime, the admin socket and Redis so that it can be fuzzed
 * (t/fuzz/fuzz_statedump.c).
 *
 * The file is one JSON object:
 *   {"format":"sluice-state-dump","version":1,
 *    "runtime":["weight web 10.0.0.1:80 5", ...],         state-file lines
 *    "redis":{"prefix":"sluice:rl:","keys":[{"key":"sluice:rl:l:k","pttl":1200,"dump":"HEX"}, ...]}
 *    ... other members (created, config, pid, server, ...) are informational}
 * "redis" may be null (no Redis state); a key not printable ASCII is given
 * as "key_hex" instead of "key". Every runtime line must be a change in the
 * state file's syntax (statefile_parse.h); every key must start with the
 * prefix sluice:rl:; "pttl" is -1 (no expiry) or 1..2^53 ms; "dump" is the
 * hex of Redis's DUMP payload.
 *
 * Input is bytes with a length. The whole file is read before anything is
 * returned: on any error the result is NULL and err says where ("line L,
 * column C: ...") and what is expected. Bounded: nesting depth 8, at most
 * STATEDUMP_MAX_KEYS keys and STATEDUMP_MAX_LINES runtime lines. The result
 * owns its memory (statedump_free). */
#ifndef SLUICE_STATEDUMP_PARSE_H
#define SLUICE_STATEDUMP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "statefile_parse.h"

#define STATEDUMP_FORMAT "sluice-state-dump"
#define STATEDUMP_VERSION 1
#define STATEDUMP_PREFIX "sluice:rl:"
#define STATEDUMP_MAX_KEYS 200000u
#define STATEDUMP_MAX_LINES 100000u

struct statedump_line {
	char *text;     /* the line as written (a change: statefile_parse_line accepts it) */
	unsigned line, col; /* where it is in the file */
};

struct statedump_key {
	unsigned char *key;
	size_t key_len;
	long long pttl; /* -1: no expiry */
	unsigned char *dump;
	size_t dump_len;
	unsigned line, col;
};

struct statedump {
	unsigned version;
	struct statedump_line *lines;
	size_t num_lines;
	bool has_redis; /* "redis" was an object (even with no keys) */
	struct statedump_key *keys;
	size_t num_keys;
};

struct statedump *statedump_parse(const char *buf, size_t len, char *err, size_t err_size);
void statedump_free(struct statedump *d);

/* Line and column (1-based) of byte offset off in buf. */
void statedump_position(const char *buf, size_t len, size_t off, unsigned *line, unsigned *col);

#endif
