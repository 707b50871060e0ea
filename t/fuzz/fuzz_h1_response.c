/* fuzz_h1_response.c - h1_parse_response on arbitrary bytes, as the answer to
 * a GET and to a HEAD. Invariants: both readings agree on the head length and
 * the error, fields point into the head, the body rules hold (HEAD, 1xx, 204,
 * 304 have none; close-delimited never keeps the connection), and a shorter
 * view of the same bytes is incomplete or the same error.
 *
 * FUZZ_SOURCES: h1.c http.c
 * FUZZ_DICT: h1.dict
 */
#include <string.h>

#include "fuzz_common.h"
#include "h1.h"

static void check_accepted(const char *buf, int rc, const struct h1_limits *lim, bool head,
                           const struct h1_response *res)
{
	size_t len = (size_t)rc;
	FUZZ_REQUIRE(len <= lim->max_head);
	FUZZ_REQUIRE(res->status >= 100 && res->status <= 599);
	FUZZ_REQUIRE(res->minor_version == 0 || res->minor_version == 1);
	FUZZ_REQUIRE(res->reason_len == 0 || fuzz_inside(buf, len, res->reason, res->reason_len));
	FUZZ_REQUIRE(memchr(res->reason, '\r', res->reason_len) == NULL);
	FUZZ_REQUIRE(memchr(res->reason, '\n', res->reason_len) == NULL);
	FUZZ_REQUIRE(res->num_headers <= lim->max_headers);
	bool has_length = false, has_te = false;
	for (size_t i = 0; i < res->num_headers; i++) {
		const struct http_header *h = &res->headers[i];
		FUZZ_REQUIRE(fuzz_inside(buf, len, h->name, h->name_len));
		FUZZ_REQUIRE(h1_is_token(h->name, h->name_len));
		FUZZ_REQUIRE(h->value_len == 0 || fuzz_inside(buf, len, h->value, h->value_len));
		FUZZ_REQUIRE(fuzz_clean_value(h->value, h->value_len));
		has_length |= http_name_is(h, "content-length");
		has_te |= http_name_is(h, "transfer-encoding");
		if (http_name_is(h, "connection") || http_name_is(h, "content-length") ||
		    http_name_is(h, "transfer-encoding"))
			FUZZ_REQUIRE(res->header_flags[i] & H1_HDR_HOP);
	}
	FUZZ_REQUIRE(!(has_length && has_te));
	bool bodiless = head || res->status < 200 || res->status == 204 || res->status == 304;
	switch (res->body) {
	case H1_BODY_NONE:
		FUZZ_REQUIRE(bodiless);
		break;
	case H1_BODY_LENGTH:
		FUZZ_REQUIRE(!bodiless && has_length && res->content_length <= H1_MAX_CONTENT_LENGTH);
		break;
	case H1_BODY_CHUNKED:
		FUZZ_REQUIRE(!bodiless && has_te && res->minor_version == 1);
		break;
	case H1_BODY_CLOSE:
		FUZZ_REQUIRE(!bodiless && !has_length && !has_te && !res->keep_alive);
		break;
	}
}

static void fuzz_with_limits(const uint8_t *data, size_t size, const struct h1_limits *lim,
                             struct h1_response *res, struct h1_response *other)
{
	const char *buf = (const char *)data;
	const char *why = NULL, *why_head = NULL;
	int rc = h1_parse_response(buf, size, lim, false, res, &why);
	int rc_head = h1_parse_response(buf, size, lim, true, other, &why_head);
	FUZZ_REQUIRE(rc == rc_head);
	if (rc > 0) {
		FUZZ_REQUIRE((size_t)rc <= size);
		check_accepted(buf, rc, lim, false, res);
		check_accepted(buf, rc, lim, true, other);
		FUZZ_REQUIRE(other->body == H1_BODY_NONE && res->status == other->status);
	} else if (rc == H1_ERROR) {
		FUZZ_REQUIRE(why != NULL && why_head != NULL && strcmp(why, why_head) == 0);
	} else {
		FUZZ_REQUIRE(rc == H1_INCOMPLETE && size < lim->max_head);
	}

	size_t bound = rc > 0 ? (size_t)rc : size;
	for (size_t i = 0; i < 6; i++) {
		size_t cut = i == 0 ? (bound > 0 ? bound - 1 : 0) : fuzz_prefix(data, size, i, bound);
		const char *pwhy = NULL;
		int prc = h1_parse_response(buf, cut, lim, false, other, &pwhy);
		if (rc == H1_ERROR && prc == H1_ERROR) {
			FUZZ_REQUIRE(strcmp(pwhy, why) == 0);
			continue;
		}
		FUZZ_REQUIRE(prc == H1_INCOMPLETE);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct h1_limits roomy = {1024, 4096, 32};
	static const struct h1_limits tight = {48, 256, 6};
	struct h1_response *res = malloc(sizeof(*res));
	struct h1_response *other = malloc(sizeof(*other));
	FUZZ_REQUIRE(res != NULL && other != NULL);
	fuzz_with_limits(data, size, &roomy, res, other);
	fuzz_with_limits(data, size, &tight, res, other);
	free(res);
	free(other);
	return 0;
}
