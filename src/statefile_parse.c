#include "statefile_parse.h"

#include <stdbool.h>
#include <string.h>

#define STATEFILE_MAX_WORDS 5

struct statefile_word {
	const char *p;
	size_t n;
};

static bool statefile_word_is(const struct statefile_word *w, const char *s)
{
	return w->n == strlen(s) && memcmp(w->p, s, w->n) == 0;
}

static void statefile_copy(char *dst, const struct statefile_word *w)
{
	memcpy(dst, w->p, w->n);
	dst[w->n] = '\0';
}

/* A weight as the admin commands take it: digits only, 0 to 1000. */
static bool statefile_weight(const struct statefile_word *w, unsigned *out)
{
	if (w->n == 0 || w->n > 4)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < w->n; i++) {
		if (w->p[i] < '0' || w->p[i] > '9')
			return false;
		v = v * 10 + (unsigned)(w->p[i] - '0');
	}
	if (v > 1000)
		return false;
	*out = v;
	return true;
}

const char *statefile_parse_line(const char *line, size_t len, struct statefile_entry *e)
{
	e->kind = STATEFILE_NOTHING;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len > STATEFILE_MAX_LINE)
		return "line too long";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return "not text (a NUL or control byte)";
	}
	/* a comment, of any number of words (sluice writes two at the top) */
	size_t first = 0;
	while (first < len && (line[first] == ' ' || line[first] == '\t'))
		first++;
	if (first < len && line[first] == '#')
		return NULL;
	/* a rollout's words are the controller's own (rollout.c): kept whole */
	static const char rollout_word[] = "rollout ";
	if (len > sizeof rollout_word - 1 && memcmp(line, rollout_word, sizeof rollout_word - 1) == 0) {
		size_t i = sizeof rollout_word - 1, start;
		while (i < len && line[i] == ' ')
			i++;
		start = i;
		while (i < len && line[i] != ' ' && line[i] != '\t')
			i++;
		size_t name_len = i - start;
		while (i < len && line[i] == ' ')
			i++;
		if (name_len == 0 || i == len)
			return "malformed";
		e->kind = STATEFILE_ROLLOUT;
		e->weight = 0;
		memcpy(e->name, line + start, name_len);
		e->name[name_len] = '\0';
		memcpy(e->target, line + i, len - i);
		e->target[len - i] = '\0';
		return NULL;
	}
	struct statefile_word w[STATEFILE_MAX_WORDS];
	size_t nw = 0;
	for (size_t i = 0; i < len;) {
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && line[i] != ' ' && line[i] != '\t')
			i++;
		if (nw == STATEFILE_MAX_WORDS)
			return "malformed (too many words)";
		w[nw].p = line + start;
		w[nw].n = i - start;
		nw++;
	}
	if (nw == 0 || w[0].p[0] == '#')
		return NULL;
	enum statefile_kind kind;
	size_t want;
	if (statefile_word_is(&w[0], "weight")) {
		kind = STATEFILE_WEIGHT;
		want = 4;
	} else if (statefile_word_is(&w[0], "drain")) {
		kind = STATEFILE_DRAIN;
		want = 3;
	} else if (statefile_word_is(&w[0], "disable")) {
		kind = STATEFILE_DISABLE;
		want = 3;
	} else if (statefile_word_is(&w[0], "service-weight")) {
		kind = STATEFILE_SERVICE_WEIGHT;
		want = 4;
	} else if (statefile_word_is(&w[0], "service-saved-weight")) {
		kind = STATEFILE_SERVICE_SAVED;
		want = 4;
	} else {
		return "unknown change";
	}
	if (nw != want)
		return "malformed";
	unsigned weight = 0;
	if (want == 4 && !statefile_weight(&w[3], &weight))
		return "malformed (a weight is a whole number from 0 to 1000)";
	e->kind = kind;
	e->weight = weight;
	statefile_copy(e->name, &w[1]);
	statefile_copy(e->target, &w[2]);
	return NULL;
}

void statefile_parse(const char *buf, size_t len, struct statefile_entry *scratch, statefile_entry_cb on_entry,
                     statefile_skip_cb on_skip, void *arg)
{
	unsigned lineno = 0;
	size_t off = 0;
	while (off < len) {
		const char *nl = memchr(buf + off, '\n', len - off);
		size_t n = nl ? (size_t)(nl - (buf + off)) : len - off;
		lineno++;
		const char *why = statefile_parse_line(buf + off, n, scratch);
		if (why)
			on_skip(lineno, why, arg);
		else if (scratch->kind != STATEFILE_NOTHING)
			on_entry(scratch, lineno, arg);
		off += n + (nl ? 1 : 0);
	}
}
