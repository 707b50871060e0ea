/* fuzz_statefile.c - statefile_parse on any bytes (a state file as found at
 * start, corrupted or hostile).
 *
 * Invariants: line numbers reported are increasing and within the number of
 * lines; the whole-buffer parse reports for each line exactly what
 * statefile_parse_line says of that line alone; a line over the limit or with
 * a NUL or control byte (TAB, a final CR aside) is always skipped; an
 * entry's names are non-empty and free of separators and control bytes, its
 * weight at most 1000; and an entry written back in the file's format parses
 * to the same entry (what sluice writes, it reads back).
 *
 * FUZZ_SOURCES: statefile_parse.c
 */
#include <stdio.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_common.h"
#include "statefile_parse.h"

struct seen {
	const char *buf;
	size_t len;
	unsigned last_line;
	unsigned lines;
	struct statefile_entry *again;
};

/* The bytes of line number lineno (1-based) of buf, without its LF. */
static const char *nth_line(const struct seen *s, unsigned lineno, size_t *n)
{
	size_t off = 0;
	for (unsigned i = 1;; i++) {
		const char *nl = memchr(s->buf + off, '\n', s->len - off);
		size_t l = nl ? (size_t)(nl - (s->buf + off)) : s->len - off;
		if (i == lineno) {
			*n = l;
			return s->buf + off;
		}
		FUZZ_REQUIRE(nl != NULL);
		off += l + 1;
	}
}

static void check_name(const char *w)
{
	size_t n = strlen(w);
	FUZZ_REQUIRE(n > 0 && n <= STATEFILE_MAX_LINE);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)w[i];
		FUZZ_REQUIRE(c > 0x20 && c != 0x7f);
	}
}

/* A rollout's words: text (tabs allowed), not empty, not starting with a blank. */
static void check_words(const char *w)
{
	size_t n = strlen(w);
	FUZZ_REQUIRE(n > 0 && n <= STATEFILE_MAX_LINE && w[0] != ' ');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)w[i];
		FUZZ_REQUIRE((c >= 0x20 || c == '\t') && c != 0x7f);
	}
}

static void next_line(struct seen *s, unsigned lineno)
{
	FUZZ_REQUIRE(lineno > s->last_line && lineno <= s->lines);
	s->last_line = lineno;
}

static void on_entry(const struct statefile_entry *e, unsigned lineno, void *arg)
{
	struct seen *s = arg;
	next_line(s, lineno);
	FUZZ_REQUIRE(e->kind == STATEFILE_WEIGHT || e->kind == STATEFILE_DRAIN || e->kind == STATEFILE_DISABLE ||
	             e->kind == STATEFILE_SERVICE_WEIGHT || e->kind == STATEFILE_SERVICE_SAVED ||
	             e->kind == STATEFILE_ROLLOUT);
	check_name(e->name);
	if (e->kind == STATEFILE_ROLLOUT)
		check_words(e->target); /* the controller's words, kept whole */
	else
		check_name(e->target);
	FUZZ_REQUIRE(e->weight <= 1000);
	size_t n = 0;
	const char *line = nth_line(s, lineno, &n);
	FUZZ_REQUIRE(statefile_parse_line(line, n, s->again) == NULL);
	FUZZ_REQUIRE(s->again->kind == e->kind && s->again->weight == e->weight);
	FUZZ_REQUIRE(strcmp(s->again->name, e->name) == 0 && strcmp(s->again->target, e->target) == 0);
	/* written back as sluice writes it, it reads back the same (when it fits a line) */
	static const char *const verbs[] = {"", "weight", "drain", "disable", "service-weight", "service-saved-weight",
	                                    "rollout"};
	FUZZ_REQUIRE((size_t)e->kind < sizeof(verbs) / sizeof(verbs[0]));
	char text[3 * STATEFILE_MAX_LINE];
	bool weighted = e->kind == STATEFILE_WEIGHT || e->kind == STATEFILE_SERVICE_WEIGHT ||
	                e->kind == STATEFILE_SERVICE_SAVED;
	int len = weighted ? snprintf(text, sizeof(text), "%s %s %s %u", verbs[e->kind], e->name, e->target, e->weight)
	                   : snprintf(text, sizeof(text), "%s %s %s", verbs[e->kind], e->name, e->target);
	FUZZ_REQUIRE(len > 0 && (size_t)len < sizeof(text));
	const char *why = statefile_parse_line(text, (size_t)len, s->again);
	if ((size_t)len > STATEFILE_MAX_LINE) {
		FUZZ_REQUIRE(why != NULL);
		return;
	}
	FUZZ_REQUIRE(why == NULL && s->again->kind == e->kind && s->again->weight == e->weight);
	FUZZ_REQUIRE(strcmp(s->again->name, e->name) == 0 && strcmp(s->again->target, e->target) == 0);
}

static void on_skip(unsigned lineno, const char *why, void *arg)
{
	struct seen *s = arg;
	next_line(s, lineno);
	FUZZ_REQUIRE(why != NULL && why[0] != '\0');
	size_t n = 0;
	const char *line = nth_line(s, lineno, &n);
	const char *again = statefile_parse_line(line, n, s->again);
	FUZZ_REQUIRE(again != NULL && strcmp(again, why) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1);
	struct statefile_entry *scratch = malloc(sizeof(*scratch));
	struct seen s = {.buf = buf, .len = size, .again = malloc(sizeof(*s.again))};
	FUZZ_REQUIRE(buf != NULL && scratch != NULL && s.again != NULL);
	memcpy(buf, data, size);
	for (size_t i = 0; i < size; i++)
		s.lines += buf[i] == '\n';
	if (size > 0 && buf[size - 1] != '\n')
		s.lines++;
	statefile_parse(buf, size, scratch, on_entry, on_skip, &s);

	/* every line that must be refused is, whatever else it holds */
	size_t off = 0;
	while (off < size) {
		const char *nl = memchr(buf + off, '\n', size - off);
		size_t n = nl ? (size_t)(nl - (buf + off)) : size - off;
		size_t body = n > 0 && buf[off + n - 1] == '\r' ? n - 1 : n;
		bool bad = body > STATEFILE_MAX_LINE;
		for (size_t i = 0; i < body && !bad; i++) {
			unsigned char c = (unsigned char)buf[off + i];
			bad = (c < 0x20 && c != '\t') || c == 0x7f;
		}
		if (bad)
			FUZZ_REQUIRE(statefile_parse_line(buf + off, n, s.again) != NULL);
		off += n + (nl ? 1 : 0);
	}
	free(s.again);
	free(scratch);
	free(buf);
	return 0;
}
