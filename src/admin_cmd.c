#include "admin_cmd.h"

#include <string.h>

static bool admin_cmd_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* --json may stand anywhere, so it is looked for even in a refused line:
 * the refusal is then answered in JSON too. */
static bool admin_cmd_has_json(const char *line, size_t len)
{
	static const char word[] = "--json";
	const size_t wl = sizeof(word) - 1;
	for (size_t i = 0; i + wl <= len; i++)
		if ((i == 0 || admin_cmd_space((unsigned char)line[i - 1])) && memcmp(line + i, word, wl) == 0 &&
		    (i + wl == len || admin_cmd_space((unsigned char)line[i + wl])))
			return true;
	return false;
}

const char *admin_cmd_parse(const char *line, size_t len, struct admin_cmd *cmd)
{
	cmd->num_words = 0;
	cmd->json = admin_cmd_has_json(line, len < ADMIN_CMD_MAX_LINE ? len : ADMIN_CMD_MAX_LINE);
	if (len > ADMIN_CMD_MAX_LINE)
		return "line too long (at most 4096 bytes)";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
			return "the line has a control byte (a command is text)";
	}
	memcpy(cmd->buf, line, len);
	cmd->buf[len] = '\0';
	size_t i = 0;
	while (i < len) {
		while (i < len && admin_cmd_space((unsigned char)cmd->buf[i]))
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && !admin_cmd_space((unsigned char)cmd->buf[i]))
			i++;
		cmd->buf[i] = '\0'; /* i == len writes the terminator already there */
		if (i < len)
			i++;
		char *w = cmd->buf + start;
		if (strcmp(w, "--json") == 0)
			continue;
		if (cmd->num_words == ADMIN_CMD_MAX_WORDS) {
			cmd->num_words = 0;
			return "too many words (at most 64)";
		}
		cmd->words[cmd->num_words++] = w;
	}
	if (cmd->num_words == 0)
		return "empty command (try help)";
	return NULL;
}

bool admin_cmd_weight(const char *s, unsigned *out)
{
	unsigned v = 0;
	size_t n = 0;
	for (; s[n]; n++) {
		if (s[n] < '0' || s[n] > '9' || n >= 4)
			return false;
		v = v * 10 + (unsigned)(s[n] - '0');
	}
	if (n == 0 || v > ADMIN_CMD_MAX_WEIGHT)
		return false;
	*out = v;
	return true;
}
