/* waf_transform.c - in-place value transforms for the WAF (waf_transform.h). */
#include "waf_transform.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0xa0;
}

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Writes cp as UTF-8 at s; returns the bytes written (1-4), 0 if cp is not a
 * scalar value (waf_utf8_put). Full-width ASCII (U+FF01..U+FF5E) becomes its ASCII twin, as
 * IIS and several frameworks fold it, which attackers use as an evasion. */
static size_t put_utf8(char *s, unsigned long cp)
{
	if (cp >= 0xff01 && cp <= 0xff5e)
		cp -= 0xfee0;
	return waf_utf8_put(s, cp);
}

size_t waf_utf8_put(char *s, unsigned long cp)
{
	if (cp < 0x80) {
		s[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		s[0] = (char)(0xc0 | (cp >> 6));
		s[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp >= 0xd800 && cp <= 0xdfff)
		return 0;
	if (cp < 0x10000) {
		s[0] = (char)(0xe0 | (cp >> 12));
		s[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		s[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	if (cp <= 0x10ffff) {
		s[0] = (char)(0xf0 | (cp >> 18));
		s[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		s[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		s[3] = (char)(0x80 | (cp & 0x3f));
		return 4;
	}
	return 0;
}

/* Reads exactly `digits` hex digits at s[i..]; -1 if any is missing. */
static long hex_run(const char *s, size_t n, size_t i, size_t digits)
{
	if (i + digits > n)
		return -1;
	long v = 0;
	for (size_t k = 0; k < digits; k++) {
		int h = hexval((unsigned char)s[i + k]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

size_t waf_url_decode(char *s, size_t n)
{
	/* the bytes before the first '%' or '+' stay where they are */
	size_t first = 0;
	while (first < n && s[first] != '%' && s[first] != '+')
		first++;
	if (first == n)
		return n;
	size_t w = first;
	for (size_t i = first; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c == '+') {
			s[w++] = ' ';
			i++;
			continue;
		}
		if (c == '%') {
			long v = hex_run(s, n, i + 1, 2);
			if (v >= 0) {
				s[w++] = (char)v;
				i += 3;
				continue;
			}
			if (i + 1 < n && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
				v = hex_run(s, n, i + 2, 4);
				if (v >= 0) {
					char tmp[4];
					size_t k = put_utf8(tmp, (unsigned long)v);
					if (k > 0) {
						memcpy(s + w, tmp, k); /* k <= 3 < 6 bytes read */
						w += k;
						i += 6;
						continue;
					}
				}
			}
		}
		s[w++] = (char)c;
		i++;
	}
	return w;
}

struct entity {
	const char *name;
	char c;
};

/* The named references seen in evasions (and the common ones); the rest of
 * HTML's 2,000 names decode to non-ASCII text no rule looks at. */
static const struct entity entities[] = {
    {"lt", '<'},     {"gt", '>'},       {"amp", '&'},     {"quot", '"'},   {"apos", '\''},  {"nbsp", ' '},
    {"colon", ':'},  {"lpar", '('},     {"rpar", ')'},    {"sol", '/'},    {"bsol", '\\'},  {"tab", '\t'},
    {"newline", '\n'}, {"semi", ';'},  {"equals", '='},  {"period", '.'}, {"comma", ','},  {"excl", '!'},
    {"num", '#'},    {"dollar", '$'},   {"percnt", '%'},  {"plus", '+'},   {"grave", '`'},  {"lsqb", '['},
    {"rsqb", ']'},   {"lcub", '{'},     {"rcub", '}'},    {"lbrack", '['}, {"rbrack", ']'}, {"lowbar", '_'},
    {"ast", '*'},    {"quest", '?'},    {"commat", '@'},  {"verbar", '|'}, {"Hat", '^'},    {"NewLine", '\n'},
};

size_t waf_html_entity_decode(char *s, size_t n)
{
	if (!memchr(s, '&', n))
		return n;
	size_t w = 0;
	for (size_t i = 0; i < n;) {
		if (s[i] != '&' || i + 2 >= n) {
			s[w++] = s[i++];
			continue;
		}
		size_t j = i + 1;
		if (s[j] == '#') {
			j++;
			bool hex = j < n && (s[j] == 'x' || s[j] == 'X');
			if (hex)
				j++;
			unsigned long cp = 0;
			size_t digits = 0;
			while (j < n) {
				int d = hex ? hexval((unsigned char)s[j]) : ((s[j] >= '0' && s[j] <= '9') ? s[j] - '0' : -1);
				if (d < 0)
					break;
				if (cp <= 0x10ffff)
					cp = cp * (hex ? 16 : 10) + (unsigned long)d;
				digits++;
				j++;
			}
			char tmp[4];
			size_t k = digits > 0 ? put_utf8(tmp, cp) : 0;
			/* "&#N" is at least 3 bytes, "&#xN" 4: k <= the bytes read */
			if (k > 0 && k <= j - i) {
				if (j < n && s[j] == ';')
					j++;
				memcpy(s + w, tmp, k);
				w += k;
				i = j;
				continue;
			}
			s[w++] = s[i++];
			continue;
		}
		size_t start = j;
		while (j < n && j - start < 10 && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z')))
			j++;
		size_t len = j - start;
		bool semi = j < n && s[j] == ';';
		bool done = false;
		for (size_t e = 0; e < sizeof(entities) / sizeof(entities[0]) && len > 0; e++) {
			if (strlen(entities[e].name) != len || memcmp(entities[e].name, s + start, len) != 0)
				continue;
			/* browsers accept the oldest names without ';' */
			if (!semi && len > 4)
				break;
			s[w++] = entities[e].c;
			i = j + (semi ? 1 : 0);
			done = true;
			break;
		}
		if (!done)
			s[w++] = s[i++];
	}
	return w;
}

size_t waf_lowercase(char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		s[i] = (char)lower((unsigned char)s[i]);
	return n;
}

size_t waf_compress_ws(char *s, size_t n)
{
	size_t w = 0;
	bool in_ws = false;
	for (size_t i = 0; i < n; i++) {
		if (is_ws((unsigned char)s[i])) {
			if (!in_ws)
				s[w++] = ' ';
			in_ws = true;
		} else {
			s[w++] = s[i];
			in_ws = false;
		}
	}
	return w;
}

size_t waf_remove_comments(char *s, size_t n)
{
	size_t w = 0;
	bool in_exec = false; /* inside a MySQL executable comment: its body is code */
	for (size_t i = 0; i < n;) {
		if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
			if (i + 2 < n && s[i + 2] == '!') {
				i += 3;
				for (int d = 0; d < 6 && i < n && s[i] >= '0' && s[i] <= '9'; d++)
					i++;
				in_exec = true;
				s[w++] = ' ';
				continue;
			}
			size_t j = i + 2;
			while (j + 1 < n && !(s[j] == '*' && s[j + 1] == '/'))
				j++;
			i = (j + 1 < n) ? j + 2 : n;
			s[w++] = ' ';
			continue;
		}
		if (in_exec && s[i] == '*' && i + 1 < n && s[i + 1] == '/') {
			in_exec = false;
			i += 2;
			s[w++] = ' ';
			continue;
		}
		if (s[i] == '#' || (s[i] == '-' && i + 1 < n && s[i + 1] == '-')) {
			while (i < n && s[i] != '\n')
				i++;
			s[w++] = ' ';
			continue;
		}
		s[w++] = s[i++];
	}
	return w;
}

size_t waf_normalize_path(char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\\')
			s[i] = '/';
	size_t w = 0, i = 0, floor = 0;
	if (n > 0 && s[0] == '/') {
		w = i = floor = 1;
	}
	while (i < n) {
		size_t start = i;
		while (i < n && s[i] != '/')
			i++;
		size_t seg = i - start;
		bool slash = i < n;
		if (slash)
			i++;
		if (seg == 0 || (seg == 1 && s[start] == '.'))
			continue;
		if (seg == 2 && s[start] == '.' && s[start + 1] == '.') {
			if (w > floor) {
				size_t j = w;
				if (s[j - 1] == '/')
					j--;
				while (j > floor && s[j - 1] != '/')
					j--;
				w = j;
				continue;
			}
			/* above the root: kept, so traversal stays visible to rules */
			s[w++] = '.';
			s[w++] = '.';
			if (slash)
				s[w++] = '/';
			floor = w;
			continue;
		}
		memmove(s + w, s + start, seg);
		w += seg;
		if (slash)
			s[w++] = '/';
	}
	return w;
}

static bool prefix_ci(const char *s, size_t n, size_t i, const char *p)
{
	size_t k = strlen(p);
	if (i + k > n)
		return false;
	for (size_t j = 0; j < k; j++)
		if (lower((unsigned char)s[i + j]) != (unsigned char)p[j])
			return false;
	return true;
}

/* The bytes waf_cmdline does more with than lower-casing. */
static bool cmdline_special(unsigned char c)
{
	switch (c) {
	case '\\': case '"': case '\'': case '^': case '$': case ',': case '/': case '(':
	case ' ': case '\t': case '\n': case '\r': case '\v': case '\f': case 0xa0:
		return true;
	default:
		return false;
	}
}

size_t waf_cmdline(char *s, size_t n)
{
	size_t w = 0;
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (!cmdline_special(c)) {
			s[w++] = (char)lower(c);
			i++;
			continue;
		}
		if (c == '\\' || c == '"' || c == '\'' || c == '^') {
			i++;
			continue;
		}
		/* $IFS and ${IFS} stand for a space; $@ and $* expand to nothing */
		if (c == '$') {
			if (prefix_ci(s, n, i, "${ifs}")) {
				i += 6;
				c = ' ';
			} else if (prefix_ci(s, n, i, "$ifs")) {
				i += 4;
				c = ' ';
			} else if (i + 1 < n && (s[i + 1] == '@' || s[i + 1] == '*')) {
				i += 2;
				continue;
			} else {
				i++;
			}
		} else {
			i++;
		}
		if (c == ',' || is_ws(c))
			c = ' ';
		if (c == ' ' && w > 0 && s[w - 1] == ' ')
			continue;
		if ((c == '/' || c == '(') && w > 0 && s[w - 1] == ' ')
			w--;
		s[w++] = (char)lower(c);
	}
	return w;
}

size_t waf_remove_nulls(char *s, size_t n)
{
	if (!memchr(s, '\0', n))
		return n;
	size_t w = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] != '\0')
			s[w++] = s[i];
	return w;
}

/* A byte's base64 digit (standard and URL-safe alphabets), B64_WS for
 * whitespace (skipped), B64_BAD for anything else. */
#define B64_BAD 0xff
#define B64_WS 0xfe
#define X B64_BAD
static const unsigned char b64tab[256] = {
    X,  X,  X,  X,  X,  X,  X,  X,  X,  0xfe, 0xfe, 0xfe, 0xfe, 0xfe, X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    0xfe, X, X, X,  X,  X,  X,  X,  X,  X,  X,  62, X,  62, X,  63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X,  X,  X,  X,  X,  X,
    X,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X,  X,  X,  X,  63,
    X,  26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    0xfe, X, X, X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
};
#undef X

/* Decodes s when it is base64: the bytes go to out (which may be s: writes
 * stay behind reads) or, without out, only tab[byte] is ORed into *mask.
 * SIZE_MAX when s is not base64. */
static size_t base64_run(const char *s, size_t n, char *out, const uint64_t *tab, uint64_t *mask)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t digits = 0;
	size_t end = n;
	while (end > 0 && (s[end - 1] == '=' || b64tab[u[end - 1]] == B64_WS))
		end--;
	if (!out) {
		/* only the classes: validate and decode in one pass (nothing is written) */
		unsigned acc = 0;
		int bits = 0;
		uint64_t m = 0;
		size_t w = 0;
		for (size_t i = 0; i < end; i++) {
			unsigned char v = b64tab[u[i]];
			if (v >= B64_WS) {
				if (v == B64_BAD)
					return SIZE_MAX;
				continue;
			}
			digits++;
			acc = (acc << 6) | v;
			bits += 6;
			if (bits >= 8) {
				bits -= 8;
				m |= tab[(acc >> bits) & 0xff];
				w++;
			}
		}
		if (digits < 2 || digits % 4 == 1)
			return SIZE_MAX;
		if (mask)
			*mask |= m;
		return w;
	}
	for (size_t i = 0; i < end; i++) {
		unsigned char v = b64tab[u[i]];
		if (v == B64_BAD)
			return SIZE_MAX;
		digits += v != B64_WS;
	}
	if (digits < 2 || digits % 4 == 1)
		return SIZE_MAX;
	/* valid: decoded in place (writes stay behind reads) */
	size_t w = 0;
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < end; i++) {
		unsigned char v = b64tab[u[i]];
		if (v == B64_WS)
			continue;
		acc = (acc << 6) | v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[w++] = (char)((acc >> bits) & 0xff);
		}
	}
	return w;
}

size_t waf_base64_decode(char *s, size_t n)
{
	size_t w = base64_run(s, n, s, NULL, NULL);
	return w == SIZE_MAX ? n : w;
}

bool waf_base64_classes(const char *s, size_t n, const uint64_t tab[256], uint64_t *mask, size_t *outlen)
{
	uint64_t m = 0;
	size_t w = base64_run(s, n, NULL, tab, &m);
	if (w == SIZE_MAX)
		return false;
	*mask = m;
	*outlen = w;
	return true;
}

size_t waf_js_decode(char *s, size_t n)
{
	if (!memchr(s, '\\', n))
		return n;
	size_t w = 0;
	for (size_t i = 0; i < n;) {
		if (s[i] != '\\' || i + 1 >= n) {
			s[w++] = s[i++];
			continue;
		}
		char e = s[i + 1];
		long v;
		char tmp[4];
		size_t k;
		if (e == 'x' && (v = hex_run(s, n, i + 2, 2)) >= 0) {
			s[w++] = (char)v;
			i += 4;
			continue;
		}
		if (e == 'u' && (v = hex_run(s, n, i + 2, 4)) >= 0 && (k = put_utf8(tmp, (unsigned long)v)) > 0) {
			memcpy(s + w, tmp, k);
			w += k;
			i += 6;
			continue;
		}
		if (e == 'u' && i + 2 < n && s[i + 2] == '{') {
			size_t j = i + 3;
			unsigned long cp = 0;
			while (j < n && j - i < 12 && hexval((unsigned char)s[j]) >= 0)
				cp = cp * 16 + (unsigned long)hexval((unsigned char)s[j++]);
			if (j < n && s[j] == '}' && j > i + 3 && (k = put_utf8(tmp, cp)) > 0 && k <= j + 1 - i) {
				memcpy(s + w, tmp, k);
				w += k;
				i = j + 1;
				continue;
			}
		}
		if (e >= '0' && e <= '7') {
			size_t j = i + 1;
			unsigned v8 = 0;
			while (j < n && j - i <= 3 && s[j] >= '0' && s[j] <= '7' && v8 * 8 + (unsigned)(s[j] - '0') <= 0377)
				v8 = v8 * 8 + (unsigned)(s[j++] - '0');
			s[w++] = (char)v8;
			i = j;
			continue;
		}
		switch (e) {
		case 'n': s[w++] = '\n'; break;
		case 't': s[w++] = '\t'; break;
		case 'r': s[w++] = '\r'; break;
		case 'b': s[w++] = '\b'; break;
		case 'f': s[w++] = '\f'; break;
		case 'v': s[w++] = '\v'; break;
		default: s[w++] = e; break;
		}
		i += 2;
	}
	return w;
}

size_t waf_trim(char *s, size_t n)
{
	size_t a = 0;
	while (a < n && is_ws((unsigned char)s[a]))
		a++;
	size_t b = n;
	while (b > a && is_ws((unsigned char)s[b - 1]))
		b--;
	memmove(s, s + a, b - a);
	return b - a;
}

static const struct {
	const char *name;
	size_t (*fn)(char *, size_t);
} transforms[WAF_T_COUNT] = {
    [WAF_T_URL_DECODE] = {"url_decode", waf_url_decode},
    [WAF_T_HTML_ENTITY] = {"html_entity_decode", waf_html_entity_decode},
    [WAF_T_LOWERCASE] = {"lowercase", waf_lowercase},
    [WAF_T_COMPRESS_WS] = {"compress_whitespace", waf_compress_ws},
    [WAF_T_REMOVE_COMMENTS] = {"remove_comments", waf_remove_comments},
    [WAF_T_NORMALIZE_PATH] = {"normalize_path", waf_normalize_path},
    [WAF_T_CMDLINE] = {"cmdline", waf_cmdline},
    [WAF_T_REMOVE_NULLS] = {"remove_nulls", waf_remove_nulls},
    [WAF_T_BASE64] = {"base64_decode", waf_base64_decode},
    [WAF_T_JS_DECODE] = {"js_decode", waf_js_decode},
    [WAF_T_TRIM] = {"trim", waf_trim},
};

size_t waf_transform_apply(enum waf_transform t, char *s, size_t n)
{
	return (unsigned)t < WAF_T_COUNT ? transforms[t].fn(s, n) : n;
}

int waf_transform_by_name(const char *name)
{
	for (int i = 0; i < WAF_T_COUNT; i++)
		if (strcmp(transforms[i].name, name) == 0)
			return i;
	return -1;
}

const char *waf_transform_name(enum waf_transform t)
{
	return (unsigned)t < WAF_T_COUNT ? transforms[t].name : "?";
}
