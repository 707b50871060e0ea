/* fuzz_admin_cmd.c - the admin protocol both ways: admin_cmd_parse on any
 * bytes (the command line a client sends), and ctl_escape on the same bytes
 * (an answer as `sluice ctl` prints it).
 *
 * Invariants of the parser: a line is refused if and only if it is over the
 * limit, holds a NUL or another control byte (TAB, CR aside), or has no word
 * or too many; an accepted line's words are non-empty, free of separators
 * and control bytes, lie inside the command's buffer in order, and are
 * exactly the input's tokens minus "--json" (whose presence sets json);
 * admin_cmd_weight accepts exactly the digit strings of 0..1000 up to four
 * digits. Invariants of the escaping: no control byte (LF, TAB aside), DEL
 * or C1 control reaches the output, the output stays within its stated
 * bound, and escaping the input in two pieces gives the same bytes as whole.
 *
 * FUZZ_SOURCES: admin_cmd.c ctl.c
 */
#include <string.h>

#include "admin_cmd.h"
#include "ctl.h"
#include "fuzz_common.h"

static bool is_sep(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static void check_weight(const char *w)
{
	unsigned v = 9999;
	bool ok = admin_cmd_weight(w, &v);
	size_t n = strlen(w);
	bool digits = n > 0 && n <= 4;
	unsigned long expect = 0;
	for (size_t i = 0; digits && i < n; i++) {
		digits = w[i] >= '0' && w[i] <= '9';
		expect = expect * 10 + (unsigned long)(w[i] - '0');
	}
	FUZZ_REQUIRE(ok == (digits && expect <= 1000));
	if (ok)
		FUZZ_REQUIRE(v == expect);
}

static void check_parse(const char *line, size_t len)
{
	struct admin_cmd *cmd = malloc(sizeof(*cmd));
	FUZZ_REQUIRE(cmd != NULL);
	const char *err = admin_cmd_parse(line, len, cmd);

	bool bad_byte = false;
	for (size_t i = 0; i < len && !bad_byte; i++) {
		unsigned char c = (unsigned char)line[i];
		bad_byte = (c < 0x20 && c != '\t' && c != '\r') || c == 0x7f;
	}
	if (len > ADMIN_CMD_MAX_LINE || bad_byte) {
		FUZZ_REQUIRE(err != NULL && cmd->num_words == 0);
		free(cmd);
		return;
	}
	/* the tokens, independently */
	size_t tokens = 0, i = 0, k = 0;
	bool json = false;
	while (i < len) {
		while (i < len && is_sep((unsigned char)line[i]))
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && !is_sep((unsigned char)line[i]))
			i++;
		size_t n = i - start;
		if (n == 6 && memcmp(line + start, "--json", 6) == 0) {
			json = true;
			continue;
		}
		if (!err) {
			FUZZ_REQUIRE(k < cmd->num_words);
			const char *w = cmd->words[k];
			FUZZ_REQUIRE(fuzz_inside(cmd->buf, sizeof(cmd->buf), w, n + 1));
			FUZZ_REQUIRE(k == 0 || w > cmd->words[k - 1]);
			FUZZ_REQUIRE(strlen(w) == n && memcmp(w, line + start, n) == 0);
			check_weight(w);
		}
		k++;
		tokens++;
	}
	FUZZ_REQUIRE(cmd->json == json);
	if (tokens == 0 || tokens > ADMIN_CMD_MAX_WORDS) {
		FUZZ_REQUIRE(err != NULL);
	} else {
		FUZZ_REQUIRE(err == NULL && cmd->num_words == tokens);
	}
	free(cmd);
}

static size_t escape_all(const uint8_t *data, size_t size, size_t cut, char *out)
{
	struct ctl_escape e;
	ctl_escape_init(&e);
	size_t o = ctl_escape(&e, data, cut, out);
	FUZZ_REQUIRE(o <= 4 * cut + 12);
	size_t o2 = ctl_escape(&e, data + cut, size - cut, out + o);
	FUZZ_REQUIRE(o2 <= 4 * (size - cut) + 12);
	o += o2;
	size_t o3 = ctl_escape_finish(&e, out + o);
	FUZZ_REQUIRE(o3 <= 12);
	return o + o3;
}

static void check_escape(const uint8_t *data, size_t size)
{
	char *whole = malloc(4 * size + 64), *split = malloc(4 * size + 64);
	FUZZ_REQUIRE(whole != NULL && split != NULL);
	size_t n = escape_all(data, size, size, whole);
	size_t cut = fuzz_prefix(data, size, 1, size + 1);
	size_t m = escape_all(data, size, cut, split);
	FUZZ_REQUIRE(n == m && memcmp(whole, split, n) == 0);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)whole[i];
		FUZZ_REQUIRE(c >= 0x20 || c == '\n' || c == '\t');
		FUZZ_REQUIRE(c != 0x7f);
		/* a C1 control never survives as UTF-8 */
		if (c == 0xc2 && i + 1 < n)
			FUZZ_REQUIRE((unsigned char)whole[i + 1] > 0x9f);
		/* every byte above 0x7f that is output belongs to well-formed UTF-8 */
		if (c >= 0x80)
			FUZZ_REQUIRE(c >= 0x80 && c != 0xc0 && c != 0xc1 && c < 0xf5);
	}
	free(whole);
	free(split);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a heap copy of exactly size bytes: ASan sees any read past the line */
	char *line = malloc(size ? size : 1);
	FUZZ_REQUIRE(line != NULL);
	memcpy(line, data, size);
	check_parse(line, size);
	free(line);
	check_escape(data, size);
	return 0;
}
