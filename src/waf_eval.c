/* waf_eval.c - evaluating a request against the rule set (waf_eval.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#define PCRE2_CODE_UNIT_WIDTH 8

#include "waf_eval.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "waf_ac.h"
#include "waf_body.h"
#include "waf_compiled.h"
#include "waf_sqli.h"
#include "waf_transform.h"
#include "waf_xss.h"

#define MAX_VALUE 65536 /* bytes of one value inspected */

/* A value transformed by steps that changed it, a node of a per-value tree
 * (its parent and the step that made it from the parent): a chain is walked
 * from the raw value, skipping every step that would leave the current bytes
 * as they are, so chains that differ only by such steps end at the same
 * memo, share its transforms, its scan and its detector runs. */
struct memo {
	int parent;       /* the memo this one transformed one step further; -1: the raw value */
	enum waf_transform step;
	bool noops_known;
	unsigned noops;   /* as raw_noops(), for a further step */
	bool scan;        /* some group's phrases are looked for in it */
	char *buf;
	size_t cap, len;
	uint64_t mask;
	int8_t sqli, xss; /* -1: not run yet */
	bool phrases_done;
	bool lits_done;
	uint64_t *lits;   /* regex rules (bits) a literal of which occurs in buf */
};

/* Header and cookie values found clean, per evaluator: a browser sends the
 * same User-Agent, Accept and cookies with every request, and a value that
 * matched nothing under a policy matches nothing the next time (the
 * evaluation is a function of the policy, the kind, the name and the
 * bytes). A header or cookie is kept as its name and value together (one
 * look-up for both); argument names alone: they are the application's
 * vocabulary, the same from one request to the next. Only what was
 * evaluated in full is kept: no rule had
 * matched yet in its request (a rule that matched is not tried again), none
 * matched on it and no regex gave up. Two ways per set (a browser's dozen
 * values in a direct-mapped table collide a third of the time, and two
 * that share a slot would push each other out on every request), the one
 * used less recently replaced; a slot holds name and value whole (compared
 * byte for byte, the hash only picks the set).
 * Argument values, the path and the query vary from request to request and
 * are not kept. */
#define CLEAN_SLOTS 256
#define CLEAN_MAX 240
/* the kinds remembered: header and cookie name-and-value pairs (under the
 * value's kind), argument names */
#define CLEAN_KINDS (1u << WAF_TGT_HEADERS | 1u << WAF_TGT_COOKIES | 1u << WAF_TGT_ARGS_NAMES)
struct clean {
	uint64_t hash;
	const struct waf_policy *pol;
	int kind; /* -1: empty */
	uint16_t nlen, vlen;
	bool recent; /* used after the other way of its set */
	char bytes[CLEAN_MAX]; /* the name, then the value */
};

#define NOOPS_MEMO 32 /* a request's few masks per kind, spread by a multiplicative hash */
struct noops_memo {
	bool valid;
	uint64_t mask;
	unsigned need, noops, noops_ci;
};

struct waf_eval {
	const struct waf_ruleset *rs;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	struct memo *memo; /* 2 per group at most: the chain without its trailing lowercase, and whole */
	size_t nmemo, cap_memo;
	int32_t *entry_memo; /* per entry of the kind: its phrases' memo, while memos are scanned */
	char *scratch; /* body and query parsing */
	size_t scap;
	uint8_t *matched; /* per rule: already counted for this request */
	struct waf_policy *own_policy; /* a copy of a policy that was not prepared, owning its plan; NULL until one comes */
	struct clean *clean;       /* CLEAN_SLOTS */
	bool exhaustive;           /* waf_eval_exhaustive() */
	/* per request */
	const struct waf_plan *plan;
	const struct waf_policy *pol;
	struct waf_verdict *out;
	bool seen[WAF_TGT_COUNT]; /* a value of this kind was visited */
	/* the value being matched */
	enum waf_target kind;
	const char *name;
	size_t nlen;
	int name_bit;      /* the name's index in the kind's names, -1 */
	const char *raw;
	size_t rawlen;
	uint64_t rawmask;
	unsigned noops;    /* transforms that leave the raw value as it is (bits) */
	unsigned noops_ci; /* ... as it is, ASCII case aside */
	unsigned need;     /* the transforms the kind's chains use */
	uint64_t *lit_raw; /* the kind's rules (local bits) a literal of which occurs in the raw value */
	uint64_t *lit_into; /* where the automaton's literal hits go; NULL: nowhere */
	uint64_t *nonid;   /* the kind's rules (local bits) whose chain changes the value, case aside */
	uint64_t *cand;
	uint64_t *ents;    /* the kind's entries (bits) whose chain changes the value */
	size_t nwords;
	int8_t raw_sqli, raw_xss;
	struct noops_memo nm[NOOPS_MEMO]; /* raw_noops() of masks that decide alone */
	int8_t b64;        /* -1: not looked at; 0: not base64; 1: b64_mask and b64_len hold its decoded bytes' */
	uint64_t b64_mask;
	size_t b64_len;
	const char *cur;   /* the value a hit is reported from */
	size_t curlen;
	int cur_mode;      /* on_phrase: SCAN_RAW, SCAN_LITS, or SCAN_MEMO + the memo's index */
};

struct waf_eval *waf_eval_new(const struct waf_ruleset *rs)
{
	struct waf_eval *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return NULL;
	ev->rs = rs;
	ev->md = pcre2_match_data_create(2, NULL);
	ev->mctx = pcre2_match_context_create(NULL);
	ev->matched = calloc(rs->nrules + 1, 1);
	ev->clean = calloc(CLEAN_SLOTS, sizeof(*ev->clean));
	if (!ev->clean) {
		waf_eval_free(ev);
		return NULL;
	}
	for (size_t i = 0; i < CLEAN_SLOTS; i++)
		ev->clean[i].kind = -1;
	ev->nwords = rs->nrules / 64 + 1;
	ev->cap_memo = rs->ngroups * MAX_CHAIN + 2; /* one node per step of each chain at most */
	ev->memo = calloc(ev->cap_memo, sizeof(*ev->memo));
	ev->entry_memo = calloc(rs->ngroups + 1, sizeof(*ev->entry_memo));
	if (!ev->memo || !ev->entry_memo) {
		waf_eval_free(ev);
		return NULL;
	}
	ev->lit_raw = calloc(ev->nwords, sizeof(uint64_t));
	ev->nonid = calloc(ev->nwords, sizeof(uint64_t));
	ev->cand = calloc(ev->nwords, sizeof(uint64_t));
	ev->ents = calloc(rs->ngroups / 64 + 1, sizeof(uint64_t));
	bool ok = ev->lit_raw && ev->nonid && ev->cand && ev->ents;
	for (size_t i = 0; i < ev->cap_memo; i++)
		ok = ok && (ev->memo[i].lits = calloc(ev->nwords, sizeof(uint64_t))) != NULL;
	if (!ev->md || !ev->mctx || !ev->matched || !ok) {
		waf_eval_free(ev);
		return NULL;
	}
	/* a pathological regex gives up instead of holding the worker */
	pcre2_set_match_limit(ev->mctx, 100000);
	pcre2_set_depth_limit(ev->mctx, 5000);
	return ev;
}

void waf_eval_exhaustive(struct waf_eval *ev, bool on)
{
	ev->exhaustive = on;
}

void waf_eval_free(struct waf_eval *ev)
{
	if (!ev)
		return;
	pcre2_match_data_free(ev->md);
	pcre2_match_context_free(ev->mctx);
	for (size_t d = 0; ev->memo && d < ev->cap_memo; d++) {
		free(ev->memo[d].buf);
		free(ev->memo[d].lits);
	}
	free(ev->memo);
	free(ev->entry_memo);
	free(ev->clean);
	free(ev->lit_raw);
	free(ev->nonid);
	free(ev->cand);
	free(ev->ents);
	free(ev->scratch);
	free(ev->matched);
	if (ev->own_policy)
		waf_policy_release(ev->own_policy);
	free(ev->own_policy);
	free(ev);
}

/* Zeroes a bitset of n words: one store for the usual one word. */
static inline void zero_words(uint64_t *w, size_t n)
{
	if (n == 1)
		w[0] = 0;
	else
		memset(w, 0, n * sizeof(*w));
}

static bool grow(char **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t c = *cap ? *cap : 4096;
	while (c < need)
		c *= 2;
	char *q = realloc(*p, c);
	if (!q)
		return false;
	*p = q;
	*cap = c;
	return true;
}

static bool name_eq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x >= 'A' && x <= 'Z')
			x += 32;
		if (y >= 'A' && y <= 'Z')
			y += 32;
		if (x != y)
			return false;
	}
	return true;
}

static bool applies(const struct waf_eval *ev, const struct waf_rule *r)
{
	if ((r->all_names & (1u << ev->kind)) && ev->pol->nexclude_targets == 0)
		return true;
	for (size_t i = 0; i < r->ntargets; i++)
		if (r->targets[i].kind == ev->kind && (!r->targets[i].name || name_eq(ev->name, ev->nlen, r->targets[i].name)))
			break;
		else if (i + 1 == r->ntargets)
			return false;
	const struct waf_policy *p = ev->pol;
	for (size_t i = 0; i < p->nexclude_targets; i++) {
		const struct waf_exclusion *x = &p->exclude_targets[i];
		if ((x->rule_id == 0 || x->rule_id == r->id) && x->kind == ev->kind &&
		    (!x->name || name_eq(ev->name, ev->nlen, x->name)))
			return false;
	}
	return true;
}

static bool secret_name(const char *name, size_t n)
{
	static const char *const secrets[] = {"pass", "pwd", "token", "secret", "auth", "session", "key", "card",
	                                      "cvv", "ssn", "cookie"};
	char low[48];
	size_t k = n < sizeof(low) - 1 ? n : sizeof(low) - 1;
	for (size_t i = 0; i < k; i++)
		low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
	low[k] = '\0';
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		if (strstr(low, secrets[i]))
			return true;
	return false;
}

static void record(struct waf_eval *ev, size_t ri, size_t at)
{
	const struct waf_rule *r = &ev->rs->rules[ri];
	ev->matched[ri] = 1;
	bool detect = ev->plan->detect[ri];
	struct waf_verdict *v = ev->out;
	if (!detect) {
		v->score += r->score;
		v->groups |= r->groups;
	}
	v->total_hits++;
	if (v->nhits >= WAF_MAX_HITS)
		return;
	struct waf_hit *h = &v->hits[v->nhits++];
	h->rule_id = r->id;
	h->score = r->score;
	h->detect_only = detect;
	h->target = ev->kind;
	h->message = r->message;
	size_t nl = ev->nlen < sizeof(h->name) - 1 ? ev->nlen : sizeof(h->name) - 1;
	memcpy(h->name, ev->name ? ev->name : "", nl);
	h->name[nl] = '\0';
	if (secret_name(ev->name ? ev->name : "", ev->nlen) || ev->kind == WAF_TGT_COOKIES ||
	    (ev->kind == WAF_TGT_HEADERS && secret_name(ev->name, ev->nlen))) {
		/* cookie values and secret-looking arguments are never logged */
		snprintf(h->snippet, sizeof(h->snippet), "[redacted %zu bytes]", ev->curlen);
		return;
	}
	size_t start = at > WAF_SNIPPET / 2 ? at - WAF_SNIPPET / 2 : 0;
	size_t k = 0;
	for (size_t i = start; i < ev->curlen && k < WAF_SNIPPET; i++) {
		unsigned char c = (unsigned char)ev->cur[i];
		h->snippet[k++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '.';
	}
	h->snippet[k] = '\0';
}

enum { SCAN_RAW, SCAN_LITS, SCAN_MEMO };

static bool on_phrase(uint32_t id, size_t end, void *arg)
{
	struct waf_eval *ev = arg;
	size_t nr = ev->rs->nrules;
	if (id >= nr) {
		int32_t local = ev->plan->kinds[ev->kind].local_of[id - nr];
		if (ev->lit_into && local >= 0)
			SETBIT(ev->lit_into, (size_t)local);
		return false;
	}
	if (ev->matched[id] || !ev->plan->active[id] || ev->cur_mode == SCAN_LITS)
		return false;
	const struct waf_rule *r = &ev->rs->rules[id];
	int32_t ei = ev->plan->kinds[ev->kind].entry_of[id];
	if (ei < 0)
		return false;
	if (ev->cur_mode == SCAN_RAW) {
		/* the raw value: a phrase counts only for groups whose chain
		 * leaves this value as it is (case aside) */
		if (ev->plan->kinds[ev->kind].e[ei].tset & ~ev->noops_ci)
			return false;
	} else if (ev->entry_memo[ei] != ev->cur_mode - SCAN_MEMO) {
		return false; /* a memo: only for the groups whose chain made it */
	}
	if (applies(ev, r))
		record(ev, id, end);
	return false;
}

static bool not_within(const struct waf_rule *r, const char *v, size_t n)
{
	/* a media type is compared without its parameters */
	size_t end = 0;
	while (end < n && v[end] != ';')
		end++;
	while (end > 0 && (v[end - 1] == ' ' || v[end - 1] == '\t'))
		end--;
	size_t b = 0;
	while (b < end && (v[b] == ' ' || v[b] == '\t'))
		b++;
	for (size_t i = 0; i < r->nwords; i++) {
		const char *w = r->words[i];
		if (w[0] == '*') {
			size_t wl = strlen(w + 1);
			if (end - b >= wl && name_eq(v + end - wl, wl, w + 1))
				return false;
		} else if (name_eq(v + b, end - b, w)) {
			return false;
		}
	}
	return true;
}

static uint64_t mask_of(const struct waf_ruleset *rs, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	const uint64_t *cls = rs->cls;
	uint64_t a = 0, b = 0;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		a |= cls[p[i]] | cls[p[i + 1]];
		b |= cls[p[i + 2]] | cls[p[i + 3]];
	}
	for (; i < n; i++)
		a |= cls[p[i]];
	return a | b;
}

/* Whether a detector's or regex's necessary bytes occur in a value of class mask m. */
static bool may_match(const struct waf_rule *r, uint64_t m, size_t n)
{
	return n >= r->minlen && (!r->need_first || (m & r->need_first)) && (!r->need_last || (m & r->need_last));
}

static void run_other(struct waf_eval *ev, size_t ri, const char *s, size_t n, uint64_t m, int8_t *sqli, int8_t *xss)
{
	const struct waf_rule *r = &ev->rs->rules[ri];
	if (!ev->exhaustive && !may_match(r, m, n))
		return;
	switch (r->op) {
	case OP_REGEX: {
		int rc = pcre2_match(r->re, (PCRE2_SPTR)s, n, 0, 0, ev->md, ev->mctx);
		if (rc >= 0) {
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ev->md);
			record(ev, ri, ov[1]);
		} else if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT) {
			ev->out->regex_limits++;
		}
		break;
	}
	case OP_SQLI:
		if (*sqli < 0)
			*sqli = ev->exhaustive ? waf_sqli_detect_all(s, n, NULL) : waf_sqli_detect(s, n, NULL);
		if (*sqli)
			record(ev, ri, 0);
		break;
	case OP_XSS:
		if (*xss < 0)
			*xss = ev->exhaustive ? waf_xss_detect_all(s, n, NULL) : waf_xss_detect(s, n, NULL);
		if (*xss)
			record(ev, ri, 0);
		break;
	case OP_NOT_WITHIN:
		if (not_within(r, s, n))
			record(ev, ri, 0);
		break;
	case OP_LENGTH_OVER:
		if (n > r->length_over)
			record(ev, ri, 0);
		break;
	case OP_PHRASES:
	case OP_MISSING:
		break;
	}
}

/* Whether "--" occurs. */
static bool has_dashes(const char *s, size_t n)
{
	for (const char *p = memchr(s, '-', n); p && p + 1 < s + n; p = memchr(p + 1, '-', (size_t)(s + n - p - 1)))
		if (p[1] == '-')
			return true;
	return false;
}

/* One pass over the spaces: whether one is followed by a space (*twice),
 * and by a space, '/' or '(' (*before, what cmdline removes). */
static void space_pairs(const char *s, size_t n, bool *twice, bool *before)
{
	*twice = *before = false;
	for (const char *p = memchr(s, ' ', n); p && p + 1 < s + n; p = memchr(p + 1, ' ', (size_t)(s + n - p - 1))) {
		if (p[1] == ' ') {
			*twice = *before = true;
			return;
		}
		if (p[1] == '/' || p[1] == '(')
			*before = true;
	}
}

static bool path_is_normal(const char *s, size_t n)
{
	size_t i = n > 0 && s[0] == '/' ? 1 : 0;
	while (i < n) {
		size_t start = i;
		while (i < n && s[i] != '/')
			i++;
		size_t seg = i - start;
		if (seg == 0 || (seg == 1 && s[start] == '.') || (seg == 2 && s[start] == '.' && s[start + 1] == '.'))
			return false;
		if (i < n)
			i++;
	}
	return true;
}

static bool is_ws_byte(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0xa0;
}

/* The transforms (bits) that cannot change the value s (class mask m):
 * conservative, a transform not in the set is simply run. Lower case is a
 * no-op for a value without capitals. */
static unsigned raw_noops(const struct waf_ruleset *rs, const char *s, size_t n, uint64_t m, unsigned need,
                          unsigned *ci)
{
	const struct class_masks *c = &rs->cm;
	/* a transform no chain of the kind has is never asked about: "noop" */
	unsigned ok = ~need & ((1u << WAF_T_COUNT) - 1);
	*ci = 1u << WAF_T_LOWERCASE;
	if (!(m & c->url))
		ok |= 1u << WAF_T_URL_DECODE;
	if (!(m & c->amp))
		ok |= 1u << WAF_T_HTML_ENTITY;
	if (!(m & c->upper))
		ok |= 1u << WAF_T_LOWERCASE;
	bool sp_twice = false, sp_before = false;
	if ((m & c->space) && (need & ((1u << WAF_T_COMPRESS_WS) | (1u << WAF_T_CMDLINE))))
		space_pairs(s, n, &sp_twice, &sp_before);
	if ((need & (1u << WAF_T_COMPRESS_WS)) && !(m & c->ws_other) && !sp_twice)
		ok |= 1u << WAF_T_COMPRESS_WS;
	if ((need & (1u << WAF_T_REMOVE_COMMENTS)) && !(m & c->hash) && !((m & c->slash) && (m & c->star)) &&
	    (!(m & c->dash) || !has_dashes(s, n)))
		ok |= 1u << WAF_T_REMOVE_COMMENTS;
	if ((need & (1u << WAF_T_NORMALIZE_PATH)) && !(m & c->backslash) &&
	    (!(m & (c->slash | c->dot)) || path_is_normal(s, n)))
		ok |= 1u << WAF_T_NORMALIZE_PATH;
	if ((need & (1u << WAF_T_CMDLINE)) && !(m & (c->cmdline & ~c->upper)) && !sp_before)
		*ci |= 1u << WAF_T_CMDLINE; /* it lower-cases, and does nothing else here */
	if (!(m & c->upper))
		ok |= *ci & (1u << WAF_T_CMDLINE);
	if (!(m & c->nul))
		ok |= 1u << WAF_T_REMOVE_NULLS;
	if (m & ~c->base64)
		ok |= 1u << WAF_T_BASE64; /* a byte outside the alphabet: not base64, left as it is */
	if (!(m & c->backslash))
		ok |= 1u << WAF_T_JS_DECODE;
	if (n == 0 || (!is_ws_byte((unsigned char)s[0]) && !is_ws_byte((unsigned char)s[n - 1])))
		ok |= 1u << WAF_T_TRIM;
	*ci |= ok;
	return ok;
}

static unsigned memo_noops(struct waf_eval *ev, struct memo *mo)
{
	if (!mo->noops_known) {
		unsigned ci;
		mo->noops = raw_noops(ev->rs, mo->buf, mo->len, mo->mask, ev->need, &ci);
		mo->noops_known = true;
	}
	return mo->noops;
}

/* The memo made from memo `parent` (-1: the raw value) by step t, found or
 * made: its index, or -1 when out of memory. */
static int memo_child(struct waf_eval *ev, int parent, enum waf_transform t)
{
	for (size_t i = 0; i < ev->nmemo; i++)
		if (ev->memo[i].parent == parent && ev->memo[i].step == t)
			return (int)i;
	if (ev->nmemo == ev->cap_memo)
		return -1; /* not reached: one node per step of a chain at most */
	struct memo *mo = &ev->memo[ev->nmemo];
	const char *src = parent < 0 ? ev->raw : ev->memo[parent].buf;
	size_t len = parent < 0 ? ev->rawlen : ev->memo[parent].len;
	if (!grow(&mo->buf, &mo->cap, len + 1))
		return -1;
	memcpy(mo->buf, src, len);
	mo->len = waf_transform_apply(t, mo->buf, len); /* WAF_T_COUNT: a copy */
	mo->mask = mask_of(ev->rs, mo->buf, mo->len);
	mo->parent = parent;
	mo->step = t;
	mo->noops_known = mo->scan = false;
	mo->sqli = mo->xss = -1;
	mo->lits_done = mo->phrases_done = false;
	return (int)ev->nmemo++;
}

/* The value after chain[0..n) (a step that would change nothing is
 * skipped): a memo, or NULL when out of memory. A chain that leaves the raw
 * value as it is (only in exhaustive mode: callers ask for chains that
 * change it) gets a copy of it. */
static struct memo *transformed(struct waf_eval *ev, const enum waf_transform *chain, size_t n)
{
	int cur = -1;
	for (size_t k = 0; k < n; k++) {
		unsigned nz = cur < 0 ? ev->noops : memo_noops(ev, &ev->memo[cur]);
		if (nz & (1u << chain[k]))
			continue;
		if ((cur = memo_child(ev, cur, chain[k])) < 0)
			return NULL;
	}
	if (cur < 0 && (cur = memo_child(ev, -1, WAF_T_COUNT)) < 0)
		return NULL;
	return &ev->memo[cur];
}

/* Scans a transformed value for the literals of the kind's regex rules (once per memo). */
static void memo_lits(struct waf_eval *ev, struct memo *mo)
{
	if (mo->lits_done)
		return;
	zero_words(mo->lits, ev->nwords);
	ev->lit_into = mo->lits;
	ev->cur_mode = SCAN_LITS;
	waf_ac_search(ev->rs->uac, mo->buf, mo->len, on_phrase, ev);
	ev->lit_into = NULL;
	mo->lits_done = true;
}

/* One value of a target. One pass for its byte classes; the union
 * automaton once over it (the phrases of every group whose chain leaves
 * the value as it is, case aside, and the regex literals); a group's own
 * automaton only on the value its chain changed; and of the non-phrase
 * rules only those whose necessary byte classes and literals occur
 * (bitsets of the plan), each on the value its chain gives. */
/* The first 8 bytes of p as a word; of a shorter p, its first, middle and
 * last bytes (a sample is all the hash needs). */
static uint64_t load8(const char *p, size_t len)
{
	uint64_t w = 0;
	if (len >= 8) {
		memcpy(&w, p, 8);
		return w;
	}
	if (len == 0)
		return 0;
	const unsigned char *u = (const unsigned char *)p;
	return (uint64_t)u[0] | (uint64_t)u[len / 2] << 8 | (uint64_t)u[len - 1] << 16;
}

/* Picks a value's slot from a sample of its bytes (the start of the name,
 * the start, middle and end of the value) and the lengths: the slot's bytes
 * are compared whole, so the hash only has to spread the values a browser
 * sends (a User-Agent or a session cookie that changes changes at its end). */
static uint64_t clean_hash(int kind, const char *name, size_t nlen, const char *v, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull * (uint64_t)(kind + 1) ^ ((uint64_t)nlen << 32 | n);
	uint64_t mid = n > 16 ? load8(v + n / 2 - 4, 8) : 0, last = n > 8 ? load8(v + n - 8, 8) : 0;
	h = (h ^ load8(name, nlen)) * 0xff51afd7ed558ccdull;
	h ^= h >> 32;
	h = (h ^ load8(v, n)) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	h = (h ^ mid ^ (last << 1 | last >> 63)) * 0xff51afd7ed558ccdull;
	h ^= h >> 32;
	return h;
}

static struct clean *clean_slot(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen,
                                const char *v, size_t n, uint64_t *hash, bool *hit)
{
	*hit = false;
	if (!(CLEAN_KINDS & (1u << kind)) || ev->exhaustive || nlen + n > CLEAN_MAX)
		return NULL;
	*hash = clean_hash((int)kind, name, nlen, v, n);
	struct clean *set = &ev->clean[(*hash % (CLEAN_SLOTS / 2)) * 2];
	for (int w = 0; w < 2; w++) {
		struct clean *c = &set[w];
		if (c->kind == (int)kind && c->hash == *hash && c->pol == ev->pol && c->nlen == nlen && c->vlen == n &&
		    memcmp(c->bytes, name, nlen) == 0 && memcmp(c->bytes + nlen, v, n) == 0) {
			*hit = true;
			c->recent = true;
			set[1 - w].recent = false;
			return c;
		}
	}
	/* the slot a clean value would take: an empty one, else the older */
	int w = set[0].kind < 0 ? 0 : set[1].kind < 0 ? 1 : set[0].recent ? 1 : 0;
	return &set[w];
}

static void inspect_value(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen, const char *v,
                          size_t n);

/* A value of kind `kind` (with its name), and first the name itself as a
 * value of kind `names` when names is not WAF_TGT_COUNT (a header or a
 * cookie: the pair is remembered as one, under `kind`). The slot is
 * filled only when evaluated in full: nothing matched in the request so
 * far (the counts only grow: nothing before it either), no regex gave up. */
static void inspect_pair(struct waf_eval *ev, enum waf_target names, enum waf_target kind, const char *name,
                         size_t nlen, const char *v, size_t n)
{
	bool do_names = names != WAF_TGT_COUNT;
	if (do_names)
		ev->seen[names] = true;
	ev->seen[kind] = true;
	do_names = do_names && ev->plan->kinds[names].n != 0;
	bool do_value = ev->plan->kinds[kind].n != 0;
	if (!do_names && !do_value)
		return;
	if (!name)
		nlen = 0;
	/* a name inspected as the value (args_names) is keyed by its bytes once */
	size_t klen = name == v ? 0 : nlen;
	uint64_t hash = 0;
	bool hit;
	struct clean *c = clean_slot(ev, kind, name, klen, v, n, &hash, &hit);
	if (hit)
		return;
	if (do_names)
		inspect_value(ev, names, name, nlen, name, nlen);
	if (do_value)
		inspect_value(ev, kind, name, nlen, v, n);
	if (c && ev->out->total_hits == 0 && ev->out->regex_limits == 0) {
		c->hash = hash;
		c->pol = ev->pol;
		c->kind = (int)kind;
		c->nlen = (uint16_t)klen;
		c->vlen = (uint16_t)n;
		memcpy(c->bytes, name, klen);
		memcpy(c->bytes + klen, v, n);
		/* now the newer of its set */
		struct clean *set = &ev->clean[(size_t)(c - ev->clean) & ~(size_t)1];
		set[0].recent = c == &set[0];
		set[1].recent = c == &set[1];
	}
}

static void inspect(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen, const char *v, size_t n)
{
	if (CLEAN_KINDS & (1u << kind)) {
		inspect_pair(ev, WAF_TGT_COUNT, kind, name, nlen, v, n);
		return;
	}
	ev->seen[kind] = true;
	if (ev->plan->kinds[kind].n != 0)
		inspect_value(ev, kind, name, name ? nlen : 0, v, n);
}

static void inspect_value(struct waf_eval *ev, enum waf_target kind, const char *name, size_t nlen, const char *v,
                          size_t n)
{
	const struct plan_kind *pk = &ev->plan->kinds[kind];
	if (n > MAX_VALUE)
		n = MAX_VALUE;
	const struct waf_ruleset *rs = ev->rs;
	ev->kind = kind;
	ev->name = name ? name : "";
	ev->nlen = name ? nlen : 0;
	ev->name_bit = -1;
	for (size_t i = 0; i < pk->nnames && name; i++)
		if (pk->name_len[i] == nlen && strncasecmp(name, pk->names[i], nlen) == 0) {
			ev->name_bit = (int)i;
			break;
		}
	ev->raw = v;
	ev->rawlen = n;
	uint64_t m = mask_of(rs, v, n);
	ev->need = pk->tset;
	/* what the transforms do depends on the bytes themselves only through
	 * spaces, dashes, slashes, dots and other whitespace (pairs, segments,
	 * ends); without them the class mask decides, and values of one
	 * request mostly share a few masks */
	struct noops_memo *nm = &ev->nm[(size_t)(((m ^ ev->need) * 0x9e3779b97f4a7c15ull) >> 32) % NOOPS_MEMO];
	if (!(m & rs->cm.by_content) && nm->valid && nm->mask == m && nm->need == ev->need) {
		ev->noops = nm->noops;
		ev->noops_ci = nm->noops_ci;
	} else {
		ev->noops = raw_noops(rs, v, n, m, ev->need, &ev->noops_ci);
		if (!(m & rs->cm.by_content))
			*nm = (struct noops_memo){.valid = true, .mask = m, .need = ev->need, .noops = ev->noops,
			                          .noops_ci = ev->noops_ci};
	}
	if (ev->exhaustive)
		ev->noops = ev->noops_ci = 0; /* every chain runs, every rule is a candidate */
	ev->raw_sqli = ev->raw_xss = ev->b64 = -1;
	ev->nmemo = 0;
	size_t nw = pk->nw;
	zero_words(ev->lit_raw, nw);
	if ((pk->phrases || pk->any_lits) && rs->uac) {
		ev->lit_into = ev->lit_raw;
		ev->cur = v;
		ev->curlen = n;
		ev->cur_mode = SCAN_RAW;
		waf_ac_search(rs->uac, v, n, on_phrase, ev);
		ev->lit_into = NULL;
	}
	uint64_t *nonid = ev->nonid, *cand = ev->cand;
	zero_words(nonid, nw);
	if (pk->tset & ~ev->noops_ci) {
		/* groups whose chain changes the value: their phrases are looked
		 * for in what the chain makes of it, one scan per distinct result */
		size_t enw = pk->enw;
		zero_words(ev->ents, enw);
		for (unsigned t = pk->tset & ~ev->noops_ci; t; t &= t - 1)
			for (size_t w = 0; w < enw; w++)
				ev->ents[w] |= pk->with[(size_t)__builtin_ctz(t) * enw + w];
		for (size_t i = 0; i < pk->n; i++)
			ev->entry_memo[i] = -1;
		for (size_t ew = 0; ew < enw; ew++) {
			for (uint64_t ex = ev->ents[ew]; ex; ex &= ex - 1) {
				size_t i = ew * 64 + (size_t)__builtin_ctzll(ex);
				const struct entry *e = &pk->e[i];
				for (size_t w = 0; w < nw; w++)
					nonid[w] |= pk->of_entry[i * nw + w];
				if (!e->phrases ||
				    !(e->phrase_all || (ev->name_bit >= 0 && (e->phrase_names >> ev->name_bit) & 1)))
					continue;
				const struct group *gr = &rs->groups[e->group];
				struct memo *mo = transformed(ev, gr->chain, e->nchain_ci);
				if (!mo)
					return;
				mo->scan = true;
				ev->entry_memo[i] = (int32_t)(mo - ev->memo);
			}
		}
		for (size_t q = 0; q < ev->nmemo; q++) {
			struct memo *mo = &ev->memo[q];
			if (!mo->scan)
				continue;
			zero_words(mo->lits, nw);
			ev->lit_into = mo->lits;
			ev->cur = mo->buf;
			ev->curlen = mo->len;
			ev->cur_mode = SCAN_MEMO + (int)q;
			waf_ac_search(rs->uac, mo->buf, mo->len, on_phrase, ev);
			ev->lit_into = NULL;
			mo->lits_done = mo->phrases_done = true;
		}
	}
	/* the candidates: byte classes and literals decide for values the chain
	 * leaves as they are (case aside); the others are checked one by one */
	for (size_t w = 0; w < nw; w++) {
		uint64_t f = pk->first_any[w], l = pk->last_any[w];
		for (uint64_t x = m; x; x &= x - 1) {
			size_t c = (size_t)__builtin_ctzll(x);
			f |= pk->first[c * nw + w];
			l |= pk->last[c * nw + w];
		}
		cand[w] = (f & l & (ev->lit_raw[w] | ~pk->lits[w]) & ~nonid[w]) | nonid[w];
		if (ev->exhaustive)
			cand[w] = ~0ull;
	}
	for (size_t w = 0; w < nw; w++) {
		for (uint64_t x = cand[w]; x; x &= x - 1) {
			size_t j = w * 64 + (size_t)__builtin_ctzll(x);
			if (j >= pk->no)
				break;
			const struct orule *o = &pk->o[j];
			size_t ri = o->ri;
			const struct waf_rule *r = &rs->rules[ri];
			if (ev->matched[ri] || !(o->all_names || (ev->name_bit >= 0 && (o->names >> ev->name_bit) & 1)))
				continue;
			if (ev->pol->nexclude_targets && !applies(ev, r))
				continue;
			const struct entry *e = &pk->e[o->entry];
			if (e->base64_last && (e->tset & ~ev->noops) == 1u << WAF_T_BASE64 && !ev->exhaustive) {
				/* only the last step, base64, changes the value: its
				 * bytes' classes, without decoding, decide first */
				if (ev->b64 < 0)
					ev->b64 = waf_base64_classes(v, n, rs->cls, &ev->b64_mask, &ev->b64_len);
				if (!ev->b64) {
					ev->cur = v; /* not base64: the chain leaves it as it is */
					ev->curlen = n;
					run_other(ev, ri, v, n, m, &ev->raw_sqli, &ev->raw_xss);
					continue;
				}
				if (!may_match(r, ev->b64_mask, ev->b64_len))
					continue;
			}
			if (!(e->tset & ~ev->noops)) {
				ev->cur = v;
				ev->curlen = n;
				run_other(ev, ri, v, n, m, &ev->raw_sqli, &ev->raw_xss);
				continue;
			}
			const struct group *gr = &rs->groups[e->group];
			struct memo *mo = transformed(ev, gr->chain, gr->nchain);
			if (!mo)
				return;
			if (!ev->exhaustive && !may_match(r, mo->mask, mo->len))
				continue;
			if (r->lits && HASBIT(nonid, j) && !ev->exhaustive) {
				memo_lits(ev, mo);
				if (!HASBIT(mo->lits, j))
					continue;
			}
			ev->cur = mo->buf;
			ev->curlen = mo->len;
			run_other(ev, ri, mo->buf, mo->len, mo->mask, &mo->sqli, &mo->xss);
		}
	}
}

static bool visit_arg(void *arg, enum waf_arg_kind kind, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct waf_eval *ev = arg;
	if (kind == WAF_ARG_FILE) {
		inspect(ev, WAF_TGT_FILES, name, nlen, value, vlen);
		inspect(ev, WAF_TGT_ARGS_NAMES, name, nlen, name, nlen);
		return true;
	}
	inspect(ev, WAF_TGT_ARGS_NAMES, name, nlen, name, nlen);
	inspect(ev, WAF_TGT_ARGS, name, nlen, value, vlen);
	return true;
}

static void cookies(struct waf_eval *ev, const char *v, size_t n)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == ';'))
			i++;
		size_t start = i;
		const char *semi = memchr(v + i, ';', n - i);
		i = semi ? (size_t)(semi - v) : n;
		const char *eqp = memchr(v + start, '=', i - start);
		size_t eq = eqp ? (size_t)(eqp - v) : i;
		if (i > start) {
			const char *val = eq < i ? v + eq + 1 : v + i;
			size_t vl = eq < i ? i - eq - 1 : 0;
			inspect_pair(ev, WAF_TGT_COOKIES_NAMES, WAF_TGT_COOKIES, v + start, eq - start, val, vl);
		}
	}
}

/* A plan for a policy that was not prepared (or was prepared for another
 * rule set), made on a copy of it that the evaluator keeps until the next
 * such call: NULL when out of memory. Out of line: the usual request has a
 * plan. */
__attribute__((cold, noinline)) static const struct waf_plan *own_plan(struct waf_eval *ev,
                                                                      const struct waf_policy *pol)
{
	if (!ev->own_policy && !(ev->own_policy = calloc(1, sizeof(*ev->own_policy))))
		return NULL;
	waf_policy_release(ev->own_policy);
	*ev->own_policy = *pol; /* its other fields are read only while planning */
	ev->own_policy->plan = NULL;
	if (!waf_policy_prepare(ev->rs, ev->own_policy))
		return NULL;
	return ev->own_policy->plan;
}

void waf_evaluate(struct waf_eval *ev, const struct waf_policy *pol, const struct waf_request *req,
                  struct waf_verdict *out)
{
	const struct waf_ruleset *rs = ev->rs;
	/* the hits are written as they are recorded: the rest of out is what needs zeroing */
	out->score = 0;
	out->block = false;
	out->nhits = out->total_hits = 0;
	out->groups = 0;
	out->regex_limits = 0;
	memset(ev->seen, 0, sizeof(ev->seen));
	ev->pol = pol;
	ev->out = out;
	ev->plan = pol->plan;
	if ((!ev->plan || ev->plan->rs != rs) && !(ev->plan = own_plan(ev, pol)))
		return;
	memset(ev->matched, 0, rs->nrules);
	size_t need = req->target_len + req->body_len + 1;
	if (!grow(&ev->scratch, &ev->scap, need))
		return;
	inspect(ev, WAF_TGT_METHOD, NULL, 0, req->method, req->method_len);
	const char *q = memchr(req->target, '?', req->target_len);
	size_t plen = q ? (size_t)(q - req->target) : req->target_len;
	/* the path, percent-decoded once, as the application sees it */
	memcpy(ev->scratch, req->target, plen);
	size_t dl = plen;
	for (size_t i = 0; i < dl; i++)
		if (ev->scratch[i] == '+')
			ev->scratch[i] = '\x01'; /* '+' is literal in a path: keep it through the decoder */
	dl = waf_url_decode(ev->scratch, dl);
	for (size_t i = 0; i < dl; i++)
		if (ev->scratch[i] == '\x01')
			ev->scratch[i] = '+';
	inspect(ev, WAF_TGT_PATH, NULL, 0, ev->scratch, dl);
	const char *err = NULL;
	if (q) {
		size_t ql = req->target_len - plen - 1;
		inspect(ev, WAF_TGT_QUERY, NULL, 0, q + 1, ql);
		(void)waf_parse_urlencoded(q + 1, ql, ev->scratch, visit_arg, ev, &err);
	}
	const char *ct = NULL;
	size_t ctlen = 0;
	for (size_t i = 0; i < req->nheaders; i++) {
		const struct waf_field *f = &req->headers[i];
		char first = (char)(f->nlen ? f->name[0] | 0x20 : 0);
		if (f->nlen == 6 && first == 'c' && name_eq(f->name, f->nlen, "cookie")) {
			cookies(ev, f->value, f->vlen);
			continue;
		}
		if (f->nlen == 12 && first == 'c' && name_eq(f->name, f->nlen, "content-type")) {
			ct = f->value;
			ctlen = f->vlen;
		}
		inspect_pair(ev, WAF_TGT_HEADERS_NAMES, WAF_TGT_HEADERS, f->name, f->nlen, f->value, f->vlen);
	}
	if (req->body && req->body_len > 0) {
		enum waf_body_kind bk = ct ? waf_body_kind_of(ct, ctlen) : WAF_BODY_OTHER;
		bool ok = true;
		err = NULL;
		if (bk == WAF_BODY_URLENCODED)
			ok = waf_parse_urlencoded(req->body, req->body_len, ev->scratch, visit_arg, ev, &err);
		else if (bk == WAF_BODY_JSON)
			ok = waf_parse_json(req->body, req->body_len, ev->scratch, visit_arg, ev, &err);
		else if (bk == WAF_BODY_MULTIPART)
			ok = waf_parse_multipart(ct, ctlen, req->body, req->body_len, ev->scratch, visit_arg, ev, &err);
		else
			inspect(ev, WAF_TGT_BODY, NULL, 0, req->body, req->body_len);
		if (!ok && err)
			inspect(ev, WAF_TGT_BODY_ERROR, NULL, 0, err, strlen(err));
	}
	/* `missing`: a rule whose target (e.g. headers:user-agent) was never seen */
	for (size_t k = 0; k < ev->plan->nmissing; k++) {
		size_t i = ev->plan->missing[k];
		const struct waf_rule *r = &rs->rules[i];
		bool present = false;
		for (size_t t = 0; t < r->ntargets && !present; t++) {
			const struct rule_target *rt = &r->targets[t];
			if (rt->kind == WAF_TGT_HEADERS && rt->name) {
				for (size_t h = 0; h < req->nheaders && !present; h++)
					present = name_eq(req->headers[h].name, req->headers[h].nlen, rt->name);
			} else {
				present = ev->seen[rt->kind];
			}
		}
		if (!present) {
			ev->kind = r->targets[0].kind;
			ev->name = r->targets[0].name ? r->targets[0].name : "";
			ev->nlen = strlen(ev->name);
			ev->cur = "";
			ev->curlen = 0;
			record(ev, i, 0);
		}
	}
	out->block = out->score >= pol->threshold;
}
