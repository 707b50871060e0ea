/* fuzz_waf_body.c - the WAF's argument parsers (urlencoded, JSON, multipart)
 * and the Aho-Corasick matcher on any bytes.
 *
 * Invariants: every name and value handed to the visitor lies inside the
 * input or the scratch buffer (of the input's size); the decoded bytes
 * visited never exceed the input's size in total; a parse that fails says
 * why; parsing twice gives the same arguments. The first bytes choose
 * phrases for an automaton whose matches must equal a naive search's.
 *
 * FUZZ_SOURCES: waf_body.c waf_transform.c waf_ac.c
 */
#include <string.h>
#include <strings.h>

#include "fuzz_common.h"
#include "waf_ac.h"
#include "waf_body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct ctx {
	const char *in;
	size_t n;
	const char *scratch;
	size_t total;
	unsigned count;
	uint64_t hash;
};

static bool visit(void *arg, enum waf_arg_kind kind, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct ctx *c = arg;
	FUZZ_REQUIRE(fuzz_inside(c->in, c->n, name, nlen) || fuzz_inside(c->scratch, c->n, name, nlen) || nlen == 0);
	FUZZ_REQUIRE(fuzz_inside(c->in, c->n, value, vlen) || fuzz_inside(c->scratch, c->n, value, vlen) ||
	             vlen == 0);
	c->count++;
	c->total += vlen;
	c->hash = c->hash * 31 + vlen + (uint64_t)kind;
	for (size_t i = 0; i < vlen; i++)
		c->hash = c->hash * 131 + (unsigned char)value[i];
	return true;
}

static void parse(int which, const char *in, size_t n, char *scratch, struct ctx *c, bool *ok, const char **err)
{
	memset(c, 0, sizeof(*c));
	c->in = in;
	c->n = n;
	c->scratch = scratch;
	static const char ct[] = "multipart/form-data; boundary=b";
	if (which == 0)
		*ok = waf_parse_urlencoded(in, n, scratch, visit, c, err);
	else if (which == 1)
		*ok = waf_parse_json(in, n, scratch, visit, c, err);
	else
		*ok = waf_parse_multipart(ct, sizeof(ct) - 1, in, n, scratch, visit, c, err);
}

static bool count_hit(uint32_t id, size_t end, void *arg)
{
	(void)end;
	((unsigned *)arg)[id]++;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	const char *in = (const char *)data;
	char *scratch = malloc(size + 1);
	FUZZ_REQUIRE(scratch);
	for (int which = 0; which < 3; which++) {
		struct ctx a, b;
		bool ok1, ok2;
		const char *e1 = NULL, *e2 = NULL;
		parse(which, in, size, scratch, &a, &ok1, &e1);
		parse(which, in, size, scratch, &b, &ok2, &e2);
		FUZZ_REQUIRE(ok1 == ok2 && a.count == b.count && a.hash == b.hash);
		FUZZ_REQUIRE(ok1 || e1 != NULL);
		if (which != 2)
			FUZZ_REQUIRE(a.total <= size);
	}
	/* phrases: up to 4 slices of the first 16 bytes, searched in the rest */
	if (size > 16) {
		struct waf_ac *ac = waf_ac_new();
		FUZZ_REQUIRE(ac);
		char phrase[4][5];
		size_t plen[4];
		for (int k = 0; k < 4; k++) {
			plen[k] = 1 + data[k * 4] % 4;
			memcpy(phrase[k], data + k * 4 + 1, plen[k]);
			phrase[k][plen[k]] = '\0';
			FUZZ_REQUIRE(waf_ac_add(ac, phrase[k], plen[k], (uint32_t)k));
		}
		FUZZ_REQUIRE(waf_ac_compile(ac));
		unsigned got[4] = {0, 0, 0, 0};
		const char *hay = in + 16;
		size_t hn = size - 16;
		waf_ac_search(ac, hay, hn, count_hit, got);
		for (int k = 0; k < 4; k++) {
			unsigned want = 0;
			for (size_t i = 0; i + plen[k] <= hn; i++) {
				size_t j = 0;
				while (j < plen[k]) {
					unsigned char x = (unsigned char)hay[i + j], y = (unsigned char)phrase[k][j];
					if (x >= 'A' && x <= 'Z')
						x += 32;
					if (y >= 'A' && y <= 'Z')
						y += 32;
					if (x != y)
						break;
					j++;
				}
				if (j == plen[k])
					want++;
			}
			FUZZ_REQUIRE(got[k] == want);
		}
		waf_ac_free(ac);
	}
	free(scratch);
	return 0;
}
