/* Unit tests for the dump-state file parser (src/statedump_parse.h): what
 * it accepts, and that every refusal says where and why. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "statedump_parse.h"

#define HEAD "{\"format\":\"sluice-state-dump\",\"version\":1,"

static struct statedump *parse(const char *s, char *err)
{
	return statedump_parse(s, strlen(s), err, 400);
}

START_TEST(accepts_a_dump)
{
	char err[400];
	struct statedump *d = parse("{\n  \"format\": \"sluice-state-dump\",\n  \"version\": 1,\n  \"created\": \"x\",\n"
	                            "  \"runtime\": [\"weight web 127.0.0.1:8080 5\", \"drain web 127.0.0.1:8081\",\n"
	                            "    \"service-weight web canary 20\"],\n"
	                            "  \"redis\": {\"server\": \"127.0.0.1:6379\", \"keys\": [\n"
	                            "    {\"key\": \"sluice:rl:l:a\\\"b\", \"pttl\": 1500, \"dump\": \"00ff\"},\n"
	                            "    {\"key_hex\": \"736c756963653a726c3a6c3aff\", \"pttl\": -1, \"dump\": \"AB\"}]}\n}\n",
	                            err);
	ck_assert_msg(d != NULL, "%s", err);
	ck_assert_uint_eq(d->num_lines, 3);
	ck_assert_str_eq(d->lines[1].text, "drain web 127.0.0.1:8081");
	ck_assert_uint_eq(d->lines[1].line, 5);
	ck_assert(d->has_redis);
	ck_assert_uint_eq(d->num_keys, 2);
	ck_assert_uint_eq(d->keys[0].key_len, strlen("sluice:rl:l:a\"b"));
	ck_assert(memcmp(d->keys[0].key, "sluice:rl:l:a\"b", d->keys[0].key_len) == 0);
	ck_assert_int_eq(d->keys[0].pttl, 1500);
	ck_assert_uint_eq(d->keys[0].dump_len, 2);
	ck_assert_uint_eq(d->keys[0].dump[1], 0xff);
	ck_assert_uint_eq(d->keys[1].key[d->keys[1].key_len - 1], 0xff);
	ck_assert_int_eq(d->keys[1].pttl, -1);
	statedump_free(d);

	d = parse(HEAD "\"runtime\":[],\"redis\":null}", err);
	ck_assert_msg(d != NULL, "%s", err);
	ck_assert(!d->has_redis);
	statedump_free(d);
}
END_TEST

START_TEST(refusals_say_where)
{
	static const struct {
		const char *in;
		const char *want;
	} cases[] = {
	    {"", "line 1, column 1: expected '{'"},
	    {"[]", "expected '{'"},
	    {"{\"format\":\"other\",\"version\":1,\"runtime\":[],\"redis\":null}", "not a file of sluice ctl dump-state"},
	    {HEAD "\"runtime\":[],\"redis\":null", "expected ',' or '}'"},
	    {"{\"format\":\"sluice-state-dump\",\"version\":2,\"runtime\":[],\"redis\":null}", "version 2: this sluice reads version 1 (written by a newer sluice)"},
	    {HEAD "\"runtime\":[\"weight web\"],\"redis\":null}", "line 1, column 54: runtime[0]: not a state-file change"},
	    {HEAD "\"runtime\":[\"# comment\"],\"redis\":null}", "only changes belong here"},
	    {HEAD "\"runtime\":[\"drain a b\"]\n,\"redis\":{\"keys\":[{\"key\":\"other:x\",\"pttl\":1,\"dump\":\"00\"}]}}", "line 2, column 19: keys[0]: not a sluice key"},
	    {HEAD "\"runtime\":[],\"redis\":{\"keys\":[{\"key\":\"sluice:rl:x\",\"pttl\":1,\"dump\":\"0\"}]}}", "keys[0].dump: expected an even number of hex digits"},
	    {HEAD "\"runtime\":[],\"redis\":{\"keys\":[{\"key\":\"sluice:rl:x\",\"pttl\":0,\"dump\":\"00\"}]}}", "keys[0].pttl: 0"},
	    {HEAD "\"runtime\":[],\"redis\":{\"keys\":[{\"key\":\"sluice:rl:x\",\"dump\":\"00\"}]}}", "no \"pttl\""},
	    {HEAD "\"runtime\":[],\"redis\":{\"keys\":[{\"key\":\"sluice:rl:x\",\"pttl\":1.5,\"dump\":\"00\"}]}}", "expected a whole number"},
	    {HEAD "\"runtime\":[],\"runtime\":[],\"redis\":null}", "\"runtime\" given twice"},
	    {HEAD "\"runtime\":[]}", "no \"redis\" member"},
	    {HEAD "\"redis\":null}", "no \"runtime\" member"},
	    {HEAD "\"runtime\":[\"drain a \\x\"],\"redis\":null}", "unknown escape \\x"},
	    {HEAD "\"runtime\":[\"drain a \\ud800\"],\"redis\":null}", "lone UTF-16 high surrogate"},
	    {HEAD "\"runtime\":[\"drain a b\n\"],\"redis\":null}", "a control byte inside a string"},
	    {HEAD "\"runtime\":[],\"redis\":null} x", "text after the end of the document"},
	    {HEAD "\"runtime\":[],\"redis\":null,\"x\":[[[[[[[[[1]]]]]]]]]}", "nested deeper than 8"},
	    {HEAD "\"runtime\":[\"drain a b", "this string has no closing quote"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char err[400] = "";
		struct statedump *d = parse(cases[i].in, err);
		ck_assert_msg(d == NULL, "case %zu accepted", i);
		ck_assert_msg(strstr(err, cases[i].want) != NULL, "case %zu: got \"%s\", want \"%s\"", i, err, cases[i].want);
		ck_assert_msg(strncmp(err, "line ", 5) == 0, "case %zu: no position: %s", i, err);
	}
}
END_TEST

START_TEST(position)
{
	unsigned l, c;
	statedump_position("ab\ncd\n", 6, 4, &l, &c);
	ck_assert_uint_eq(l, 2);
	ck_assert_uint_eq(c, 2);
	statedump_position("ab", 2, 0, &l, &c);
	ck_assert_uint_eq(l, 1);
	ck_assert_uint_eq(c, 1);
}
END_TEST

static Suite *statedump_suite(void)
{
	Suite *s = suite_create("statedump");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, accepts_a_dump);
	tcase_add_test(tc, refusals_say_where);
	tcase_add_test(tc, position);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(statedump_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
