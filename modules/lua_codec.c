/* lua_codec.c - URL, HTML-entity, base64 and JSON decoding for scripts (lua_codec.h). */
#include "lua_codec.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

enum { JSON_MAX_DEPTH = 128 };

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void codec_push_url_decoded(lua_State *L, const char *s, size_t n, bool form)
{
	if (!memchr(s, '%', n) && !(form && memchr(s, '+', n))) {
		lua_pushlstring(L, s, n);
		return;
	}
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, n);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)s[i + 1])) >= 0 &&
		    (lo = hexval((unsigned char)s[i + 2])) >= 0) {
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else if (form && s[i] == '+') {
			out[o++] = ' ';
		} else {
			out[o++] = s[i];
		}
	}
	luaL_pushresultsize(&b, o);
}

/* ---- url ---- */

static int url_decode(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	codec_push_url_decoded(L, s, n, lua_toboolean(L, 2));
	return 1;
}

static int url_encode(lua_State *L)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
			luaL_addchar(&b, (char)c);
		} else {
			luaL_addchar(&b, '%');
			luaL_addchar(&b, hex[c >> 4]);
			luaL_addchar(&b, hex[c & 15]);
		}
	}
	luaL_pushresult(&b);
	return 1;
}

/* ---- html ---- */

static void add_utf8(luaL_Buffer *b, unsigned long cp)
{
	if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		cp = 0xFFFD;
	if (cp < 0x80) {
		luaL_addchar(b, (char)cp);
	} else if (cp < 0x800) {
		luaL_addchar(b, (char)(0xC0 | (cp >> 6)));
		luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
	} else if (cp < 0x10000) {
		luaL_addchar(b, (char)(0xE0 | (cp >> 12)));
		luaL_addchar(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
		luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
	} else {
		luaL_addchar(b, (char)(0xF0 | (cp >> 18)));
		luaL_addchar(b, (char)(0x80 | ((cp >> 12) & 0x3F)));
		luaL_addchar(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
		luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
	}
}

static int html_decode(lua_State *L)
{
	static const struct {
		const char *name;
		unsigned long cp;
	} named[] = {
	    {"lt", '<'}, {"gt", '>'}, {"amp", '&'}, {"quot", '"'}, {"apos", '\''}, {"nbsp", 0xA0},
	    {"tab", '\t'}, {"newline", '\n'}, {"lpar", '('}, {"rpar", ')'}, {"colon", ':'}, {"sol", '/'},
	};
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '&') {
			luaL_addchar(&b, s[i]);
			continue;
		}
		size_t j = i + 1;
		unsigned long cp = 0;
		bool ok = false;
		if (j < n && s[j] == '#') {
			j++;
			bool hexa = j < n && (s[j] == 'x' || s[j] == 'X');
			if (hexa)
				j++;
			size_t digits = 0;
			while (j < n && digits < 8) {
				int v = hexa ? hexval((unsigned char)s[j]) : (s[j] >= '0' && s[j] <= '9' ? s[j] - '0' : -1);
				if (v < 0)
					break;
				cp = cp * (hexa ? 16 : 10) + (unsigned long)v;
				j++;
				digits++;
			}
			ok = digits > 0;
		} else {
			for (size_t k = 0; k < sizeof named / sizeof named[0]; k++) {
				size_t len = strlen(named[k].name);
				if (j + len <= n && memcmp(s + j, named[k].name, len) == 0) {
					cp = named[k].cp;
					j += len;
					ok = true;
					break;
				}
			}
		}
		if (!ok) {
			luaL_addchar(&b, '&');
			continue;
		}
		if (j < n && s[j] == ';')
			j++;
		add_utf8(&b, cp);
		i = j - 1;
	}
	luaL_pushresult(&b);
	return 1;
}

/* ---- base64 ---- */

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

static int base64_decode(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, n / 4 * 3 + 3);
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	size_t pad = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '=') {
			pad++;
			continue;
		}
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		int v = b64val(c);
		if (v < 0 || pad) {
			luaL_pushresultsize(&b, 0);
			lua_pop(L, 1);
			lua_pushnil(L);
			lua_pushliteral(L, "invalid base64");
			return 2;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	luaL_pushresultsize(&b, o);
	return 1;
}

static int base64_encode(lua_State *L)
{
	static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n;
	const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, (n + 2) / 3 * 4);
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
		out[o++] = std[v >> 18 & 63];
		out[o++] = std[v >> 12 & 63];
		out[o++] = i + 1 < n ? std[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? std[v & 63] : '=';
	}
	luaL_pushresultsize(&b, o);
	return 1;
}

/* ---- json ---- */

struct jparse {
	lua_State *L;
	const char *s, *end;
	const char *err;
};

static void jskip(struct jparse *j)
{
	while (j->s < j->end && (*j->s == ' ' || *j->s == '\t' || *j->s == '\n' || *j->s == '\r'))
		j->s++;
}

static bool jvalue(struct jparse *j, int depth);

static bool jstring(struct jparse *j)
{
	j->s++; /* the quote */
	luaL_Buffer b;
	luaL_buffinit(j->L, &b);
	while (j->s < j->end && *j->s != '"') {
		unsigned char c = (unsigned char)*j->s++;
		if (c < 0x20) {
			j->err = "control character in a string";
			return false;
		}
		if (c != '\\') {
			luaL_addchar(&b, (char)c);
			continue;
		}
		if (j->s >= j->end)
			break;
		char e = *j->s++;
		switch (e) {
		case '"': case '\\': case '/': luaL_addchar(&b, e); break;
		case 'b': luaL_addchar(&b, '\b'); break;
		case 'f': luaL_addchar(&b, '\f'); break;
		case 'n': luaL_addchar(&b, '\n'); break;
		case 'r': luaL_addchar(&b, '\r'); break;
		case 't': luaL_addchar(&b, '\t'); break;
		case 'u': {
			unsigned long cp = 0;
			for (int k = 0; k < 4; k++) {
				int v = j->s < j->end ? hexval((unsigned char)*j->s++) : -1;
				if (v < 0) {
					j->err = "bad \\u escape";
					return false;
				}
				cp = cp << 4 | (unsigned long)v;
			}
			if (cp >= 0xD800 && cp < 0xDC00 && j->end - j->s >= 6 && j->s[0] == '\\' && j->s[1] == 'u') {
				unsigned long lo = 0;
				bool good = true;
				for (int k = 2; k < 6; k++) {
					int v = hexval((unsigned char)j->s[k]);
					good = good && v >= 0;
					lo = lo << 4 | (unsigned long)(v < 0 ? 0 : v);
				}
				if (good && lo >= 0xDC00 && lo < 0xE000) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					j->s += 6;
				}
			}
			add_utf8(&b, cp);
			break;
		}
		default:
			j->err = "bad escape in a string";
			return false;
		}
	}
	if (j->s >= j->end) {
		j->err = "unterminated string";
		return false;
	}
	j->s++;
	luaL_pushresult(&b);
	return true;
}

static bool jnumber(struct jparse *j)
{
	const char *p = j->s;
	if (p < j->end && *p == '-')
		p++;
	while (p < j->end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-'))
		p++;
	char buf[64];
	size_t n = (size_t)(p - j->s);
	if (n == 0 || n >= sizeof buf) {
		j->err = "bad number";
		return false;
	}
	memcpy(buf, j->s, n);
	buf[n] = '\0';
	if (lua_stringtonumber(j->L, buf) != n + 1) {
		j->err = "bad number";
		return false;
	}
	j->s = p;
	return true;
}

static bool jliteral(struct jparse *j, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(j->end - j->s) < n || memcmp(j->s, word, n) != 0) {
		j->err = "unexpected character";
		return false;
	}
	j->s += n;
	return true;
}

static bool jcontainer(struct jparse *j, int depth, bool object)
{
	lua_State *L = j->L;
	if (depth >= JSON_MAX_DEPTH) {
		j->err = "nested too deep";
		return false;
	}
	luaL_checkstack(L, 4, "json");
	j->s++;
	lua_newtable(L);
	lua_Integer i = 0;
	jskip(j);
	if (j->s < j->end && *j->s == (object ? '}' : ']')) {
		j->s++;
		return true;
	}
	for (;;) {
		jskip(j);
		if (object) {
			if (j->s >= j->end || *j->s != '"') {
				j->err = "expected a string key";
				return false;
			}
			if (!jstring(j))
				return false;
			jskip(j);
			if (j->s >= j->end || *j->s != ':') {
				j->err = "expected ':'";
				return false;
			}
			j->s++;
			if (!jvalue(j, depth + 1))
				return false;
			lua_rawset(L, -3);
		} else {
			if (!jvalue(j, depth + 1))
				return false;
			lua_rawseti(L, -2, ++i);
		}
		jskip(j);
		if (j->s < j->end && *j->s == ',') {
			j->s++;
			continue;
		}
		if (j->s < j->end && *j->s == (object ? '}' : ']')) {
			j->s++;
			return true;
		}
		j->err = object ? "expected ',' or '}'" : "expected ',' or ']'";
		return false;
	}
}

static bool jvalue(struct jparse *j, int depth)
{
	jskip(j);
	if (j->s >= j->end) {
		j->err = "unexpected end of input";
		return false;
	}
	switch (*j->s) {
	case '{':
		return jcontainer(j, depth, true);
	case '[':
		return jcontainer(j, depth, false);
	case '"':
		return jstring(j);
	case 't':
		if (!jliteral(j, "true"))
			return false;
		lua_pushboolean(j->L, 1);
		return true;
	case 'f':
		if (!jliteral(j, "false"))
			return false;
		lua_pushboolean(j->L, 0);
		return true;
	case 'n':
		if (!jliteral(j, "null"))
			return false;
		lua_pushnil(j->L); /* JSON null is nil (absent in a table) */
		return true;
	default:
		return jnumber(j);
	}
}

static int json_decode(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	struct jparse j = {L, s, s + n, NULL};
	int top = lua_gettop(L);
	bool ok = jvalue(&j, 0);
	if (ok) {
		jskip(&j);
		if (j.s != j.end) {
			ok = false;
			j.err = "trailing characters";
		}
	}
	if (!ok) {
		lua_settop(L, top);
		lua_pushnil(L);
		lua_pushfstring(L, "invalid JSON at byte %d: %s", (int)(j.s - s) + 1, j.err ? j.err : "error");
		return 2;
	}
	return 1;
}

void codec_open(lua_State *L, int t)
{
	static const luaL_Reg url[] = {{"decode", url_decode}, {"encode", url_encode}, {NULL, NULL}};
	static const luaL_Reg html[] = {{"decode", html_decode}, {NULL, NULL}};
	static const luaL_Reg base64[] = {{"decode", base64_decode}, {"encode", base64_encode}, {NULL, NULL}};
	static const luaL_Reg json[] = {{"decode", json_decode}, {NULL, NULL}};
	t = lua_absindex(L, t);
	luaL_newlib(L, url);
	lua_setfield(L, t, "url");
	luaL_newlib(L, html);
	lua_setfield(L, t, "html");
	luaL_newlib(L, base64);
	lua_setfield(L, t, "base64");
	luaL_newlib(L, json);
	lua_setfield(L, t, "json");
}
