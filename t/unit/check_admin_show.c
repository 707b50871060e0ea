/* Unit tests for the admin answers apart from the socket: admin_reply.h
 * (escaping, the error line), admin_show.h (every `show` renderer, text
 * and JSON), and the command table (admin_execute, admin_restore_state)
 * with the server's counters (admin_server_limits) on an admin object that
 * has no socket, over a real config, a real runtime table and a real state
 * file in a temporary directory. The integration tests (t/test_ctl.py,
 * t/test_res_admin.py, ...) drive the same code through the socket. */
#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "admin_reply.h"
#include "admin_server.h"
#include "admin_show.h"
#include "conf.h"
#include "runtime.h"
#include "snapshot.h"
#include "statefile.h"

#define CONF_TEXT                                                                                                   \
	"return { listeners = { { name = 'p', address = '127.0.0.1:1' } },"                                         \
	"pools = { blue = { servers = { '127.0.0.1:9001', '127.0.0.1:9002' } },"                                   \
	"          green = { servers = { '127.0.0.1:9003' }, breaker = { } } },"                                   \
	"services = { web = { pools = { blue = 90, green = 10 }, sticky = 'cookie:uid' } },"                       \
	"routes = { { match = { path_prefix = '/' }, service = 'web' } } }"

struct fixture {
	struct conf *conf;
	struct runtime *rt;
	struct snapshot snap;
	struct admin_show_view view;
	struct evbuffer *out;
	char text[8192];
};

static void setup(struct fixture *f, const char *conf_text)
{
	memset(f, 0, sizeof(*f));
	struct conf_errors errs;
	conf_errors_init(&errs);
	f->conf = conf_load_string("show.lua", conf_text, &errs);
	ck_assert_msg(f->conf != NULL, "%s", errs.count ? errs.msgs[0] : "?");
	conf_errors_free(&errs);
	f->rt = runtime_new();
	ck_assert_ptr_nonnull(f->rt);
	ck_assert_int_eq(runtime_sync(f->rt, f->conf), 0);
	f->snap.generation = 3;
	f->snap.conf = f->conf;
	f->snap.loaded_by_uid = -1;
	f->snap.loaded_how = "start";
	f->view.snap = &f->snap;
	f->view.rt = f->rt;
	f->out = evbuffer_new();
	ck_assert_ptr_nonnull(f->out);
}

static void teardown(struct fixture *f)
{
	evbuffer_free(f->out);
	runtime_free(f->rt);
	conf_free(f->conf);
}

/* What was written since the last call, as a C string (and drained). */
static const char *taken(struct fixture *f)
{
	size_t n = evbuffer_get_length(f->out);
	ck_assert_uint_lt(n, sizeof(f->text));
	ck_assert_int_eq(evbuffer_remove(f->out, f->text, n), (int)n);
	f->text[n] = '\0';
	return f->text;
}

static struct runtime_server *server(struct fixture *f, const char *pool, const char *address)
{
	struct runtime_server *s = runtime_find_server(runtime_find_pool(f->rt, pool), address);
	ck_assert_ptr_nonnull(s);
	return s;
}

START_TEST(reply_escapes)
{
	struct evbuffer *out = evbuffer_new();
	char buf[256];
	admin_reply_text(out, "ok \x1b[2J \xc2\x9b tab\t");
	size_t n = evbuffer_remove(out, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "ok \\x1b[2J \\xc2\\x9b tab\\x09");

	admin_reply_json_str(out, "a\"b\\c\n\x01");
	n = evbuffer_remove(out, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "\"a\\\"b\\\\c\\n\\u0001\"");

	admin_reply_error(out, false, "unknown pool \"%s\"", "x\x7f");
	n = evbuffer_remove(out, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "error: unknown pool \"x\\x7f\"\n");

	admin_reply_error(out, true, "no %s", "\"pool\"");
	n = evbuffer_remove(out, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "{\"ok\":false,\"error\":\"no \\\"pool\\\"\"}\n");
	evbuffer_free(out);
}
END_TEST

START_TEST(pools)
{
	struct fixture f;
	setup(&f, CONF_TEXT);
	atomic_store(&server(&f, "blue", "127.0.0.1:9002")->disabled, true);
	admin_show_pools(&f.view, false, f.out);
	ck_assert_str_eq(taken(&f),
	                 "POOL             SERVERS   UP ACTIVE  CONNS PENDING RETRIES OVERFLOW   BUDGET  BREAKER NOSERVER  RETRIED\n"
	                 "blue                   2    1      0      0       0       0        0        0        0        0        0\n"
	                 "green                  1    1      0      0       0       0        0        0        0        0        0\n");
	admin_show_pools(&f.view, true, f.out);
	ck_assert_str_eq(taken(&f),
	                 "{\"ok\":true,\"pools\":[{\"pool\":\"blue\",\"servers\":2,\"usable\":1,\"active_requests\":0,"
	                 "\"connections\":0,\"pending\":0,\"retries_in_flight\":0,\"refused\":{\"pool_overflow\":0,"
	                 "\"retry_budget_exhausted\":0,\"breaker_open\":0,\"no_healthy_upstream\":0},\"retries\":0},"
	                 "{\"pool\":\"green\",\"servers\":1,\"usable\":1,\"active_requests\":0,\"connections\":0,"
	                 "\"pending\":0,\"retries_in_flight\":0,\"refused\":{\"pool_overflow\":0,"
	                 "\"retry_budget_exhausted\":0,\"breaker_open\":0,\"no_healthy_upstream\":0},\"retries\":0}]}\n");
	teardown(&f);
}
END_TEST

START_TEST(servers_and_breakers)
{
	struct fixture f;
	setup(&f, CONF_TEXT);
	atomic_store(&server(&f, "blue", "127.0.0.1:9001")->drained, true);
	runtime_set_weight(server(&f, "blue", "127.0.0.1:9002"), 7);
	admin_show_servers(&f.view, NULL, false, f.out);
	ck_assert_str_eq(taken(&f),
	                 "POOL         ADDRESS                WEIGHT CONFIG HEALTH   STATE     ACTIVE CONNS   ERR% REQUESTS  BREAKER\n"
	                 "blue         127.0.0.1:9001              1      1 up       draining       0     0     0%        0  off\n"
	                 "blue         127.0.0.1:9002              7      1 up       active         0     0     0%        0  off\n"
	                 "green        127.0.0.1:9003              1      1 up       active         0     0     0%        0  closed\n");
	admin_show_servers(&f.view, "green", true, f.out);
	ck_assert_str_eq(taken(&f),
	                 "{\"ok\":true,\"servers\":[{\"pool\":\"green\",\"address\":\"127.0.0.1:9003\",\"weight\":1,"
	                 "\"config_weight\":1,\"health\":\"up\",\"last_check\":\"\",\"state\":\"active\",\"breaker\":\"closed\","
	                 "\"active_requests\":0,\"connections\":0,\"window_requests\":0,\"window_failures\":0,"
	                 "\"error_rate\":0.000,\"requests\":0,\"failures\":0}]}\n");
	/* a name the client typed comes back escaped */
	admin_show_servers(&f.view, "x\x1b", false, f.out);
	ck_assert_str_eq(taken(&f), "error: unknown pool \"x\\x1b\" (show pools lists them)\n");
	admin_show_breakers(&f.view, false, f.out);
	ck_assert_str_eq(taken(&f),
	                 "POOL         ADDRESS                STATE     TRIPS LAST_TRIGGER           OPEN_MS   LEFT_MS WIN_REQ WIN_ERR\n"
	                 "blue         127.0.0.1:9001         off           0 none                         0         0       0       0\n"
	                 "blue         127.0.0.1:9002         off           0 none                         0         0       0       0\n"
	                 "green        127.0.0.1:9003         closed        0 none                         0         0       0       0\n");
	teardown(&f);
}
END_TEST

START_TEST(diff)
{
	struct fixture f;
	setup(&f, CONF_TEXT);
	admin_show_diff(&f.view, false, f.out);
	ck_assert_str_eq(taken(&f), "no differences: the running state is the config file's\n");
	admin_show_diff(&f.view, true, f.out);
	ck_assert_str_eq(taken(&f), "{\"ok\":true,\"differences\":[]}\n");
	atomic_store(&server(&f, "blue", "127.0.0.1:9001")->drained, true);
	runtime_set_weight(server(&f, "blue", "127.0.0.1:9002"), 7);
	runtime_set_split_weight(runtime_find_split(f.rt, "web", "green"), 30);
	admin_show_diff(&f.view, false, f.out);
	ck_assert_str_eq(taken(&f), "pool blue server 127.0.0.1:9001: drained\n"
	                            "pool blue server 127.0.0.1:9002: weight 1 -> 7\n"
	                            "service web pool green: weight 10 -> 30\n");
	admin_show_diff(&f.view, true, f.out);
	ck_assert_str_eq(taken(&f), "{\"ok\":true,\"differences\":[\"pool blue server 127.0.0.1:9001: drained\","
	                            "\"pool blue server 127.0.0.1:9002: weight 1 -> 7\","
	                            "\"service web pool green: weight 10 -> 30\"]}\n");
	teardown(&f);
}
END_TEST

START_TEST(services)
{
	struct fixture f;
	setup(&f, CONF_TEXT);
	admin_show_services(&f.view, NULL, false, f.out);
	ck_assert_str_eq(taken(&f), "SERVICE          POOL             WEIGHT CONFIG  SHARE  SPLIT\n"
	                            "web              blue                 90     90  90.0%  sticky cookie:uid\n"
	                            "web              green                10     10  10.0%  \n");
	const struct conf_service *sv = &f.conf->services[conf_find_service(f.conf, "web")];
	ck_assert(runtime_switch(f.rt, f.conf, sv, "green"));
	admin_show_services(&f.view, "web", true, f.out);
	ck_assert_str_eq(taken(&f),
	                 "{\"ok\":true,\"services\":[{\"service\":\"web\",\"sticky\":\"cookie:uid\",\"overrides\":0,"
	                 "\"switched\":true,\"pools\":[{\"pool\":\"blue\",\"weight\":0,\"config_weight\":90,\"share\":0.0,"
	                 "\"weight_before_switch\":90},{\"pool\":\"green\",\"weight\":100,\"config_weight\":10,"
	                 "\"share\":100.0,\"weight_before_switch\":10}]}]}\n");
	admin_show_services(&f.view, "nope", true, f.out);
	ck_assert_str_eq(taken(&f), "{\"ok\":false,\"error\":\"unknown service \\\"nope\\\"\"}\n");
	teardown(&f);
}
END_TEST

START_TEST(state_file_and_config)
{
	struct fixture f;
	setup(&f, CONF_TEXT);
	admin_show_state_file(&f.view, false, f.out);
	ck_assert_str_eq(taken(&f), "no state_file configured: changes last until the process ends\n");
	admin_show_state_file(&f.view, true, f.out);
	ck_assert_str_eq(taken(&f), "{\"ok\":true,\"path\":null,\"writable\":false}\n");

	/* a directory at the path: never read, never written, and both answers say so */
	char dir[] = "/tmp/check_admin_show.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	struct statefile *sf = statefile_open(dir, f.rt);
	ck_assert_ptr_nonnull(sf);
	f.view.sf = sf;
	admin_show_state_file(&f.view, false, f.out);
	const char *t = taken(&f);
	ck_assert_msg(strstr(t, "status      refused: not a regular file, never written\n") != NULL, "%s", t);
	ck_assert_msg(strstr(t, "problem     ") != NULL, "%s", t);
	ck_assert_msg(strstr(t, "at start    0 changes applied, 0 lines skipped\n") != NULL, "%s", t);
	admin_show_config(&f.view, false, f.out);
	t = taken(&f);
	ck_assert_msg(strstr(t, "generation  3\n") != NULL, "%s", t);
	ck_assert_msg(strstr(t, "pools       2 (3 servers)\nservices    1\nroutes      1\n") != NULL, "%s", t);
	ck_assert_msg(strstr(t, "state file  NOT WRITTEN on changes: ") != NULL, "%s", t);
	ck_assert_msg(strstr(t, " (never replaced; show state-file)\n") != NULL, "%s", t);
	admin_show_config(&f.view, true, f.out);
	t = taken(&f);
	ck_assert_msg(strstr(t, "\"generation\":3,") != NULL, "%s", t);
	ck_assert_msg(strstr(t, "\"loaded_by\":\"start\",\"loaded_uid\":null,\"state_file_writable\":false,") != NULL, "%s",
	              t);
	statefile_free(sf);
	ck_assert_int_eq(rmdir(dir), 0);
	teardown(&f);
}
END_TEST

START_TEST(redis)
{
	struct fixture f;
	setup(&f, CONF_TEXT);
	admin_show_redis(&f.view, false, f.out);
	ck_assert_str_eq(taken(&f), "no redis section: every rate limit is local\n");
	admin_show_redis(&f.view, true, f.out);
	ck_assert_str_eq(taken(&f), "{\"ok\":true,\"enabled\":false}\n");
	teardown(&f);
}
END_TEST

START_TEST(admin_limits)
{
	struct admin_show_limits l = {.num_conns = 2, .max_conns = 32, .idle_seconds = 10,
	                              .max_pending_output = 1u << 20, .accepted = 5, .refused_uid = 1,
	                              .refused_full = 2, .evicted = 3, .paused = 4, .idle_closed = 6};
	struct evbuffer *out = evbuffer_new();
	char buf[1024];
	admin_show_admin(&l, true, out);
	size_t n = evbuffer_remove(out, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "{\"ok\":true,\"connections\":2,\"max_connections\":32,\"idle_timeout_s\":10,"
	                      "\"max_unread_answer_bytes\":1048576,\"accepted\":5,\"refused_uid\":1,\"refused_full\":2,"
	                      "\"evicted_idle\":3,\"paused_unread\":4,\"closed_idle\":6}\n");
	admin_show_admin(&l, false, out);
	n = evbuffer_remove(out, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	ck_assert_msg(strstr(buf, "connections        2 open of 32 (") != NULL, "%s", buf);
	ck_assert_msg(strstr(buf, "evicted (idle)     3 (the longest idle, to make room)\n") != NULL, "%s", buf);
	evbuffer_free(out);
}
END_TEST

/* An admin object as admin_start makes it, but without a socket (no
 * connections, no rollout controller, no state file): the command table's
 * view of the fixture. Freed with free(). */
static struct admin *admin_without_socket(struct fixture *f)
{
	struct admin *a = calloc(1, sizeof(*a));
	ck_assert_ptr_nonnull(a);
	a->rt = f->rt;
	a->snap = &f->snap;
	return a;
}

/* The command table on an admin object without a socket: what the socket's
 * counters say, a show, a change and its answer. */
START_TEST(execute_without_socket)
{
	struct fixture f;
	setup(&f, CONF_TEXT);
	struct admin *a = admin_without_socket(&f);
	a->num_conns = 3;
	a->max_conns = 8;
	a->accepted = 11;
	a->evicted = 2;

	struct admin_show_limits l;
	admin_server_limits(a, &l);
	ck_assert_uint_eq(l.num_conns, 3);
	ck_assert_uint_eq(l.max_conns, 8);
	ck_assert_int_eq(l.idle_seconds, 10);
	ck_assert_uint_eq(l.max_pending_output, 1u << 20);
	ck_assert_uint_eq(l.accepted, 11);
	ck_assert_uint_eq(l.evicted, 2);

	static const char show_admin[] = "show admin --json";
	admin_execute(a, show_admin, sizeof(show_admin) - 1, 0, f.out);
	ck_assert_str_eq(taken(&f), "{\"ok\":true,\"connections\":3,\"max_connections\":8,\"idle_timeout_s\":10,"
	                            "\"max_unread_answer_bytes\":1048576,\"accepted\":11,\"refused_uid\":0,"
	                            "\"refused_full\":0,\"evicted_idle\":2,\"paused_unread\":0,\"closed_idle\":0}\n");
	static const char set[] = "set weight blue 127.0.0.1:9001 5";
	admin_execute(a, set, sizeof(set) - 1, 0, f.out);
	ck_assert_str_eq(taken(&f), "pool blue server 127.0.0.1:9001: weight 1 -> 5\n");
	ck_assert_uint_eq(atomic_load(&server(&f, "blue", "127.0.0.1:9001")->weight), 5);
	static const char show_diff[] = "show diff";
	admin_execute(a, show_diff, sizeof(show_diff) - 1, 0, f.out);
	ck_assert_str_eq(taken(&f), "pool blue server 127.0.0.1:9001: weight 1 -> 5\n");
	static const char unknown[] = "show pools extra";
	admin_execute(a, unknown, sizeof(unknown) - 1, 0, f.out);
	ck_assert_msg(strncmp(taken(&f), "error: usage: show pools | ", 27) == 0, "%s", f.text);
	free(a);
	teardown(&f);
}
END_TEST

/* The file after "restore-state BYTES" (the socket reads it): checked whole
 * before anything changes, then applied, and answered either way. */
START_TEST(restore_state)
{
	struct fixture f;
	setup(&f, CONF_TEXT);
	struct admin *a = admin_without_socket(&f);
	static const char bad[] = "{\"format\":\"sluice-state-dump\",\"version\":1,"
	                          "\"runtime\":[\"weight blue 127.0.0.1:9001 5\",\"drain nopool 127.0.0.1:1\"],\"redis\":null}";
	admin_restore_state(a, 0, bad, sizeof(bad) - 1, false, f.out);
	const char *t = taken(&f);
	ck_assert_msg(strncmp(t, "error: restore-state: ", 22) == 0 && strstr(t, "nopool") != NULL, "%s", t);
	ck_assert_uint_eq(atomic_load(&server(&f, "blue", "127.0.0.1:9001")->weight), 1);

	static const char good[] = "{\"format\":\"sluice-state-dump\",\"version\":1,"
	                           "\"runtime\":[\"weight blue 127.0.0.1:9001 5\"],\"redis\":null}";
	admin_restore_state(a, 0, good, sizeof(good) - 1, true, f.out);
	t = taken(&f);
	ck_assert_msg(strncmp(t, "{\"ok\":true,\"message\":\"restored: 1 runtime change", 45) == 0, "%s", t);
	ck_assert_uint_eq(atomic_load(&server(&f, "blue", "127.0.0.1:9001")->weight), 5);
	free(a);
	teardown(&f);
}
END_TEST

static Suite *admin_show_suite(void)
{
	Suite *s = suite_create("admin_show");
	TCase *tc = tcase_create("answers");
	tcase_add_test(tc, reply_escapes);
	tcase_add_test(tc, pools);
	tcase_add_test(tc, servers_and_breakers);
	tcase_add_test(tc, diff);
	tcase_add_test(tc, services);
	tcase_add_test(tc, state_file_and_config);
	tcase_add_test(tc, redis);
	tcase_add_test(tc, admin_limits);
	tcase_add_test(tc, execute_without_socket);
	tcase_add_test(tc, restore_state);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(admin_show_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
