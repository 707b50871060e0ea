/* waf_lits.c - the literals every match of a regex contains (waf_lits.h). */
#include "waf_lits.h"

#include <stdint.h>
#include <string.h>

struct litparse {
	const char *p;
	size_t n, i;
	bool fail;
};

static size_t lits_score(const struct waf_litset *s)
{
	if (!s->ok || s->n == 0)
		return 0;
	size_t m = SIZE_MAX;
	for (size_t k = 0; k < s->n; k++)
		if (s->len[k] < m)
			m = s->len[k];
	return m;
}

static void lits_better(struct waf_litset *best, const struct waf_litset *cand)
{
	size_t a = lits_score(best), b = lits_score(cand);
	if (b > a || (b == a && b > 0 && cand->n < best->n))
		*best = *cand;
}

static void lits_run(struct waf_litset *best, const char *run, size_t len)
{
	if (len == 0)
		return;
	struct waf_litset c = {.ok = true, .n = 1};
	memcpy(c.lit[0], run, len);
	c.len[0] = len;
	lits_better(best, &c);
}

/* A quantifier at lp->i: its minimum (1 if none), consumed with its lazy or possessive mark. */
static unsigned lit_quant(struct litparse *lp)
{
	unsigned min = 1;
	if (lp->i >= lp->n)
		return 1;
	char c = lp->p[lp->i];
	if (c == '?' || c == '*') {
		min = 0;
		lp->i++;
	} else if (c == '+') {
		lp->i++;
	} else if (c == '{' && lp->i + 1 < lp->n && lp->p[lp->i + 1] >= '0' && lp->p[lp->i + 1] <= '9') {
		size_t j = lp->i + 1;
		unsigned v = 0;
		while (j < lp->n && lp->p[j] >= '0' && lp->p[j] <= '9')
			v = v * 10 + (unsigned)(lp->p[j++] - '0');
		if (j < lp->n && lp->p[j] == ',')
			for (j++; j < lp->n && lp->p[j] >= '0' && lp->p[j] <= '9'; j++)
				;
		/* anything but {n}, {n,} or {n,m} is not a quantifier: PCRE2 reads
		 * the brace as a byte of the match, and so do our callers (which
		 * give up on it) */
		if (j >= lp->n || lp->p[j] != '}')
			return 1;
		lp->i = j + 1;
		min = v;
	} else {
		return 1;
	}
	if (lp->i < lp->n && (lp->p[lp->i] == '?' || lp->p[lp->i] == '+'))
		lp->i++;
	return min;
}

static int hexdig(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
		return (c | 0x20) - 'a' + 10;
	return -1;
}

static void lit_alt(struct litparse *lp, struct waf_litset *out);

/* In a class, "[:" starts a POSIX class ("[:alpha:]") only as PCRE2 reads
 * one (its check_posix_syntax): ":]" comes before any "]" or another "[:"
 * (an escaped ']' or '\\' skipped). Returns the index of the ']' of that ":]",
 * or 0 when this '[' is an ordinary byte of the class: "[[:x]|y:]" is the
 * class "[:x" and then "|y:]", never one class swallowing the '|'. */
static size_t posix_class_end(const char *p, size_t n, size_t j)
{
	for (size_t k = j + 2; k + 1 < n; k++) {
		if (p[k] == '\\' && (p[k + 1] == ']' || p[k + 1] == '\\'))
			k++;
		else if ((p[k] == '[' && p[k + 1] == ':') || p[k] == ']')
			return 0;
		else if (p[k] == ':' && p[k + 1] == ']')
			return k + 1;
	}
	return 0;
}

/* One branch: the best set of its items. Stops at '|' or ')'. */
static void lit_seq(struct litparse *lp, struct waf_litset *best)
{
	char run[WAF_LIT_MAX];
	size_t rl = 0;
	memset(best, 0, sizeof(*best));
	while (lp->i < lp->n && !lp->fail) {
		char c = lp->p[lp->i];
		if (c == '|' || c == ')')
			break;
		int lit = -1; /* the byte of a literal item */
		if (c == '(') {
			lits_run(best, run, rl);
			rl = 0;
			lp->i++;
			bool capture = true, zero_width = false;
			if (lp->i < lp->n && lp->p[lp->i] == '?') {
				capture = false;
				const char *q = lp->p + lp->i + 1;
				size_t left = lp->n - lp->i - 1;
				if (left >= 1 && (q[0] == ':' || q[0] == '>' || q[0] == '|')) {
					lp->i += 2;
				} else if (left >= 1 && (q[0] == '=' || q[0] == '!')) {
					zero_width = true;
					lp->i += 2;
				} else if (left >= 2 && q[0] == '<' && (q[1] == '=' || q[1] == '!')) {
					zero_width = true;
					lp->i += 3;
				} else {
					/* inline flags "(?i)" or "(?i:": extended mode changes what a byte means */
					size_t j = 0;
					while (j < left && ((q[j] >= 'a' && q[j] <= 'z') || q[j] == '-') && q[j] != 'x')
						j++;
					if (j < left && q[j] == ')') {
						lp->i += j + 2;
						continue;
					}
					if (j < left && q[j] == ':') {
						lp->i += j + 2;
					} else {
						lp->fail = true;
						return;
					}
				}
			}
			(void)capture;
			struct waf_litset inner;
			lit_alt(lp, &inner);
			if (lp->i >= lp->n || lp->p[lp->i] != ')') {
				lp->fail = true;
				return;
			}
			lp->i++;
			unsigned min = lit_quant(lp);
			if (!zero_width && min > 0)
				lits_better(best, &inner);
			continue;
		}
		if (c == '[') {
			lits_run(best, run, rl);
			rl = 0;
			size_t j = lp->i + 1;
			if (j < lp->n && lp->p[j] == '^')
				j++;
			if (j < lp->n && lp->p[j] == ']')
				j++;
			while (j < lp->n && lp->p[j] != ']') {
				if (lp->p[j] == '\\')
					j++;
				else if (lp->p[j] == '[' && j + 1 < lp->n && lp->p[j + 1] == ':') {
					size_t end = posix_class_end(lp->p, lp->n, j);
					if (end)
						j = end; /* else '[' is a byte of the class */
				}
				j++;
			}
			if (j >= lp->n) {
				lp->fail = true;
				return;
			}
			lp->i = j + 1;
			(void)lit_quant(lp);
			continue;
		}
		if (c == '\\') {
			if (lp->i + 1 >= lp->n) {
				lp->fail = true;
				return;
			}
			char e = lp->p[lp->i + 1];
			lp->i += 2;
			if (e == 'x') {
				int h1 = lp->i < lp->n ? hexdig(lp->p[lp->i]) : -1;
				int h2 = lp->i + 1 < lp->n ? hexdig(lp->p[lp->i + 1]) : -1;
				if (h1 < 0 || h2 < 0) {
					lp->fail = true; /* \x{...} and one-digit forms: not read here */
					return;
				}
				lp->i += 2;
				lit = h1 * 16 + h2;
			} else if (e == 'n') {
				lit = '\n';
			} else if (e == 'r') {
				lit = '\r';
			} else if (e == 't') {
				lit = '\t';
			} else if (e == 'Q' || e == 'E' || (e >= '0' && e <= '9') || e == 'g' || e == 'k' || e == 'p' ||
			           e == 'P' || e == 'c' || e == 'o' || e == 'N') {
				lp->fail = true;
				return;
			} else if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
				/* \d \w \s \b \B ... : not a literal */
				lits_run(best, run, rl);
				rl = 0;
				(void)lit_quant(lp);
				continue;
			} else {
				lit = (unsigned char)e;
			}
		} else if (c == '.' || c == '^' || c == '$') {
			lp->i++;
			lits_run(best, run, rl);
			rl = 0;
			(void)lit_quant(lp);
			continue;
		} else if (c == '*' || c == '+' || c == '?' || c == '{') {
			lp->fail = true; /* a quantifier without an item */
			return;
		} else {
			lit = (unsigned char)c;
			lp->i++;
		}
		unsigned min = lit_quant(lp);
		if (min == 0 || rl + (min > 4 ? 4 : min) > WAF_LIT_MAX) {
			lits_run(best, run, rl);
			rl = 0;
			if (min == 0)
				continue;
		}
		for (unsigned k = 0; k < min && k < 4; k++)
			run[rl++] = (char)lit;
		if (lp->i < lp->n && lp->i > 0 && (lp->p[lp->i - 1] == '+' || lp->p[lp->i - 1] == '}')) {
			/* a repeated byte: the run ends with it */
			lits_run(best, run, rl);
			rl = 0;
		}
	}
	lits_run(best, run, rl);
}

static void lit_alt(struct litparse *lp, struct waf_litset *out)
{
	memset(out, 0, sizeof(*out));
	out->ok = true;
	for (;;) {
		struct waf_litset b;
		lit_seq(lp, &b);
		if (lp->fail || !b.ok || b.n == 0 || out->n + b.n > WAF_LITS_MAX)
			out->ok = false;
		for (size_t k = 0; out->ok && k < b.n; k++) {
			memcpy(out->lit[out->n], b.lit[k], b.len[k]);
			out->len[out->n++] = b.len[k];
		}
		if (lp->fail || lp->i >= lp->n || lp->p[lp->i] != '|')
			break;
		lp->i++;
	}
	if (!out->ok)
		out->n = 0;
}

bool waf_lits_of_regex(const char *pat, size_t len, struct waf_litset *out)
{
	struct litparse lp = {.p = pat, .n = len};
	lit_alt(&lp, out);
	return !lp.fail && lp.i == len && out->ok && lits_score(out) >= 2;
}
