/* fuzz_h1_chunked.c - the chunked decoder on arbitrary bytes, fed the way a
 * connection feeds it: all at once, one byte at a time, and in uneven pieces
 * chosen from the input. Invariants: every split yields the same outcome,
 * decoded bytes, trailer lines and event sequence (runs of DATA merged);
 * returned counts never exceed what was offered; DATA and trailer lines point
 * into the offered bytes; events follow the grammar; total counts the data.
 *
 * FUZZ_SOURCES: h1.c http.c
 * FUZZ_DICT: h1.dict
 */
#include <string.h>

#include "fuzz_common.h"
#include "h1.h"

enum { MAX_LINE = 24, MAX_TRAILERS = 96 };

struct transcript {
	int outcome;   /* 1 done, 0 ran out of input, -1 error */
	char *data;    /* decoded bytes */
	size_t data_len;
	char *events;  /* one letter per event: N framing line, D data run, T trailer, E end */
	size_t events_len;
	char *trailers; /* trailer lines, each followed by '\n' */
	size_t trailers_len;
	const char *why;
	uint64_t total;
};

static void add_event(struct transcript *t, char ev)
{
	if (ev == 'D' && t->events_len > 0 && t->events[t->events_len - 1] == 'D')
		return;
	t->events[t->events_len++] = ev;
}

/* Offers in[off..avail) to the decoder; whenever it asks for more, avail
 * grows by the next step from steps[] (cycled), or to the end with no steps. */
static void run(const uint8_t *in, size_t len, const uint8_t *steps, size_t nsteps, struct transcript *t)
{
	struct h1_chunked c;
	h1_chunked_init(&c, MAX_LINE, MAX_TRAILERS);
	/* every event consumes at least one byte, so there are at most len + 1 */
	t->data = malloc(len + 1);
	t->events = malloc(len + 2);
	t->trailers = malloc(len + 1);
	FUZZ_REQUIRE(t->data && t->events && t->trailers);
	t->data_len = t->events_len = t->trailers_len = 0;
	t->why = NULL;

	const char *buf = (const char *)in;
	size_t off = 0, avail = 0, step_index = 0;
	bool in_trailers = false;
	for (;;) {
		enum h1_chunk_event ev = H1_CHUNK_NEED_MORE;
		const char *line = NULL;
		size_t line_len = 0;
		size_t offered = avail - off;
		ssize_t r = h1_chunked_feed(&c, buf + off, offered, &ev, &line, &line_len);
		if (r == H1_ERROR) {
			FUZZ_REQUIRE(c.why != NULL);
			t->outcome = -1;
			t->why = c.why;
			/* errors are sticky */
			FUZZ_REQUIRE(h1_chunked_feed(&c, buf + off, offered, &ev, NULL, NULL) == H1_ERROR);
			break;
		}
		FUZZ_REQUIRE(r >= 0 && (size_t)r <= offered);
		switch (ev) {
		case H1_CHUNK_NEED_MORE:
			FUZZ_REQUIRE(r == 0);
			if (avail == len) {
				t->outcome = 0;
				goto out;
			}
			if (nsteps == 0) {
				avail = len;
			} else {
				size_t step = (size_t)steps[step_index++ % nsteps] % 7 + 1;
				avail = len - avail > step ? avail + step : len;
			}
			continue;
		case H1_CHUNK_NONE:
			FUZZ_REQUIRE(r >= 2 && !in_trailers);
			add_event(t, 'N');
			break;
		case H1_CHUNK_DATA:
			FUZZ_REQUIRE(r > 0 && !in_trailers);
			memcpy(t->data + t->data_len, buf + off, (size_t)r);
			t->data_len += (size_t)r;
			add_event(t, 'D');
			break;
		case H1_CHUNK_TRAILER:
			FUZZ_REQUIRE(fuzz_inside(buf + off, (size_t)r, line, line_len) && line == buf + off);
			FUZZ_REQUIRE(line_len + 2 == (size_t)r && line_len > 0);
			FUZZ_REQUIRE(memchr(line, '\r', line_len) == NULL && memchr(line, '\n', line_len) == NULL);
			FUZZ_REQUIRE(memchr(line, ':', line_len) != NULL);
			FUZZ_REQUIRE(c.trailer_bytes <= MAX_TRAILERS);
			memcpy(t->trailers + t->trailers_len, line, line_len);
			t->trailers_len += line_len;
			t->trailers[t->trailers_len++] = '\n';
			in_trailers = true;
			add_event(t, 'T');
			break;
		case H1_CHUNK_DONE:
			FUZZ_REQUIRE(r == 2 && h1_chunked_done(&c));
			add_event(t, 'E');
			off += 2;
			/* done is sticky and consumes nothing more */
			FUZZ_REQUIRE(h1_chunked_feed(&c, buf + off, len - off, &ev, NULL, NULL) == 0);
			FUZZ_REQUIRE(ev == H1_CHUNK_DONE);
			t->outcome = 1;
			goto out;
		}
		off += (size_t)r;
	}
out:
	t->total = c.total;
	FUZZ_REQUIRE(t->total == t->data_len);
}

static void release(struct transcript *t)
{
	free(t->data);
	free(t->events);
	free(t->trailers);
}

static void require_same(const struct transcript *a, const struct transcript *b)
{
	FUZZ_REQUIRE(a->outcome == b->outcome);
	FUZZ_REQUIRE(a->data_len == b->data_len && memcmp(a->data, b->data, a->data_len) == 0);
	FUZZ_REQUIRE(a->events_len == b->events_len && memcmp(a->events, b->events, a->events_len) == 0);
	FUZZ_REQUIRE(a->trailers_len == b->trailers_len && memcmp(a->trailers, b->trailers, a->trailers_len) == 0);
	FUZZ_REQUIRE(a->total == b->total);
	if (a->outcome < 0)
		FUZZ_REQUIRE(strcmp(a->why, b->why) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t one_byte[] = {0};
	struct transcript whole, bytewise, uneven;
	run(data, size, NULL, 0, &whole);
	run(data, size, one_byte, 1, &bytewise);
	/* the input's own bytes pick the piece sizes */
	run(data, size, data, size, &uneven);
	require_same(&whole, &bytewise);
	require_same(&whole, &uneven);
	release(&whole);
	release(&bytewise);
	release(&uneven);
	return 0;
}
