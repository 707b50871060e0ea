/* Unit tests for the client connections' own transport pieces: the
 * per-worker deadline queues (conn_timer.h) on a real event base, and the
 * plain-socket reads, writes and buffer pool (conn_sock.h) over a real
 * socketpair; the client address text of an accepted connection. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

#include "client.h"
#include "clock.h"
#include "conn_sock.h"
#include "conn_timer.h"

/* ---- deadline queues ---- */

struct tconn {
	struct conn_timer timer;
	int id;
};

static int fired[16];
static size_t nfired;
static struct conn_timer_queue *requeue_q; /* when set, expiry of id 1 re-arms id 2 from the callback */
static struct tconn *requeue_target;

static void record_expired(struct conn_timer *t)
{
	struct tconn *c = (struct tconn *)t;
	ck_assert_uint_lt(nfired, 16);
	fired[nfired++] = c->id;
	if (requeue_q && c->id == 1 && requeue_target)
		conn_timer_set(requeue_q, &requeue_target->timer, clock_mono_us()); /* due at once */
}

static void reset_record(void)
{
	nfired = 0;
	requeue_q = NULL;
	requeue_target = NULL;
}

static void run_for_ms(struct event_base *base, int ms)
{
	struct timeval tv = {0, ms * 1000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

START_TEST(timers_expire_in_deadline_order)
{
	reset_record();
	struct event_base *base = event_base_new();
	struct conn_timer_queue q;
	ck_assert_int_eq(conn_timer_queue_init(&q, base, record_expired), 0);
	struct tconn c[4] = {{.id = 1}, {.id = 2}, {.id = 3}, {.id = 4}};
	uint64_t now = clock_mono_us();
	conn_timer_set(&q, &c[0].timer, now + 30000);
	conn_timer_set(&q, &c[1].timer, now + 10000); /* earlier than the tail: inserted in order */
	conn_timer_set(&q, &c[2].timer, now + 20000);
	conn_timer_set(&q, &c[3].timer, now + 500000); /* far away: must not fire in this run */
	ck_assert_ptr_eq(q.head, &c[1].timer);
	ck_assert_ptr_eq(q.tail, &c[3].timer);
	run_for_ms(base, 100);
	ck_assert_uint_eq(nfired, 3);
	ck_assert_int_eq(fired[0], 2);
	ck_assert_int_eq(fired[1], 3);
	ck_assert_int_eq(fired[2], 1);
	ck_assert(!conn_timer_pending(&c[0].timer));
	ck_assert(conn_timer_pending(&c[3].timer));
	conn_timer_clear(&c[3].timer);
	ck_assert_ptr_null(q.head);
	ck_assert_ptr_null(q.tail);
	conn_timer_queue_free(&q);
	event_base_free(base);
}
END_TEST

START_TEST(timers_moved_and_cleared_do_not_fire_early)
{
	reset_record();
	struct event_base *base = event_base_new();
	struct conn_timer_queue q;
	ck_assert_int_eq(conn_timer_queue_init(&q, base, record_expired), 0);
	struct tconn a = {.id = 1}, b = {.id = 2};
	uint64_t now = clock_mono_us();
	conn_timer_set(&q, &a.timer, now + 20000);
	conn_timer_set(&q, &b.timer, now + 25000);
	/* a keep-alive connection that got a request: its deadline moves to the tail */
	conn_timer_set(&q, &a.timer, now + 200000);
	conn_timer_clear(&b.timer);
	run_for_ms(base, 60);
	ck_assert_uint_eq(nfired, 0); /* the queue's timer fired early for a moved head and re-armed */
	ck_assert(conn_timer_pending(&a.timer));
	conn_timer_set(&q, &a.timer, clock_mono_us() + 10000);
	run_for_ms(base, 60);
	ck_assert_uint_eq(nfired, 1);
	ck_assert_int_eq(fired[0], 1);
	conn_timer_queue_free(&q);
	event_base_free(base);
}
END_TEST

START_TEST(timer_due_now_runs_after_the_current_callbacks)
{
	reset_record();
	struct event_base *base = event_base_new();
	struct conn_timer_queue q, now_q;
	ck_assert_int_eq(conn_timer_queue_init(&q, base, record_expired), 0);
	ck_assert_int_eq(conn_timer_queue_init(&now_q, base, record_expired), 0);
	struct tconn a = {.id = 1}, b = {.id = 2};
	conn_timer_set(&q, &a.timer, clock_mono_us() + 5000);
	requeue_q = &now_q;
	requeue_target = &b;
	/* deadline 0 (already past): not called from conn_timer_set itself */
	conn_timer_set(&now_q, &b.timer, 0);
	ck_assert_uint_eq(nfired, 0);
	run_for_ms(base, 50);
	/* b first (due at once), then a, whose expiry re-armed b due now, which ran again */
	ck_assert_uint_eq(nfired, 3);
	ck_assert_int_eq(fired[0], 2);
	ck_assert_int_eq(fired[1], 1);
	ck_assert_int_eq(fired[2], 2);
	conn_timer_queue_free(&q);
	conn_timer_queue_free(&now_q);
	event_base_free(base);
}
END_TEST

/* ---- plain sockets ---- */

static void nonblocking_pair(int sv[2])
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(fcntl(sv[i], F_SETFL, fcntl(sv[i], F_GETFL) | O_NONBLOCK), 0);
}

START_TEST(sock_read_reports_data_empty_and_eof)
{
	int sv[2];
	nonblocking_pair(sv);
	struct evbuffer *in = evbuffer_new();
	ck_assert_int_eq(conn_sock_read(sv[0], in, 4000, 1 << 20), -2); /* nothing there yet */
	ck_assert_int_eq(write(sv[1], "GET / HTTP/1.1\r\n\r\n", 18), 18);
	ck_assert_int_eq(conn_sock_read(sv[0], in, 4000, 1 << 20), 18);
	ck_assert_uint_eq(evbuffer_get_length(in), 18);
	ck_assert_int_eq(memcmp(evbuffer_pullup(in, -1), "GET / HTTP/1.1\r\n\r\n", 18), 0);
	ck_assert_int_eq(write(sv[1], "xy", 2), 2);
	close(sv[1]);
	/* bytes before the EOF come first; the EOF on the next call */
	ck_assert_int_eq(conn_sock_read(sv[0], in, 4000, 1 << 20), 2);
	ck_assert_int_eq(conn_sock_read(sv[0], in, 4000, 1 << 20), 0);
	ck_assert_uint_eq(evbuffer_get_length(in), 20);
	evbuffer_free(in);
	close(sv[0]);
}
END_TEST

START_TEST(sock_read_stops_at_its_limit)
{
	int sv[2];
	nonblocking_pair(sv);
	char big[100000];
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (char)('a' + i % 26);
	ssize_t sent = write(sv[1], big, sizeof big);
	ck_assert_int_gt(sent, 50000);
	struct evbuffer *in = evbuffer_new();
	/* a small first step, then larger ones, never past the limit */
	ck_assert_int_eq(conn_sock_read(sv[0], in, 100, 50000), 50000);
	ck_assert_uint_eq(evbuffer_get_length(in), 50000);
	ck_assert_int_eq(conn_sock_read(sv[0], in, 100, 50000), -2); /* full: nothing read */
	ck_assert_int_eq(memcmp(evbuffer_pullup(in, -1), big, 50000), 0);
	evbuffer_free(in);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(sock_write_leaves_what_the_socket_cannot_take)
{
	int sv[2];
	nonblocking_pair(sv);
	int small = 4096;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
	struct evbuffer *out = evbuffer_new();
	static char chunk[65536];
	memset(chunk, 'z', sizeof chunk);
	for (int i = 0; i < 64; i++)
		evbuffer_add(out, chunk, sizeof chunk); /* 4 MiB: more than any socket buffer */
	ssize_t left = conn_sock_write(sv[0], out);
	ck_assert_int_gt(left, 0);
	ck_assert_int_lt(left, 64 * 65536);
	ck_assert_uint_eq((size_t)left, evbuffer_get_length(out));
	/* the peer gone: an error, not "would block" */
	close(sv[1]);
	ck_assert_int_eq(conn_sock_write(sv[0], out), -1);
	ck_assert(errno == EPIPE || errno == ECONNRESET);
	evbuffer_free(out);
	close(sv[0]);
}
END_TEST

START_TEST(sock_pool_lends_only_empty_buffers)
{
	struct conn_sock_pool p = {.n = 0};
	struct evbuffer *a = conn_sock_buf_get(&p);
	ck_assert_ptr_nonnull(a);
	evbuffer_add(a, "x", 1);
	conn_sock_buf_put(&p, &a);
	ck_assert_ptr_nonnull(a); /* still holds a byte: stays with its connection */
	ck_assert_uint_eq(p.n, 0);
	evbuffer_drain(a, 1);
	struct evbuffer *was = a;
	conn_sock_buf_put(&p, &a);
	ck_assert_ptr_null(a);
	ck_assert_uint_eq(p.n, 1);
	ck_assert_ptr_eq(conn_sock_buf_get(&p), was); /* reused */
	conn_sock_buf_put(&p, &was);
	conn_sock_buf_put(&p, &a); /* NULL: nothing */
	/* past the pool's size the extra ones are freed */
	struct evbuffer *many[CONN_SOCK_POOL_MAX + 8];
	for (size_t i = 0; i < CONN_SOCK_POOL_MAX + 8; i++)
		many[i] = conn_sock_buf_get(&p);
	for (size_t i = 0; i < CONN_SOCK_POOL_MAX + 8; i++)
		conn_sock_buf_put(&p, &many[i]);
	ck_assert_uint_eq(p.n, CONN_SOCK_POOL_MAX);
	conn_sock_pool_free(&p);
	ck_assert_uint_eq(p.n, 0);
}
END_TEST

/* ---- the client's address as text ---- */

/* client_origin_from_sockaddr formats IPv4 itself (inet_ntop costs ~1,700
 * instructions): the same text as inet_ntop for every digit count and
 * edge, and IPv6 through inet_ntop. */
START_TEST(origin_ipv4_text_is_inet_ntops)
{
	struct sockaddr_in in;
	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons(8443);
	static const unsigned edges[] = {0, 1, 9, 10, 99, 100, 109, 110, 199, 200, 249, 250, 255};
	enum { E = sizeof(edges) / sizeof(edges[0]) };
	uint64_t x = 0x2545F4914F6CDD1Dull;
	for (unsigned k = 0; k < E * E * E * E + 10000; k++) {
		unsigned char b[4];
		if (k < E * E * E * E) {
			b[0] = (unsigned char)edges[k % E], b[1] = (unsigned char)edges[k / E % E];
			b[2] = (unsigned char)edges[k / (E * E) % E], b[3] = (unsigned char)edges[k / (E * E * E)];
		} else {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			memcpy(b, &x, 4);
		}
		memcpy(&in.sin_addr, b, 4);
		struct client_origin o;
		client_origin_from_sockaddr(&o, (const struct sockaddr *)&in);
		char want[INET_ADDRSTRLEN];
		ck_assert_ptr_nonnull(inet_ntop(AF_INET, &in.sin_addr, want, sizeof(want)));
		ck_assert_str_eq(o.ip, want);
		ck_assert_uint_eq(o.port, 8443);
	}
	struct sockaddr_in6 in6;
	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	ck_assert_int_eq(inet_pton(AF_INET6, "::ffff:192.0.2.1", &in6.sin6_addr), 1);
	struct client_origin o;
	client_origin_from_sockaddr(&o, (const struct sockaddr *)&in6);
	ck_assert_str_eq(o.ip, "::ffff:192.0.2.1");
}
END_TEST

static Suite *conn_suite(void)
{
	Suite *s = suite_create("conn");
	TCase *tc = tcase_create("timer");
	tcase_add_test(tc, timers_expire_in_deadline_order);
	tcase_add_test(tc, timers_moved_and_cleared_do_not_fire_early);
	tcase_add_test(tc, timer_due_now_runs_after_the_current_callbacks);
	suite_add_tcase(s, tc);
	tc = tcase_create("sock");
	tcase_add_test(tc, sock_read_reports_data_empty_and_eof);
	tcase_add_test(tc, sock_read_stops_at_its_limit);
	tcase_add_test(tc, sock_write_leaves_what_the_socket_cannot_take);
	tcase_add_test(tc, sock_pool_lends_only_empty_buffers);
	tcase_add_test(tc, origin_ipv4_text_is_inet_ntops);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* as sluice does: a write to a gone peer is an error, not a signal */
	SRunner *sr = srunner_create(conn_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
