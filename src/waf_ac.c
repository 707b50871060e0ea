/* waf_ac.c - Aho-Corasick automaton (waf_ac.h). */
#include "waf_ac.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct waf_ac {
	/* while building: a trie with 256 children per state (0: none) */
	int32_t *trie;
	size_t nstates, cap;
	/* per state: the ids of the phrases that end there (own), as a list */
	uint32_t *own_first; /* index into ids+1, 0: none */
	uint32_t *ids;       /* ids[k]: id; next[k]: next index of the same state (0: end) */
	uint32_t *next;
	size_t nids, ids_cap;
	/* compiled */
	bool compiled;
	uint8_t cls[256];
	size_t nclasses;
	int32_t *delta;     /* nstates * nclasses */
	int32_t *out_link;  /* nearest proper suffix state with own ids, -1: none */
	/* the search table: per state and class, the next state's row offset
	 * (state * nclasses), negated when that state ends some phrase (its
	 * own or through out_link): one load and one test per byte */
	int32_t *rows;
};

static unsigned char fold(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool grow_states(struct waf_ac *ac)
{
	if (ac->nstates < ac->cap)
		return true;
	size_t cap = ac->cap ? ac->cap * 2 : 64;
	int32_t *t = realloc(ac->trie, cap * 256 * sizeof(*t));
	if (!t)
		return false;
	ac->trie = t;
	uint32_t *o = realloc(ac->own_first, cap * sizeof(*o));
	if (!o)
		return false;
	ac->own_first = o;
	ac->cap = cap;
	return true;
}

static int32_t new_state(struct waf_ac *ac)
{
	if (!grow_states(ac))
		return -1;
	size_t s = ac->nstates++;
	memset(ac->trie + s * 256, 0, 256 * sizeof(int32_t));
	ac->own_first[s] = 0;
	return (int32_t)s;
}

struct waf_ac *waf_ac_new(void)
{
	struct waf_ac *ac = calloc(1, sizeof(*ac));
	if (!ac)
		return NULL;
	if (new_state(ac) < 0) {
		waf_ac_free(ac);
		return NULL;
	}
	return ac;
}

bool waf_ac_add(struct waf_ac *ac, const char *phrase, size_t len, uint32_t id)
{
	if (ac->compiled || len == 0)
		return false;
	int32_t s = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = fold((unsigned char)phrase[i]);
		int32_t t = ac->trie[(size_t)s * 256 + c];
		if (t == 0) {
			t = new_state(ac);
			if (t < 0)
				return false;
			ac->trie[(size_t)s * 256 + c] = t;
		}
		s = t;
	}
	if (ac->nids + 1 >= ac->ids_cap) {
		size_t cap = ac->ids_cap ? ac->ids_cap * 2 : 64;
		uint32_t *a = realloc(ac->ids, cap * sizeof(*a));
		if (!a)
			return false;
		ac->ids = a;
		uint32_t *b = realloc(ac->next, cap * sizeof(*b));
		if (!b)
			return false;
		ac->next = b;
		ac->ids_cap = cap;
	}
	size_t k = ++ac->nids; /* index 0 means "none" */
	ac->ids[k] = id;
	ac->next[k] = ac->own_first[s];
	ac->own_first[s] = (uint32_t)k;
	return true;
}

bool waf_ac_compile(struct waf_ac *ac)
{
	if (ac->compiled)
		return true;
	/* byte classes: class 0 for bytes in no phrase */
	bool used[256] = {false};
	for (size_t s = 0; s < ac->nstates; s++)
		for (int c = 0; c < 256; c++)
			if (ac->trie[s * 256 + (size_t)c])
				used[c] = true;
	ac->nclasses = 1;
	memset(ac->cls, 0, sizeof(ac->cls));
	for (int c = 0; c < 256; c++)
		if (used[c])
			ac->cls[c] = (uint8_t)ac->nclasses++;
	for (int c = 'A'; c <= 'Z'; c++)
		ac->cls[c] = ac->cls[c + 32];

	size_t n = ac->nstates, k = ac->nclasses;
	int32_t *fail = calloc(n, sizeof(*fail));
	int32_t *queue = calloc(n, sizeof(*queue));
	ac->delta = calloc(n * k, sizeof(*ac->delta));
	ac->out_link = calloc(n, sizeof(*ac->out_link));
	if (!fail || !queue || !ac->delta || !ac->out_link) {
		free(fail);
		free(queue);
		return false;
	}
	/* breadth-first: a state's failure and transitions come from shallower states */
	size_t head = 0, tail = 0;
	ac->out_link[0] = -1;
	for (int c = 0; c < 256; c++) {
		if (!used[c])
			continue;
		int32_t t = ac->trie[c];
		ac->delta[ac->cls[c]] = t;
		if (t) {
			fail[t] = 0;
			ac->out_link[t] = -1;
			queue[tail++] = t;
		}
	}
	while (head < tail) {
		int32_t s = queue[head++];
		for (int c = 0; c < 256; c++) {
			if (!used[c])
				continue;
			int32_t t = ac->trie[(size_t)s * 256 + (size_t)c];
			int32_t via_fail = ac->delta[(size_t)fail[s] * k + ac->cls[c]];
			if (t) {
				fail[t] = via_fail;
				ac->out_link[t] = ac->own_first[via_fail] ? via_fail : ac->out_link[via_fail];
				queue[tail++] = t;
				ac->delta[(size_t)s * k + ac->cls[c]] = t;
			} else {
				ac->delta[(size_t)s * k + ac->cls[c]] = via_fail;
			}
		}
	}
	free(fail);
	free(queue);
	free(ac->trie);
	ac->trie = NULL;
	if (n * k > INT32_MAX / 2)
		return false;
	ac->rows = malloc(n * k * sizeof(*ac->rows));
	if (!ac->rows)
		return false;
	for (size_t i = 0; i < n * k; i++) {
		int32_t t = ac->delta[i];
		bool out = ac->own_first[t] || ac->out_link[t] > 0;
		ac->rows[i] = out ? -(int32_t)((size_t)t * k) : (int32_t)((size_t)t * k);
	}
	free(ac->delta);
	ac->delta = NULL;
	ac->compiled = true;
	return true;
}

void waf_ac_search(const struct waf_ac *ac, const char *s, size_t n, bool (*found)(uint32_t id, size_t end, void *arg),
                   void *arg)
{
	if (!ac->compiled)
		return;
	const int32_t *rows = ac->rows;
	const uint8_t *cls = ac->cls;
	const unsigned char *p = (const unsigned char *)s;
	size_t k = ac->nclasses;
	int32_t r = 0;
	for (size_t i = 0; i < n; i++) {
		r = rows[r + cls[p[i]]];
		if (r >= 0)
			continue;
		r = -r;
		int32_t st = (int32_t)((size_t)r / k);
		for (int32_t o = ac->own_first[st] ? st : ac->out_link[st]; o > 0; o = ac->out_link[o])
			for (uint32_t x = ac->own_first[o]; x; x = ac->next[x])
				if (found(ac->ids[x], i + 1, arg))
					return;
	}
}

size_t waf_ac_states(const struct waf_ac *ac)
{
	return ac->nstates;
}

void waf_ac_free(struct waf_ac *ac)
{
	if (!ac)
		return;
	free(ac->trie);
	free(ac->own_first);
	free(ac->ids);
	free(ac->next);
	free(ac->delta);
	free(ac->out_link);
	free(ac->rows);
	free(ac);
}
