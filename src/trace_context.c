/* trace_context.c - W3C Trace Context fields (trace_context.h). */
#include "trace_context.h"

#include <string.h>

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* upper-case hex is not valid in traceparent */
}

/* 2n lower-case hex digits at s into b[0..n). */
static bool parse_hex(const char *s, uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

bool trace_id_is_zero(const uint8_t *b, size_t n)
{
	uint8_t any = 0;
	for (size_t i = 0; i < n; i++)
		any |= b[i];
	return any == 0;
}

bool trace_parent_parse(const char *s, size_t n, struct trace_parent *out)
{
	if (n < TRACE_PARENT_LEN)
		return false;
	uint8_t version;
	if (!parse_hex(s, &version, 1) || version == 0xff)
		return false;
	/* version 00 has exactly four parts; a later one may append "-..." */
	if (version == 0 ? n != TRACE_PARENT_LEN : n > TRACE_PARENT_LEN && s[TRACE_PARENT_LEN] != '-')
		return false;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return false;
	if (!parse_hex(s + 3, out->trace_id, TRACE_ID_LEN) || !parse_hex(s + 36, out->parent_id, TRACE_SPAN_ID_LEN) ||
	    !parse_hex(s + 53, &out->flags, 1))
		return false;
	if (trace_id_is_zero(out->trace_id, TRACE_ID_LEN) || trace_id_is_zero(out->parent_id, TRACE_SPAN_ID_LEN))
		return false;
	if (version != 0)
		out->flags &= TRACE_FLAG_SAMPLED; /* flags of a later version are not ours to pass on */
	return true;
}

void trace_hex(const uint8_t *b, size_t n, char *out)
{
	/* two digits per byte from one table read (ids are formatted per request) */
	static const char pairs[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	                            "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	                            "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
	                            "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
	                            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
	                            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	                            "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
	                            "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
	for (size_t i = 0; i < n; i++)
		memcpy(out + 2 * i, pairs + 2 * b[i], 2);
	out[2 * n] = '\0';
}

void trace_parent_format(const uint8_t trace_id[TRACE_ID_LEN], const uint8_t span_id[TRACE_SPAN_ID_LEN],
                         uint8_t flags, char *out)
{
	out[0] = '0';
	out[1] = '0';
	out[2] = '-';
	trace_hex(trace_id, TRACE_ID_LEN, out + 3);
	out[35] = '-';
	trace_hex(span_id, TRACE_SPAN_ID_LEN, out + 36);
	out[52] = '-';
	trace_hex(&flags, 1, out + 53);
}

/* ---- tracestate ---- */

static bool is_lcalpha(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_key_char(char c)
{
	return is_lcalpha(c) || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' || c == '/';
}

/* simple-key: lcalpha 0*255 key-char; multi-tenant: tenant@system, tenant
 * (lcalpha / DIGIT) 0*240 key-char, system lcalpha 0*13 key-char */
static bool key_valid(const char *k, size_t n)
{
	const char *at = memchr(k, '@', n);
	if (!at) {
		if (n == 0 || n > 256 || !is_lcalpha(k[0]))
			return false;
		for (size_t i = 1; i < n; i++)
			if (!is_key_char(k[i]))
				return false;
		return true;
	}
	size_t tn = (size_t)(at - k), sn = n - tn - 1;
	if (tn == 0 || tn > 241 || sn == 0 || sn > 14 || !is_lcalpha(at[1]))
		return false;
	if (!(is_lcalpha(k[0]) || (k[0] >= '0' && k[0] <= '9')))
		return false;
	for (size_t i = 1; i < tn; i++)
		if (!is_key_char(k[i]))
			return false;
	for (size_t i = 2; i <= sn; i++)
		if (!is_key_char(at[i]))
			return false;
	return true;
}

/* 1..256 printable characters but "," and "=", the last not a space */
static bool value_valid(const char *v, size_t n)
{
	if (n == 0 || n > 256 || v[n - 1] == ' ')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
			return false;
	}
	return true;
}

struct member {
	const char *p;
	size_t len;     /* key=value */
	size_t key_len;
};

size_t trace_state_bound(const char *s, size_t n, char *out, size_t cap)
{
	struct member m[TRACE_STATE_MAX_MEMBERS];
	size_t count = 0;
	out[0] = '\0';
	if (cap < TRACE_STATE_MAX + 1)
		return 0;
	size_t i = 0;
	while (i <= n) {
		const char *comma = i < n ? memchr(s + i, ',', n - i) : NULL;
		size_t end = comma ? (size_t)(comma - s) : n;
		size_t a = i, b = end;
		while (a < b && (s[a] == ' ' || s[a] == '\t'))
			a++;
		while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
			b--;
		if (b > a) { /* empty members are allowed and dropped */
			const char *eq = memchr(s + a, '=', b - a);
			if (!eq || count == TRACE_STATE_MAX_MEMBERS)
				return 0;
			size_t kn = (size_t)(eq - (s + a));
			if (!key_valid(s + a, kn) || !value_valid(eq + 1, b - a - kn - 1))
				return 0;
			for (size_t j = 0; j < count; j++)
				if (m[j].key_len == kn && memcmp(m[j].p, s + a, kn) == 0)
					return 0; /* a key appears once */
			m[count++] = (struct member){s + a, b - a, kn};
		}
		if (!comma)
			break;
		i = end + 1;
	}
	size_t total = 0;
	for (size_t j = 0; j < count; j++)
		total += m[j].len + (j ? 1 : 0);
	bool keep[TRACE_STATE_MAX_MEMBERS];
	for (size_t j = 0; j < count; j++)
		keep[j] = true;
	/* too long: members over 128 characters first, then from the end */
	for (size_t pass = 0; pass < 2 && total > TRACE_STATE_MAX; pass++)
		for (size_t j = count; j-- > 0 && total > TRACE_STATE_MAX;)
			if (keep[j] && (pass == 1 || m[j].len > 128)) {
				keep[j] = false;
				total = total > m[j].len + 1 ? total - m[j].len - 1 : 0;
			}
	size_t len = 0;
	for (size_t j = 0; j < count; j++) {
		if (!keep[j])
			continue;
		if (len)
			out[len++] = ',';
		memcpy(out + len, m[j].p, m[j].len);
		len += m[j].len;
	}
	out[len] = '\0';
	return len;
}
