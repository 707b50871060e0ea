/* h1.c - strict HTTP/1.1 head parser and chunked decoder (see h1.h).
 *
 * The parser walks the bytes once per call with table lookups; semantic
 * checks (framing, Host, Connection) run only once a head is complete, over
 * the parsed fields rather than the bytes, so an incomplete head costs one
 * syntactic scan. Every limit is enforced by narrowing the view the scanners
 * may look at: an INCOMPLETE answer from a narrowed view means the limit is
 * already exceeded. */
#include "h1.h"

#include <limits.h>
#include <string.h>

/* RFC 9112 2.2 asks servers to tolerate at least one empty line before a
 * request line; a client pipelining after a body with a stray CRLF sends one
 * or two. More than this is not robustness any more, it is noise. */
#define LEADING_EMPTY_LINES_MAX 4

enum char_class {
	C_TCHAR = 0x01,   /* RFC 9110 tchar */
	C_FIELD = 0x02,   /* inside a field value or reason phrase: SP, HTAB, VCHAR, obs-text */
	C_TARGET = 0x04,  /* request-target: VCHAR except '#', plus obs-text */
	C_REGNAME = 0x08, /* RFC 3986 unreserved and sub-delims ('%' is handled apart) */
	C_QDTEXT = 0x10,  /* quoted-string text other than '"' and '\' */
	C_HEX = 0x20,
};

#define T C_TCHAR
#define V C_FIELD
#define U C_TARGET
#define R C_REGNAME
#define Q C_QDTEXT
#define H C_HEX
static const uint8_t char_class[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
	0, V|Q, 0, 0, 0, 0, 0, 0, /* 0x08 */
	0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
	0, 0, 0, 0, 0, 0, 0, 0, /* 0x18 */
	V|Q, T|V|U|R|Q, V|U, T|V|Q, T|V|U|R|Q, T|V|U|Q, T|V|U|R|Q, T|V|U|R|Q, /* 0x20 */
	V|U|R|Q, V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, V|U|Q, /* 0x28 */
	T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, /* 0x30 */
	T|V|U|R|Q|H, T|V|U|R|Q|H, V|U|Q, V|U|R|Q, V|U|Q, V|U|R|Q, V|U|Q, V|U|Q, /* 0x38 */
	V|U|Q, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q, /* 0x40 */
	T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, /* 0x48 */
	T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, /* 0x50 */
	T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, V|U|Q, V|U, V|U|Q, T|V|U|Q, T|V|U|R|Q, /* 0x58 */
	T|V|U|Q, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q|H, T|V|U|R|Q, /* 0x60 */
	T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, /* 0x68 */
	T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, /* 0x70 */
	T|V|U|R|Q, T|V|U|R|Q, T|V|U|R|Q, V|U|Q, T|V|U|Q, V|U|Q, T|V|U|R|Q, 0, /* 0x78 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0x80 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0x88 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0x90 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0x98 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xa0 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xa8 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xb0 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xb8 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xc0 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xc8 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xd0 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xd8 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xe0 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xe8 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xf0 */
	V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, V|U|Q, /* 0xf8 */
};
#undef T
#undef V
#undef U
#undef R
#undef Q
#undef H

static inline bool has_class(char c, uint8_t cls)
{
	return (char_class[(unsigned char)c] & cls) != 0;
}

static inline bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static inline unsigned hex_value(char c)
{
	unsigned u = (unsigned char)c;
	return u <= '9' ? u - '0' : (u | 0x20) - 'a' + 10;
}

static inline unsigned char ascii_lower(char c)
{
	unsigned char u = (unsigned char)c;
	return (u >= 'A' && u <= 'Z') ? (unsigned char)(u + ('a' - 'A')) : u;
}

/* s[0..n) equals the lower-case literal, ignoring ASCII case in s. */
static bool lower_eq(const char *s, const char *lower, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ascii_lower(s[i]) != (unsigned char)lower[i])
			return false;
	return true;
}

static bool case_eq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ascii_lower(a[i]) != ascii_lower(b[i]))
			return false;
	return true;
}

/* First position at or after p where s[] leaves the class (end if none).
 * Unrolled because field values and targets are most of a head's bytes. */
static size_t scan_class(const char *s, size_t p, size_t end, uint8_t cls)
{
	while (end - p >= 4) {
		if (!has_class(s[p], cls))
			return p;
		if (!has_class(s[p + 1], cls))
			return p + 1;
		if (!has_class(s[p + 2], cls))
			return p + 2;
		if (!has_class(s[p + 3], cls))
			return p + 3;
		p += 4;
	}
	while (p < end && has_class(s[p], cls))
		p++;
	return p;
}

/* Word-at-a-time tests over eight bytes (any byte order): a non-zero result
 * means at least one byte is below n (n <= 128), above n (n <= 127), or zero. */
#define BYTES_ONES 0x0101010101010101ULL
#define BYTES_HIGHS 0x8080808080808080ULL

static inline uint64_t any_byte_below(uint64_t x, unsigned n)
{
	return (x - BYTES_ONES * n) & ~x & BYTES_HIGHS;
}

static inline uint64_t any_byte_above(uint64_t x, unsigned n)
{
	return ((x + BYTES_ONES * (127 - n)) | x) & BYTES_HIGHS;
}

static inline uint64_t any_byte_zero(uint64_t x)
{
	return (x - BYTES_ONES) & ~x & BYTES_HIGHS;
}

static inline uint64_t load8(const char *s)
{
	uint64_t x;
	memcpy(&x, s, sizeof(x));
	return x;
}

/* Field values are mostly printable ASCII: eight such bytes are accepted with
 * one test, and only a block holding anything else goes through the table. */
static size_t scan_field_value(const char *s, size_t p, size_t end)
{
	while (end - p >= 8) {
		uint64_t x = load8(s + p);
		if ((any_byte_below(x, 0x20) | any_byte_above(x, 0x7e)) != 0) {
			size_t stop = scan_class(s, p, p + 8, C_FIELD);
			if (stop < p + 8)
				return stop;
		}
		p += 8;
	}
	return scan_class(s, p, end, C_FIELD);
}

/* The same for request targets: VCHAR other than '#'. */
static size_t scan_target(const char *s, size_t p, size_t end)
{
	while (end - p >= 8) {
		uint64_t x = load8(s + p);
		if ((any_byte_below(x, 0x21) | any_byte_above(x, 0x7e) | any_byte_zero(x ^ (BYTES_ONES * '#'))) != 0) {
			size_t stop = scan_class(s, p, p + 8, C_TARGET);
			if (stop < p + 8)
				return stop;
		}
		p += 8;
	}
	return scan_class(s, p, end, C_TARGET);
}

static size_t skip_ows(const char *s, size_t p, size_t end)
{
	while (p < end && is_ows(s[p]))
		p++;
	return p;
}

bool h1_is_token(const char *s, size_t n)
{
	return n > 0 && scan_class(s, 0, n, C_TCHAR) == n;
}

/* Lower-case names, by the RFC 9110 6.5.1 category h1.h lists them in. */
static const char *const trailer_forbidden[] = {
    "content-length", "transfer-encoding", "trailer",                                  /* framing */
    "connection", "keep-alive", "proxy-connection", "te", "upgrade", "http2-settings", /* hop-by-hop */
    "host",                                                                            /* routing */
    "cache-control", "expect", "max-forwards", "pragma", "range",                      /* controls */
    "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range", /* conditionals */
    "authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate",  /* authentication */
    "authentication-info", "proxy-authentication-info", "cookie", "set-cookie",
    "age", "date", "expires", "location", "retry-after", "vary", "warning", /* response control data */
    "content-encoding", "content-type", "content-range",                   /* content processing */
    "forwarded", "via", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", /* set by the proxy */
};

bool h1_trailer_field_allowed(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof trailer_forbidden / sizeof trailer_forbidden[0]; i++)
		if (strlen(trailer_forbidden[i]) == n && lower_eq(name, trailer_forbidden[i], n))
			return false;
	return true;
}

struct parse_error {
	int status;
	const char *why;
};

static int fail(struct parse_error *e, int status, const char *why)
{
	e->status = status;
	e->why = why;
	return H1_ERROR;
}

/* ---- shared grammar pieces ---- */

/* quoted-string starting at the '"' in s[p]. Returns the position after the
 * closing quote, H1_INCOMPLETE when end comes first, or H1_ERROR. */
static ssize_t scan_quoted_string(const char *s, size_t p, size_t end)
{
	for (p++;;) {
		if (p == end)
			return H1_INCOMPLETE;
		char c = s[p];
		if (c == '"')
			return (ssize_t)(p + 1);
		if (c == '\\') {
			if (p + 1 == end)
				return H1_INCOMPLETE;
			if (!has_class(s[p + 1], C_FIELD))
				return H1_ERROR;
			p += 2;
		} else if (has_class(c, C_QDTEXT)) {
			p++;
		} else {
			return H1_ERROR;
		}
	}
}

/* Parameters after a transfer coding or a chunk size:
 *   *( OWS ";" OWS name [ OWS "=" OWS ( token / quoted-string ) ] )
 * (BWS is OWS to a recipient). Returns the position after the last whole
 * parameter, before any whitespace that is not followed by ';'. With partial
 * set, s[end] may be followed by more bytes, so reaching end where the grammar
 * could go on is H1_INCOMPLETE rather than an answer. */
static ssize_t scan_parameters(const char *s, size_t p, size_t end, bool value_required, bool partial)
{
	for (;;) {
		size_t q = skip_ows(s, p, end);
		if (q == end)
			return partial ? H1_INCOMPLETE : (ssize_t)p;
		if (s[q] != ';')
			return (ssize_t)p;
		size_t name_start = skip_ows(s, q + 1, end);
		size_t name_end = scan_class(s, name_start, end, C_TCHAR);
		if (name_end == name_start)
			return (name_end == end && partial) ? H1_INCOMPLETE : H1_ERROR;
		q = skip_ows(s, name_end, end);
		if (q == end) {
			if (partial)
				return H1_INCOMPLETE;
			return value_required ? H1_ERROR : (ssize_t)name_end;
		}
		if (s[q] != '=') {
			if (value_required)
				return H1_ERROR;
			p = name_end;
			continue;
		}
		q = skip_ows(s, q + 1, end);
		if (q == end)
			return partial ? H1_INCOMPLETE : H1_ERROR;
		if (s[q] == '"') {
			ssize_t r = scan_quoted_string(s, q, end);
			if (r == H1_INCOMPLETE && !partial)
				return H1_ERROR;
			if (r < 0)
				return r;
			p = (size_t)r;
		} else {
			size_t value_end = scan_class(s, q, end, C_TCHAR);
			if (value_end == q)
				return H1_ERROR;
			if (value_end == end && partial)
				return H1_INCOMPLETE;
			p = value_end;
		}
	}
}

/* One field line at s[p..end): name ":" OWS value OWS CRLF. The caller has
 * checked that s[p] exists and is not CR or LF. Returns the position after the
 * CRLF, H1_INCOMPLETE, or H1_ERROR with *why. */
static ssize_t parse_field_line(const char *s, size_t p, size_t end, struct http_header *h, const char **why)
{
	size_t name_end = scan_class(s, p, end, C_TCHAR);
	if (name_end == end)
		return H1_INCOMPLETE;
	if (s[name_end] != ':') {
		if (name_end == p && is_ows(s[p]))
			*why = "obs-fold or whitespace before a field name";
		else if (name_end > p && is_ows(s[name_end]))
			*why = "whitespace between field name and colon";
		else
			*why = "invalid character in field name";
		return H1_ERROR;
	}
	if (name_end == p) {
		*why = "empty field name";
		return H1_ERROR;
	}
	size_t value = skip_ows(s, name_end + 1, end);
	size_t value_end = scan_field_value(s, value, end);
	if (value_end == end)
		return H1_INCOMPLETE;
	if (s[value_end] != '\r') {
		*why = s[value_end] == '\n' ? "bare LF in field line" : "invalid character in field value";
		return H1_ERROR;
	}
	if (value_end + 1 == end)
		return H1_INCOMPLETE;
	if (s[value_end + 1] != '\n') {
		*why = "bare CR in field line";
		return H1_ERROR;
	}
	size_t trimmed = value_end;
	while (trimmed > value && is_ows(s[trimmed - 1]))
		trimmed--;
	h->name = s + p;
	h->name_len = name_end - p;
	h->value = s + value;
	h->value_len = trimmed - value;
	return (ssize_t)(value_end + 2);
}

/* Field lines from s[p] through the empty line. Returns the position after
 * the empty line, H1_INCOMPLETE, or H1_ERROR. */
static ssize_t parse_fields(const char *s, size_t p, size_t end, size_t max_fields, struct http_header *hs,
                            uint8_t *flags, size_t *count, struct parse_error *e)
{
	size_t n = 0;
	for (;;) {
		*count = n;
		if (p == end)
			return H1_INCOMPLETE;
		if (s[p] == '\r') {
			if (p + 1 == end)
				return H1_INCOMPLETE;
			if (s[p + 1] != '\n')
				return fail(e, 400, "bare CR in header section");
			return (ssize_t)(p + 2);
		}
		if (s[p] == '\n')
			return fail(e, 400, "bare LF in header section");
		if (n == max_fields)
			return fail(e, 431, "too many header fields");
		const char *why = NULL;
		ssize_t r = parse_field_line(s, p, end, &hs[n], &why);
		if (r == H1_INCOMPLETE)
			return r;
		if (r < 0)
			return fail(e, 400, why);
		flags[n] = 0;
		n++;
		p = (size_t)r;
	}
}

/* "HTTP/1.0" or "HTTP/1.1" at s[0..8): the minor version; another
 * well-formed "HTTP/x.y": VERSION_UNSUPPORTED; anything else VERSION_INVALID. */
enum { VERSION_INVALID = -1, VERSION_UNSUPPORTED = -2 };

static int parse_version(const char *s)
{
	if (memcmp(s, "HTTP/", 5) != 0 || s[6] != '.' || s[5] < '0' || s[5] > '9' || s[7] < '0' || s[7] > '9')
		return VERSION_INVALID;
	if (s[5] == '1' && (s[7] == '0' || s[7] == '1'))
		return s[7] - '0';
	return VERSION_UNSUPPORTED;
}

/* ---- authority (Host and absolute-form) ---- */

static bool valid_ipv4(const char *s, size_t n)
{
	size_t p = 0;
	for (int octet = 0; octet < 4; octet++) {
		if (octet > 0) {
			if (p == n || s[p] != '.')
				return false;
			p++;
		}
		size_t start = p;
		unsigned value = 0;
		while (p < n && p - start < 3 && s[p] >= '0' && s[p] <= '9')
			value = value * 10 + (unsigned)(s[p++] - '0');
		/* dec-octet has no leading zeros: "01" could be read as octal by someone downstream */
		if (p == start || value > 255 || (p - start > 1 && s[start] == '0'))
			return false;
	}
	return p == n;
}

/* RFC 3986 IPv6address: eight 16-bit groups, or fewer with one "::", the last
 * two optionally written as an IPv4 address. */
static bool valid_ipv6(const char *s, size_t n)
{
	size_t p = 0;
	int groups = 0;
	bool compressed = false;
	if (n >= 2 && s[0] == ':' && s[1] == ':') {
		compressed = true;
		p = 2;
		if (p == n)
			return true;
	}
	for (;;) {
		size_t start = p;
		while (p < n && p - start < 5 && has_class(s[p], C_HEX))
			p++;
		if (p == start)
			return false;
		if (p < n && s[p] == '.') {
			if (!valid_ipv4(s + start, n - start))
				return false;
			groups += 2;
			break;
		}
		if (p - start > 4)
			return false;
		groups++;
		if (p == n)
			break;
		if (s[p] != ':' || groups == 8)
			return false;
		p++;
		if (p < n && s[p] == ':') {
			if (compressed)
				return false;
			compressed = true;
			p++;
			if (p == n)
				break;
		} else if (p == n) {
			return false;
		}
	}
	return compressed ? groups <= 7 : groups == 8;
}

/* uri-host [ ":" port ] as in Host (RFC 9110 7.2): a non-empty reg-name (which
 * covers IPv4) or a bracketed IPv6 address; the port, when its colon is
 * present, is 1 to 5 digits up to 65535. Userinfo is rejected by omission. */
static bool valid_authority(const char *s, size_t n)
{
	size_t p;
	if (n > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (close == NULL || !valid_ipv6(s + 1, (size_t)(close - s) - 1))
			return false;
		p = (size_t)(close - s) + 1;
	} else {
		p = 0;
		while (p < n) {
			if (has_class(s[p], C_REGNAME)) {
				p++;
			} else if (s[p] == '%' && n - p >= 3 && has_class(s[p + 1], C_HEX) && has_class(s[p + 2], C_HEX)) {
				p += 3;
			} else {
				break;
			}
		}
		if (p == 0)
			return false;
	}
	if (p == n)
		return true;
	if (s[p] != ':')
		return false;
	size_t port = ++p;
	unsigned value = 0;
	while (p < n && p - port < 5 && s[p] >= '0' && s[p] <= '9')
		value = value * 10 + (unsigned)(s[p++] - '0');
	return p == n && p > port && value <= 65535;
}

/* ---- request line ---- */

/* The request line at s[p..end). Returns the position after its CRLF,
 * H1_INCOMPLETE, or H1_ERROR. */
static ssize_t parse_request_line(const char *s, size_t p, size_t end, struct h1_request *req, struct parse_error *e)
{
	size_t method_end = scan_class(s, p, end, C_TCHAR);
	if (method_end == end)
		return H1_INCOMPLETE;
	if (s[method_end] != ' ' || method_end == p)
		return fail(e, 400, method_end == p ? "missing method" : "invalid character in method");
	size_t target = method_end + 1;
	size_t target_end = scan_target(s, target, end);
	if (target_end == end)
		return H1_INCOMPLETE;
	if (s[target_end] != ' ') {
		if (s[target_end] == '#')
			return fail(e, 400, "fragment in request target");
		return fail(e, 400, "invalid character in request target");
	}
	if (target_end == target)
		return fail(e, 400, "empty request target");
	size_t version = target_end + 1;
	if (end - version < 8)
		return H1_INCOMPLETE;
	int minor = parse_version(s + version);
	if (minor == VERSION_UNSUPPORTED)
		return fail(e, 505, "unsupported HTTP version");
	if (minor < 0)
		return fail(e, 400, "invalid HTTP version");
	size_t cr = version + 8;
	if (cr == end)
		return H1_INCOMPLETE;
	if (s[cr] != '\r')
		return fail(e, 400, s[cr] == '\n' ? "bare LF after request line" : "junk after HTTP version");
	if (cr + 1 == end)
		return H1_INCOMPLETE;
	if (s[cr + 1] != '\n')
		return fail(e, 400, "bare CR after request line");
	req->method = s + p;
	req->method_len = method_end - p;
	req->target = s + target;
	req->target_len = target_end - target;
	req->minor_version = minor;
	return (ssize_t)(cr + 2);
}

static size_t path_length(const char *path, size_t n)
{
	const char *query = memchr(path, '?', n);
	return query ? (size_t)(query - path) : n;
}

/* Classifies the target and sets path; for absolute-form also the authority,
 * which then wins over Host (RFC 9112 3.2.2). */
static int analyze_target(struct h1_request *req, struct parse_error *e)
{
	const char *t = req->target;
	size_t n = req->target_len;
	if (req->method_len == 7 && memcmp(req->method, "CONNECT", 7) == 0)
		return fail(e, 501, "CONNECT not supported");
	if (t[0] == '/') {
		req->path = t;
		req->path_len = path_length(t, n);
		return 0;
	}
	if (n == 1 && t[0] == '*') {
		if (req->method_len != 7 || memcmp(req->method, "OPTIONS", 7) != 0)
			return fail(e, 400, "asterisk-form target on a method other than OPTIONS");
		req->path = t;
		req->path_len = 1;
		return 0;
	}
	size_t authority;
	if (n >= 7 && lower_eq(t, "http://", 7))
		authority = 7;
	else if (n >= 8 && lower_eq(t, "https://", 8))
		authority = 8;
	else
		return fail(e, 400, "request target is neither origin-form nor an http(s) absolute-form");
	size_t authority_end = authority;
	while (authority_end < n && t[authority_end] != '/' && t[authority_end] != '?')
		authority_end++;
	if (memchr(t + authority, '@', authority_end - authority) != NULL)
		return fail(e, 400, "userinfo in request target");
	if (!valid_authority(t + authority, authority_end - authority))
		return fail(e, 400, "invalid authority in request target");
	req->authority = t + authority;
	req->authority_len = authority_end - authority;
	if (authority_end < n && t[authority_end] == '/') {
		req->path = t + authority_end;
		req->path_len = path_length(req->path, n - authority_end);
	} else {
		req->path = "/";
		req->path_len = 1;
	}
	return 0;
}

/* ---- semantics of the header section ---- */

enum field_kind {
	F_OTHER,
	F_HOP, /* hop-by-hop with no further meaning to the parser */
	F_HOST,
	F_CONTENT_LENGTH,
	F_TRANSFER_ENCODING,
	F_CONNECTION,
	F_EXPECT,
	F_UPGRADE,
};

static enum field_kind classify_field(const struct http_header *h)
{
	const char *n = h->name;
	switch (h->name_len) {
	case 2:
		return lower_eq(n, "te", 2) ? F_HOP : F_OTHER;
	case 4:
		return lower_eq(n, "host", 4) ? F_HOST : F_OTHER;
	case 6:
		return lower_eq(n, "expect", 6) ? F_EXPECT : F_OTHER;
	case 7:
		if (lower_eq(n, "upgrade", 7))
			return F_UPGRADE;
		return lower_eq(n, "trailer", 7) ? F_HOP : F_OTHER;
	case 10:
		if (lower_eq(n, "connection", 10))
			return F_CONNECTION;
		return lower_eq(n, "keep-alive", 10) ? F_HOP : F_OTHER;
	case 14:
		if (lower_eq(n, "content-length", 14))
			return F_CONTENT_LENGTH;
		return lower_eq(n, "http2-settings", 14) ? F_HOP : F_OTHER;
	case 16:
		return lower_eq(n, "proxy-connection", 16) ? F_HOP : F_OTHER;
	case 17:
		return lower_eq(n, "transfer-encoding", 17) ? F_TRANSFER_ENCODING : F_OTHER;
	default:
		return F_OTHER;
	}
}

/* Next element of a comma-separated token list (RFC 9110 5.6.1), skipping the
 * empty elements a recipient must tolerate. Returns 1 with the token, 0 at the
 * end, -1 when an element is not a token. */
static int next_list_token(const char *v, size_t n, size_t *pos, const char **tok, size_t *tok_len)
{
	size_t p = *pos;
	while (p < n && (is_ows(v[p]) || v[p] == ','))
		p++;
	if (p == n) {
		*pos = p;
		return 0;
	}
	size_t start = p;
	p = scan_class(v, p, n, C_TCHAR);
	if (p == start)
		return -1;
	size_t token_end = p;
	p = skip_ows(v, p, n);
	if (p < n && v[p] != ',')
		return -1;
	*tok = v + start;
	*tok_len = token_end - start;
	*pos = p;
	return 1;
}

enum cl_result { CL_OK, CL_INVALID, CL_CONFLICT };

/* Content-Length = 1*DIGIT; a list of identical values ("5, 5") or repeated
 * fields with one value are one length (RFC 9112 6.3); the cap keeps every
 * length exact in a double, for whoever logs or scripts it. */
static enum cl_result merge_content_length(const char *v, size_t n, bool *have, uint64_t *length)
{
	size_t p = 0;
	for (;;) {
		size_t start = p;
		uint64_t value = 0;
		while (p < n && v[p] >= '0' && v[p] <= '9') {
			value = value * 10 + (uint64_t)(v[p] - '0');
			if (value > H1_MAX_CONTENT_LENGTH)
				return CL_INVALID;
			p++;
		}
		if (p == start)
			return CL_INVALID;
		if (*have && *length != value)
			return CL_CONFLICT;
		*have = true;
		*length = value;
		if (p == n)
			return CL_OK;
		p = skip_ows(v, p, n);
		if (p == n || v[p] != ',')
			return CL_INVALID;
		p = skip_ows(v, p + 1, n);
	}
}

enum te_result { TE_CHUNKED, TE_UNKNOWN_CODING, TE_MALFORMED };

/* Only a lone "chunked" frames a message here. A well-formed list naming
 * other codings is merely unsupported; anything that could be read two ways
 * (chunked twice, chunked not last, parameters on chunked, bad syntax) is
 * malformed. */
static enum te_result classify_transfer_encoding(const char *v, size_t n)
{
	bool chunked = false;
	bool other = false;
	size_t p = 0;
	for (;;) {
		size_t start = p;
		p = scan_class(v, p, n, C_TCHAR);
		if (p == start)
			return TE_MALFORMED;
		bool is_chunked = p - start == 7 && lower_eq(v + start, "chunked", 7);
		if (chunked)
			return TE_MALFORMED;
		if (is_chunked)
			chunked = true;
		else
			other = true;
		ssize_t r = scan_parameters(v, p, n, true, false);
		if (r < 0 || (is_chunked && (size_t)r != p))
			return TE_MALFORMED;
		p = skip_ows(v, (size_t)r, n);
		if (p == n)
			break;
		if (v[p] != ',')
			return TE_MALFORMED;
		p = skip_ows(v, p + 1, n);
	}
	return other ? TE_UNKNOWN_CODING : TE_CHUNKED;
}

struct head_facts {
	bool have_length;
	uint64_t content_length;
	int te_index; /* the Transfer-Encoding field, or -1 */
	int host_index;
	bool connection_close;
	bool connection_keep_alive;
	bool has_connection;
	bool expect_continue;
	bool expect_other;
	bool upgrade;
};

/* One pass over the fields: hop-by-hop flags for the fixed names, framing and
 * connection facts. Errors here are the same for requests and responses. */
static int collect_facts(const struct http_header *hs, uint8_t *flags, size_t n, struct head_facts *f,
                         struct parse_error *e)
{
	memset(f, 0, sizeof(*f));
	f->te_index = -1;
	f->host_index = -1;
	for (size_t i = 0; i < n; i++) {
		const struct http_header *h = &hs[i];
		switch (classify_field(h)) {
		case F_OTHER:
			break;
		case F_HOP:
			flags[i] |= H1_HDR_HOP;
			break;
		case F_HOST:
			if (f->host_index >= 0)
				return fail(e, 400, "duplicate Host");
			f->host_index = (int)i;
			break;
		case F_CONTENT_LENGTH:
			flags[i] |= H1_HDR_HOP;
			switch (merge_content_length(h->value, h->value_len, &f->have_length, &f->content_length)) {
			case CL_OK:
				break;
			case CL_INVALID:
				return fail(e, 400, "invalid Content-Length");
			case CL_CONFLICT:
				return fail(e, 400, "conflicting Content-Length values");
			}
			break;
		case F_TRANSFER_ENCODING:
			flags[i] |= H1_HDR_HOP;
			if (f->te_index >= 0)
				return fail(e, 400, "more than one Transfer-Encoding field");
			f->te_index = (int)i;
			break;
		case F_CONNECTION: {
			flags[i] |= H1_HDR_HOP;
			f->has_connection = true;
			size_t pos = 0;
			const char *tok;
			size_t tok_len;
			int r;
			while ((r = next_list_token(h->value, h->value_len, &pos, &tok, &tok_len)) > 0) {
				if (tok_len == 5 && lower_eq(tok, "close", 5))
					f->connection_close = true;
				else if (tok_len == 10 && lower_eq(tok, "keep-alive", 10))
					f->connection_keep_alive = true;
			}
			if (r < 0)
				return fail(e, 400, "invalid Connection field");
			break;
		}
		case F_EXPECT:
			if (h->value_len == 12 && lower_eq(h->value, "100-continue", 12))
				f->expect_continue = true;
			else
				f->expect_other = true;
			break;
		case F_UPGRADE:
			flags[i] |= H1_HDR_HOP;
			f->upgrade = true;
			break;
		}
	}
	return 0;
}

/* Flags every field that a Connection token names (RFC 9110 7.6.1); the
 * token lists were validated by collect_facts. */
static void flag_connection_options(const struct http_header *hs, uint8_t *flags, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (classify_field(&hs[i]) != F_CONNECTION)
			continue;
		size_t pos = 0;
		const char *tok;
		size_t tok_len;
		while (next_list_token(hs[i].value, hs[i].value_len, &pos, &tok, &tok_len) > 0)
			for (size_t j = 0; j < n; j++)
				if (hs[j].name_len == tok_len && case_eq(hs[j].name, tok, tok_len))
					flags[j] |= H1_HDR_HOP;
	}
}

/* ---- entry points ---- */

static size_t effective_max_head(const struct h1_limits *lim)
{
	/* the head length is returned as an int */
	return lim->max_head < (size_t)INT_MAX ? lim->max_head : (size_t)INT_MAX;
}

static size_t effective_max_fields(const struct h1_limits *lim)
{
	return lim->max_headers < H1_MAX_HEADERS ? lim->max_headers : H1_MAX_HEADERS;
}

/* An unfinished line starting at line[0] of which seen bytes have arrived:
 * is it already longer than max_line, CRLF excluded? Only a CR right at the
 * limit leaves room for a line of exactly max_line bytes. */
static bool line_exceeded(const char *line, size_t seen, size_t max_line)
{
	if (seen <= max_line)
		return false;
	return seen > max_line + 1 || line[max_line] != '\r';
}

/* How many of the seen bytes of a line the scanner may look at: never past
 * the byte that proves the line too long. Cutting there, rather than where the
 * bytes happen to end, makes the verdict (which error, or "too long") the
 * same however the line was split across reads. */
static size_t line_view(const char *line, size_t seen, size_t max_line)
{
	if (seen <= max_line)
		return seen;
	if (line[max_line] != '\r')
		return max_line + 1;
	return seen - max_line > 2 ? max_line + 2 : seen;
}

static int finish_request(struct h1_request *req, struct parse_error *e)
{
	struct head_facts f;
	if (collect_facts(req->headers, req->header_flags, req->num_headers, &f, e) < 0)
		return H1_ERROR;
	if (f.te_index >= 0) {
		if (req->minor_version == 0)
			return fail(e, 400, "Transfer-Encoding in an HTTP/1.0 request");
		if (f.have_length)
			return fail(e, 400, "both Content-Length and Transfer-Encoding");
		const struct http_header *te = &req->headers[f.te_index];
		switch (classify_transfer_encoding(te->value, te->value_len)) {
		case TE_CHUNKED:
			break;
		case TE_UNKNOWN_CODING:
			return fail(e, 501, "unsupported transfer coding");
		case TE_MALFORMED:
			return fail(e, 400, "invalid Transfer-Encoding");
		}
	}
	if (f.host_index < 0) {
		if (req->minor_version == 1)
			return fail(e, 400, "missing Host");
	} else {
		const struct http_header *host = &req->headers[f.host_index];
		if (!valid_authority(host->value, host->value_len))
			return fail(e, 400, "invalid Host");
		if (req->authority == NULL) {
			req->authority = host->value;
			req->authority_len = host->value_len;
		}
	}
	/* RFC 9110 10.1.1: an HTTP/1.0 100-continue is ignored, any other
	 * expectation cannot be met by a proxy that does not know it. */
	if (f.expect_other)
		return fail(e, 417, "unsupported expectation");
	req->expect_continue = f.expect_continue && req->minor_version == 1;
	req->upgrade = f.upgrade;
	if (f.te_index >= 0) {
		req->body = H1_BODY_CHUNKED;
	} else if (f.have_length) {
		req->body = H1_BODY_LENGTH;
		req->content_length = f.content_length;
	}
	if (req->minor_version == 1)
		req->keep_alive = !f.connection_close;
	else
		req->keep_alive = f.connection_keep_alive && !f.connection_close;
	if (f.has_connection)
		flag_connection_options(req->headers, req->header_flags, req->num_headers);
	return 0;
}

int h1_parse_request(const char *buf, size_t len, const struct h1_limits *lim, struct h1_request *req, int *status,
                     const char **why)
{
	struct parse_error e = {0, NULL};
	size_t max_head = effective_max_head(lim);
	size_t end = len < max_head ? len : max_head;
	int rc;

	req->method = req->target = req->path = req->authority = NULL;
	req->method_len = req->target_len = req->path_len = req->authority_len = 0;
	req->minor_version = 0;
	req->num_headers = 0;
	req->body = H1_BODY_NONE;
	req->content_length = 0;
	req->keep_alive = req->expect_continue = req->upgrade = false;

	size_t p = 0;
	for (int empty_lines = 0; p < end && (buf[p] == '\r' || buf[p] == '\n'); empty_lines++) {
		if (buf[p] == '\n') {
			rc = fail(&e, 400, "bare LF before request line");
			goto out;
		}
		if (p + 1 == end)
			goto incomplete;
		if (buf[p + 1] != '\n') {
			rc = fail(&e, 400, "bare CR before request line");
			goto out;
		}
		if (empty_lines == LEADING_EMPTY_LINES_MAX) {
			rc = fail(&e, 400, "too many empty lines before request line");
			goto out;
		}
		p += 2;
	}

	size_t line_start = p;
	size_t line_end = line_start + line_view(buf + line_start, end - line_start, lim->max_request_line);
	ssize_t r = parse_request_line(buf, line_start, line_end, req, &e);
	if (r == H1_INCOMPLETE) {
		if (line_exceeded(buf + line_start, end - line_start, lim->max_request_line)) {
			rc = fail(&e, 414, "request line too long");
			goto out;
		}
		goto incomplete;
	}
	if (r < 0 || analyze_target(req, &e) < 0) {
		rc = H1_ERROR;
		goto out;
	}
	r = parse_fields(buf, (size_t)r, end, effective_max_fields(lim), req->headers, req->header_flags,
	                 &req->num_headers, &e);
	if (r == H1_INCOMPLETE)
		goto incomplete;
	if (r < 0 || finish_request(req, &e) < 0) {
		rc = H1_ERROR;
		goto out;
	}
	return (int)r;

incomplete:
	/* max_head bytes in view and still no end of head: it cannot fit */
	if (len >= max_head)
		rc = fail(&e, 431, "request header section too large");
	else
		rc = H1_INCOMPLETE;
out:
	if (rc == H1_ERROR) {
		*status = e.status;
		*why = e.why;
	}
	return rc;
}

/* "HTTP/1.x SP 3DIGIT [SP reason] CRLF" at s[0..end). */
static ssize_t parse_status_line(const char *s, size_t end, struct h1_response *res, struct parse_error *e)
{
	if (end < 8)
		return H1_INCOMPLETE;
	int minor = parse_version(s);
	if (minor == VERSION_UNSUPPORTED)
		return fail(e, 502, "unsupported HTTP version");
	if (minor < 0)
		return fail(e, 502, "invalid status line");
	if (end < 12)
		return H1_INCOMPLETE;
	if (s[8] != ' ' || s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
		return fail(e, 502, "invalid status code");
	size_t reason = 12;
	if (reason == end)
		return H1_INCOMPLETE;
	if (s[reason] == ' ')
		reason++;
	else if (s[reason] != '\r')
		return fail(e, 502, "invalid status line");
	size_t reason_end = scan_field_value(s, reason, end);
	if (reason_end == end)
		return H1_INCOMPLETE;
	if (s[reason_end] != '\r')
		return fail(e, 502, s[reason_end] == '\n' ? "bare LF in status line" : "invalid character in reason phrase");
	if (reason_end + 1 == end)
		return H1_INCOMPLETE;
	if (s[reason_end + 1] != '\n')
		return fail(e, 502, "bare CR in status line");
	res->minor_version = minor;
	res->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	res->reason = s + reason;
	res->reason_len = reason_end - reason;
	return (ssize_t)(reason_end + 2);
}

static int finish_response(struct h1_response *res, bool request_was_head, struct parse_error *e)
{
	struct head_facts f;
	if (collect_facts(res->headers, res->header_flags, res->num_headers, &f, e) < 0)
		return H1_ERROR;
	if (f.te_index >= 0) {
		if (f.have_length)
			return fail(e, 502, "both Content-Length and Transfer-Encoding");
		/* RFC 9112 6.1: TE in an HTTP/1.0 message means faulty framing */
		if (res->minor_version == 0)
			return fail(e, 502, "Transfer-Encoding in an HTTP/1.0 response");
		const struct http_header *te = &res->headers[f.te_index];
		if (classify_transfer_encoding(te->value, te->value_len) != TE_CHUNKED)
			return fail(e, 502, "unsupported Transfer-Encoding");
	}
	int st = res->status;
	if (request_was_head || st < 200 || st == 204 || st == 304) {
		res->body = H1_BODY_NONE;
	} else if (f.te_index >= 0) {
		res->body = H1_BODY_CHUNKED;
	} else if (f.have_length) {
		res->body = H1_BODY_LENGTH;
		res->content_length = f.content_length;
	} else {
		res->body = H1_BODY_CLOSE;
	}
	if (res->body == H1_BODY_CLOSE)
		res->keep_alive = false;
	else if (res->minor_version == 1)
		res->keep_alive = !f.connection_close;
	else
		res->keep_alive = f.connection_keep_alive && !f.connection_close;
	if (f.has_connection)
		flag_connection_options(res->headers, res->header_flags, res->num_headers);
	return 0;
}

int h1_parse_response(const char *buf, size_t len, const struct h1_limits *lim, bool request_was_head,
                      struct h1_response *res, const char **why)
{
	struct parse_error e = {0, NULL};
	size_t max_head = effective_max_head(lim);
	size_t end = len < max_head ? len : max_head;

	res->minor_version = 0;
	res->status = 0;
	res->reason = NULL;
	res->reason_len = 0;
	res->num_headers = 0;
	res->body = H1_BODY_NONE;
	res->content_length = 0;
	res->keep_alive = false;

	ssize_t r = parse_status_line(buf, line_view(buf, end, lim->max_request_line), res, &e);
	if (r == H1_INCOMPLETE && line_exceeded(buf, end, lim->max_request_line)) {
		*why = "status line too long";
		return H1_ERROR;
	}
	if (r >= 0)
		r = parse_fields(buf, (size_t)r, end, effective_max_fields(lim), res->headers, res->header_flags,
		                 &res->num_headers, &e);
	if (r == H1_INCOMPLETE) {
		if (len < max_head)
			return H1_INCOMPLETE;
		*why = "response header section too large";
		return H1_ERROR;
	}
	if (r < 0 || finish_response(res, request_was_head, &e) < 0) {
		*why = e.why;
		return H1_ERROR;
	}
	return (int)r;
}

/* ---- chunked transfer coding ---- */

enum chunk_state { CHUNK_SIZE, CHUNK_DATA, CHUNK_DATA_CRLF, CHUNK_TRAILER, CHUNK_DONE, CHUNK_FAILED };

void h1_chunked_init(struct h1_chunked *c, size_t max_line, size_t max_trailers)
{
	memset(c, 0, sizeof(*c));
	c->state = CHUNK_SIZE;
	c->max_line = max_line;
	c->max_trailers = max_trailers;
}

bool h1_chunked_done(const struct h1_chunked *c)
{
	return c->state == CHUNK_DONE;
}

/* chunk-size [ chunk-ext ] CRLF at in[0..end). */
static ssize_t parse_chunk_size_line(const char *in, size_t end, uint64_t *size, const char **why)
{
	size_t p = 0;
	uint64_t value = 0;
	while (p < end && has_class(in[p], C_HEX)) {
		if (value > (UINT64_MAX >> 4)) {
			*why = "chunk size overflow";
			return H1_ERROR;
		}
		value = (value << 4) | hex_value(in[p]);
		p++;
	}
	if (p == end)
		return H1_INCOMPLETE;
	if (p == 0) {
		*why = "invalid chunk size";
		return H1_ERROR;
	}
	ssize_t r = scan_parameters(in, p, end, false, true);
	if (r == H1_INCOMPLETE)
		return r;
	if (r < 0) {
		*why = "invalid chunk extension";
		return H1_ERROR;
	}
	p = (size_t)r;
	if (in[p] != '\r') {
		*why = in[p] == '\n' ? "bare LF in chunk size line" : "invalid character in chunk size line";
		return H1_ERROR;
	}
	if (p + 1 == end)
		return H1_INCOMPLETE;
	if (in[p + 1] != '\n') {
		*why = "bare CR in chunk size line";
		return H1_ERROR;
	}
	*size = value;
	return (ssize_t)(p + 2);
}

static ssize_t chunk_fail(struct h1_chunked *c, enum h1_chunk_event *ev, const char *why)
{
	c->state = CHUNK_FAILED;
	c->why = why;
	*ev = H1_CHUNK_NONE;
	return H1_ERROR;
}

static ssize_t chunk_need_more(enum h1_chunk_event *ev)
{
	*ev = H1_CHUNK_NEED_MORE;
	return 0;
}

ssize_t h1_chunked_feed(struct h1_chunked *c, const char *in, size_t len, enum h1_chunk_event *ev,
                        const char **line, size_t *line_len)
{
	const char *why = NULL;
	ssize_t r;

	switch (c->state) {
	case CHUNK_SIZE: {
		uint64_t size = 0;
		r = parse_chunk_size_line(in, line_view(in, len, c->max_line), &size, &why);
		if (r == H1_INCOMPLETE) {
			if (line_exceeded(in, len, c->max_line))
				return chunk_fail(c, ev, "chunk size line too long");
			return chunk_need_more(ev);
		}
		if (r < 0)
			return chunk_fail(c, ev, why);
		c->remaining = size;
		c->state = size > 0 ? CHUNK_DATA : CHUNK_TRAILER;
		*ev = H1_CHUNK_NONE;
		return r;
	}
	case CHUNK_DATA: {
		if (len == 0)
			return chunk_need_more(ev);
		size_t n = c->remaining < len ? (size_t)c->remaining : len;
		if (n > SSIZE_MAX)
			n = SSIZE_MAX;
		c->remaining -= n;
		c->total += n;
		if (c->remaining == 0)
			c->state = CHUNK_DATA_CRLF;
		*ev = H1_CHUNK_DATA;
		return (ssize_t)n;
	}
	case CHUNK_DATA_CRLF:
		if (len == 0)
			return chunk_need_more(ev);
		if (in[0] != '\r')
			return chunk_fail(c, ev, "chunk data not followed by CRLF");
		if (len == 1)
			return chunk_need_more(ev);
		if (in[1] != '\n')
			return chunk_fail(c, ev, "chunk data not followed by CRLF");
		c->state = CHUNK_SIZE;
		*ev = H1_CHUNK_NONE;
		return 2;
	case CHUNK_TRAILER: {
		if (len == 0)
			return chunk_need_more(ev);
		if (in[0] == '\r') {
			if (len == 1)
				return chunk_need_more(ev);
			if (in[1] != '\n')
				return chunk_fail(c, ev, "bare CR in trailer section");
			c->state = CHUNK_DONE;
			*ev = H1_CHUNK_DONE;
			return 2;
		}
		if (in[0] == '\n')
			return chunk_fail(c, ev, "bare LF in trailer section");
		size_t budget = c->max_trailers - c->trailer_bytes;
		size_t view = len < budget ? len : budget;
		struct http_header field;
		r = parse_field_line(in, 0, view, &field, &why);
		if (r == H1_INCOMPLETE) {
			/* the whole budget in view and still no line end: it cannot fit */
			if (len >= budget)
				return chunk_fail(c, ev, "trailer section too large");
			return chunk_need_more(ev);
		}
		if (r < 0)
			return chunk_fail(c, ev, why);
		c->trailer_bytes += (size_t)r;
		if (line != NULL)
			*line = in;
		if (line_len != NULL)
			*line_len = (size_t)r - 2;
		*ev = H1_CHUNK_TRAILER;
		return r;
	}
	case CHUNK_DONE:
		*ev = H1_CHUNK_DONE;
		return 0;
	default:
		*ev = H1_CHUNK_NONE;
		return H1_ERROR;
	}
}

size_t h1_chunk_size_line(char *out, uint64_t n)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[16];
	size_t k = 0, len = 0;
	do {
		tmp[k++] = hex[n & 15];
		n >>= 4;
	} while (n);
	while (k)
		out[len++] = tmp[--k];
	out[len++] = '\r';
	out[len++] = '\n';
	return len;
}
