/* check_waf_rules.c - the WAF's rule set, policies and evaluator on small
 * rule files written by the test: loading and its errors (waf_rules.c),
 * what a policy runs (waf_policy.c: paranoia, exclusions, detect mode) and
 * what the evaluator reports (waf_eval.c: scores, hits, redaction, missing
 * targets, the same verdict with or without a prepared plan and with the
 * shortcuts off). t/test_waf.py runs the shipped rules on the corpus. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "waf_eval.h"
#include "waf_policy.h"
#include "waf_rules.h"

/* critical 5, warning 3, notice 2 */
static const char rules_src[] =
	"return {\n"
	"  { id = 1, severity = 'critical', targets = { 'args' }, transforms = { 'url_decode', 'lowercase' },\n"
	"    operator = { phrases = { 'union select' } }, message = 'phrase', tags = { 'attack-sqli' } },\n"
	"  { id = 2, paranoia = 2, severity = 'warning', targets = { 'headers:user-agent' },\n"
	"    operator = { regex = '(?i)nikto|sqlmap' }, message = 'scanner', tags = { 'scanner' } },\n"
	"  { id = 3, severity = 'critical', targets = { 'cookies' }, transforms = { 'lowercase' },\n"
	"    operator = { regex = '<script' }, message = 'cookie script', tags = { 'attack-xss' } },\n"
	"  { id = 4, severity = 'notice', targets = { 'headers:user-agent' },\n"
	"    operator = { missing = true }, message = 'no user agent', tags = { 'protocol' } },\n"
	"  { id = 5, severity = 'critical', targets = { 'method' },\n"
	"    operator = { not_within = { 'GET', 'POST' } }, message = 'method', tags = { 'protocol' } },\n"
	"}\n";

struct tmpdir {
	char path[64];
	char files[4][128];
	size_t nfiles;
};

static void dir_make(struct tmpdir *d)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->path, sizeof(d->path), "/tmp/check_waf_rules_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(d->path));
}

static void dir_add(struct tmpdir *d, const char *name, const char *src)
{
	ck_assert_uint_lt(d->nfiles, 4);
	char p[sizeof(d->files[0])];
	snprintf(p, sizeof(p), "%s/%s", d->path, name);
	memcpy(d->files[d->nfiles++], p, sizeof(p));
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(src, 1, strlen(src), f), strlen(src));
	ck_assert_int_eq(fclose(f), 0);
}

static void dir_remove(struct tmpdir *d)
{
	for (size_t i = 0; i < d->nfiles; i++)
		ck_assert_int_eq(unlink(d->files[i]), 0);
	ck_assert_int_eq(rmdir(d->path), 0);
}

/* The test rule set, loaded from a fresh directory. */
static struct waf_ruleset *load_test_rules(void)
{
	struct tmpdir d;
	dir_make(&d);
	dir_add(&d, "10-test.lua", rules_src);
	struct conf_errors e;
	conf_errors_init(&e);
	struct waf_ruleset *rs = waf_rules_load(d.path, &e);
	ck_assert_msg(rs != NULL, "%s", e.count ? e.msgs[0] : "no error");
	ck_assert_uint_eq(e.count, 0);
	conf_errors_free(&e);
	dir_remove(&d);
	return rs;
}

/* Loads src as one rule file; the errors, each checked to name the file. */
static size_t load_errors(const char *src, struct conf_errors *e)
{
	struct tmpdir d;
	dir_make(&d);
	dir_add(&d, "x.lua", src);
	conf_errors_init(e);
	struct waf_ruleset *rs = waf_rules_load(d.path, e);
	ck_assert_ptr_null(rs);
	for (size_t i = 0; i < e->count; i++)
		ck_assert_msg(strstr(e->msgs[i], "/x.lua: ") != NULL, "%s", e->msgs[i]);
	dir_remove(&d);
	return e->count;
}

static bool has_error(const struct conf_errors *e, const char *part)
{
	for (size_t i = 0; i < e->count; i++)
		if (strstr(e->msgs[i], part))
			return true;
	return false;
}

static const struct waf_hit *find_hit(const struct waf_verdict *v, uint32_t id)
{
	for (size_t i = 0; i < v->nhits; i++)
		if (v->hits[i].rule_id == id)
			return &v->hits[i];
	return NULL;
}

/* A request: method, target, and up to 4 headers as "Name: value". */
struct req {
	struct waf_field f[4];
	struct waf_request r;
};

static const struct waf_request *req_make(struct req *q, const char *method, const char *target,
                                          const char *const *headers)
{
	memset(q, 0, sizeof(*q));
	q->r.method = method;
	q->r.method_len = strlen(method);
	q->r.target = target;
	q->r.target_len = strlen(target);
	size_t n = 0;
	for (; headers && headers[n]; n++) {
		ck_assert_uint_lt(n, 4);
		const char *colon = strchr(headers[n], ':');
		ck_assert_ptr_nonnull(colon);
		q->f[n].name = headers[n];
		q->f[n].nlen = (size_t)(colon - headers[n]);
		q->f[n].value = colon + 2;
		q->f[n].vlen = strlen(colon + 2);
	}
	q->r.headers = q->f;
	q->r.nheaders = n;
	return &q->r;
}

static const char *const browser[] = {"Host: a", "User-Agent: Mozilla/5.0", NULL};

/* Evaluates a request under pol (prepared here when prepare is true). */
static void eval(const struct waf_ruleset *rs, struct waf_policy *pol, bool prepare, const struct waf_request *r,
                 struct waf_verdict *v)
{
	if (prepare)
		ck_assert(waf_policy_prepare(rs, pol));
	struct waf_eval *ev = waf_eval_new(rs);
	ck_assert_ptr_nonnull(ev);
	waf_evaluate(ev, pol, r, v);
	waf_eval_free(ev);
	if (prepare)
		waf_policy_release(pol);
}

START_TEST(load_and_find)
{
	struct waf_ruleset *rs = load_test_rules();
	ck_assert_uint_eq(waf_rules_count(rs), 5);
	const struct waf_rule *r = waf_rules_find(rs, 2);
	ck_assert_ptr_nonnull(r);
	const char *const *tags = waf_rule_tags(r);
	ck_assert_str_eq(tags[0], "scanner");
	ck_assert_ptr_null(tags[1]);
	ck_assert_ptr_null(waf_rules_find(rs, 99));
	waf_rules_free(rs);
	waf_rules_free(NULL);
}
END_TEST

START_TEST(load_errors_name_file_rule_and_key)
{
	struct conf_errors e;
	load_errors("return { { id = 1, paranoya = 2, targets = { 'args' }, operator = { sqli = true }, message = 'm' },\n"
	            "  { id = 2, targets = { 'args' }, operator = { regex = '(' }, message = 'm' },\n"
	            "  { id = 1, targets = { 'argz' }, operator = { sqli = true }, message = 'm' },\n"
	            "  { id = 4, targets = { 'args' }, transforms = { 'rot13' }, operator = { xss = true }, message = 'm' },\n"
	            "  { id = 5, severity = 'huge', targets = { 'args' }, operator = { phrases = { '' } } } }\n",
	            &e);
	ck_assert(has_error(&e, "rules[1].paranoya: unknown key"));
	ck_assert(has_error(&e, "rules[2].operator.regex: "));
	ck_assert(has_error(&e, "rules[3].targets: unknown target \"argz\""));
	ck_assert(has_error(&e, "rules[4].transforms: unknown transform \"rot13\""));
	ck_assert(has_error(&e, "rules[5].severity: \"huge\" is not one of"));
	ck_assert(has_error(&e, "rules[5].message: a string is required"));
	ck_assert(has_error(&e, "rules[5].operator.phrases: an empty phrase matches everything"));
	conf_errors_free(&e);

	load_errors("return { { id = 7, targets = { 'args' }, operator = { sqli = true }, message = 'm' },\n"
	            "  { id = 7, targets = { 'args' }, operator = { sqli = true }, message = 'm' } }\n",
	            &e);
	ck_assert(has_error(&e, "rules[2].id: duplicate rule id 7"));
	conf_errors_free(&e);

	ck_assert_uint_eq(load_errors("return 42\n", &e), 1);
	ck_assert(has_error(&e, "must return a table"));
	conf_errors_free(&e);

	struct tmpdir d;
	dir_make(&d);
	conf_errors_init(&e);
	ck_assert_ptr_null(waf_rules_load(d.path, &e));
	ck_assert(has_error(&e, "no *.lua rule files"));
	conf_errors_free(&e);
	dir_remove(&d);
	conf_errors_init(&e);
	ck_assert_ptr_null(waf_rules_load("/nonexistent/waf", &e));
	ck_assert(has_error(&e, "/nonexistent/waf: cannot open the rules directory"));
	conf_errors_free(&e);
}
END_TEST

START_TEST(target_names)
{
	enum waf_target k;
	const char *name;
	ck_assert(waf_target_parse("args", &k, &name));
	ck_assert_int_eq(k, WAF_TGT_ARGS);
	ck_assert_ptr_null(name);
	ck_assert(waf_target_parse("headers:user-agent", &k, &name));
	ck_assert_int_eq(k, WAF_TGT_HEADERS);
	ck_assert_str_eq(name, "user-agent");
	ck_assert(!waf_target_parse("method:x", &k, &name)); /* only args, cookies, headers, files take a name */
	ck_assert(!waf_target_parse("args:", &k, &name));
	ck_assert(!waf_target_parse("argz", &k, &name));
	for (int t = 0; t < WAF_TGT_COUNT; t++) {
		ck_assert(waf_target_parse(waf_target_name((enum waf_target)t), &k, &name));
		ck_assert_int_eq(k, t);
	}
	ck_assert_str_eq(waf_target_name(WAF_TGT_COUNT), "?");
}
END_TEST

START_TEST(phrase_after_transforms_blocks)
{
	struct waf_ruleset *rs = load_test_rules();
	struct waf_policy pol = {.paranoia = 1, .threshold = 5};
	struct req q;
	struct waf_verdict v;
	eval(rs, &pol, true, req_make(&q, "GET", "/s?q=1%20UNION%20Select%202", browser), &v);
	ck_assert_int_eq(v.score, 5);
	ck_assert(v.block);
	ck_assert_uint_eq(v.nhits, 1);
	ck_assert_uint_eq(v.total_hits, 1);
	ck_assert_uint_eq(v.hits[0].rule_id, 1);
	ck_assert_int_eq(v.hits[0].target, WAF_TGT_ARGS);
	ck_assert_str_eq(v.hits[0].name, "q");
	ck_assert_str_eq(v.hits[0].message, "phrase");
	/* the value as the parser decoded it: phrases match it case aside, untransformed */
	ck_assert_str_eq(v.hits[0].snippet, "1 UNION Select 2");
	ck_assert(!v.hits[0].detect_only);
	ck_assert_uint_ne(v.groups, 0);

	eval(rs, &pol, true, req_make(&q, "GET", "/s?q=red+shoes", browser), &v);
	ck_assert_int_eq(v.score, 0);
	ck_assert(!v.block);
	ck_assert_uint_eq(v.nhits, 0);
	waf_rules_free(rs);
}
END_TEST

START_TEST(paranoia_and_detect_mode)
{
	struct waf_ruleset *rs = load_test_rules();
	const char *const scanner[] = {"Host: a", "User-Agent: sqlmap/1.7", NULL};
	struct req q;
	struct waf_verdict v;
	struct waf_policy p1 = {.paranoia = 1, .threshold = 5};
	eval(rs, &p1, true, req_make(&q, "GET", "/", scanner), &v);
	ck_assert_ptr_null(find_hit(&v, 2)); /* a paranoia 2 rule */

	struct waf_policy p2 = {.paranoia = 2, .threshold = 3};
	eval(rs, &p2, true, req_make(&q, "GET", "/", scanner), &v);
	const struct waf_hit *h = find_hit(&v, 2);
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(h->target, WAF_TGT_HEADERS);
	ck_assert_str_eq(h->name, "User-Agent");
	ck_assert_int_eq(v.score, 3);
	ck_assert(v.block);

	/* tried in detect mode: runs at paranoia 1, never counts */
	const uint32_t detect[] = {2};
	struct waf_policy pd = {.paranoia = 1, .threshold = 3, .detect_ids = detect, .ndetect_ids = 1};
	eval(rs, &pd, true, req_make(&q, "GET", "/", scanner), &v);
	h = find_hit(&v, 2);
	ck_assert_ptr_nonnull(h);
	ck_assert(h->detect_only);
	ck_assert_int_eq(v.score, 0);
	ck_assert(!v.block);
	ck_assert_uint_eq(v.groups, 0);
	waf_rules_free(rs);
}
END_TEST

START_TEST(exclusions)
{
	struct waf_ruleset *rs = load_test_rules();
	const char *target = "/s?q=union+select&p=union+select";
	struct req q;
	struct waf_verdict v;
	const uint32_t ids[] = {1};
	struct waf_policy by_id = {.paranoia = 1, .threshold = 5, .exclude_ids = ids, .nexclude_ids = 1};
	eval(rs, &by_id, true, req_make(&q, "GET", target, browser), &v);
	ck_assert_uint_eq(v.total_hits, 0);

	const char *const tags[] = {"attack-sqli"};
	struct waf_policy by_tag = {.paranoia = 1, .threshold = 5, .exclude_tags = tags, .nexclude_tags = 1};
	eval(rs, &by_tag, true, req_make(&q, "GET", target, browser), &v);
	ck_assert_uint_eq(v.total_hits, 0);

	/* one argument excluded for rule 1: the other still matches */
	struct waf_exclusion x = {.rule_id = 1, .kind = WAF_TGT_ARGS, .name = "q"};
	struct waf_policy by_target = {.paranoia = 1, .threshold = 5, .exclude_targets = &x, .nexclude_targets = 1};
	eval(rs, &by_target, true, req_make(&q, "GET", target, browser), &v);
	ck_assert_uint_eq(v.nhits, 1);
	ck_assert_str_eq(v.hits[0].name, "p");
	/* every name of the kind, every rule */
	struct waf_exclusion all = {.rule_id = 0, .kind = WAF_TGT_ARGS, .name = NULL};
	by_target.exclude_targets = &all;
	eval(rs, &by_target, true, req_make(&q, "GET", target, browser), &v);
	ck_assert_uint_eq(v.total_hits, 0);
	waf_rules_free(rs);
}
END_TEST

START_TEST(missing_not_within_and_redaction)
{
	struct waf_ruleset *rs = load_test_rules();
	struct waf_policy pol = {.paranoia = 1, .threshold = 5};
	struct req q;
	struct waf_verdict v;
	const char *const no_ua[] = {"Host: a", NULL};
	eval(rs, &pol, true, req_make(&q, "GET", "/", no_ua), &v);
	const struct waf_hit *h = find_hit(&v, 4);
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(v.score, 2);
	ck_assert_str_eq(h->name, "user-agent");

	eval(rs, &pol, true, req_make(&q, "DELETE", "/", browser), &v);
	ck_assert_ptr_nonnull(find_hit(&v, 5));
	ck_assert(v.block);

	/* a cookie value is never logged */
	const char *const cookie[] = {"Host: a", "User-Agent: Mozilla/5.0", "Cookie: a=1; s=x<SCRIPT>y", NULL};
	eval(rs, &pol, true, req_make(&q, "GET", "/", cookie), &v);
	h = find_hit(&v, 3);
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(h->target, WAF_TGT_COOKIES);
	ck_assert_str_eq(h->name, "s");
	ck_assert_str_eq(h->snippet, "[redacted 10 bytes]");
	waf_rules_free(rs);
}
END_TEST

/* The verdicts of a set of requests, as one comparable string. */
static void verdicts(struct waf_eval *ev, const struct waf_policy *pol, char *out, size_t cap)
{
	static const char *const targets[] = {"/s?q=1%20UNION%20Select%202", "/s?q=red+shoes", "/", "/a?x=union+select"};
	static const char *const cookie[] = {"Host: a", "User-Agent: nikto", "Cookie: s=<script>", NULL};
	static const char *const no_ua[] = {"Host: a", NULL};
	const char *const *heads[] = {browser, cookie, no_ua};
	const char *methods[] = {"GET", "PUT"};
	size_t n = 0;
	out[0] = '\0';
	for (int round = 0; round < 2; round++) /* twice: the second time values found clean are remembered */
		for (size_t m = 0; m < 2; m++)
			for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++)
				for (size_t h = 0; h < 3; h++) {
					struct req q;
					struct waf_verdict v;
					waf_evaluate(ev, pol, req_make(&q, methods[m], targets[t], heads[h]), &v);
					int k = snprintf(out + n, cap - n, "%d%c", v.score, v.block ? 'b' : 'p');
					for (size_t i = 0; i < v.nhits; i++)
						k += snprintf(out + n + (size_t)k, cap - n - (size_t)k, ",%u", v.hits[i].rule_id);
					n += (size_t)k;
					ck_assert_uint_lt(n + 1, cap);
					out[n++] = ';';
					out[n] = '\0';
				}
}

START_TEST(plans_and_shortcuts_give_one_verdict)
{
	struct waf_ruleset *rs = load_test_rules(), *other = load_test_rules();
	struct waf_eval *ev = waf_eval_new(rs);
	ck_assert_ptr_nonnull(ev);
	char prepared[4096], unprepared[4096], foreign[4096], exhaustive[4096];
	struct waf_policy pol = {.paranoia = 2, .threshold = 5};
	ck_assert(waf_policy_prepare(rs, &pol));
	verdicts(ev, &pol, prepared, sizeof(prepared));
	ck_assert_ptr_nonnull(strstr(prepared, "b,"));
	waf_eval_exhaustive(ev, true);
	verdicts(ev, &pol, exhaustive, sizeof(exhaustive));
	ck_assert_str_eq(exhaustive, prepared);
	waf_eval_exhaustive(ev, false);
	waf_policy_release(&pol);
	ck_assert_ptr_null(pol.plan);
	waf_policy_release(&pol); /* twice: nothing to free */

	/* no plan: the evaluator plans for the call */
	verdicts(ev, &pol, unprepared, sizeof(unprepared));
	ck_assert_str_eq(unprepared, prepared);
	/* a plan made for another rule set is not used */
	ck_assert(waf_policy_prepare(other, &pol));
	verdicts(ev, &pol, foreign, sizeof(foreign));
	ck_assert_str_eq(foreign, prepared);
	waf_policy_release(&pol);
	waf_eval_free(ev);
	waf_eval_free(NULL);
	waf_rules_free(other);
	waf_rules_free(rs);
}
END_TEST

static Suite *waf_rules_suite(void)
{
	Suite *s = suite_create("waf_rules");
	TCase *tc = tcase_create("rules");
	tcase_add_test(tc, load_and_find);
	tcase_add_test(tc, load_errors_name_file_rule_and_key);
	tcase_add_test(tc, target_names);
	tcase_add_test(tc, phrase_after_transforms_blocks);
	tcase_add_test(tc, paranoia_and_detect_mode);
	tcase_add_test(tc, exclusions);
	tcase_add_test(tc, missing_not_within_and_redaction);
	tcase_add_test(tc, plans_and_shortcuts_give_one_verdict);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(waf_rules_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
