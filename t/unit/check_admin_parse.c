/* Unit tests for the parsers of the admin socket and the state file
 * (admin_cmd.h, statefile_parse.h) and sluice ctl's answer escaping (ctl.h):
 * bytes with a length in, never a C string. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "admin_cmd.h"
#include "ctl.h"
#include "rollout.h"
#include "statefile_parse.h"

static struct admin_cmd cmd;

START_TEST(admin_words_and_json)
{
	const char line[] = "  set\tweight web 127.0.0.1:80 5 --json\r";
	ck_assert_ptr_null(admin_cmd_parse(line, sizeof(line) - 1, &cmd));
	ck_assert(cmd.json);
	ck_assert_uint_eq(cmd.num_words, 5);
	ck_assert_str_eq(cmd.words[0], "set");
	ck_assert_str_eq(cmd.words[3], "127.0.0.1:80");
	ck_assert_str_eq(cmd.words[4], "5");
}
END_TEST

START_TEST(admin_refuses_nul_control_empty_and_long)
{
	const char nul[] = "drain web\0 127.0.0.1:1";
	ck_assert_str_eq(admin_cmd_parse(nul, sizeof(nul) - 1, &cmd), "the line has a control byte (a command is text)");
	ck_assert_uint_eq(cmd.num_words, 0);
	ck_assert_ptr_nonnull(admin_cmd_parse("show\x1b[2J", 8, &cmd));
	ck_assert_ptr_nonnull(admin_cmd_parse(" --json ", 8, &cmd));
	ck_assert(cmd.json); /* a refusal is answered in JSON when asked */
	char *lng = malloc(ADMIN_CMD_MAX_LINE + 1);
	memset(lng, 'a', ADMIN_CMD_MAX_LINE + 1);
	ck_assert_str_eq(admin_cmd_parse(lng, ADMIN_CMD_MAX_LINE + 1, &cmd), "line too long (at most 4096 bytes)");
	ck_assert_ptr_null(admin_cmd_parse(lng, ADMIN_CMD_MAX_LINE, &cmd));
	free(lng);
	char many[ADMIN_CMD_MAX_WORDS * 2 + 4];
	size_t n = 0;
	for (int i = 0; i <= ADMIN_CMD_MAX_WORDS; i++) {
		many[n++] = 'w';
		many[n++] = ' ';
	}
	ck_assert_str_eq(admin_cmd_parse(many, n, &cmd), "too many words (at most 64)");
	ck_assert_ptr_null(admin_cmd_parse(many, n - 4, &cmd));
}
END_TEST

START_TEST(admin_weights)
{
	unsigned w = 7;
	ck_assert(admin_cmd_weight("0", &w) && w == 0);
	ck_assert(admin_cmd_weight("1000", &w) && w == 1000);
	ck_assert(admin_cmd_weight("0999", &w) && w == 999);
	ck_assert(!admin_cmd_weight("1001", &w));
	ck_assert(!admin_cmd_weight("01000", &w));
	ck_assert(!admin_cmd_weight("", &w));
	ck_assert(!admin_cmd_weight("-1", &w));
	ck_assert(!admin_cmd_weight("+5", &w));
	ck_assert(!admin_cmd_weight("5x", &w));
}
END_TEST

struct collected {
	unsigned entries, skips;
	unsigned skip_lines[8];
	const char *skip_why[8];
	struct statefile_entry last;
};

static void got_entry(const struct statefile_entry *e, unsigned lineno, void *arg)
{
	(void)lineno;
	struct collected *c = arg;
	c->entries++;
	c->last = *e;
}

static void got_skip(unsigned lineno, const char *why, void *arg)
{
	struct collected *c = arg;
	if (c->skips < 8) {
		c->skip_lines[c->skips] = lineno;
		c->skip_why[c->skips] = why;
	}
	c->skips++;
}

START_TEST(statefile_lines)
{
	static struct statefile_entry e;
	const char *l = "service-weight web canary 20";
	ck_assert_ptr_null(statefile_parse_line(l, strlen(l), &e));
	ck_assert_int_eq(e.kind, STATEFILE_SERVICE_WEIGHT);
	ck_assert_str_eq(e.name, "web");
	ck_assert_str_eq(e.target, "canary");
	ck_assert_uint_eq(e.weight, 20);
	ck_assert_ptr_null(statefile_parse_line("  # comment", 11, &e));
	/* the header sluice writes itself: a comment of many words */
	const char *header = "# sluice state: changes made through the admin socket, re-applied at start.";
	ck_assert_ptr_null(statefile_parse_line(header, strlen(header), &e));
	ck_assert_int_eq(e.kind, STATEFILE_NOTHING);
	ck_assert_int_eq(e.kind, STATEFILE_NOTHING);
	ck_assert_ptr_null(statefile_parse_line("drain web a\r", 12, &e));
	ck_assert_int_eq(e.kind, STATEFILE_DRAIN);
	ck_assert_str_eq(e.target, "a");
	ck_assert_str_eq(statefile_parse_line("drain web", 9, &e), "malformed");
	ck_assert_str_eq(statefile_parse_line("weight web a 1001", 17, &e),
	                 "malformed (a weight is a whole number from 0 to 1000)");
	ck_assert_str_eq(statefile_parse_line("frob a b", 8, &e), "unknown change");
	ck_assert_int_eq(e.kind, STATEFILE_NOTHING);
}
END_TEST

START_TEST(statefile_switch_and_rollout_lines)
{
	static struct statefile_entry e;
	const char *l = "service-saved-weight web blue 90";
	ck_assert_ptr_null(statefile_parse_line(l, strlen(l), &e));
	ck_assert_int_eq(e.kind, STATEFILE_SERVICE_SAVED);
	ck_assert_str_eq(e.name, "web");
	ck_assert_str_eq(e.target, "blue");
	ck_assert_uint_eq(e.weight, 90);
	/* a rollout's words are kept whole, however many */
	l = "rollout web to=green steps=5,25,50,100 interval_ms=1000 max_error_rate=0.01 max_p99_ms=0 "
	    "min_requests=10 step=1 state=running start=blue:90,green:10";
	ck_assert_ptr_null(statefile_parse_line(l, strlen(l), &e));
	ck_assert_int_eq(e.kind, STATEFILE_ROLLOUT);
	ck_assert_str_eq(e.name, "web");
	ck_assert_str_eq(e.target, l + strlen("rollout web "));
	ck_assert_str_eq(statefile_parse_line("rollout web", 11, &e), "malformed");
	ck_assert_str_eq(statefile_parse_line("rollout   ", 10, &e), "malformed");
}
END_TEST

START_TEST(rollout_rates_and_steps)
{
	double r;
	ck_assert(rollout_parse_rate("1%", &r) && r > 0.00999 && r < 0.01001);
	ck_assert(rollout_parse_rate("0.5%", &r) && r > 0.004999 && r < 0.005001);
	ck_assert(rollout_parse_rate("0.02", &r) && r > 0.01999 && r < 0.02001);
	ck_assert(rollout_parse_rate("0", &r) && r == 0);
	ck_assert(!rollout_parse_rate("150%", &r));
	ck_assert(!rollout_parse_rate("-1%", &r));
	ck_assert(!rollout_parse_rate("1%%", &r));
	ck_assert(!rollout_parse_rate("", &r));
	ck_assert(!rollout_parse_rate("nan", &r));
	unsigned steps[ROLLOUT_MAX_STEPS];
	size_t n;
	ck_assert(rollout_parse_steps("5,25,50,100", steps, &n));
	ck_assert_uint_eq(n, 4);
	ck_assert_uint_eq(steps[0], 5);
	ck_assert_uint_eq(steps[3], 100);
	ck_assert(rollout_parse_steps("100", steps, &n) && n == 1);
	ck_assert(!rollout_parse_steps("", steps, &n));
	ck_assert(!rollout_parse_steps("0,50", steps, &n));
	ck_assert(!rollout_parse_steps("50,20", steps, &n));
	ck_assert(!rollout_parse_steps("50,50", steps, &n));
	ck_assert(!rollout_parse_steps("5,101", steps, &n));
	ck_assert(!rollout_parse_steps("5,", steps, &n));
	ck_assert(!rollout_parse_steps("5,,6", steps, &n));
	ck_assert(!rollout_parse_steps("99999999999999999999", steps, &n));
	ck_assert(!rollout_parse_steps("1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", steps, &n));
}
END_TEST

START_TEST(statefile_long_line_with_nul_is_one_skipped_line)
{
	/* fgets() cut such a line at 1,023 bytes and strlen() stopped at the NUL:
	 * the tail ran as a command of its own */
	static char buf[1100 + 64];
	size_t n = 0;
	memcpy(buf, "# c\0", 4);
	n = 4;
	memset(buf + n, 'x', 1023 - n);
	n = 1023;
	const char tail[] = "drain web 127.0.0.1:1\nweight web 127.0.0.1:1 3";
	memcpy(buf + n, tail, sizeof(tail) - 1);
	n += sizeof(tail) - 1;
	static struct statefile_entry scratch;
	struct collected c = {0};
	statefile_parse(buf, n, &scratch, got_entry, got_skip, &c);
	ck_assert_uint_eq(c.skips, 1);
	ck_assert_uint_eq(c.skip_lines[0], 1);
	ck_assert_str_eq(c.skip_why[0], "line too long");
	/* the second line, without its final newline, still counts */
	ck_assert_uint_eq(c.entries, 1);
	ck_assert_int_eq(c.last.kind, STATEFILE_WEIGHT);
	ck_assert_uint_eq(c.last.weight, 3);
}
END_TEST

static size_t escape(const char *in, size_t n, char *out)
{
	struct ctl_escape e;
	ctl_escape_init(&e);
	size_t o = ctl_escape(&e, (const unsigned char *)in, n, out);
	o += ctl_escape_finish(&e, out + o);
	out[o] = '\0';
	return o;
}

START_TEST(ctl_escapes_controls_c1_and_broken_utf8)
{
	char out[256];
	const char in[] = "a\x1b[31m\tb\n\r\x7f caf\xc3\xa9 \xc2\x9b \x9b \xe2\x82";
	escape(in, sizeof(in) - 1, out);
	ck_assert_str_eq(out, "a\\x1b[31m\tb\n\\x0d\\x7f caf\xc3\xa9 \\xc2\\x9b \\x9b \\xe2\\x82");
}
END_TEST

static Suite *admin_parse_suite(void)
{
	Suite *s = suite_create("admin_parse");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, admin_words_and_json);
	tcase_add_test(tc, admin_refuses_nul_control_empty_and_long);
	tcase_add_test(tc, admin_weights);
	tcase_add_test(tc, statefile_lines);
	tcase_add_test(tc, statefile_switch_and_rollout_lines);
	tcase_add_test(tc, rollout_rates_and_steps);
	tcase_add_test(tc, statefile_long_line_with_nul_is_one_skipped_line);
	tcase_add_test(tc, ctl_escapes_controls_c1_and_broken_utf8);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(admin_parse_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
