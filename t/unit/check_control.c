/* Unit tests for fleet control's entries, values, sets and the decision of
 * what to do with an entry read from Redis (control_codec.h). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "control_codec.h"

START_TEST(entry_keys)
{
	char key[256];
	ck_assert(control_entry_key("weight web 127.0.0.1:8080 5", key, sizeof key));
	ck_assert_str_eq(key, "weight web 127.0.0.1:8080");
	ck_assert(control_entry_key("drain web 127.0.0.1:8080", key, sizeof key));
	ck_assert_str_eq(key, "drain web 127.0.0.1:8080");
	ck_assert(control_entry_key("disable web [::1]:80", key, sizeof key));
	ck_assert_str_eq(key, "disable web [::1]:80");
	ck_assert(control_entry_key("service-weight shop green 10", key, sizeof key));
	ck_assert_str_eq(key, "service-weight shop green");
	ck_assert(control_entry_key("service-saved-weight shop blue 90", key, sizeof key));
	ck_assert_str_eq(key, "service-saved-weight shop blue");
	ck_assert(control_entry_key("rollout shop to=green steps=5,100 state=running", key, sizeof key));
	ck_assert_str_eq(key, "rollout shop");
	ck_assert(control_entry_key("verdict shop promoted to step 2 (25%)", key, sizeof key));
	ck_assert_str_eq(key, "verdict shop");
	/* no change: comments, unknown words, a weight out of range, a bare verdict */
	ck_assert(!control_entry_key("# comment", key, sizeof key));
	ck_assert(!control_entry_key("frobnicate a b", key, sizeof key));
	ck_assert(!control_entry_key("weight web 127.0.0.1:1 1001", key, sizeof key));
	ck_assert(!control_entry_key("verdict ", key, sizeof key));
	/* a key that does not fit */
	ck_assert(!control_entry_key("drain web 127.0.0.1:8080", key, 8));
}
END_TEST

START_TEST(values_round_trip)
{
	char buf[256], origin[CONTROL_ORIGIN_MAX];
	uint64_t v = 0;
	const char *line;
	ck_assert_int_eq(control_value_format(buf, sizeof buf, 42, "gw-1#00ab", "weight web 1.2.3.4:80 7"), 36);
	ck_assert_str_eq(buf, "42 gw-1#00ab weight web 1.2.3.4:80 7");
	ck_assert(control_value_parse(buf, &v, origin, sizeof origin, &line));
	ck_assert_uint_eq(v, 42);
	ck_assert_str_eq(origin, "gw-1#00ab");
	ck_assert_str_eq(line, "weight web 1.2.3.4:80 7");
	/* a tombstone */
	ck_assert_int_gt(control_value_format(buf, sizeof buf, 7, "a", NULL), 0);
	ck_assert_str_eq(buf, "7 a -");
	ck_assert(control_value_parse(buf, &v, origin, sizeof origin, &line));
	ck_assert_ptr_null(line);
	ck_assert_uint_eq(v, 7);
	/* too small a buffer */
	ck_assert_int_eq(control_value_format(buf, 5, 7, "abc", "drain a b"), -1);
	/* malformed: no version, no origin, no line, overflow, origin too long */
	ck_assert(!control_value_parse("x a drain a b", &v, origin, sizeof origin, &line));
	ck_assert(!control_value_parse("12", &v, origin, sizeof origin, &line));
	ck_assert(!control_value_parse("12 origin", &v, origin, sizeof origin, &line));
	ck_assert(!control_value_parse("12 origin ", &v, origin, sizeof origin, &line));
	ck_assert(!control_value_parse("99999999999999999999 o drain a b", &v, origin, sizeof origin, &line));
	ck_assert(!control_value_parse("1 longorigin drain a b", &v, origin, 4, &line));
}
END_TEST

struct diff_seen {
	char keys[8][64];
	char lines[8][64];
	size_t n;
};

static void record(void *arg, const char *key, const char *line, const struct control_item *known)
{
	(void)known;
	struct diff_seen *d = arg;
	ck_assert_uint_lt(d->n, 8);
	strcpy(d->keys[d->n], key);
	strcpy(d->lines[d->n], line ? line : "(gone)");
	d->n++;
}

START_TEST(sets_from_text_and_diff)
{
	static const char text[] = "# sluice state\n"
	                           "weight web 127.0.0.1:1 5\n"
	                           "drain web 127.0.0.1:2\n"
	                           "service-weight shop green 30\n"
	                           "not a change\n"
	                           "weight web 127.0.0.1:1 6\n"; /* a later line for the same key wins */
	struct control_set cur, known;
	control_set_init(&cur);
	control_set_init(&known);
	ck_assert_int_eq(control_set_add_text(&cur, text, sizeof text - 1), 0);
	ck_assert_uint_eq(cur.n, 3);
	ck_assert_str_eq(control_set_find(&cur, "weight web 127.0.0.1:1")->line, "weight web 127.0.0.1:1 6");
	for (size_t i = 1; i < cur.n; i++) /* kept sorted */
		ck_assert_int_lt(strcmp(cur.items[i - 1].key, cur.items[i].key), 0);

	/* known: the same weight, the drain undone elsewhere, a disable that is gone here, a tombstone */
	ck_assert_ptr_nonnull(control_set_put(&known, "weight web 127.0.0.1:1", "weight web 127.0.0.1:1 6"));
	ck_assert_ptr_nonnull(control_set_put(&known, "drain web 127.0.0.1:2", NULL));
	ck_assert_ptr_nonnull(control_set_put(&known, "disable web 127.0.0.1:3", "disable web 127.0.0.1:3"));
	ck_assert_ptr_nonnull(control_set_put(&known, "drain web 127.0.0.1:9", NULL));
	struct diff_seen d = { 0 };
	ck_assert_uint_eq(control_set_diff(&cur, &known, record, &d), 3);
	ck_assert_str_eq(d.keys[0], "disable web 127.0.0.1:3");
	ck_assert_str_eq(d.lines[0], "(gone)");
	ck_assert_str_eq(d.keys[1], "drain web 127.0.0.1:2");
	ck_assert_str_eq(d.lines[1], "drain web 127.0.0.1:2");
	ck_assert_str_eq(d.keys[2], "service-weight shop green");

	/* once known holds what cur has, nothing differs: no echo */
	for (size_t i = 0; i < cur.n; i++)
		ck_assert_ptr_nonnull(control_set_put(&known, cur.items[i].key, cur.items[i].line));
	ck_assert_ptr_nonnull(control_set_put(&known, "disable web 127.0.0.1:3", NULL));
	memset(&d, 0, sizeof d);
	ck_assert_uint_eq(control_set_diff(&cur, &known, record, &d), 0);
	/* an entry whose write failed is written again even when the lines agree */
	control_set_find(&known, "drain web 127.0.0.1:2")->unknown = true;
	ck_assert_uint_eq(control_set_diff(&cur, &known, record, &d), 1);
	ck_assert_str_eq(d.keys[0], "drain web 127.0.0.1:2");
	control_set_find(&known, "drain web 127.0.0.1:2")->unknown = false;
	/* an entry read from Redis that this instance could not apply (its config
	 * lacks the server) is not undone from here */
	struct control_item *foreign = control_set_put(&known, "drain web 10.0.0.9:80", "drain web 10.0.0.9:80");
	ck_assert_ptr_nonnull(foreign);
	foreign->version = 12;
	foreign->inapplicable = true;
	memset(&d, 0, sizeof d);
	ck_assert_uint_eq(control_set_diff(&cur, &known, record, &d), 0);
	foreign = control_set_find(&known, "drain web 10.0.0.9:80");
	foreign->inapplicable = false;
	ck_assert_uint_eq(control_set_diff(&cur, &known, record, &d), 1);
	ck_assert_str_eq(d.lines[0], "(gone)");
	control_set_free(&cur);
	control_set_free(&known);
}
END_TEST

START_TEST(decide_versions_and_origins)
{
	struct control_item k = { .version = 10 };
	/* newer from another instance: apply; from this one: acknowledge */
	ck_assert_int_eq(control_decide(11, "b#2", &k, 0, "a#1"), CONTROL_APPLY);
	ck_assert_int_eq(control_decide(11, "a#1", &k, 0, "a#1"), CONTROL_ACK);
	/* not newer: keep (an echo of what this instance has) */
	ck_assert_int_eq(control_decide(10, "b#2", &k, 0, "a#1"), CONTROL_KEEP);
	ck_assert_int_eq(control_decide(9, "b#2", &k, 0, "a#1"), CONTROL_KEEP);
	/* a write of it in flight: its reply decides, whatever the version */
	k.pending = 1;
	ck_assert_int_eq(control_decide(50, "b#2", &k, 0, "a#1"), CONTROL_WAIT);
	k.pending = 0;
	/* unknown key: newer than the local state file (floor) applies, older is kept */
	ck_assert_int_eq(control_decide(5, "b#2", NULL, 0, "a#1"), CONTROL_APPLY);
	ck_assert_int_eq(control_decide(5, "b#2", NULL, 5, "a#1"), CONTROL_KEEP);
	ck_assert_int_eq(control_decide(6, "b#2", NULL, 5, "a#1"), CONTROL_APPLY);
	/* the floor counts for a known key too */
	k.version = 2;
	ck_assert_int_eq(control_decide(4, "b#2", &k, 5, "a#1"), CONTROL_KEEP);
	/* a restarted instance of the same name has another origin: its old entries apply */
	ck_assert_int_eq(control_decide(6, "gw-1#0001", NULL, 0, "gw-1#0002"), CONTROL_APPLY);
}
END_TEST

static Suite *control_suite(void)
{
	Suite *s = suite_create("control");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, entry_keys);
	tcase_add_test(tc, values_round_trip);
	tcase_add_test(tc, sets_from_text_and_diff);
	tcase_add_test(tc, decide_versions_and_origins);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(control_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
