/* Unit tests for the Redis Sentinel protocol pieces (src/redis_sentinel.h):
 * the master's address from SENTINEL get-master-addr-by-name, ROLE, the
 * +switch-master payload, and the process-wide record of switches. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "redis_sentinel.h"

static redisReply str(int type, const char *s)
{
	redisReply r;
	memset(&r, 0, sizeof r);
	r.type = type;
	r.str = (char *)s;
	r.len = strlen(s);
	return r;
}

static redisReply array(redisReply **e, size_t n)
{
	redisReply r;
	memset(&r, 0, sizeof r);
	r.type = REDIS_REPLY_ARRAY;
	r.element = e;
	r.elements = n;
	return r;
}

START_TEST(master_reply)
{
	char why[200];
	struct rs_addr a;
	redisReply h = str(REDIS_REPLY_STRING, "127.0.0.1"), p = str(REDIS_REPLY_STRING, "6380");
	redisReply *e[2] = {&h, &p};
	redisReply r = array(e, 2);
	ck_assert(rs_parse_master_reply(&r, "edge", &a, why, sizeof why));
	ck_assert_str_eq(a.host, "127.0.0.1");
	ck_assert_int_eq(a.port, 6380);
	char buf[80];
	rs_addr_format(&a, buf, sizeof buf);
	ck_assert_str_eq(buf, "127.0.0.1:6380");

	redisReply h6 = str(REDIS_REPLY_STRING, "::1");
	e[0] = &h6;
	ck_assert(rs_parse_master_reply(&r, "edge", &a, why, sizeof why));
	rs_addr_format(&a, buf, sizeof buf);
	ck_assert_str_eq(buf, "[::1]:6380");

	/* a hostname would need a blocking lookup: refused, and said why */
	redisReply hn = str(REDIS_REPLY_STRING, "redis-1.example");
	e[0] = &hn;
	ck_assert(!rs_parse_master_reply(&r, "edge", &a, why, sizeof why));
	ck_assert_ptr_nonnull(strstr(why, "resolve-hostnames"));

	/* unknown master: a nil */
	redisReply nil;
	memset(&nil, 0, sizeof nil);
	nil.type = REDIS_REPLY_NIL;
	ck_assert(!rs_parse_master_reply(&nil, "edge", &a, why, sizeof why));
	ck_assert_ptr_nonnull(strstr(why, "does not know a master named edge"));

	redisReply err = str(REDIS_REPLY_ERROR, "NOAUTH Authentication required.");
	ck_assert(!rs_parse_master_reply(&err, "edge", &a, why, sizeof why));
	ck_assert_ptr_nonnull(strstr(why, "NOAUTH"));
	ck_assert(!rs_parse_master_reply(NULL, "edge", &a, why, sizeof why));

	/* bad ports and shapes */
	const char *ports[] = {"0", "65536", "", "12a", "-1", "123456"};
	e[0] = &h;
	for (size_t i = 0; i < sizeof ports / sizeof ports[0]; i++) {
		redisReply bp = str(REDIS_REPLY_STRING, ports[i]);
		e[1] = &bp;
		ck_assert_msg(!rs_parse_master_reply(&r, "edge", &a, why, sizeof why), "port %s", ports[i]);
	}
	e[1] = &p;
	r.elements = 1;
	ck_assert(!rs_parse_master_reply(&r, "edge", &a, why, sizeof why));
	redisReply num;
	memset(&num, 0, sizeof num);
	num.type = REDIS_REPLY_INTEGER;
	e[1] = &num;
	r.elements = 2;
	ck_assert(!rs_parse_master_reply(&r, "edge", &a, why, sizeof why));
}
END_TEST

START_TEST(role_reply)
{
	char why[200];
	redisReply m = str(REDIS_REPLY_STRING, "master"), off;
	memset(&off, 0, sizeof off);
	off.type = REDIS_REPLY_INTEGER;
	redisReply *e[2] = {&m, &off};
	redisReply r = array(e, 2);
	ck_assert(rs_role_is_master(&r, why, sizeof why));
	redisReply s = str(REDIS_REPLY_STRING, "slave");
	e[0] = &s;
	ck_assert(!rs_role_is_master(&r, why, sizeof why));
	ck_assert_ptr_nonnull(strstr(why, "not the master"));
	redisReply mm = str(REDIS_REPLY_STRING, "masterx");
	e[0] = &mm;
	ck_assert(!rs_role_is_master(&r, why, sizeof why));
	r.elements = 0;
	ck_assert(!rs_role_is_master(&r, why, sizeof why));
	ck_assert(!rs_role_is_master(NULL, why, sizeof why));
	redisReply err = str(REDIS_REPLY_ERROR, "ERR unknown command");
	ck_assert(!rs_role_is_master(&err, why, sizeof why));
}
END_TEST

START_TEST(switch_master)
{
	struct rs_addr a;
	const char *ok = "edge 127.0.0.1 6379 127.0.0.1 6380";
	ck_assert(rs_parse_switch_master(ok, strlen(ok), "edge", &a));
	ck_assert_str_eq(a.host, "127.0.0.1");
	ck_assert_int_eq(a.port, 6380);
	/* another master's switch is not ours */
	ck_assert(!rs_parse_switch_master(ok, strlen(ok), "edg", &a));
	ck_assert(!rs_parse_switch_master(ok, strlen(ok), "edge2", &a));
	const char *bad[] = {
	    "edge 127.0.0.1 6379 127.0.0.1",
	    "edge 127.0.0.1 6379 127.0.0.1 6380 extra",
	    "edge 127.0.0.1 6379 host.example 6380",
	    "edge 127.0.0.1 6379 127.0.0.1 0",
	    "",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_msg(!rs_parse_switch_master(bad[i], strlen(bad[i]), "edge", &a), "%s", bad[i]);
	/* lengths, not NUL: the tail past len is not read */
	ck_assert(rs_parse_switch_master("edge ::1 1 ::1 7000 garbage", 19, "edge", &a));
	ck_assert_int_eq(a.port, 7000);
}
END_TEST

START_TEST(switch_record)
{
	struct rs_addr a = {"127.0.0.1", 6379}, b = {"127.0.0.1", 6380}, before, now;
	unsigned long long switches;
	uint64_t since;
	ck_assert(!rs_master_current(&now, &switches, &since));
	ck_assert(!rs_master_note(&a, &before)); /* the first one is no switch */
	ck_assert(!rs_master_note(&a, &before)); /* every worker reaching it: still none */
	ck_assert(rs_master_current(&now, &switches, &since));
	ck_assert_uint_eq(switches, 0);
	ck_assert(rs_master_note(&b, &before)); /* the first worker on the new one logs it */
	ck_assert_str_eq(before.host, "127.0.0.1");
	ck_assert_int_eq(before.port, 6379);
	ck_assert(!rs_master_note(&b, &before)); /* the others do not */
	ck_assert(rs_master_current(&now, &switches, &since));
	ck_assert_uint_eq(switches, 1);
	ck_assert_int_eq(now.port, 6380);
	ck_assert(since > 0);
}
END_TEST

static Suite *sentinel_suite(void)
{
	Suite *s = suite_create("sentinel");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, master_reply);
	tcase_add_test(tc, role_reply);
	tcase_add_test(tc, switch_master);
	tcase_add_test(tc, switch_record);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(sentinel_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
