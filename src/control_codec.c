/* control_codec.c - fleet control's entries, values and sets (control_codec.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "control_codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statefile_parse.h"

static const char *const kind_words[] = {
	[STATEFILE_WEIGHT] = "weight",
	[STATEFILE_DRAIN] = "drain",
	[STATEFILE_DISABLE] = "disable",
	[STATEFILE_SERVICE_WEIGHT] = "service-weight",
	[STATEFILE_SERVICE_SAVED] = "service-saved-weight",
};

bool control_entry_key(const char *line, char *key, size_t size)
{
	static const char verdict[] = "verdict ";
	int n;
	if (strncmp(line, verdict, sizeof verdict - 1) == 0) {
		const char *svc = line + sizeof verdict - 1;
		size_t len = strcspn(svc, " ");
		if (len == 0)
			return false;
		n = snprintf(key, size, "verdict %.*s", (int)len, svc);
		return n > 0 && (size_t)n < size;
	}
	struct statefile_entry *e = malloc(sizeof *e);
	if (!e)
		return false;
	bool ok = statefile_parse_line(line, strlen(line), e) == NULL && e->kind != STATEFILE_NOTHING;
	if (ok) {
		if (e->kind == STATEFILE_ROLLOUT)
			n = snprintf(key, size, "rollout %s", e->name);
		else
			n = snprintf(key, size, "%s %s %s", kind_words[e->kind], e->name, e->target);
		ok = n > 0 && (size_t)n < size;
	}
	free(e);
	return ok;
}

int control_value_format(char *buf, size_t size, uint64_t version, const char *origin, const char *line)
{
	int n = snprintf(buf, size, "%" PRIu64 " %s %s", version, origin, line ? line : CONTROL_TOMBSTONE);
	return n < 0 || (size_t)n >= size ? -1 : n;
}

bool control_value_parse(const char *s, uint64_t *version, char *origin, size_t origin_size, const char **line)
{
	uint64_t v = 0;
	const char *p = s;
	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p++ != ' ')
		return false;
	size_t olen = strcspn(p, " ");
	if (olen == 0 || olen >= origin_size || p[olen] != ' ')
		return false;
	memcpy(origin, p, olen);
	origin[olen] = '\0';
	p += olen + 1;
	if (!*p)
		return false;
	*version = v;
	*line = strcmp(p, CONTROL_TOMBSTONE) == 0 ? NULL : p;
	return true;
}

void control_set_init(struct control_set *s)
{
	memset(s, 0, sizeof *s);
}

void control_set_clear(struct control_set *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->items[i].key);
		free(s->items[i].line);
	}
	s->n = 0;
}

void control_set_free(struct control_set *s)
{
	control_set_clear(s);
	free(s->items);
	control_set_init(s);
}

/* The index of key, or where it would go (*found false). */
static size_t set_search(const struct control_set *s, const char *key, bool *found)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->items[mid].key, key);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

struct control_item *control_set_find(struct control_set *s, const char *key)
{
	bool found;
	size_t i = set_search(s, key, &found);
	return found ? &s->items[i] : NULL;
}

struct control_item *control_set_put(struct control_set *s, const char *key, const char *line)
{
	bool found;
	size_t i = set_search(s, key, &found);
	char *l = NULL;
	if (line && !(l = strdup(line)))
		return NULL;
	if (found) {
		free(s->items[i].line);
		s->items[i].line = l;
		return &s->items[i];
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct control_item *grown = realloc(s->items, cap * sizeof *grown);
		if (!grown) {
			free(l);
			return NULL;
		}
		s->items = grown;
		s->cap = cap;
	}
	char *k = strdup(key);
	if (!k) {
		free(l);
		return NULL;
	}
	memmove(&s->items[i + 1], &s->items[i], (s->n - i) * sizeof *s->items);
	s->n++;
	s->items[i] = (struct control_item){ .key = k, .line = l };
	return &s->items[i];
}

int control_set_add_text(struct control_set *s, const char *text, size_t len)
{
	char line[STATEFILE_MAX_LINE + 1], key[STATEFILE_MAX_LINE + 32];
	size_t at = 0;
	while (at < len) {
		const char *nl = memchr(text + at, '\n', len - at);
		size_t ll = nl ? (size_t)(nl - (text + at)) : len - at;
		if (ll < sizeof line) {
			memcpy(line, text + at, ll);
			line[ll] = '\0';
			if (line[0] != '#' && control_entry_key(line, key, sizeof key) && !control_set_put(s, key, line))
				return -1;
		}
		at += ll + (nl ? 1 : 0);
	}
	return 0;
}

static bool same_line(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

size_t control_set_diff(struct control_set *cur, struct control_set *known, control_diff_cb *cb, void *arg)
{
	size_t i = 0, j = 0, changes = 0;
	while (i < cur->n || j < known->n) {
		int c = i == cur->n ? 1 : j == known->n ? -1 : strcmp(cur->items[i].key, known->items[j].key);
		if (c < 0) { /* only here: new (a tombstone here is nothing) */
			if (cur->items[i].line) {
				cb(arg, cur->items[i].key, cur->items[i].line, NULL);
				changes++;
			}
			i++;
		} else if (c > 0) { /* only known: gone here unless already a tombstone */
			const struct control_item *k = &known->items[j];
			if ((k->line || k->unknown) && !k->inapplicable) {
				cb(arg, k->key, NULL, k);
				changes++;
			}
			j++;
		} else {
			const struct control_item *k = &known->items[j];
			if ((k->unknown || !same_line(cur->items[i].line, k->line)) &&
			    !(k->inapplicable && !cur->items[i].line)) {
				cb(arg, k->key, cur->items[i].line, k);
				changes++;
			}
			i++;
			j++;
		}
	}
	return changes;
}

enum control_action control_decide(uint64_t remote_version, const char *remote_origin,
                                   const struct control_item *known, uint64_t floor, const char *me)
{
	if (known && known->pending)
		return CONTROL_WAIT;
	uint64_t have = known && known->version > floor ? known->version : floor;
	if (remote_version <= have)
		return CONTROL_KEEP;
	return strcmp(remote_origin, me) == 0 ? CONTROL_ACK : CONTROL_APPLY;
}
