/* Pool sets across snapshots (pool.h): a worker's pool set for a new config
 * is bound by name, idle upstream connections to a server still configured
 * (same pool name and address) carry over, those to a dropped server or a
 * renamed pool are closed, and a busy connection of an old set that comes
 * back joins the current set. Deadlines: an idle connection closes at its
 * idle deadline, which it keeps across a reload; a busy one's deadline goes
 * to its owner's callback. Real sockets (socketpairs) and a real event
 * base; the worker is a plain struct with only what pools use. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "clock.h"
#include "conf.h"
#include "pool.h"
#include "runtime.h"
#include "worker.h"

#define LISTENER "listeners = { { name = 'p', address = '127.0.0.1:1' } }, "

/* generation 1: web = a, b; old = c */
static const char *conf_one = "return { " LISTENER
                              "pools = { web = { servers = { { address = '127.0.0.1:1001' }, { address = '127.0.0.1:1002' } } },"
                              "          old = { servers = { { address = '127.0.0.1:1003' } } } },"
                              "routes = { { match = { path_prefix = '/' }, pool = 'web' },"
                              "           { match = { path_prefix = '/o' }, pool = 'old' } } }";
/* generation 2: web = d, a (b dropped, a moved to index 1); old renamed to new */
static const char *conf_two = "return { " LISTENER
                              "pools = { web = { servers = { { address = '127.0.0.1:1004' }, { address = '127.0.0.1:1001' } } },"
                              "          new = { servers = { { address = '127.0.0.1:1003' } } } },"
                              "routes = { { match = { path_prefix = '/' }, pool = 'web' },"
                              "           { match = { path_prefix = '/o' }, pool = 'new' } } }";

struct fixture {
	struct conf *one, *two;
	struct runtime *rt;
	struct worker w;
	struct worker_gen gen;
	int peers[16];
	size_t num_peers;
};

static struct conf *load(const char *src)
{
	struct conf_errors errs;
	conf_errors_init(&errs);
	struct conf *c = conf_load_string("pools.lua", src, &errs);
	ck_assert_msg(c != NULL, "%s", errs.count ? errs.msgs[0] : "?");
	conf_errors_free(&errs);
	return c;
}

static void setup_confs(struct fixture *f, const char *one, const char *two)
{
	memset(f, 0, sizeof(*f));
	f->one = load(one);
	f->two = load(two);
	f->rt = runtime_new();
	ck_assert_ptr_nonnull(f->rt);
	ck_assert_int_eq(runtime_sync(f->rt, f->one), 0);
	ck_assert_int_eq(runtime_sync(f->rt, f->two), 0);
	f->w.base = event_base_new();
	ck_assert_ptr_nonnull(f->w.base);
	f->w.gen = &f->gen;
}

static void setup(struct fixture *f)
{
	setup_confs(f, conf_one, conf_two);
}

static void teardown(struct fixture *f)
{
	for (size_t i = 0; i < f->num_peers; i++)
		close(f->peers[i]);
	event_base_free(f->w.base);
	runtime_free(f->rt);
	conf_free(f->one);
	conf_free(f->two);
}

/* A connected connection to server s of pool p (the other end kept open). */
static struct upstream_conn *connected(struct fixture *f, struct pool_state *p, size_t s)
{
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	struct upstream_conn *uc = pool_new_conn(p, s);
	ck_assert_ptr_nonnull(uc);
	ck_assert_int_eq(bufferevent_setfd(uc->bev, sv[0]), 0);
	f->peers[f->num_peers++] = sv[1];
	return uc;
}

static unsigned conns(struct runtime *rt, const char *pool, const char *address)
{
	return atomic_load(&runtime_find_server(runtime_find_pool(rt, pool), address)->connections);
}

START_TEST(bound_by_name)
{
	struct fixture f;
	setup(&f);
	struct pool_set *a = pool_set_new(&f.w, f.rt, f.one);
	struct pool_set *b = pool_set_new(&f.w, f.rt, f.two);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	struct pool_state *wa = pool_set_find(a, "web"), *wb = pool_set_find(b, "web");
	ck_assert_ptr_nonnull(wa);
	ck_assert_ptr_nonnull(wb);
	/* the same server at another index is the same runtime entry */
	ck_assert_ptr_eq(wa->rs[0], wb->rs[1]);
	ck_assert_ptr_eq(wa->rt, wb->rt);
	ck_assert_ptr_null(pool_set_find(b, "old"));
	/* a renamed pool is another pool: its server's state is its own */
	ck_assert_ptr_ne(pool_set_find(b, "new")->rs[0], pool_set_find(a, "old")->rs[0]);
	pool_set_free(a);
	pool_set_free(b);
	teardown(&f);
}
END_TEST

START_TEST(idle_connections_carry_over_by_name)
{
	struct fixture f;
	setup(&f);
	struct pool_set *a = pool_set_new(&f.w, f.rt, f.one);
	f.gen.pools = a;
	struct pool_state *web = pool_set_find(a, "web"), *old = pool_set_find(a, "old");
	/* two idle to 1001, one to 1002 (dropped next), one to 1003 (pool renamed next) */
	pool_release(connected(&f, web, 0));
	pool_release(connected(&f, web, 0));
	pool_release(connected(&f, web, 1));
	pool_release(connected(&f, old, 0));
	ck_assert_uint_eq(web->servers[0].num_idle, 2);
	ck_assert_uint_eq(web->servers[1].num_idle, 1);
	ck_assert_uint_eq(old->servers[0].num_idle, 1);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1001"), 2);

	struct pool_set *b = pool_set_new(&f.w, f.rt, f.two);
	ck_assert_uint_eq(pool_set_take_idle(b, a), 2);
	f.gen.pools = b;
	ck_assert(a->retired);
	struct pool_state *nweb = pool_set_find(b, "web"), *nnew = pool_set_find(b, "new");
	/* 1001 is server 1 of the new web pool */
	ck_assert_uint_eq(nweb->servers[1].num_idle, 2);
	ck_assert_uint_eq(nweb->servers[1].open, 2);
	ck_assert_uint_eq(nweb->servers[0].num_idle, 0);
	for (struct upstream_conn *uc = nweb->servers[1].idle; uc; uc = uc->next) {
		ck_assert_ptr_eq(uc->pool, nweb);
		ck_assert_uint_eq(uc->server, 1);
	}
	/* the dropped server's and the renamed pool's connections are closed */
	ck_assert_uint_eq(nnew->servers[0].num_idle, 0);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1002"), 0);
	ck_assert_uint_eq(conns(f.rt, "old", "127.0.0.1:1003"), 0);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1001"), 2);
	ck_assert_uint_eq(web->servers[0].open, 0);
	ck_assert_uint_eq(web->servers[0].num_idle, 0);
	ck_assert_uint_eq(web->servers[1].open, 0);

	/* the old set is empty: freeing it touches nothing of the new one */
	pool_set_free(a);
	ck_assert_uint_eq(nweb->servers[1].num_idle, 2);
	struct upstream_conn *uc = pool_take_idle(nweb, 1);
	ck_assert_ptr_nonnull(uc);
	upstream_conn_free(uc);
	pool_set_free(b);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1001"), 0);
	teardown(&f);
}
END_TEST

START_TEST(busy_connection_of_an_old_set_joins_the_current_one)
{
	struct fixture f;
	setup(&f);
	struct pool_set *a = pool_set_new(&f.w, f.rt, f.one);
	f.gen.pools = a;
	struct pool_state *web = pool_set_find(a, "web");
	struct upstream_conn *kept = connected(&f, web, 0);    /* 1001: still configured */
	struct upstream_conn *dropped = connected(&f, web, 1); /* 1002: gone next */
	struct pool_set *b = pool_set_new(&f.w, f.rt, f.two);
	ck_assert_uint_eq(pool_set_take_idle(b, a), 0);
	f.gen.pools = b;
	/* the requests that used them end after the reload */
	pool_release(kept);
	pool_release(dropped);
	struct pool_state *nweb = pool_set_find(b, "web");
	ck_assert_uint_eq(nweb->servers[1].num_idle, 1);
	ck_assert_ptr_eq(nweb->servers[1].idle, kept);
	ck_assert_ptr_eq(kept->pool, nweb);
	ck_assert_uint_eq(web->servers[0].open, 0);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1002"), 0);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1001"), 1);
	pool_set_free(a);
	pool_set_free(b);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1001"), 0);
	teardown(&f);
}
END_TEST

START_TEST(prune_drops_state_of_servers_gone)
{
	struct fixture f;
	setup(&f);
	struct runtime_server *gone = runtime_find_server(runtime_find_pool(f.rt, "web"), "127.0.0.1:1002");
	struct runtime_server *kept = runtime_find_server(runtime_find_pool(f.rt, "web"), "127.0.0.1:1001");
	atomic_store(&gone->drained, true);
	runtime_set_weight(kept, 9);
	atomic_store(&kept->drained, true);
	ck_assert_uint_eq(runtime_prune(f.rt, f.two), 1);
	ck_assert(!atomic_load(&gone->drained));
	ck_assert(atomic_load(&kept->drained));
	ck_assert_uint_eq(atomic_load(&kept->weight), 9);
	/* reported once: nothing left to drop the next time */
	ck_assert_uint_eq(runtime_prune(f.rt, f.two), 0);
	teardown(&f);
}
END_TEST

/* generation 1 closes idle connections after 100 ms, generation 2 after 60 s */
static const char *conf_short_idle = "return { " LISTENER
                                     "pools = { web = { keepalive = { idle = 8, idle_timeout = '100ms' },"
                                     "                  servers = { { address = '127.0.0.1:1001' } } } },"
                                     "routes = { { match = { path_prefix = '/' }, pool = 'web' } } }";
static const char *conf_long_idle = "return { " LISTENER
                                    "pools = { web = { keepalive = { idle = 8, idle_timeout = '60s' },"
                                    "                  servers = { { address = '127.0.0.1:1001' } } } },"
                                    "routes = { { match = { path_prefix = '/' }, pool = 'web' } } }";

static void run_for_ms(struct event_base *base, long ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	ck_assert_int_eq(event_base_loopexit(base, &tv), 0);
	ck_assert_int_ge(event_base_dispatch(base), 0);
}

static enum pool_deadline seen_kind;
static int seen_calls;

static void record_deadline(struct upstream_conn *uc, enum pool_deadline kind)
{
	seen_kind = kind;
	seen_calls++;
	upstream_conn_free(uc);
}

START_TEST(idle_deadline_closes_and_carries_over)
{
	struct fixture f;
	setup_confs(&f, conf_short_idle, conf_long_idle);
	struct pool_set *a = pool_set_new(&f.w, f.rt, f.one);
	f.gen.pools = a;
	struct pool_state *web = pool_set_find(a, "web");
	uint64_t before = clock_mono_us();
	pool_release(connected(&f, web, 0));
	pool_release(connected(&f, web, 0));
	ck_assert_uint_eq(web->servers[0].num_idle, 2);
	struct upstream_conn *first = web->servers[0].idle;
	ck_assert(conn_timer_pending(&first->timer));
	ck_assert_uint_ge(first->timer.at_us, before + 100000);
	ck_assert_uint_le(first->timer.at_us, clock_mono_us() + 100000);
	uint64_t until = first->timer.at_us;

	/* a reload to a 60 s idle timeout: the connections keep their 100 ms deadline */
	struct pool_set *b = pool_set_new(&f.w, f.rt, f.two);
	ck_assert_uint_eq(pool_set_take_idle(b, a), 2);
	f.gen.pools = b;
	pool_set_free(a);
	struct pool_state *nweb = pool_set_find(b, "web");
	ck_assert_uint_eq(nweb->servers[0].num_idle, 2);
	ck_assert_ptr_eq(nweb->servers[0].idle->timer.q, &nweb->dl[POOL_DL_IDLE]);
	ck_assert(nweb->servers[0].idle->timer.at_us == until || nweb->servers[0].idle->next->timer.at_us == until);
	run_for_ms(f.w.base, 400);
	ck_assert_uint_eq(nweb->servers[0].num_idle, 0);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1001"), 0);

	/* a busy connection's deadline goes to its owner's callback, with its kind */
	struct upstream_conn *busy = connected(&f, nweb, 0);
	busy->on_deadline = record_deadline;
	seen_calls = 0;
	pool_conn_deadline(busy, POOL_DL_RESPONSE, clock_mono_us());
	pool_conn_deadline(busy, POOL_DL_CONNECT, clock_mono_us() - 5000000); /* replaces it, due now */
	ck_assert_ptr_eq(busy->timer.q, &nweb->dl[POOL_DL_CONNECT]);
	run_for_ms(f.w.base, 50);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_int_eq(seen_kind, POOL_DL_CONNECT);
	ck_assert_uint_eq(conns(f.rt, "web", "127.0.0.1:1001"), 0);
	pool_set_free(b);
	teardown(&f);
}
END_TEST

static Suite *pool_suite(void)
{
	Suite *s = suite_create("pool");
	TCase *tc = tcase_create("snapshots");
	tcase_add_test(tc, bound_by_name);
	tcase_add_test(tc, idle_connections_carry_over_by_name);
	tcase_add_test(tc, busy_connection_of_an_old_set_joins_the_current_one);
	tcase_add_test(tc, prune_drops_state_of_servers_gone);
	tcase_add_test(tc, idle_deadline_closes_and_carries_over);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pool_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
