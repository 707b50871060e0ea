#include "fields.h"

#include <string.h>

#include "arena.h"

void fields_init(struct fields *f, struct arena *a)
{
	f->v = NULL;
	f->flags = NULL;
	f->n = f->cap = 0;
	f->arena = a;
}

void fields_view(struct fields *f, struct arena *a, struct http_header *v, uint8_t *flags, size_t n, size_t cap)
{
	f->v = v;
	f->flags = flags;
	f->n = n;
	f->cap = cap;
	f->arena = a;
}

int fields_find(const struct fields *f, const char *lower_name, size_t from)
{
	for (size_t i = from; i < f->n; i++)
		if (http_name_is(&f->v[i], lower_name))
			return (int)i;
	return -1;
}

const char *fields_value(const struct fields *f, const char *lower_name, size_t *len)
{
	int i = fields_find(f, lower_name, 0);
	if (i < 0)
		return NULL;
	if (len)
		*len = f->v[i].value_len;
	return f->v[i].value;
}

/* The old array stays in the arena until the request ends, which is cheaper
 * than tracking it. */
void fields_grow(struct fields *f)
{
	if (f->n < f->cap)
		return;
	size_t cap = f->cap ? 2 * f->cap : 16;
	struct http_header *v = arena_alloc(f->arena, cap * sizeof(*v));
	if (f->n)
		memcpy(v, f->v, f->n * sizeof(*v));
	if (f->flags) {
		uint8_t *flags = arena_alloc(f->arena, cap);
		memcpy(flags, f->flags, f->n);
		f->flags = flags;
	}
	f->v = v;
	f->cap = cap;
}

void fields_add_copy(struct fields *f, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	fields_add(f, arena_strndup(f->arena, name, nl), nl, arena_strndup(f->arena, value, vl), vl);
}

void fields_add_line(struct fields *f, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	if (!colon || colon == line)
		return;
	const char *v = colon + 1, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	size_t nl = (size_t)(colon - line), vl = (size_t)(end - v);
	fields_add(f, arena_strndup(f->arena, line, nl), nl, arena_strndup(f->arena, v, vl), vl);
}

void fields_add_u64(struct fields *f, const char *name, uint64_t value)
{
	char tmp[24];
	size_t k = 0;
	do {
		tmp[k++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	char *num = arena_alloc(f->arena, k + 1);
	for (size_t i = 0; i < k; i++)
		num[i] = tmp[k - 1 - i];
	num[k] = '\0';
	fields_add(f, name, strlen(name), num, k);
}

size_t fields_remove(struct fields *f, const char *lower_name)
{
	return fields_remove_len(f, lower_name, strlen(lower_name));
}

size_t fields_remove_len(struct fields *f, const char *lower_name, size_t len)
{
	size_t kept = 0, removed = 0;
	for (size_t i = 0; i < f->n; i++) {
		if (f->v[i].name_len == len && strncasecmp(f->v[i].name, lower_name, len) == 0) {
			removed++;
			continue;
		}
		if (kept != i) {
			f->v[kept] = f->v[i];
			if (f->flags)
				f->flags[kept] = f->flags[i];
		}
		kept++;
	}
	f->n = kept;
	return removed;
}

void fields_set(struct fields *f, const char *lower_name, const char *value)
{
	fields_remove(f, lower_name);
	fields_add_copy(f, lower_name, value);
}

void fields_append(struct fields *f, const struct fields *src)
{
	for (size_t i = 0; i < src->n; i++)
		fields_add(f, src->v[i].name, src->v[i].name_len, src->v[i].value, src->v[i].value_len);
}
