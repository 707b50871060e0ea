#include "statedump_parse.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 8

/* A small strict JSON reader (RFC 8259) over the whole buffer, walking the
 * schema as it goes: no tree is built, so memory is what the result keeps. */
struct rd {
	const char *buf;
	size_t len, pos;
	char *err;
	size_t err_size;
	bool failed;
	int depth;
};

static void fail_at(struct rd *r, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_at(struct rd *r, size_t off, const char *fmt, ...)
{
	if (r->failed)
		return;
	r->failed = true;
	unsigned line, col;
	statedump_position(r->buf, r->len, off, &line, &col);
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(r->err, r->err_size, "line %u, column %u: %s", line, col, msg);
}

void statedump_position(const char *buf, size_t len, size_t off, unsigned *line, unsigned *col)
{
	unsigned l = 1, c = 1;
	for (size_t i = 0; i < off && i < len; i++) {
		if (buf[i] == '\n') {
			l++;
			c = 1;
		} else {
			c++;
		}
	}
	*line = l;
	*col = c;
}

static void ws(struct rd *r)
{
	while (r->pos < r->len &&
	       (r->buf[r->pos] == ' ' || r->buf[r->pos] == '\t' || r->buf[r->pos] == '\n' || r->buf[r->pos] == '\r'))
		r->pos++;
}

static bool peek(struct rd *r, char ch)
{
	ws(r);
	return r->pos < r->len && r->buf[r->pos] == ch;
}

static bool expect(struct rd *r, char ch, const char *what)
{
	if (!peek(r, ch)) {
		fail_at(r, r->pos, "expected %s", what);
		return false;
	}
	r->pos++;
	return true;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static size_t put_utf8(unsigned char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xc0 | (cp >> 6));
		o[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | (cp >> 12));
		o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | (cp >> 18));
	o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

static bool read_hex4(struct rd *r, uint32_t *out)
{
	if (r->len - r->pos < 4) {
		fail_at(r, r->pos, "a \\u escape needs 4 hex digits");
		return false;
	}
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(r->buf[r->pos + (size_t)i]);
		if (h < 0) {
			fail_at(r, r->pos, "a \\u escape needs 4 hex digits");
			return false;
		}
		v = v * 16 + (uint32_t)h;
	}
	r->pos += 4;
	*out = v;
	return true;
}

/* A string: decoded bytes (NUL-terminated, may hold NULs from \u0000) in a
 * malloc'd buffer, or NULL after failing. */
static unsigned char *read_string(struct rd *r, size_t *out_len)
{
	ws(r);
	size_t start = r->pos;
	if (r->pos >= r->len || r->buf[r->pos] != '"') {
		fail_at(r, r->pos, "expected a string");
		return NULL;
	}
	r->pos++;
	/* decoded is never longer than the encoded form */
	size_t end = r->pos;
	while (end < r->len && r->buf[end] != '"')
		end += r->buf[end] == '\\' ? 2 : 1;
	unsigned char *o = malloc((end > r->len ? r->len : end) - r->pos + 1);
	if (!o) {
		fail_at(r, start, "out of memory");
		return NULL;
	}
	size_t n = 0;
	for (;;) {
		if (r->pos >= r->len) {
			fail_at(r, start, "this string has no closing quote");
			break;
		}
		unsigned char ch = (unsigned char)r->buf[r->pos];
		if (ch == '"') {
			r->pos++;
			o[n] = '\0';
			*out_len = n;
			return o;
		}
		if (ch < 0x20) {
			fail_at(r, r->pos, "a control byte inside a string (escape it, e.g. \\n)");
			break;
		}
		if (ch != '\\') {
			o[n++] = ch;
			r->pos++;
			continue;
		}
		if (++r->pos >= r->len) {
			fail_at(r, start, "this string has no closing quote");
			break;
		}
		char e = r->buf[r->pos++];
		const char *simple = strchr("\"\\/bfnrt", e);
		if (e && simple) {
			static const char map[] = "\"\\/\b\f\n\r\t";
			o[n++] = (unsigned char)map[simple - "\"\\/bfnrt"];
			continue;
		}
		if (e != 'u') {
			fail_at(r, r->pos - 2, "unknown escape \\%c", e >= 0x20 && e < 0x7f ? e : '?');
			break;
		}
		uint32_t cp;
		if (!read_hex4(r, &cp))
			break;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			uint32_t lo;
			if (r->len - r->pos < 2 || r->buf[r->pos] != '\\' || r->buf[r->pos + 1] != 'u') {
				fail_at(r, r->pos, "a lone UTF-16 high surrogate");
				break;
			}
			r->pos += 2;
			if (!read_hex4(r, &lo))
				break;
			if (lo < 0xdc00 || lo > 0xdfff) {
				fail_at(r, r->pos - 6, "a high surrogate must be followed by a low one");
				break;
			}
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		} else if (cp >= 0xdc00 && cp <= 0xdfff) {
			fail_at(r, r->pos - 6, "a lone UTF-16 low surrogate");
			break;
		}
		n += put_utf8(o + n, cp);
	}
	free(o);
	return NULL;
}

/* An integer in [lo, hi] (JSON number without fraction or exponent). */
static bool read_int(struct rd *r, long long lo, long long hi, long long *out)
{
	ws(r);
	size_t start = r->pos;
	bool neg = r->pos < r->len && r->buf[r->pos] == '-';
	if (neg)
		r->pos++;
	if (r->pos >= r->len || r->buf[r->pos] < '0' || r->buf[r->pos] > '9') {
		fail_at(r, start, "expected a whole number");
		return false;
	}
	if (r->buf[r->pos] == '0' && r->pos + 1 < r->len && r->buf[r->pos + 1] >= '0' && r->buf[r->pos + 1] <= '9') {
		fail_at(r, start, "a number with a leading zero");
		return false;
	}
	unsigned long long v = 0;
	while (r->pos < r->len && r->buf[r->pos] >= '0' && r->buf[r->pos] <= '9') {
		if (v > (1ull << 62)) {
			fail_at(r, start, "number out of range (%lld to %lld)", lo, hi);
			return false;
		}
		v = v * 10 + (unsigned)(r->buf[r->pos++] - '0');
	}
	if (r->pos < r->len && (r->buf[r->pos] == '.' || r->buf[r->pos] == 'e' || r->buf[r->pos] == 'E')) {
		fail_at(r, start, "expected a whole number");
		return false;
	}
	long long s = neg ? -(long long)v : (long long)v;
	if (s < lo || s > hi) {
		fail_at(r, start, "number out of range (%lld to %lld)", lo, hi);
		return false;
	}
	*out = s;
	return true;
}

static bool read_literal(struct rd *r, const char *word)
{
	ws(r);
	size_t n = strlen(word);
	if (r->len - r->pos >= n && memcmp(r->buf + r->pos, word, n) == 0) {
		r->pos += n;
		return true;
	}
	return false;
}

/* Skips any JSON value (an informational member). */
static void skip_value(struct rd *r)
{
	ws(r);
	if (r->failed)
		return;
	if (r->pos >= r->len) {
		fail_at(r, r->pos, "expected a value");
		return;
	}
	char ch = r->buf[r->pos];
	if (ch == '"') {
		size_t n;
		free(read_string(r, &n));
		return;
	}
	if (ch == '{' || ch == '[') {
		if (++r->depth > MAX_DEPTH) {
			fail_at(r, r->pos, "nested deeper than %d", MAX_DEPTH);
			return;
		}
		char close = ch == '{' ? '}' : ']';
		r->pos++;
		if (peek(r, close)) {
			r->pos++;
			r->depth--;
			return;
		}
		for (;;) {
			if (ch == '{') {
				size_t n;
				free(read_string(r, &n));
				if (r->failed || !expect(r, ':', "':'"))
					return;
			}
			skip_value(r);
			if (r->failed)
				return;
			if (peek(r, ',')) {
				r->pos++;
				continue;
			}
			if (!expect(r, close, close == '}' ? "',' or '}'" : "',' or ']'"))
				return;
			r->depth--;
			return;
		}
	}
	if (read_literal(r, "true") || read_literal(r, "false") || read_literal(r, "null"))
		return;
	if (ch == '-' || (ch >= '0' && ch <= '9')) {
		size_t start = r->pos;
		if (ch == '-')
			r->pos++;
		while (r->pos < r->len && strchr("0123456789.eE+-", r->buf[r->pos]) && r->buf[r->pos])
			r->pos++;
		if (r->pos == start + (ch == '-'))
			fail_at(r, start, "expected a number");
		return;
	}
	fail_at(r, r->pos, "expected a value");
}

/* Iterates the members of an object: returns the next key (malloc'd) with
 * *key_off, or NULL at the end or on failure (r->failed). */
static char *next_member(struct rd *r, bool *first, size_t *key_off)
{
	if (*first) {
		*first = false;
		if (!expect(r, '{', "'{'"))
			return NULL;
		if (peek(r, '}')) {
			r->pos++;
			return NULL;
		}
	} else {
		if (peek(r, '}')) {
			r->pos++;
			return NULL;
		}
		if (!expect(r, ',', "',' or '}'"))
			return NULL;
	}
	ws(r);
	*key_off = r->pos;
	size_t n;
	char *k = (char *)read_string(r, &n);
	if (!k)
		return NULL;
	if (strlen(k) != n) {
		fail_at(r, *key_off, "a member name with a NUL byte");
		free(k);
		return NULL;
	}
	if (!expect(r, ':', "':'")) {
		free(k);
		return NULL;
	}
	return k;
}

/* Same for an array: true while there is a next element. */
static bool next_element(struct rd *r, bool *first)
{
	if (*first) {
		*first = false;
		if (!expect(r, '[', "'['"))
			return false;
		if (peek(r, ']')) {
			r->pos++;
			return false;
		}
		return true;
	}
	if (peek(r, ']')) {
		r->pos++;
		return false;
	}
	return expect(r, ',', "',' or ']'");
}

static void read_runtime(struct rd *r, struct statedump *d)
{
	bool first = true;
	size_t cap = 0;
	struct statefile_entry *scratch = malloc(sizeof *scratch);
	if (!scratch) {
		fail_at(r, r->pos, "out of memory");
		return;
	}
	while (!r->failed && next_element(r, &first)) {
		ws(r);
		size_t off = r->pos;
		size_t n;
		char *s = (char *)read_string(r, &n);
		if (!s)
			break;
		const char *why = NULL;
		if (strlen(s) != n)
			why = "a NUL byte";
		else if (!(why = statefile_parse_line(s, n, scratch)) && scratch->kind == STATEFILE_NOTHING)
			why = "blank or a comment: only changes belong here";
		if (why) {
			fail_at(r, off, "runtime[%zu]: not a state-file change (%s); expected e.g. \"weight POOL ADDRESS W\", "
			                "\"drain POOL ADDRESS\", \"service-weight SERVICE POOL W\"",
			        d->num_lines, why);
			free(s);
			break;
		}
		if (d->num_lines >= STATEDUMP_MAX_LINES) {
			fail_at(r, off, "more than %u runtime lines", STATEDUMP_MAX_LINES);
			free(s);
			break;
		}
		if (d->num_lines == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct statedump_line *g = realloc(d->lines, ncap * sizeof *g);
			if (!g) {
				fail_at(r, off, "out of memory");
				free(s);
				break;
			}
			d->lines = g;
			cap = ncap;
		}
		struct statedump_line *l = &d->lines[d->num_lines++];
		l->text = s;
		statedump_position(r->buf, r->len, off, &l->line, &l->col);
	}
	free(scratch);
}

static unsigned char *from_hex(const unsigned char *s, size_t n, size_t *out_len)
{
	if (n == 0 || n % 2)
		return NULL;
	unsigned char *o = malloc(n / 2);
	if (!o)
		return NULL;
	for (size_t i = 0; i < n; i += 2) {
		int a = hexval((char)s[i]), b = hexval((char)s[i + 1]);
		if (a < 0 || b < 0) {
			free(o);
			return NULL;
		}
		o[i / 2] = (unsigned char)(a * 16 + b);
	}
	*out_len = n / 2;
	return o;
}

static void read_key(struct rd *r, struct statedump_key *k, size_t index)
{
	ws(r);
	size_t obj_off = r->pos;
	statedump_position(r->buf, r->len, obj_off, &k->line, &k->col);
	bool first = true, have_pttl = false;
	size_t off;
	char *name;
	while ((name = next_member(r, &first, &off))) {
		ws(r);
		size_t voff = r->pos;
		if (strcmp(name, "key") == 0 || strcmp(name, "key_hex") == 0 || strcmp(name, "dump") == 0) {
			bool hex = name[0] == 'd' || strcmp(name, "key_hex") == 0;
			size_t n;
			unsigned char *s = read_string(r, &n);
			if (s && (name[0] == 'k' ? k->key != NULL : k->dump != NULL)) {
				fail_at(r, off, "keys[%zu]: \"%s\" given twice (or both key and key_hex)", index, name);
				free(s);
			} else if (s) {
				unsigned char *v = s;
				size_t vlen = n;
				if (hex) {
					v = from_hex(s, n, &vlen);
					if (!v)
						fail_at(r, voff, "keys[%zu].%s: expected an even number of hex digits", index, name);
				}
				if (v && name[0] == 'k') {
					k->key = v;
					k->key_len = vlen;
				} else if (v) {
					k->dump = v;
					k->dump_len = vlen;
				}
				if (v != s)
					free(s);
			}
		} else if (strcmp(name, "pttl") == 0) {
			have_pttl = read_int(r, -1, 1ll << 53, &k->pttl);
			if (have_pttl && k->pttl == 0)
				fail_at(r, voff, "keys[%zu].pttl: 0 (a key about to expire: -1 for none, else milliseconds "
				                 "left)", index);
		} else {
			skip_value(r);
		}
		free(name);
		if (r->failed)
			return;
	}
	if (r->failed)
		return;
	if (!k->key)
		fail_at(r, obj_off, "keys[%zu]: no \"key\" (or \"key_hex\")", index);
	else if (!k->dump)
		fail_at(r, obj_off, "keys[%zu]: no \"dump\" (the hex of Redis's DUMP of the key)", index);
	else if (!have_pttl)
		fail_at(r, obj_off, "keys[%zu]: no \"pttl\" (-1 for no expiry, else milliseconds left)", index);
	else if (k->key_len <= strlen(STATEDUMP_PREFIX) || memcmp(k->key, STATEDUMP_PREFIX, strlen(STATEDUMP_PREFIX)) != 0)
		fail_at(r, obj_off, "keys[%zu]: not a sluice key (it must start with \"" STATEDUMP_PREFIX "\")", index);
}

static void read_redis(struct rd *r, struct statedump *d)
{
	if (read_literal(r, "null"))
		return;
	d->has_redis = true;
	bool first = true;
	size_t off;
	char *name;
	bool seen_keys = false;
	while ((name = next_member(r, &first, &off))) {
		if (strcmp(name, "keys") == 0) {
			if (seen_keys)
				fail_at(r, off, "redis.keys given twice");
			seen_keys = true;
			bool efirst = true;
			size_t cap = 0;
			while (!r->failed && next_element(r, &efirst)) {
				if (d->num_keys >= STATEDUMP_MAX_KEYS) {
					fail_at(r, r->pos, "more than %u keys", STATEDUMP_MAX_KEYS);
					break;
				}
				if (d->num_keys == cap) {
					size_t ncap = cap ? cap * 2 : 16;
					struct statedump_key *g = realloc(d->keys, ncap * sizeof *g);
					if (!g) {
						fail_at(r, r->pos, "out of memory");
						break;
					}
					d->keys = g;
					cap = ncap;
				}
				struct statedump_key *k = &d->keys[d->num_keys++];
				memset(k, 0, sizeof *k);
				read_key(r, k, d->num_keys - 1);
			}
		} else {
			skip_value(r);
		}
		free(name);
		if (r->failed)
			return;
	}
}

struct statedump *statedump_parse(const char *buf, size_t len, char *err, size_t err_size)
{
	struct rd r = {.buf = buf, .len = len, .err = err, .err_size = err_size};
	struct statedump *d = calloc(1, sizeof *d);
	if (!d) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	bool first = true, format = false, version = false, runtime = false, redis = false;
	size_t off;
	char *name;
	while ((name = next_member(&r, &first, &off))) {
		ws(&r);
		size_t voff = r.pos;
		bool *seen = strcmp(name, "format") == 0    ? &format
		             : strcmp(name, "version") == 0 ? &version
		             : strcmp(name, "runtime") == 0 ? &runtime
		             : strcmp(name, "redis") == 0   ? &redis
		                                            : NULL;
		if (seen && *seen)
			fail_at(&r, off, "\"%s\" given twice", name);
		else if (seen)
			*seen = true;
		if (r.failed) {
			free(name);
			break;
		}
		if (seen == &format) {
			size_t n;
			char *f = (char *)read_string(&r, &n);
			if (f && strcmp(f, STATEDUMP_FORMAT) != 0)
				fail_at(&r, voff, "format is not \"" STATEDUMP_FORMAT "\" (not a file of sluice ctl dump-state)");
			free(f);
		} else if (seen == &version) {
			long long v;
			if (read_int(&r, 0, 1000000, &v)) {
				if (v != STATEDUMP_VERSION)
					fail_at(&r, voff, "version %lld: this sluice reads version %d (written by a %s sluice)", v,
					        STATEDUMP_VERSION, v > STATEDUMP_VERSION ? "newer" : "different");
				d->version = (unsigned)v;
			}
		} else if (seen == &runtime) {
			read_runtime(&r, d);
		} else if (seen == &redis) {
			read_redis(&r, d);
		} else {
			skip_value(&r);
		}
		free(name);
		if (r.failed)
			break;
	}
	if (!r.failed) {
		ws(&r);
		if (r.pos < r.len)
			fail_at(&r, r.pos, "text after the end of the document");
		else if (!format)
			fail_at(&r, 0, "no \"format\" member (not a file of sluice ctl dump-state)");
		else if (!version)
			fail_at(&r, 0, "no \"version\" member");
		else if (!runtime)
			fail_at(&r, 0, "no \"runtime\" member (write \"runtime\": [] for none)");
		else if (!redis)
			fail_at(&r, 0, "no \"redis\" member (write \"redis\": null for none)");
	}
	if (r.failed) {
		statedump_free(d);
		return NULL;
	}
	return d;
}

void statedump_free(struct statedump *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->num_lines; i++)
		free(d->lines[i].text);
	free(d->lines);
	for (size_t i = 0; i < d->num_keys; i++) {
		free(d->keys[i].key);
		free(d->keys[i].dump);
	}
	free(d->keys);
	free(d);
}
