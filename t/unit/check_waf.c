/* check_waf.c - the WAF engine's pieces: every transform, the Aho-Corasick
 * matcher (against a naive search), the SQL and XSS detectors on attacks and
 * on ordinary text, the body parsers, and the literals read from a regex. */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "waf_ac.h"
#include "waf_body.h"
#include "waf_lits.h"
#include "waf_sqli.h"
#include "waf_transform.h"
#include "waf_xss.h"

/* Applies transform t to a copy of in and compares with want. */
static void expect_t(enum waf_transform t, const char *in, size_t inlen, const char *want, size_t wantlen)
{
	char buf[256];
	ck_assert_uint_le(inlen, sizeof(buf));
	memcpy(buf, in, inlen);
	size_t n = waf_transform_apply(t, buf, inlen);
	ck_assert_msg(n == wantlen && memcmp(buf, want, n) == 0, "%s(\"%s\") gave \"%.*s\" (%zu), want \"%s\"",
	              waf_transform_name(t), in, (int)n, buf, n, want);
}

#define T(t, in, want) expect_t((t), (in), sizeof(in) - 1, (want), sizeof(want) - 1)

START_TEST(url_decode)
{
	T(WAF_T_URL_DECODE, "a%20b+c", "a b c");
	T(WAF_T_URL_DECODE, "%3Cscript%3e", "<script>");
	T(WAF_T_URL_DECODE, "%u003cx%U003E", "<x>");
	T(WAF_T_URL_DECODE, "%uff1cscript%uFF1E", "<script>"); /* full-width folded */
	T(WAF_T_URL_DECODE, "%u00e9", "\xc3\xa9");
	T(WAF_T_URL_DECODE, "%zz%2%", "%zz%2%");
	T(WAF_T_URL_DECODE, "%00x", "\0x");
	T(WAF_T_URL_DECODE, "%252e", "%2e"); /* one pass only */
}
END_TEST

START_TEST(html_entities)
{
	T(WAF_T_HTML_ENTITY, "&lt;a&gt;", "<a>");
	T(WAF_T_HTML_ENTITY, "&#60;&#x3C;&#X3c", "<<<");
	T(WAF_T_HTML_ENTITY, "java&#x09;script&colon;", "java\tscript:");
	T(WAF_T_HTML_ENTITY, "&#0000060;", "<");
	T(WAF_T_HTML_ENTITY, "AT&T &unknown; &", "AT&T &unknown; &");
	T(WAF_T_HTML_ENTITY, "&lt&quot", "<\"");
	T(WAF_T_HTML_ENTITY, "&#233;", "\xc3\xa9");
	T(WAF_T_HTML_ENTITY, "&#99999999999;", "&#99999999999;");
}
END_TEST

START_TEST(lower_ws_nulls_trim)
{
	T(WAF_T_LOWERCASE, "SeLeCT\xc3\x89", "select\xc3\x89");
	T(WAF_T_COMPRESS_WS, "a \t\n\v\fb  c", "a b c");
	T(WAF_T_REMOVE_NULLS, "a\0b\0\0c", "abc");
	T(WAF_T_TRIM, " \t x y \n", "x y");
	T(WAF_T_TRIM, "   ", "");
}
END_TEST

START_TEST(comments)
{
	T(WAF_T_REMOVE_COMMENTS, "UNION/**/SELECT", "UNION SELECT");
	T(WAF_T_REMOVE_COMMENTS, "1/*!50000union*/select", "1 union select");
	T(WAF_T_REMOVE_COMMENTS, "a -- rest\nb", "a  \nb");
	T(WAF_T_REMOVE_COMMENTS, "x#y\nz", "x \nz");
	T(WAF_T_REMOVE_COMMENTS, "a/* unterminated", "a ");
}
END_TEST

START_TEST(path)
{
	T(WAF_T_NORMALIZE_PATH, "/a/b/../c", "/a/c");
	T(WAF_T_NORMALIZE_PATH, "/a/./b//c/", "/a/b/c/");
	T(WAF_T_NORMALIZE_PATH, "..\\..\\windows\\win.ini", "../../windows/win.ini");
	T(WAF_T_NORMALIZE_PATH, "/x/../../etc/passwd", "/../etc/passwd");
	T(WAF_T_NORMALIZE_PATH, "a/..", "");
	T(WAF_T_NORMALIZE_PATH, "/", "/");
}
END_TEST

START_TEST(cmdline)
{
	T(WAF_T_CMDLINE, "c\\a\"t /e't'c/pa^ss;wd", "cat/etc/pass;wd");
	T(WAF_T_CMDLINE, "cat${IFS}/etc/passwd", "cat/etc/passwd");
	T(WAF_T_CMDLINE, "w$@ho,AMI", "who ami");
	T(WAF_T_CMDLINE, "ping  (x)", "ping(x)");
}
END_TEST

START_TEST(base64)
{
	T(WAF_T_BASE64, "PHNjcmlwdD4=", "<script>");
	T(WAF_T_BASE64, "PHNjcmlwdD4", "<script>");
	T(WAF_T_BASE64, "PD9waHA_", "<?php?");
	T(WAF_T_BASE64, "not base64!", "not base64!");
	T(WAF_T_BASE64, "a", "a");
}
END_TEST

START_TEST(js)
{
	T(WAF_T_JS_DECODE, "\\x3cscript\\u003e", "<script>");
	T(WAF_T_JS_DECODE, "\\u{61}lert\\(1\\)", "alert(1)");
	T(WAF_T_JS_DECODE, "\\141\\n\\0", "a\n\0");
	T(WAF_T_JS_DECODE, "end\\", "end\\");
}
END_TEST

START_TEST(transform_names)
{
	ck_assert_int_eq(waf_transform_by_name("url_decode"), WAF_T_URL_DECODE);
	ck_assert_int_eq(waf_transform_by_name("cmdline"), WAF_T_CMDLINE);
	ck_assert_int_eq(waf_transform_by_name("nope"), -1);
	for (int t = 0; t < WAF_T_COUNT; t++)
		ck_assert_int_eq(waf_transform_by_name(waf_transform_name((enum waf_transform)t)), t);
}
END_TEST

struct hits {
	unsigned count[8];
	size_t last_end;
};

static bool on_hit(uint32_t id, size_t end, void *arg)
{
	struct hits *h = arg;
	h->count[id]++;
	h->last_end = end;
	return false;
}

static unsigned naive(const char *hay, const char *needle)
{
	unsigned c = 0;
	size_t n = strlen(hay), k = strlen(needle);
	for (size_t i = 0; i + k <= n; i++)
		if (strncasecmp(hay + i, needle, k) == 0)
			c++;
	return c;
}

START_TEST(aho_corasick)
{
	const char *phrases[] = {"he", "she", "his", "hers", "/etc/passwd", "UNION"};
	struct waf_ac *ac = waf_ac_new();
	ck_assert_ptr_nonnull(ac);
	for (uint32_t i = 0; i < 6; i++)
		ck_assert(waf_ac_add(ac, phrases[i], strlen(phrases[i]), i));
	ck_assert(waf_ac_add(ac, "she", 3, 6)); /* a second rule with the same phrase */
	ck_assert(!waf_ac_add(ac, "", 0, 7));
	ck_assert(waf_ac_compile(ac));
	const char *texts[] = {"ushers", "SHE said HIS and hers", "cat /ETC/passwd", "union/**/UnIoN", "", "zzz"};
	for (size_t t = 0; t < 6; t++) {
		struct hits h = {{0}, 0};
		waf_ac_search(ac, texts[t], strlen(texts[t]), on_hit, &h);
		for (uint32_t i = 0; i < 6; i++)
			ck_assert_msg(h.count[i] == naive(texts[t], phrases[i]), "%s in %s: %u", phrases[i], texts[t],
			              h.count[i]);
		ck_assert_uint_eq(h.count[6], h.count[1]);
	}
	waf_ac_free(ac);
}
END_TEST

static bool stop_first(uint32_t id, size_t end, void *arg)
{
	(void)id;
	*(size_t *)arg = end;
	return true;
}

START_TEST(aho_corasick_stop)
{
	struct waf_ac *ac = waf_ac_new();
	ck_assert(waf_ac_add(ac, "ab", 2, 0));
	ck_assert(waf_ac_compile(ac));
	size_t end = 0;
	waf_ac_search(ac, "xxabyyab", 8, stop_first, &end);
	ck_assert_uint_eq(end, 4);
	waf_ac_free(ac);
}
END_TEST

static const char *const sqli_attacks[] = {
    "' or '1'='1",
    "1 or 1=1",
    "admin'--",
    "admin' #",
    "1' and sleep(5)--",
    "1 union select username, password from users",
    "-1 UNION/**/ALL/**/SELECT 1,2,@@version",
    "1/*!50000union*/ /*!50000select*/ 1,2",
    "'; drop table users; --",
    "1; DELETE FROM accounts",
    "'; exec xp_cmdshell 'dir'--",
    "1'; waitfor delay '0:0:5'--",
    "') or ('a'='a",
    "\" or \"\"=\"",
    "1 and extractvalue(1,concat(0x7e,version()))",
    "' union select null,table_name from information_schema.tables--",
    "x' or username like '%",
    "1' order by 3--",
    "1 AND 1=1",
    "(select * from users)",
    "'||(select pg_sleep(5))||'",
    "1'+benchmark(5000000,md5(1))+'",
    "' having 1=1--",
    "1; update users set role='admin'",
    "' OR 2>1 --",
};

static const char *const sqli_benign[] = {
    "O'Reilly",
    "D'Angelo and O'Brien",
    "Students' or teachers' opinions",
    "Please select one item from the list below",
    "I'd like to union the two sets",
    "It's 5 o'clock",
    "drop me a line; update me later",
    "rock 'n' roll",
    "1 or 2 bedrooms",
    "price: 10-20",
    "SELECT your plan",
    "{\"name\":\"x\",\"n\":1}",
    "john.doe@example.com",
    "the dogs' and cats' toys",
    "SGVsbG8gd29ybGQhIFRoaXMgaXMgYSBsb25nIGJhc2U2NCB0b2tlbg==",
    "Tom's #1 fan",
    "2024-01-01",
    "user(s) selected",
};

START_TEST(sqli)
{
	for (size_t i = 0; i < sizeof(sqli_attacks) / sizeof(*sqli_attacks); i++) {
		struct waf_sqli_result r;
		ck_assert_msg(waf_sqli_detect(sqli_attacks[i], strlen(sqli_attacks[i]), &r), "missed: %s",
		              sqli_attacks[i]);
		ck_assert_ptr_nonnull(r.shape);
	}
	for (size_t i = 0; i < sizeof(sqli_benign) / sizeof(*sqli_benign); i++) {
		struct waf_sqli_result r = {.shape = NULL};
		bool hit = waf_sqli_detect(sqli_benign[i], strlen(sqli_benign[i]), &r);
		ck_assert_msg(!hit, "false positive: %s (%s, %s)", sqli_benign[i], r.shape ? r.shape : "", r.fingerprint);
	}
}
END_TEST

static const char *const xss_attacks[] = {
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    "\"><svg onload=alert`1`>",
    "\" onmouseover=\"alert(1)",
    "' autofocus onfocus=alert(1) x='",
    "javascript:alert(document.cookie)",
    "  JaVa\tScRiPt:alert(1)",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<iframe src=//evil.example>",
    "<body onload=alert(1)>",
    "<div style=\"width:expression(alert(1))\">",
    "</script><script>alert(1)</script>",
    "';alert(1);//",
    "\"-prompt(1)-\"",
    "<object data=\"data:text/html;base64,PHNjcmlwdD4=\">",
    "<math><maction actiontype=statusline xlink:href=javascript:alert(1)>x",
    "<details open ontoggle=confirm(1)>",
};

static const char *const xss_benign[] = {
    "a < b and c > d",
    "<b>bold</b> and <i>italic</i>",
    "I love JavaScript: it is great",
    "online=yes",
    "x<5",
    "Call alert(1) in your code to debug",
    "<p class=\"note\">Hello</p>",
    "mailto:someone@example.com",
    "https://example.com/?a=1&b=2",
    "1 + 2 = 3",
};

START_TEST(xss)
{
	for (size_t i = 0; i < sizeof(xss_attacks) / sizeof(*xss_attacks); i++)
		ck_assert_msg(waf_xss_detect(xss_attacks[i], strlen(xss_attacks[i]), NULL), "missed: %s", xss_attacks[i]);
	for (size_t i = 0; i < sizeof(xss_benign) / sizeof(*xss_benign); i++) {
		const char *why = NULL;
		ck_assert_msg(!waf_xss_detect(xss_benign[i], strlen(xss_benign[i]), &why), "false positive: %s (%s)",
		              xss_benign[i], why);
	}
}
END_TEST

/* Values that exercise the detectors' shortcuts: each must get the same
 * verdict with and without them (words inside runs after numbers, calls
 * with blanks, case, comments, operators as symbols). */
static const char *const shortcut_values[] = {
    "x 1or 1=1",  "0xor 1=1", "a union select b", "foo UNION ALL SELECT bar", "true or 1", "NULL and 1=1",
    "a || 1=1", "b && 2>1", "sleep (5)", "x;SLEEP(5)", "benchmark(1000000,md5(1))", "version()", "q user()",
    "@@version", "1 having 1=1", "x/**/or/**/1=1", "x#\n or 1=1", "x--\n or 1", "Mozilla/5.0 (X11; Linux x86_64)",
    "red running shoes", "price_asc", "2", ".5 or 1", " 7 or 7", "a or b like b", "drop table users",
    "x; DROP TABLE users", "1;waitfor delay '0:0:5'", "x' or 'a'='a", "\"or\"\"=\"", "admin'--",
    "';alert(1);//", "\"-prompt (1)-\"", "confirm`1`", "x=ALERT\t(1)", "javascript:alert(1)", "<svg onload=x>",
    "a onclick=go()", "(1)", "`", "alert", "alertx(1)", "xalert(1)", "1alert(1)", "x:y", "k=v", "<b>",
    "1-union-select-1", "1.union.select.1", "0x1or1", "1or1", "1-or-1", "12.5", "-1", "1--", "a--b", "1e5or1",
};

/* Every value and variations of it (upper case, quotes and separators
 * around it): the detectors with and without their shortcuts agree. */
START_TEST(detector_shortcuts)
{
	static const char *const wraps[][2] = {{"", ""}, {"'", ""}, {"\"", "--"}, {"1 ", ""}, {"(", ")"},
	                                       {"x ", " y"}, {";", ""}, {"%s", ""}};
	char buf[256];
	unsigned checked = 0;
	for (size_t i = 0; i < sizeof(shortcut_values) / sizeof(*shortcut_values); i++) {
		for (size_t w = 0; w < sizeof(wraps) / sizeof(*wraps); w++) {
			for (int upper = 0; upper < 2; upper++) {
				int k = snprintf(buf, sizeof(buf), "%s%s%s", wraps[w][0], shortcut_values[i], wraps[w][1]);
				ck_assert_int_gt(k, 0);
				size_t n = (size_t)k;
				for (size_t j = 0; upper && j < n; j++)
					if (buf[j] >= 'a' && buf[j] <= 'z')
						buf[j] = (char)(buf[j] - 32);
				ck_assert_msg(waf_sqli_detect(buf, n, NULL) == waf_sqli_detect_all(buf, n, NULL),
				              "sqli shortcut changed the verdict on: %s", buf);
				ck_assert_msg(waf_xss_detect(buf, n, NULL) == waf_xss_detect_all(buf, n, NULL),
				              "xss shortcut changed the verdict on: %s", buf);
				checked++;
			}
		}
	}
	for (size_t i = 0; i < sizeof(sqli_attacks) / sizeof(*sqli_attacks); i++)
		ck_assert(waf_sqli_detect_all(sqli_attacks[i], strlen(sqli_attacks[i]), NULL));
	/* the shortcut decides these without tokenizing, and they are no injection */
	ck_assert(!waf_sqli_detect("red running shoes", 17, NULL));
	ck_assert(!waf_sqli_detect("Mozilla/5.0 (X11; Linux x86_64)", 32, NULL));
	/* and these it must not decide: a shape made of words only */
	ck_assert(waf_sqli_detect("x 1or 1=1", 9, NULL));
	ck_assert(waf_sqli_detect("a union select b", 16, NULL));
	ck_assert_uint_gt(checked, 700);
}
END_TEST

struct collect {
	char out[1024];
	size_t len;
	unsigned count;
};

static bool collect(void *arg, enum waf_arg_kind kind, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct collect *c = arg;
	int k = snprintf(c->out + c->len, sizeof(c->out) - c->len, "%s%.*s=%.*s;", kind == WAF_ARG_FILE ? "file:" : "",
	                 (int)nlen, name, (int)vlen, value);
	if (k > 0)
		c->len += (size_t)k;
	c->count++;
	return true;
}

START_TEST(urlencoded)
{
	const char *in = "a=1&b=x+y%20z&&empty=&flag&%3Cn%3E=%3Cv%3E";
	char scratch[128];
	struct collect c = {.len = 0};
	const char *err;
	ck_assert(waf_parse_urlencoded(in, strlen(in), scratch, collect, &c, &err));
	ck_assert_str_eq(c.out, "a=1;b=x y z;empty=;flag=;<n>=<v>;");
}
END_TEST

START_TEST(json)
{
	const char *in = "{\"user\":{\"name\":\"O\\u0027Brien\",\"tags\":[\"a\",\"b\\\"c\"]},\"n\":-1.5e3,\"ok\":true,"
	                 "\"e\":{},\"x\":\"\\ud83d\\ude00\"}";
	char scratch[256];
	struct collect c = {.len = 0};
	const char *err = NULL;
	ck_assert_msg(waf_parse_json(in, strlen(in), scratch, collect, &c, &err), "%s", err);
	ck_assert_str_eq(c.out, "name=O'Brien;tags=a;tags=b\"c;n=-1.5e3;ok=true;x=\xf0\x9f\x98\x80;");
	const char *bad[] = {"{\"a\":}", "{\"a\" 1}", "[1,2", "\"x", "{} x", "[\"\\q\"]", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct collect d = {.len = 0};
		ck_assert_msg(!waf_parse_json(bad[i], strlen(bad[i]), scratch, collect, &d, &err), "accepted %s", bad[i]);
		ck_assert_ptr_nonnull(err);
	}
	char deep[200];
	memset(deep, '[', sizeof(deep));
	struct collect d = {.len = 0};
	ck_assert(!waf_parse_json(deep, sizeof(deep), scratch, collect, &d, &err));
	ck_assert_str_eq(err, "JSON: nested too deep");
}
END_TEST

START_TEST(multipart)
{
	const char *ct = "multipart/form-data; boundary=\"XyZ\"";
	const char *body = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello world\r\n"
	                   "--XyZ\r\nContent-Disposition: form-data; name=\"up\"; filename=\"../a.php\"\r\n"
	                   "Content-Type: text/plain\r\n\r\n<?php system($_GET[1]); ?>\r\n--XyZ--\r\n";
	char scratch[512];
	struct collect c = {.len = 0};
	const char *err = NULL;
	ck_assert_msg(waf_parse_multipart(ct, strlen(ct), body, strlen(body), scratch, collect, &c, &err), "%s", err);
	ck_assert_str_eq(c.out, "title=hello world;file:up=../a.php;");
	ck_assert(!waf_parse_multipart("multipart/form-data", 19, body, strlen(body), scratch, collect, &c, &err));
	const char *cut = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end";
	ck_assert(!waf_parse_multipart(ct, strlen(ct), cut, strlen(cut), scratch, collect, &c, &err));
	ck_assert_str_eq(err, "multipart: no closing boundary");
}
END_TEST

START_TEST(body_kinds)
{
	ck_assert_int_eq(waf_body_kind_of("application/json; charset=utf-8", 31), WAF_BODY_JSON);
	ck_assert_int_eq(waf_body_kind_of("application/vnd.api+json", 24), WAF_BODY_JSON);
	ck_assert_int_eq(waf_body_kind_of("Application/X-WWW-Form-Urlencoded", 33), WAF_BODY_URLENCODED);
	ck_assert_int_eq(waf_body_kind_of("multipart/form-data; boundary=x", 31), WAF_BODY_MULTIPART);
	ck_assert_int_eq(waf_body_kind_of("text/plain", 10), WAF_BODY_OTHER);
}
END_TEST

/* The literal set of pat is exactly want[0..n) in order; n == 0: no set. */
static void expect_lits(const char *pat, size_t n, const char *const *want)
{
	static struct waf_litset s;
	bool ok = waf_lits_of_regex(pat, strlen(pat), &s);
	ck_assert_msg(ok == (n > 0), "%s: %s", pat, ok ? "a set" : "no set");
	if (!ok)
		return;
	ck_assert_msg(s.n == n, "%s: %zu literals, want %zu", pat, s.n, n);
	for (size_t k = 0; k < n; k++)
		ck_assert_msg(s.len[k] == strlen(want[k]) && memcmp(s.lit[k], want[k], s.len[k]) == 0,
		              "%s: literal %zu is \"%.*s\", want \"%s\"", pat, k, (int)s.len[k], s.lit[k], want[k]);
}

#define LITS(pat, ...)                                                                      \
	do {                                                                                \
		static const char *const want_[] = {__VA_ARGS__};                           \
		expect_lits((pat), sizeof(want_) / sizeof(want_[0]), want_);                \
	} while (0)
#define NO_LITS(pat) expect_lits((pat), 0, NULL)

START_TEST(regex_literals)
{
	/* a sequence: its best run (the longest shortest literal), first of equals */
	LITS("union\\s+select", "select");
	LITS("[abc]+def", "def");
	LITS("ab?cd", "cd");
	LITS("abc(def)?ghi", "abc");
	LITS("a(?:bc|de)+fg", "fg");
	LITS("(?:abc|de){0,2}xy", "xy"); /* a group that may not occur gives nothing */
	LITS("xy{2,}z", "xyy");           /* a repeated byte ends its run */
	/* an alternation: every branch's set */
	LITS("(?:foo|barbaz)", "foo", "barbaz");
	LITS("(?i)nikto|sqlmap", "nikto", "sqlmap");
	LITS("on(?:load|error)\\s*=", "load", "error");
	/* escapes of one byte are literal */
	LITS("\\x41BCd", "ABCd");
	LITS("a\\.b\\.c", "a.b.c");
	LITS("\\$\\{jndi:", "${jndi:");
	/* lookarounds hold no literal of the match */
	LITS("(?<=ab)cdx", "cdx");
	LITS("ab(?=cd)", "ab");
	/* a run is cut at WAF_LIT_MAX bytes */
	LITS("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "zzzzzzzzzzzzzzzzzzzzzzzz");
	/* no set: a branch without a literal of 2 bytes, or what is not read here */
	NO_LITS("a|b");
	NO_LITS("ab|");
	NO_LITS("x*");
	NO_LITS("\\d+");
	NO_LITS("(?x)a b c"); /* extended mode: a space is not a byte of the match */
	NO_LITS("\\Qabc\\E");
	NO_LITS("(?#c)abc");
	NO_LITS("(abc");
	/* a brace that does not make a quantifier is a byte of the match (PCRE2):
	 * "a{2xyz" matches only "a{2xyz", which holds no "aa" */
	NO_LITS("a{2xyz");
	NO_LITS("a{2,x}b");
	LITS("a{2}bc", "aa");
	LITS("xa{2,3}bc", "xaa");
	/* "[:" in a class is a POSIX class only when ":]" comes before any "]"
	 * (PCRE2): else the class ends at that "]" and what follows is read
	 * (fuzz_waf_lits: "[[:x]||..." was taken for one class up to a later ":]",
	 * the empty branch with it, and the pattern given literals it need not hold) */
	NO_LITS("z[[:x]||(:]abc");
	LITS("[[:x]abcd", "abcd");
	LITS("[[:alpha:]]abcd", "abcd");
	LITS("[[:alpha:][:digit:]]+xyz", "xyz");
	LITS("q[[:\\]]:]rs", ":]rs"); /* "\\]" skipped, then "]": the class holds [ : ] */
}
END_TEST

static Suite *waf_suite(void)
{
	Suite *s = suite_create("waf");
	TCase *tc = tcase_create("engine");
	tcase_add_test(tc, url_decode);
	tcase_add_test(tc, html_entities);
	tcase_add_test(tc, lower_ws_nulls_trim);
	tcase_add_test(tc, comments);
	tcase_add_test(tc, path);
	tcase_add_test(tc, cmdline);
	tcase_add_test(tc, base64);
	tcase_add_test(tc, js);
	tcase_add_test(tc, transform_names);
	tcase_add_test(tc, aho_corasick);
	tcase_add_test(tc, aho_corasick_stop);
	tcase_add_test(tc, sqli);
	tcase_add_test(tc, xss);
	tcase_add_test(tc, detector_shortcuts);
	tcase_add_test(tc, urlencoded);
	tcase_add_test(tc, json);
	tcase_add_test(tc, multipart);
	tcase_add_test(tc, body_kinds);
	tcase_add_test(tc, regex_literals);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(waf_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
