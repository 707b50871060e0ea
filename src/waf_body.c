/* waf_body.c - urlencoded, JSON and multipart argument parsers (waf_body.h). */
#include "waf_body.h"

#include <string.h>

#include "waf_transform.h"

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool starts_ci(const char *s, size_t n, const char *p)
{
	size_t k = strlen(p);
	if (n < k)
		return false;
	for (size_t i = 0; i < k; i++)
		if (lower((unsigned char)s[i]) != (unsigned char)p[i])
			return false;
	return true;
}

enum waf_body_kind waf_body_kind_of(const char *ct, size_t n)
{
	while (n > 0 && (*ct == ' ' || *ct == '\t')) {
		ct++;
		n--;
	}
	size_t end = 0;
	while (end < n && ct[end] != ';' && ct[end] != ' ' && ct[end] != '\t')
		end++;
	if (end == 33 && starts_ci(ct, end, "application/x-www-form-urlencoded"))
		return WAF_BODY_URLENCODED;
	if (end == 19 && starts_ci(ct, end, "multipart/form-data"))
		return WAF_BODY_MULTIPART;
	if ((end == 16 && starts_ci(ct, end, "application/json")) ||
	    (end > 17 && starts_ci(ct, end, "application/") && starts_ci(ct + end - 5, 5, "+json")))
		return WAF_BODY_JSON;
	return WAF_BODY_OTHER;
}

bool waf_parse_urlencoded(const char *s, size_t n, char *scratch, waf_visit_fn visit, void *arg, const char **err)
{
	size_t w = 0;
	*err = NULL;
	for (size_t i = 0; i < n;) {
		const char *amp = memchr(s + i, '&', n - i);
		size_t end = amp ? (size_t)(amp - s) : n;
		if (end > i) {
			const char *eqp = memchr(s + i, '=', end - i);
			size_t eq = eqp ? (size_t)(eqp - s) : end;
			char *name = scratch + w;
			memcpy(name, s + i, eq - i);
			size_t nlen = waf_url_decode(name, eq - i);
			w += nlen;
			char *value = scratch + w;
			size_t vraw = eq < end ? end - eq - 1 : 0;
			if (vraw)
				memcpy(value, s + eq + 1, vraw);
			size_t vlen = waf_url_decode(value, vraw);
			w += vlen;
			if (!visit(arg, WAF_ARG_VALUE, name, nlen, value, vlen))
				return true;
		}
		i = end + 1;
	}
	return true;
}

/* JSON ---------------------------------------------------------------- */

struct json {
	const char *s;
	size_t n, i;
	char *scratch;
	size_t w;
	const char *err;
};

static void json_ws(struct json *j)
{
	while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r'))
		j->i++;
}

static int hex4(const char *s)
{
	int v = 0;
	for (int k = 0; k < 4; k++) {
		char c = s[k];
		int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
		        : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* A string at j->i (the opening quote), decoded into scratch. */
static bool json_string(struct json *j, const char **out, size_t *len)
{
	j->i++;
	char *o = j->scratch + j->w;
	size_t w = 0;
	while (j->i < j->n) {
		unsigned char c = (unsigned char)j->s[j->i];
		if (c == '"') {
			j->i++;
			*out = o;
			*len = w;
			j->w += w;
			return true;
		}
		if (c < 0x20) {
			j->err = "JSON: control character in a string";
			return false;
		}
		if (c != '\\') {
			o[w++] = (char)c;
			j->i++;
			continue;
		}
		if (j->i + 1 >= j->n)
			break;
		char e = j->s[j->i + 1];
		j->i += 2;
		switch (e) {
		case '"': case '\\': case '/': o[w++] = e; break;
		case 'b': o[w++] = '\b'; break;
		case 'f': o[w++] = '\f'; break;
		case 'n': o[w++] = '\n'; break;
		case 'r': o[w++] = '\r'; break;
		case 't': o[w++] = '\t'; break;
		case 'u': {
			if (j->i + 4 > j->n || hex4(j->s + j->i) < 0) {
				j->err = "JSON: bad \\u escape";
				return false;
			}
			unsigned long cp = (unsigned long)hex4(j->s + j->i);
			j->i += 4;
			if (cp >= 0xd800 && cp <= 0xdbff && j->i + 6 <= j->n && j->s[j->i] == '\\' && j->s[j->i + 1] == 'u' &&
			    hex4(j->s + j->i + 2) >= 0xdc00 && hex4(j->s + j->i + 2) <= 0xdfff) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned long)hex4(j->s + j->i + 2) - 0xdc00);
				j->i += 6;
			}
			w += waf_utf8_put(o + w, cp); /* at most 4 bytes for 6 or 12 read */
			break;
		}
		default:
			j->err = "JSON: bad escape in a string";
			return false;
		}
	}
	j->err = "JSON: unterminated string";
	return false;
}

/* A member's key and its ':' at j->i. */
static bool json_key(struct json *j, const char **name, size_t *nlen)
{
	if (j->i >= j->n || j->s[j->i] != '"') {
		j->err = "JSON: object key expected";
		return false;
	}
	if (!json_string(j, name, nlen))
		return false;
	json_ws(j);
	if (j->i >= j->n || j->s[j->i] != ':') {
		j->err = "JSON: ':' expected";
		return false;
	}
	j->i++;
	return true;
}

static bool json_scalar(struct json *j, const char **out, size_t *len)
{
	size_t start = j->i;
	while (j->i < j->n && strchr(",]} \t\r\n", j->s[j->i]) == NULL)
		j->i++;
	if (j->i == start) {
		j->err = "JSON: value expected";
		return false;
	}
	char c = j->s[start];
	if (!(c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n')) {
		j->err = "JSON: invalid value";
		return false;
	}
	*out = j->s + start;
	*len = j->i - start;
	return true;
}

struct json_plain {
	waf_visit_fn visit;
	void *arg;
};

static bool json_plain_visit(void *arg, int depth, const char *name, size_t nlen, const char *value, size_t vlen)
{
	(void)depth;
	struct json_plain *p = arg;
	return p->visit(p->arg, WAF_ARG_VALUE, name, nlen, value, vlen);
}

bool waf_parse_json(const char *s, size_t n, char *scratch, waf_visit_fn visit, void *arg, const char **err)
{
	struct json_plain p = {visit, arg};
	return waf_parse_json_depth(s, n, scratch, json_plain_visit, &p, err);
}

bool waf_parse_json_depth(const char *s, size_t n, char *scratch, waf_json_visit_fn visit, void *arg, const char **err)
{
	struct json j = {.s = s, .n = n, .scratch = scratch};
	/* per depth: container type and the name its values take */
	char kind[WAF_JSON_MAX_DEPTH];
	const char *names[WAF_JSON_MAX_DEPTH];
	size_t nlens[WAF_JSON_MAX_DEPTH];
	int depth = 0;
	const char *name = "";
	size_t nlen = 0;
	bool expect_value = true, done = false;
	*err = NULL;
	for (;;) {
		json_ws(&j);
		if (j.i >= n) {
			if (depth == 0 && done)
				return true;
			*err = "JSON: unexpected end";
			return false;
		}
		char c = s[j.i];
		if (done) {
			*err = "JSON: trailing data after the value";
			return false;
		}
		if (expect_value) {
			if (c == '{' || c == '[') {
				if (depth >= WAF_JSON_MAX_DEPTH) {
					*err = "JSON: nested too deep";
					return false;
				}
				kind[depth] = c;
				names[depth] = name;
				nlens[depth] = nlen;
				depth++;
				j.i++;
				json_ws(&j);
				if (j.i < n && (s[j.i] == (c == '{' ? '}' : ']'))) {
					j.i++;
					depth--;
					name = names[depth];
					nlen = nlens[depth];
					expect_value = false;
					done = depth == 0;
					continue;
				}
				if (c == '{' && !json_key(&j, &name, &nlen)) {
					*err = j.err;
					return false;
				}
				continue;
			}
			const char *v;
			size_t vlen;
			if (!(c == '"' ? json_string(&j, &v, &vlen) : json_scalar(&j, &v, &vlen))) {
				*err = j.err;
				return false;
			}
			if (!visit(arg, depth, name, nlen, v, vlen))
				return true;
			expect_value = false;
			done = depth == 0;
			continue;
		}
		/* after a value: ',' or the container's end */
		if (depth == 0) {
			*err = "JSON: trailing data after the value";
			return false;
		}
		char open = kind[depth - 1];
		if (c == (open == '{' ? '}' : ']')) {
			j.i++;
			depth--;
			name = names[depth];
			nlen = nlens[depth];
			done = depth == 0;
			continue;
		}
		if (c != ',') {
			*err = "JSON: ',' expected";
			return false;
		}
		j.i++;
		json_ws(&j);
		if (open == '{') {
			if (!json_key(&j, &name, &nlen)) {
				*err = j.err;
				return false;
			}
		} else {
			/* array elements take the array's key */
			name = names[depth - 1];
			nlen = nlens[depth - 1];
		}
		expect_value = true;
	}
}

/* multipart ------------------------------------------------------------- */

/* The parameter `key` of a header value (quoted or token), or NULL. */
static const char *param(const char *v, size_t n, const char *key, size_t *len)
{
	size_t k = strlen(key);
	for (size_t i = 0; i + k < n; i++) {
		if (!(i == 0 || v[i - 1] == ';' || v[i - 1] == ' ' || v[i - 1] == '\t'))
			continue;
		if (!starts_ci(v + i, n - i, key) || v[i + k] != '=')
			continue;
		size_t j = i + k + 1;
		if (j < n && v[j] == '"') {
			size_t e = j + 1;
			while (e < n && v[e] != '"')
				e++;
			*len = e - j - 1;
			return v + j + 1;
		}
		size_t e = j;
		while (e < n && v[e] != ';' && v[e] != ' ' && v[e] != '\t')
			e++;
		*len = e - j;
		return v + j;
	}
	return NULL;
}

static const char *find(const char *s, size_t n, const char *needle, size_t k)
{
	if (k == 0 || n < k)
		return NULL;
	for (size_t i = 0; i + k <= n; i++)
		if (s[i] == needle[0] && memcmp(s + i, needle, k) == 0)
			return s + i;
	return NULL;
}

bool waf_parse_multipart(const char *ct, size_t ctlen, const char *s, size_t n, char *scratch, waf_visit_fn visit,
                         void *arg, const char **err)
{
	(void)scratch;
	size_t blen;
	const char *b = param(ct, ctlen, "boundary", &blen);
	*err = NULL;
	if (!b || blen == 0 || blen > 70) {
		*err = "multipart: no valid boundary parameter";
		return false;
	}
	char delim[76];
	delim[0] = '-';
	delim[1] = '-';
	memcpy(delim + 2, b, blen);
	size_t dlen = blen + 2;
	const char *p = find(s, n, delim, dlen);
	if (!p) {
		*err = "multipart: no boundary in the body";
		return false;
	}
	const char *end = s + n;
	for (;;) {
		p += dlen;
		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			return true; /* the closing delimiter */
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p < end && *p == '\r')
			p++;
		if (p >= end || *p != '\n') {
			*err = "multipart: boundary line not ended";
			return false;
		}
		p++;
		/* part headers, up to the empty line */
		const char *name = NULL, *filename = NULL;
		size_t nlen = 0, flen = 0;
		bool has_filename = false;
		for (;;) {
			const char *eol = memchr(p, '\n', (size_t)(end - p));
			if (!eol) {
				*err = "multipart: part headers not ended";
				return false;
			}
			size_t llen = (size_t)(eol - p);
			if (llen > 0 && p[llen - 1] == '\r')
				llen--;
			if (llen == 0) {
				p = eol + 1;
				break;
			}
			if (starts_ci(p, llen, "content-disposition:")) {
				name = param(p + 20, llen - 20, "name", &nlen);
				filename = param(p + 20, llen - 20, "filename", &flen);
				has_filename = filename != NULL;
			}
			p = eol + 1;
		}
		const char *next = find(p, (size_t)(end - p), delim, dlen);
		if (!next) {
			*err = "multipart: no closing boundary";
			return false;
		}
		size_t clen = (size_t)(next - p);
		if (clen >= 1 && p[clen - 1] == '\n')
			clen--;
		if (clen >= 1 && p[clen - 1] == '\r')
			clen--;
		if (!name) {
			name = "";
			nlen = 0;
		}
		bool go = has_filename ? visit(arg, WAF_ARG_FILE, name, nlen, filename, flen)
		                       : visit(arg, WAF_ARG_VALUE, name, nlen, p, clen);
		if (!go)
			return true;
		p = next;
	}
}
