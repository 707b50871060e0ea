/* fuzz_statedump.c - statedump_parse on any bytes (a dump-state file as an
 * operator may hand to restore-state: truncated, edited, hostile).
 *
 * Invariants: a refusal says where ("line L, column C: ...", within the
 * input); an accepted file's runtime lines are each one change that
 * statefile_parse_line accepts, its keys start with sluice:rl: and carry a
 * non-empty payload and a pttl of -1 or 1..2^53, within the bounds; and the
 * accepted content written back as a dump file parses to the same content
 * (what sluice writes, restore-state reads back).
 *
 * FUZZ_SOURCES: statedump_parse.c statefile_parse.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "statedump_parse.h"

static size_t put(char *o, size_t at, const char *s)
{
	size_t n = strlen(s);
	if (o)
		memcpy(o + at, s, n);
	return at + n;
}

static size_t put_str(char *o, size_t at, const unsigned char *s, size_t n)
{
	at = put(o, at, "\"");
	for (size_t i = 0; i < n; i++) {
		char esc[8];
		if (s[i] == '"' || s[i] == '\\' || s[i] < 0x20 || s[i] == 0x7f)
			snprintf(esc, sizeof esc, "\\u%04x", s[i]);
		else
			snprintf(esc, sizeof esc, "%c", s[i]);
		at = put(o, at, esc);
	}
	return put(o, at, "\"");
}

static size_t put_hex(char *o, size_t at, const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char h[3];
		snprintf(h, sizeof h, "%02x", s[i]);
		at = put(o, at, h);
	}
	return at;
}

/* The dump file of d (o NULL: only its length). Keys as key_hex: any bytes. */
static size_t render(const struct statedump *d, char *o)
{
	size_t at = put(o, 0, "{\"format\":\"sluice-state-dump\",\"version\":1,\"runtime\":[");
	for (size_t i = 0; i < d->num_lines; i++) {
		at = put(o, at, i ? "," : "");
		at = put_str(o, at, (const unsigned char *)d->lines[i].text, strlen(d->lines[i].text));
	}
	at = put(o, at, "],\"redis\":");
	if (!d->has_redis)
		return put(o, at, "null}");
	at = put(o, at, "{\"keys\":[");
	for (size_t i = 0; i < d->num_keys; i++) {
		char num[32];
		at = put(o, at, i ? ",{\"key_hex\":\"" : "{\"key_hex\":\"");
		at = put_hex(o, at, d->keys[i].key, d->keys[i].key_len);
		snprintf(num, sizeof num, "\",\"pttl\":%lld,\"dump\":\"", d->keys[i].pttl);
		at = put(o, at, num);
		at = put_hex(o, at, d->keys[i].dump, d->keys[i].dump_len);
		at = put(o, at, "\"}");
	}
	return put(o, at, "]}}");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512] = "";
	struct statedump *d = statedump_parse((const char *)data, size, err, sizeof err);
	if (!d) {
		unsigned line, col;
		FUZZ_REQUIRE(sscanf(err, "line %u, column %u: ", &line, &col) == 2);
		FUZZ_REQUIRE(line >= 1 && col >= 1 && line <= size + 1 && col <= size + 1);
		return 0;
	}
	FUZZ_REQUIRE(d->version == STATEDUMP_VERSION);
	FUZZ_REQUIRE(d->num_lines <= STATEDUMP_MAX_LINES && d->num_keys <= STATEDUMP_MAX_KEYS);
	static struct statefile_entry e;
	for (size_t i = 0; i < d->num_lines; i++) {
		const char *t = d->lines[i].text;
		FUZZ_REQUIRE(statefile_parse_line(t, strlen(t), &e) == NULL && e.kind != STATEFILE_NOTHING);
	}
	for (size_t i = 0; i < d->num_keys; i++) {
		const struct statedump_key *k = &d->keys[i];
		FUZZ_REQUIRE(k->key_len > strlen(STATEDUMP_PREFIX) && memcmp(k->key, STATEDUMP_PREFIX, 10) == 0);
		FUZZ_REQUIRE(k->dump_len > 0);
		FUZZ_REQUIRE(k->pttl == -1 || (k->pttl >= 1 && k->pttl <= (1ll << 53)));
	}
	size_t n = render(d, NULL);
	char *again = malloc(n);
	FUZZ_REQUIRE(again != NULL);
	render(d, again);
	struct statedump *d2 = statedump_parse(again, n, err, sizeof err);
	if (!d2)
		fprintf(stderr, "re-parse: %s\n", err);
	FUZZ_REQUIRE(d2 != NULL);
	FUZZ_REQUIRE(d2->num_lines == d->num_lines && d2->num_keys == d->num_keys && d2->has_redis == d->has_redis);
	for (size_t i = 0; i < d->num_lines; i++)
		FUZZ_REQUIRE(strcmp(d->lines[i].text, d2->lines[i].text) == 0);
	for (size_t i = 0; i < d->num_keys; i++) {
		const struct statedump_key *a = &d->keys[i], *b = &d2->keys[i];
		FUZZ_REQUIRE(a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0);
		FUZZ_REQUIRE(a->dump_len == b->dump_len && memcmp(a->dump, b->dump, a->dump_len) == 0);
		FUZZ_REQUIRE(a->pttl == b->pttl);
	}
	statedump_free(d2);
	free(again);
	statedump_free(d);
	return 0;
}
