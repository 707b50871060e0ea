/* h1.h - a strict HTTP/1.1 message parser (RFC 9112) for requests and responses,
 * and a chunked transfer-coding decoder.
 *
 * Contract:
 * - Pure functions over caller-owned bytes: no allocation, no I/O, no globals.
 *   Parsed fields point into the caller's buffer and stay valid while it does.
 * - The head parsers are restartable: call again with the same bytes plus more
 *   when they answer H1_INCOMPLETE (they re-scan from the start).
 * - Anything ambiguous is an error, never guessed: the parser says which HTTP
 *   status the peer should get and why (a static string for logs).
 */
#ifndef SLUICE_H1_H
#define SLUICE_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "http.h"

#define H1_MAX_HEADERS 128

/* Largest Content-Length accepted (2^53 - 1): every length stays exact in a
 * double, for logs and scripts that read it. */
#define H1_MAX_CONTENT_LENGTH 9007199254740991ULL

enum {
	H1_ERROR = -1,      /* malformed: see status and why */
	H1_INCOMPLETE = -2, /* need more bytes (and the limits are not reached yet) */
};

/* Limits are checked against the bytes seen so far, so a peer cannot make the
 * caller buffer without end: once max_head bytes have arrived without the end
 * of the head, or the start line is known to be longer than max_request_line,
 * the answer is H1_ERROR, not H1_INCOMPLETE. */
struct h1_limits {
	size_t max_request_line; /* bytes in the request line, CRLF excluded (414 beyond) or status line (error) */
	size_t max_head;         /* bytes in the whole head incl. request line and blank line (431 beyond) */
	size_t max_headers;      /* number of header fields, <= H1_MAX_HEADERS (431 beyond; larger is clamped) */
};

enum h1_body {
	H1_BODY_NONE,
	H1_BODY_LENGTH,  /* content_length bytes follow (possibly 0) */
	H1_BODY_CHUNKED, /* chunked transfer coding */
	H1_BODY_CLOSE,   /* responses only: body ends when the upstream closes */
};

/* Per-header flag: the proxy must not forward this field (hop-by-hop:
 * Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade,
 * Trailer, HTTP2-Settings, Content-Length (the proxy re-frames) and any field
 * named in Connection, compared case-insensitively: that can be Host too, so
 * the proxy should build Host from authority rather than copy it). */
#define H1_HDR_HOP 0x01

struct h1_request {
	const char *method;
	size_t method_len;
	const char *target; /* as sent: origin-form, absolute-form, or "*" */
	size_t target_len;
	const char *path; /* path part of the target, without query; "*" for asterisk-form; a static "/" for an
	                     absolute-form target without a path (the only field not pointing into the buffer) */
	size_t path_len;
	const char *authority; /* host[:port] from absolute-form target, else from Host; NULL if none */
	size_t authority_len;
	int minor_version; /* 0 or 1 */
	struct http_header headers[H1_MAX_HEADERS];
	uint8_t header_flags[H1_MAX_HEADERS];
	size_t num_headers;
	enum h1_body body;
	uint64_t content_length; /* valid when body == H1_BODY_LENGTH */
	bool keep_alive;         /* client wants the connection kept after this exchange */
	bool expect_continue;    /* Expect: 100-continue */
	bool upgrade;            /* client asked for Upgrade (not supported: flagged only) */
};

struct h1_response {
	int minor_version;
	int status;
	const char *reason;
	size_t reason_len;
	struct http_header headers[H1_MAX_HEADERS];
	uint8_t header_flags[H1_MAX_HEADERS];
	size_t num_headers;
	enum h1_body body;
	uint64_t content_length;
	bool keep_alive; /* the upstream allows reuse of the connection after this response */
};

/* Parse a request head at buf[0..len).
 * Returns the head length (> 0, through the blank line), H1_INCOMPLETE, or H1_ERROR
 * with *status set to 400, 414, 417, 431, 501 or 505 and *why to a short static reason
 * (417: an Expect other than 100-continue; 501: CONNECT or a transfer coding other than chunked).
 * Up to 4 empty lines (CRLF) before the request line are skipped and counted in the head length. */
int h1_parse_request(const char *buf, size_t len, const struct h1_limits *lim,
                     struct h1_request *req, int *status, const char **why);

/* Parse a response head. request_was_head and the status decide whether a body
 * follows (HEAD, 1xx, 204, 304: none, whatever the framing fields say; they are
 * still validated, and CL with TE is an error for every status). Transfer-Encoding
 * other than a lone "chunked", or in an HTTP/1.0 response, is an error. No framing
 * means H1_BODY_CLOSE and keep_alive false. Same return convention; on H1_ERROR
 * *why says what was wrong (the proxy answers 502). */
int h1_parse_response(const char *buf, size_t len, const struct h1_limits *lim,
                      bool request_was_head, struct h1_response *res, const char **why);

/* Chunked decoder. Feed it bytes; each call handles at most one item:
 *   - a framing line (chunk-size line, CRLF after data): returns bytes consumed, *ev = H1_CHUNK_NONE
 *   - a run of chunk data: *ev = H1_CHUNK_DATA, the data is in[0..returned)
 *   - a trailer field line: *ev = H1_CHUNK_TRAILER, *line and *line_len the field without CRLF,
 *     returned count includes the CRLF
 *   - the final CRLF: *ev = H1_CHUNK_DONE
 * Lines are only consumed whole: with an incomplete line it returns 0 and *ev = H1_CHUNK_NEED_MORE;
 * the caller must then offer more contiguous bytes. Returns H1_ERROR on malformed input, on
 * a line longer than max_line, or trailers larger than max_trailers (c->why says which).
 * After DONE every call returns 0 with *ev = H1_CHUNK_DONE (bytes after the message are not
 * the decoder's); after an error every call returns H1_ERROR. line and line_len may be NULL.
 * max_line counts the chunk-size line without its CRLF; max_trailers counts the trailer field
 * lines with their CRLFs but not the final empty line. */
enum h1_chunk_event { H1_CHUNK_NEED_MORE, H1_CHUNK_NONE, H1_CHUNK_DATA, H1_CHUNK_TRAILER, H1_CHUNK_DONE };

struct h1_chunked {
	int state;
	uint64_t remaining;   /* data bytes left in the current chunk */
	size_t trailer_bytes; /* trailer bytes seen so far */
	size_t max_line;      /* chunk-size line limit (incl. extensions) */
	size_t max_trailers;  /* total trailer bytes limit */
	uint64_t total;       /* body bytes decoded so far */
	const char *why;      /* after H1_ERROR: a short static reason */
};

void h1_chunked_init(struct h1_chunked *c, size_t max_line, size_t max_trailers);
ssize_t h1_chunked_feed(struct h1_chunked *c, const char *in, size_t len, enum h1_chunk_event *ev,
                        const char **line, size_t *line_len);
bool h1_chunked_done(const struct h1_chunked *c);

/* Whether a field named name[0..n) (any case) may be forwarded from a trailer
 * section. False for the fields RFC 9110 6.5.1 says cannot be processed after
 * the content: message framing (Content-Length, Transfer-Encoding, Trailer),
 * hop-by-hop fields (Connection, Keep-Alive, Proxy-Connection, TE, Upgrade,
 * HTTP2-Settings), routing (Host), request modifiers (controls: Cache-Control,
 * Expect, Max-Forwards, Pragma, Range; conditionals: If-*), authentication
 * (Authorization, Proxy-Authorization, WWW-Authenticate, Proxy-Authenticate,
 * Authentication-Info, Proxy-Authentication-Info, Cookie, Set-Cookie),
 * response control data (Age, Date, Expires, Location, Retry-After, Vary,
 * Warning), how to process the content (Content-Encoding, Content-Type,
 * Content-Range), and the forwarding fields the proxy sets in the head
 * (Forwarded, Via, X-Forwarded-For/-Host/-Proto), which a trailer must not
 * contradict. The proxy drops such fields (and counts them); the rest pass. */
bool h1_trailer_field_allowed(const char *name, size_t n);

/* Writes the chunk-size line for a chunk of n bytes ("hex\r\n") to out,
 * which has room for H1_CHUNK_LINE_MAX bytes; returns its length. */
#define H1_CHUNK_LINE_MAX 18
size_t h1_chunk_size_line(char *out, uint64_t n);

/* True if s[0..n) is a valid token (RFC 9110 tchar+). */
bool h1_is_token(const char *s, size_t n);

#endif
