/* admin_cmd.h - the admin socket's command-line parser, apart from the socket
 * and the runtime so it can be fuzzed (t/fuzz/fuzz_admin_cmd.c).
 *
 * A command line is bytes with a length, never a C string: a NUL or another
 * control byte (TAB and a CR, as sent by CRLF clients, aside) rejects the
 * whole line, as does a line over ADMIN_CMD_MAX_LINE bytes. Words are split
 * on spaces, tabs and CRs; the word --json anywhere asks for a JSON answer
 * and is not a word. The words point into the admin_cmd's own copy of the
 * line, NUL-terminated. No allocation; the struct is self-contained. */
#ifndef SLUICE_ADMIN_CMD_H
#define SLUICE_ADMIN_CMD_H

#include <stdbool.h>
#include <stddef.h>

#define ADMIN_CMD_MAX_LINE 4096
#define ADMIN_CMD_MAX_WORDS 64
#define ADMIN_CMD_MAX_WEIGHT 1000

struct admin_cmd {
	char buf[ADMIN_CMD_MAX_LINE + 1];
	char *words[ADMIN_CMD_MAX_WORDS];
	size_t num_words;
	bool json; /* --json was given (also set when the line is refused) */
};

/* Parse line[0..len) (without its newline). Returns NULL, or why the line is
 * refused (a static string; cmd->json still tells how to answer). */
const char *admin_cmd_parse(const char *line, size_t len, struct admin_cmd *cmd);

/* A weight as the admin commands and the state file write it: a whole number
 * from 0 to ADMIN_CMD_MAX_WEIGHT, digits only. */
bool admin_cmd_weight(const char *s, unsigned *out);

#endif
