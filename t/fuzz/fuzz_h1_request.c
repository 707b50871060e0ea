/* fuzz_h1_request.c - h1_parse_request on arbitrary bytes, with invariants:
 * fields point into the head, the head length stays within len and the
 * limits, every accepted head is restartable (all prefixes are INCOMPLETE,
 * the head alone parses to the same length), and an error never depends on
 * where the bytes were cut.
 *
 * FUZZ_SOURCES: h1.c http.c
 * FUZZ_DICT: h1.dict
 */
#include <string.h>

#include "fuzz_common.h"
#include "h1.h"

static const char *const hop_names[] = {"connection", "keep-alive",        "proxy-connection", "te",
                                        "upgrade",    "transfer-encoding", "trailer",          "content-length",
                                        "http2-settings"};

static void check_accepted(const char *buf, int rc, const struct h1_limits *lim, const struct h1_request *req)
{
	size_t head = (size_t)rc;
	FUZZ_REQUIRE(head <= lim->max_head);
	FUZZ_REQUIRE(fuzz_inside(buf, head, req->method, req->method_len));
	FUZZ_REQUIRE(h1_is_token(req->method, req->method_len));
	FUZZ_REQUIRE(req->target_len > 0 && fuzz_inside(buf, head, req->target, req->target_len));
	FUZZ_REQUIRE(req->target_len <= lim->max_request_line);
	FUZZ_REQUIRE(memchr(req->target, '#', req->target_len) == NULL);
	if (!fuzz_inside(buf, head, req->path, req->path_len))
		FUZZ_REQUIRE(req->path_len == 1 && req->path[0] == '/');
	FUZZ_REQUIRE(req->path_len > 0 && (req->path[0] == '/' || req->path[0] == '*'));
	FUZZ_REQUIRE(memchr(req->path, '?', req->path_len) == NULL);
	FUZZ_REQUIRE(req->minor_version == 0 || req->minor_version == 1);
	if (req->authority != NULL)
		FUZZ_REQUIRE(req->authority_len > 0 && fuzz_inside(buf, head, req->authority, req->authority_len));
	else
		FUZZ_REQUIRE(req->minor_version == 0);
	FUZZ_REQUIRE(req->num_headers <= lim->max_headers && req->num_headers <= H1_MAX_HEADERS);

	int host = -1;
	bool has_length = false, has_te = false;
	for (size_t i = 0; i < req->num_headers; i++) {
		const struct http_header *h = &req->headers[i];
		FUZZ_REQUIRE(fuzz_inside(buf, head, h->name, h->name_len));
		FUZZ_REQUIRE(h1_is_token(h->name, h->name_len));
		FUZZ_REQUIRE(h->value_len == 0 || fuzz_inside(buf, head, h->value, h->value_len));
		FUZZ_REQUIRE(fuzz_clean_value(h->value, h->value_len));
		FUZZ_REQUIRE((req->header_flags[i] & ~H1_HDR_HOP) == 0);
		for (size_t k = 0; k < sizeof(hop_names) / sizeof(hop_names[0]); k++)
			if (http_name_is(h, hop_names[k]))
				FUZZ_REQUIRE(req->header_flags[i] & H1_HDR_HOP);
		if (http_name_is(h, "host")) {
			FUZZ_REQUIRE(host < 0);
			host = (int)i;
		}
		has_length |= http_name_is(h, "content-length");
		has_te |= http_name_is(h, "transfer-encoding");
	}
	if (req->minor_version == 1)
		FUZZ_REQUIRE(host >= 0);
	FUZZ_REQUIRE(!(has_length && has_te));
	switch (req->body) {
	case H1_BODY_NONE:
		FUZZ_REQUIRE(!has_length && !has_te);
		break;
	case H1_BODY_LENGTH:
		FUZZ_REQUIRE(has_length && req->content_length <= H1_MAX_CONTENT_LENGTH);
		break;
	case H1_BODY_CHUNKED:
		FUZZ_REQUIRE(has_te && req->minor_version == 1);
		break;
	default:
		FUZZ_REQUIRE(!"requests are never close-delimited");
	}
	if (req->expect_continue)
		FUZZ_REQUIRE(req->minor_version == 1);
}

static void fuzz_with_limits(const uint8_t *data, size_t size, const struct h1_limits *lim,
                             struct h1_request *req, struct h1_request *again)
{
	const char *buf = (const char *)data;
	int status = 0;
	const char *why = NULL;
	int rc = h1_parse_request(buf, size, lim, req, &status, &why);

	if (rc > 0) {
		FUZZ_REQUIRE((size_t)rc <= size);
		check_accepted(buf, rc, lim, req);
		/* what follows the head does not change it */
		int status2 = 0;
		const char *why2 = NULL;
		FUZZ_REQUIRE(h1_parse_request(buf, (size_t)rc, lim, again, &status2, &why2) == rc);
		FUZZ_REQUIRE(again->num_headers == req->num_headers && again->body == req->body &&
		             again->content_length == req->content_length && again->keep_alive == req->keep_alive);
	} else if (rc == H1_ERROR) {
		FUZZ_REQUIRE(why != NULL && why[0] != '\0');
		FUZZ_REQUIRE(status == 400 || status == 414 || status == 417 || status == 431 || status == 501 ||
		             status == 505);
	} else {
		FUZZ_REQUIRE(rc == H1_INCOMPLETE);
		FUZZ_REQUIRE(size < lim->max_head);
	}

	/* Shorter views of the same bytes: a complete head's prefixes are
	 * incomplete, and an error found in a prefix is the error of the whole. */
	size_t bound = rc > 0 ? (size_t)rc : size;
	for (size_t i = 0; i < 6; i++) {
		size_t cut = i == 0 ? (bound > 0 ? bound - 1 : 0) : fuzz_prefix(data, size, i, bound);
		int pstatus = 0;
		const char *pwhy = NULL;
		int prc = h1_parse_request(buf, cut, lim, again, &pstatus, &pwhy);
		if (rc == H1_ERROR && prc == H1_ERROR) {
			FUZZ_REQUIRE(pstatus == status && strcmp(pwhy, why) == 0);
			continue;
		}
		FUZZ_REQUIRE(prc == H1_INCOMPLETE);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct h1_limits roomy = {1024, 4096, 32};
	static const struct h1_limits tight = {64, 256, 6};
	/* the structs are large; heap copies let ASan see overruns past them */
	struct h1_request *req = malloc(sizeof(*req));
	struct h1_request *again = malloc(sizeof(*again));
	FUZZ_REQUIRE(req != NULL && again != NULL);
	fuzz_with_limits(data, size, &roomy, req, again);
	fuzz_with_limits(data, size, &tight, req, again);
	free(req);
	free(again);
	return 0;
}
