/* waf_cli.c - `sluice waf test` (waf_cli.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "waf_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf.h"
#include "waf_body.h"
#include "waf_eval.h"
#include "waf_policy.h"
#include "waf_rules.h"

#define MAX_HEADERS 100

static int usage(void)
{
	fprintf(stderr, "usage: sluice waf test [--paranoia N] [--threshold N] [--rules DIR] [--summary] [--quiet] [--exhaustive] FILE...\n"
	                "  replays raw HTTP requests or JSON lines ({\"method\",\"path\",\"headers\",\"body\",\"expect\"})\n"
	                "  against the WAF rules; exits 1 when an expectation (block/pass) fails\n");
	return 2;
}

struct classes {
	char name[32];
	unsigned total, blocked, expect_block, expect_pass, fail;
};

struct run {
	struct waf_eval *ev;
	struct waf_policy pol;
	const struct waf_ruleset *rs;
	unsigned requests, failures, blocked;
	struct classes cls[64];
	size_t ncls;
	bool quiet;
};

/* Prints the verdict of one request and counts it; expect: NULL, "block" or "pass". */
static void judge(struct run *run, const char *where, const struct waf_request *req, const char *expect,
                  const char *cls, const char *label)
{
	struct waf_verdict v;
	waf_evaluate(run->ev, &run->pol, req, &v);
	run->requests++;
	if (v.block)
		run->blocked++;
	bool failed = expect && ((strcmp(expect, "block") == 0) != v.block);
	if (failed)
		run->failures++;
	if (!run->quiet || failed) {
		printf("%s: %s score=%d rules=", where, v.block ? "block" : "pass", v.score);
		if (v.nhits == 0)
			printf("-");
		for (size_t i = 0; i < v.nhits; i++)
			printf("%s%u%s", i ? "," : "", v.hits[i].rule_id, v.hits[i].detect_only ? "(detect)" : "");
		if (v.regex_limits)
			printf(" gave_up=%u", v.regex_limits); /* regex matches stopped at their limit: no match assumed */
		if (expect)
			printf(" expect=%s %s", expect, failed ? "FAIL" : "ok");
		if (label && *label)
			printf(" [%s]", label);
		printf("\n");
		if (failed)
			for (size_t i = 0; i < v.nhits; i++)
				printf("    %u %s:%s \"%s\" %s\n", v.hits[i].rule_id, waf_target_name(v.hits[i].target),
				       v.hits[i].name, v.hits[i].snippet, v.hits[i].message);
	}
	const char *c = cls && *cls ? cls : (expect && strcmp(expect, "pass") == 0 ? "benign" : "unclassified");
	struct classes *k = NULL;
	for (size_t i = 0; i < run->ncls; i++)
		if (strcmp(run->cls[i].name, c) == 0)
			k = &run->cls[i];
	if (!k && run->ncls < sizeof(run->cls) / sizeof(run->cls[0])) {
		k = &run->cls[run->ncls++];
		memset(k, 0, sizeof(*k));
		snprintf(k->name, sizeof(k->name), "%s", c);
	}
	if (k) {
		k->total++;
		k->blocked += v.block;
		k->fail += failed;
		if (expect && strcmp(expect, "block") == 0)
			k->expect_block++;
		else if (expect)
			k->expect_pass++;
	}
}

/* One raw HTTP/1 request; false with a message on stderr. */
static bool raw_request(struct run *run, const char *file, char *buf, size_t n)
{
	struct waf_field hdrs[MAX_HEADERS];
	size_t nh = 0;
	char *p = buf, *end = buf + n;
	char *eol = memchr(p, '\n', (size_t)(end - p));
	if (!eol) {
		fprintf(stderr, "%s:1: not an HTTP request: no request line (METHOD TARGET HTTP/1.1)\n", file);
		return false;
	}
	char *line_end = (eol > p && eol[-1] == '\r') ? eol - 1 : eol;
	char *sp1 = memchr(p, ' ', (size_t)(line_end - p));
	char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
	if (!sp1 || sp1 == p) {
		fprintf(stderr, "%s:1: not an HTTP request line: expected METHOD TARGET HTTP/1.1\n", file);
		return false;
	}
	struct waf_request req = {.method = p, .method_len = (size_t)(sp1 - p), .target = sp1 + 1};
	req.target_len = (size_t)((sp2 ? sp2 : line_end) - (sp1 + 1));
	p = eol + 1;
	unsigned lineno = 1;
	size_t content_length = (size_t)-1;
	for (;;) {
		lineno++;
		eol = memchr(p, '\n', (size_t)(end - p));
		char *le = eol ? eol : end;
		if (le > p && le[-1] == '\r')
			le--;
		if (le == p) {
			p = eol ? eol + 1 : end;
			break;
		}
		char *colon = memchr(p, ':', (size_t)(le - p));
		if (!colon) {
			fprintf(stderr, "%s:%u: header line without ':'\n", file, lineno);
			return false;
		}
		if (nh == MAX_HEADERS) {
			fprintf(stderr, "%s:%u: more than %d header lines\n", file, lineno, MAX_HEADERS);
			return false;
		}
		char *v = colon + 1;
		while (v < le && (*v == ' ' || *v == '\t'))
			v++;
		hdrs[nh] = (struct waf_field){p, (size_t)(colon - p), v, (size_t)(le - v)};
		if (hdrs[nh].nlen == 14 && strncasecmp(p, "content-length", 14) == 0)
			content_length = strtoul(v, NULL, 10);
		nh++;
		if (!eol) {
			p = end;
			break;
		}
		p = eol + 1;
	}
	req.headers = hdrs;
	req.nheaders = nh;
	req.body = p;
	req.body_len = (size_t)(end - p);
	if (content_length != (size_t)-1 && content_length < req.body_len)
		req.body_len = content_length;
	judge(run, file, &req, NULL, NULL, NULL);
	return true;
}

struct jline {
	const char *method, *path, *body, *expect;
	char cls[32], label[96];
	size_t method_len, path_len, body_len;
	struct waf_field hdrs[MAX_HEADERS];
	size_t nh;
	bool in_headers_error;
};

static bool jkey(const char *name, size_t nlen, const char *k)
{
	return strlen(k) == nlen && memcmp(name, k, nlen) == 0;
}

static bool jvisit(void *arg, int depth, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct jline *j = arg;
	if (depth == 1) {
		if (jkey(name, nlen, "method")) {
			j->method = value;
			j->method_len = vlen;
		} else if (jkey(name, nlen, "path")) {
			j->path = value;
			j->path_len = vlen;
		} else if (jkey(name, nlen, "body")) {
			j->body = value;
			j->body_len = vlen;
		} else if (jkey(name, nlen, "expect")) {
			j->expect = vlen == 5 && memcmp(value, "block", 5) == 0 ? "block"
			            : vlen == 4 && memcmp(value, "pass", 4) == 0 ? "pass" : "?";
		} else if (jkey(name, nlen, "class")) {
			snprintf(j->cls, sizeof(j->cls), "%.*s", (int)vlen, value);
		} else if (jkey(name, nlen, "name")) {
			snprintf(j->label, sizeof(j->label), "%.*s", (int)vlen, value);
		}
	} else if (depth == 2 && j->nh < MAX_HEADERS) {
		j->hdrs[j->nh++] = (struct waf_field){name, nlen, value, vlen};
	}
	return true;
}

static bool json_lines(struct run *run, const char *file, char *buf, size_t n)
{
	bool ok = true;
	char *scratch = malloc(n + 2);
	if (!scratch) {
		fprintf(stderr, "%s: out of memory\n", file);
		return false;
	}
	unsigned lineno = 0;
	for (char *p = buf; p < buf + n;) {
		char *eol = memchr(p, '\n', (size_t)(buf + n - p));
		char *le = eol ? eol : buf + n;
		lineno++;
		char *q = p;
		while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
			q++;
		if (q < le && *q != '#') {
			struct jline j;
			memset(&j, 0, sizeof(j));
			const char *err = NULL;
			char where[512];
			snprintf(where, sizeof(where), "%s:%u", file, lineno);
			if (!waf_parse_json_depth(q, (size_t)(le - q), scratch, jvisit, &j, &err)) {
				fprintf(stderr, "%s: %s\n", where, err ? err : "bad JSON");
				ok = false;
			} else if (!j.path || j.path_len == 0 || j.path[0] != '/') {
				fprintf(stderr, "%s: \"path\" (a request target starting with '/') is required\n", where);
				ok = false;
			} else if (j.expect && strcmp(j.expect, "?") == 0) {
				fprintf(stderr, "%s: \"expect\" must be \"block\" or \"pass\"\n", where);
				ok = false;
			} else {
				struct waf_request req = {
				    .method = j.method ? j.method : "GET",
				    .method_len = j.method ? j.method_len : 3,
				    .target = j.path,
				    .target_len = j.path_len,
				    .headers = j.hdrs,
				    .nheaders = j.nh,
				    .body = j.body,
				    .body_len = j.body_len,
				};
				judge(run, where, &req, j.expect, j.cls, j.label);
			}
		}
		p = eol ? eol + 1 : buf + n;
	}
	free(scratch);
	return ok;
}

static const char *default_rules(void)
{
	struct stat st;
	if (stat("lua/waf", &st) == 0 && S_ISDIR(st.st_mode))
		return "lua/waf";
	return SLUICE_SRCDIR "/lua/waf";
}

static int test_main(int argc, char **argv)
{
	const char *rules = NULL;
	struct run run;
	memset(&run, 0, sizeof(run));
	run.pol.paranoia = 1;
	run.pol.threshold = 5;
	bool summary = false, exhaustive = false;
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if ((strcmp(a, "--paranoia") == 0 || strcmp(a, "--threshold") == 0 || strcmp(a, "--rules") == 0) &&
		    i + 1 >= argc) {
			fprintf(stderr, "sluice waf test: %s needs a value\n", a);
			return usage();
		}
		if (strcmp(a, "--paranoia") == 0) {
			char *e;
			long v = strtol(argv[++i], &e, 10);
			if (*e || v < 1 || v > 4) {
				fprintf(stderr, "sluice waf test: --paranoia: \"%s\" is not 1, 2, 3 or 4\n", argv[i]);
				return 2;
			}
			run.pol.paranoia = (int)v;
		} else if (strcmp(a, "--threshold") == 0) {
			char *e;
			long v = strtol(argv[++i], &e, 10);
			if (*e || v < 1 || v > 10000) {
				fprintf(stderr, "sluice waf test: --threshold: \"%s\" is not a positive integer\n", argv[i]);
				return 2;
			}
			run.pol.threshold = (int)v;
		} else if (strcmp(a, "--rules") == 0) {
			rules = argv[++i];
		} else if (strcmp(a, "--summary") == 0) {
			summary = true;
		} else if (strcmp(a, "--quiet") == 0) {
			run.quiet = true;
		} else if (strcmp(a, "--exhaustive") == 0) {
			exhaustive = true;
		} else if (strcmp(a, "--") == 0) {
			i++;
			break;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "sluice waf test: unknown option %s\n", a);
			return usage();
		} else {
			break;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "sluice waf test: no request files\n");
		return usage();
	}
	if (!rules)
		rules = default_rules();
	struct conf_errors errs;
	conf_errors_init(&errs);
	struct waf_ruleset *rs = waf_rules_load(rules, &errs);
	if (!rs) {
		for (size_t k = 0; k < errs.count; k++)
			fprintf(stderr, "%s\n", errs.msgs[k]);
		conf_errors_free(&errs);
		return 2;
	}
	conf_errors_free(&errs);
	run.rs = rs;
	run.ev = waf_eval_new(rs);
	if (!run.ev || !waf_policy_prepare(rs, &run.pol)) {
		waf_eval_free(run.ev);
		fprintf(stderr, "sluice waf test: out of memory\n");
		waf_rules_free(rs);
		return 2;
	}
	waf_eval_exhaustive(run.ev, exhaustive);
	bool input_ok = true;
	for (; i < argc; i++) {
		struct conf_errors e;
		conf_errors_init(&e);
		size_t n;
		char *buf = conf_read_file(argv[i], &n, &e);
		if (!buf) {
			for (size_t k = 0; k < e.count; k++)
				fprintf(stderr, "%s\n", e.msgs[k]);
			conf_errors_free(&e);
			input_ok = false;
			continue;
		}
		conf_errors_free(&e);
		size_t k = 0;
		while (k < n && (buf[k] == ' ' || buf[k] == '\n' || buf[k] == '\r' || buf[k] == '\t'))
			k++;
		bool ok = (k < n && (buf[k] == '{' || buf[k] == '#')) ? json_lines(&run, argv[i], buf, n)
		                                                      : raw_request(&run, argv[i], buf, n);
		input_ok &= ok;
		free(buf);
	}
	if (summary)
		for (size_t c = 0; c < run.ncls; c++)
			printf("class %s: %u/%u blocked (%.1f%%), %u expectation(s) failed\n", run.cls[c].name,
			       run.cls[c].blocked, run.cls[c].total,
			       run.cls[c].total ? 100.0 * run.cls[c].blocked / run.cls[c].total : 0.0, run.cls[c].fail);
	printf("%u request(s), %u blocked, %u expectation(s) failed (paranoia %d, threshold %d, %zu rules)\n",
	       run.requests, run.blocked, run.failures, run.pol.paranoia, run.pol.threshold, waf_rules_count(rs));
	waf_policy_release(&run.pol);
	waf_eval_free(run.ev);
	waf_rules_free(rs);
	if (!input_ok)
		return 2;
	return run.failures ? 1 : 0;
}

int waf_cli_main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "test") != 0) {
		if (argc >= 2)
			fprintf(stderr, "sluice waf: unknown command \"%s\"\n", argv[1]);
		return usage();
	}
	return test_main(argc - 1, argv + 1);
}
