/* Unit tests for nghttp2's per-worker allocator (src/h2_mem.c): the
 * malloc/calloc/realloc/free contract through the nghttp2_mem table, reuse of
 * freed blocks, the bound on idle memory, and real nghttp2 sessions (a client
 * with the default allocator, a server on the pool) exchanging many streams. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "h2_mem.h"

static void *m_alloc(nghttp2_mem *t, size_t n)
{
	return t->malloc(n, t->mem_user_data);
}

static void m_free(nghttp2_mem *t, void *p)
{
	t->free(p, t->mem_user_data);
}

START_TEST(blocks_are_aligned_and_reused)
{
	struct h2_mem *m = h2_mem_new();
	ck_assert_ptr_nonnull(m);
	nghttp2_mem t;
	h2_mem_bind(m, &t);
	size_t sizes[] = {0, 1, 31, 32, 33, 200, 4095, 4096, 4097, 100000};
	void *p[sizeof sizes / sizeof sizes[0]];
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		p[i] = m_alloc(&t, sizes[i]);
		ck_assert_ptr_nonnull(p[i]);
		ck_assert_uint_eq((uintptr_t)p[i] % 16, 0);
		memset(p[i], (int)i, sizes[i]);
	}
	ck_assert_uint_eq(h2_mem_idle_bytes(m), 0);
	m_free(&t, p[4]); /* 33 bytes: the 64-byte class */
	ck_assert_uint_eq(h2_mem_idle_bytes(m), 64);
	ck_assert_ptr_eq(m_alloc(&t, 50), p[4]); /* same class: the same block again */
	ck_assert_uint_eq(h2_mem_idle_bytes(m), 0);
	m_free(&t, p[9]); /* large: back to malloc, not kept */
	ck_assert_uint_eq(h2_mem_idle_bytes(m), 0);
	m_free(&t, NULL);
	for (size_t i = 0; i < 9; i++)
		m_free(&t, p[i]);
	ck_assert_uint_gt(h2_mem_idle_bytes(m), 4096);
	h2_mem_free(m);
}
END_TEST

START_TEST(calloc_zeroes_a_reused_block_and_refuses_overflow)
{
	struct h2_mem *m = h2_mem_new();
	nghttp2_mem t;
	h2_mem_bind(m, &t);
	unsigned char *p = m_alloc(&t, 100);
	memset(p, 0xAA, 100);
	m_free(&t, p);
	unsigned char *q = t.calloc(10, 10, t.mem_user_data);
	ck_assert_ptr_eq(q, p);
	for (int i = 0; i < 100; i++)
		ck_assert_uint_eq(q[i], 0);
	ck_assert_ptr_null(t.calloc(SIZE_MAX / 2, 4, t.mem_user_data));
	m_free(&t, q);
	h2_mem_free(m);
}
END_TEST

START_TEST(realloc_keeps_the_contents)
{
	struct h2_mem *m = h2_mem_new();
	nghttp2_mem t;
	h2_mem_bind(m, &t);
	char *p = t.realloc(NULL, 20, t.mem_user_data);
	memcpy(p, "0123456789abcdefghi", 20);
	ck_assert_ptr_eq(t.realloc(p, 30, t.mem_user_data), p); /* fits its class */
	char *q = t.realloc(p, 1000, t.mem_user_data);
	ck_assert_str_eq(q, "0123456789abcdefghi");
	char *r = t.realloc(q, 10000, t.mem_user_data); /* to a large block */
	ck_assert_str_eq(r, "0123456789abcdefghi");
	ck_assert_ptr_eq(t.realloc(r, 100, t.mem_user_data), r); /* shrinking stays */
	ck_assert_ptr_null(t.realloc(r, 0, t.mem_user_data));   /* size 0 frees */
	h2_mem_free(m);
}
END_TEST

START_TEST(idle_memory_is_bounded)
{
	struct h2_mem *m = h2_mem_new();
	nghttp2_mem t;
	h2_mem_bind(m, &t);
	size_t n = H2_MEM_KEEP_BYTES / H2_MEM_SMALL_MAX + 50;
	void **v = calloc(n, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = m_alloc(&t, H2_MEM_SMALL_MAX);
	for (size_t i = 0; i < n; i++)
		m_free(&t, v[i]);
	ck_assert_uint_eq(h2_mem_idle_bytes(m), H2_MEM_KEEP_BYTES);
	free(v);
	h2_mem_free(m);
}
END_TEST

/* ---- real sessions ---- */

struct peer {
	nghttp2_session *ng;
	unsigned responses, closed;
};

static int srv_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
	(void)arg;
	if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		/* a 429-like answer with fields that change from stream to stream */
		char id[16];
		int n = snprintf(id, sizeof id, "%d", f->hd.stream_id);
		nghttp2_nv nv[] = {
		    {(uint8_t *)":status", (uint8_t *)"429", 7, 3, NGHTTP2_NV_FLAG_NONE},
		    {(uint8_t *)"retry-after", (uint8_t *)"1", 11, 1, NGHTTP2_NV_FLAG_NONE},
		    {(uint8_t *)"x-request-id", (uint8_t *)id, 12, (size_t)n, NGHTTP2_NV_FLAG_NONE},
		};
		ck_assert_int_eq(nghttp2_submit_response(ng, f->hd.stream_id, nv, 3, NULL), 0);
	}
	return 0;
}

static int cli_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
	(void)ng;
	struct peer *p = arg;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_RESPONSE)
		p->responses++;
	return 0;
}

static int cli_on_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
	(void)ng;
	(void)id;
	ck_assert_uint_eq(code, 0);
	((struct peer *)arg)->closed++;
	return 0;
}

/* Everything one side has to send, into the other. */
static void pump(nghttp2_session *from, nghttp2_session *to)
{
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(from, &data);
		ck_assert_int_ge(n, 0);
		if (n == 0)
			return;
		ck_assert_int_eq(nghttp2_session_mem_recv(to, data, (size_t)n), n);
	}
}

START_TEST(sessions_on_the_pool_serve_many_streams)
{
	struct h2_mem *m = h2_mem_new();
	nghttp2_mem t;
	h2_mem_bind(m, &t);
	nghttp2_session_callbacks *scb, *ccb;
	ck_assert_int_eq(nghttp2_session_callbacks_new(&scb), 0);
	ck_assert_int_eq(nghttp2_session_callbacks_new(&ccb), 0);
	nghttp2_session_callbacks_set_on_frame_recv_callback(scb, srv_on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_recv_callback(ccb, cli_on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(ccb, cli_on_close);
	struct peer srv = {0}, cli = {0};
	ck_assert_int_eq(nghttp2_session_server_new3(&srv.ng, scb, &srv, NULL, &t), 0);
	ck_assert_int_eq(nghttp2_session_client_new(&cli.ng, ccb, &cli), 0);
	ck_assert_int_eq(nghttp2_submit_settings(srv.ng, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	ck_assert_int_eq(nghttp2_submit_settings(cli.ng, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	size_t idle_after_first = 0;
	for (int round = 0; round < 10; round++) {
		for (int i = 0; i < 64; i++) {
			nghttp2_nv req[] = {
			    {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, NGHTTP2_NV_FLAG_NONE},
			    {(uint8_t *)":path", (uint8_t *)"/small", 5, 6, NGHTTP2_NV_FLAG_NONE},
			    {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, NGHTTP2_NV_FLAG_NONE},
			    {(uint8_t *)":authority", (uint8_t *)"a.test", 10, 6, NGHTTP2_NV_FLAG_NONE},
			};
			ck_assert_int_gt(nghttp2_submit_request(cli.ng, NULL, req, 4, NULL, NULL), 0);
		}
		pump(cli.ng, srv.ng);
		pump(srv.ng, cli.ng);
		pump(cli.ng, srv.ng);
		if (round == 0)
			idle_after_first = h2_mem_idle_bytes(m);
	}
	ck_assert_uint_eq(cli.responses, 640);
	ck_assert_uint_eq(cli.closed, 640);
	/* the streams' blocks came back and were taken again: idle memory does not grow per round */
	ck_assert_uint_gt(idle_after_first, 0);
	ck_assert_uint_le(h2_mem_idle_bytes(m), idle_after_first + 16 * 1024);
	nghttp2_session_del(srv.ng);
	nghttp2_session_del(cli.ng);
	nghttp2_session_callbacks_del(scb);
	nghttp2_session_callbacks_del(ccb);
	h2_mem_free(m); /* a block still out would be a leak under ASan */
}
END_TEST

static Suite *h2_mem_suite(void)
{
	Suite *s = suite_create("h2_mem");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, blocks_are_aligned_and_reused);
	tcase_add_test(tc, calloc_zeroes_a_reused_block_and_refuses_overflow);
	tcase_add_test(tc, realloc_keeps_the_contents);
	tcase_add_test(tc, idle_memory_is_bounded);
	tcase_add_test(tc, sessions_on_the_pool_serve_many_streams);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(h2_mem_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
