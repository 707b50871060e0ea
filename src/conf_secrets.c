/* conf_secrets.c - inline secrets in a config's source: see conf_secrets.h.
 * A small Lua lexer: only strings, names, comments and a few punctuation
 * marks matter; everything else is skipped one byte at a time. */
#include "conf_secrets.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define SECRET_KEY_MAX 64

enum tok_kind { TOK_NONE, TOK_NAME, TOK_STRING, TOK_LBRACKET, TOK_RBRACKET, TOK_ASSIGN, TOK_OTHER };

struct tok {
	enum tok_kind kind;
	char text[SECRET_KEY_MAX + 1]; /* names and (short) strings usable as keys, lower-cased, truncated */
	bool truncated;
	size_t line;
};

struct lexer {
	const char *s;
	size_t len, pos, line;
	/* the string literal just read (any length), for the content checks */
	const char *str;
	size_t str_len;
	bool str_raw; /* a long string: escapes are not interpreted, but the checks do not care */
};

static bool lex_at(const struct lexer *lx, size_t off, char c)
{
	return lx->pos + off < lx->len && lx->s[lx->pos + off] == c;
}

static void lex_advance(struct lexer *lx, size_t n)
{
	for (size_t i = 0; i < n && lx->pos < lx->len; i++, lx->pos++)
		if (lx->s[lx->pos] == '\n')
			lx->line++;
}

/* At '[': the level of a long bracket ([[ is 0, [==[ is 2), or -1 if none. */
static int long_bracket_level(const struct lexer *lx)
{
	size_t i = 1;
	while (lx->pos + i < lx->len && lx->s[lx->pos + i] == '=')
		i++;
	return lex_at(lx, i, '[') ? (int)(i - 1) : -1;
}

/* Skips a long bracket of this level; sets str/str_len to its contents. */
static void skip_long(struct lexer *lx, int level)
{
	lex_advance(lx, (size_t)level + 2);
	lx->str = lx->s + lx->pos;
	while (lx->pos < lx->len) {
		if (lx->s[lx->pos] == ']') {
			size_t i = 1;
			while (lx->pos + i < lx->len && lx->s[lx->pos + i] == '=')
				i++;
			if (i - 1 == (size_t)level && lex_at(lx, i, ']')) {
				lx->str_len = (size_t)(lx->s + lx->pos - lx->str);
				lex_advance(lx, i + 1);
				return;
			}
		}
		lex_advance(lx, 1);
	}
	lx->str_len = (size_t)(lx->s + lx->pos - lx->str);
}

/* At a quote: skips the quoted string (escapes kept as written). */
static void skip_quoted(struct lexer *lx)
{
	char q = lx->s[lx->pos];
	lex_advance(lx, 1);
	lx->str = lx->s + lx->pos;
	while (lx->pos < lx->len && lx->s[lx->pos] != q && lx->s[lx->pos] != '\n') {
		if (lx->s[lx->pos] == '\\')
			lex_advance(lx, 1);
		lex_advance(lx, 1);
	}
	lx->str_len = (size_t)(lx->s + (lx->pos < lx->len ? lx->pos : lx->len) - lx->str);
	lex_advance(lx, 1);
}

static void tok_set_text(struct tok *t, const char *p, size_t n)
{
	t->truncated = n > SECRET_KEY_MAX;
	if (t->truncated)
		n = SECRET_KEY_MAX;
	for (size_t i = 0; i < n; i++)
		t->text[i] = (char)tolower((unsigned char)p[i]);
	t->text[n] = '\0';
}

/* The next token, or TOK_NONE at the end. Comments and blanks are skipped. */
static struct tok lex_next(struct lexer *lx)
{
	struct tok t = {.kind = TOK_NONE};
	while (lx->pos < lx->len) {
		unsigned char c = (unsigned char)lx->s[lx->pos];
		if (isspace(c)) {
			lex_advance(lx, 1);
			continue;
		}
		if (c == '-' && lex_at(lx, 1, '-')) {
			lex_advance(lx, 2);
			int level = lx->pos < lx->len && lx->s[lx->pos] == '[' ? long_bracket_level(lx) : -1;
			if (level >= 0) {
				skip_long(lx, level);
			} else {
				while (lx->pos < lx->len && lx->s[lx->pos] != '\n')
					lex_advance(lx, 1);
			}
			continue;
		}
		t.line = lx->line;
		if (c == '"' || c == '\'') {
			skip_quoted(lx);
			t.kind = TOK_STRING;
			tok_set_text(&t, lx->str, lx->str_len);
			return t;
		}
		if (c == '[') {
			int level = long_bracket_level(lx);
			if (level >= 0) {
				skip_long(lx, level);
				t.kind = TOK_STRING;
				tok_set_text(&t, lx->str, lx->str_len);
				return t;
			}
			lex_advance(lx, 1);
			t.kind = TOK_LBRACKET;
			return t;
		}
		if (isalpha(c) || c == '_') {
			size_t start = lx->pos;
			while (lx->pos < lx->len && (isalnum((unsigned char)lx->s[lx->pos]) || lx->s[lx->pos] == '_'))
				lx->pos++;
			t.kind = TOK_NAME;
			tok_set_text(&t, lx->s + start, lx->pos - start);
			return t;
		}
		if (isdigit(c)) { /* a number (hex digits and exponents included) */
			while (lx->pos < lx->len && (isalnum((unsigned char)lx->s[lx->pos]) || lx->s[lx->pos] == '.'))
				lx->pos++;
			t.kind = TOK_OTHER;
			return t;
		}
		if (c == '=') {
			bool eq = lex_at(lx, 1, '=');
			lex_advance(lx, eq ? 2 : 1);
			t.kind = eq ? TOK_OTHER : TOK_ASSIGN;
			return t;
		}
		lex_advance(lx, 1);
		t.kind = c == ']' ? TOK_RBRACKET : TOK_OTHER;
		return t;
	}
	return t;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool key_names_secret(const char *key)
{
	static const char *const words[] = {"password", "passwd", "secret", "token", "api_key", "apikey", "access_key",
	                                    "private_key", "credential", "auth_key", "authorization"};
	static const char *const whole[] = {"auth", "pass", "pwd", "psk"};
	if (ends_with(key, "_file") || ends_with(key, "_path") || ends_with(key, "_env"))
		return false;
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
		if (strstr(key, words[i]))
			return true;
	for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++)
		if (strcmp(key, whole[i]) == 0)
			return true;
	return false;
}

static bool has_at(const char *s, size_t n, size_t i, const char *what)
{
	size_t m = strlen(what);
	return i + m <= n && memcmp(s + i, what, m) == 0;
}

/* Length of the run of token characters (base64, base64url, '.', '-') from i. */
static size_t token_run(const char *s, size_t n, size_t i)
{
	size_t j = i;
	while (j < n && (isalnum((unsigned char)s[j]) || strchr("+/=_.-", s[j])))
		j++;
	return j - i;
}

/* What secret the literal's content is, or NULL. */
static const char *content_secret(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (has_at(s, n, i, "-----BEGIN ")) {
			size_t j = i + 11;
			while (j < n && s[j] != '-' && s[j] != '\n')
				j++;
			if (j - (i + 11) >= 11 && has_at(s, n, j - 11, "PRIVATE KEY"))
				return "a PEM private key";
		}
		if ((has_at(s, n, i, "AKIA") || has_at(s, n, i, "ASIA")) && (i == 0 || !isalnum((unsigned char)s[i - 1]))) {
			size_t j = i + 4;
			while (j < n && (isupper((unsigned char)s[j]) || isdigit((unsigned char)s[j])))
				j++;
			if (j - i == 20 && (j == n || !isalnum((unsigned char)s[j])))
				return "an AWS access key id";
		}
		if (has_at(s, n, i, "://")) { /* scheme://user:password@host */
			size_t j = i + 3, colon = 0;
			while (j < n && s[j] != '/' && s[j] != '@' && !isspace((unsigned char)s[j])) {
				if (s[j] == ':' && !colon)
					colon = j;
				j++;
			}
			if (j < n && s[j] == '@' && colon && colon + 1 < j)
				return "a URL with a password";
		}
		if (i == 0 && (has_at(s, n, 0, "Bearer ") || has_at(s, n, 0, "bearer ") || has_at(s, n, 0, "Basic ")) &&
		    token_run(s, n, s[0] == 'B' && s[1] == 'a' ? 6 : 7) >= 8)
			return "an HTTP Authorization credential";
		if (i == 0 && has_at(s, n, 0, "eyJ") && memchr(s, '.', n))
			return "a JSON Web Token";
		if ((has_at(s, n, i, "ghp_") || has_at(s, n, i, "github_pat_") || has_at(s, n, i, "xoxb-") ||
		     has_at(s, n, i, "xoxp-")) &&
		    (i == 0 || !isalnum((unsigned char)s[i - 1])) && token_run(s, n, i + 4) >= 16)
			return "an access token (GitHub or Slack)";
	}
	return NULL;
}

size_t conf_secrets_scan(const char *chunkname, const char *src, size_t len, struct conf_errors *warnings)
{
	struct lexer lx = {.s = src, .len = len, .line = 1};
	struct tok prev[4] = {{.kind = TOK_NONE}}; /* prev[0] is the latest */
	size_t found = 0;
	for (;;) {
		struct tok t = lex_next(&lx);
		if (t.kind == TOK_NONE)
			break;
		if (t.kind == TOK_STRING) {
			const char *what = content_secret(lx.str, lx.str_len);
			/* KEY = "..." or ["KEY"] = "..." */
			const char *key = NULL;
			if (prev[0].kind == TOK_ASSIGN && prev[1].kind == TOK_NAME)
				key = prev[1].text;
			else if (prev[0].kind == TOK_ASSIGN && prev[1].kind == TOK_RBRACKET && prev[2].kind == TOK_STRING &&
			         prev[3].kind == TOK_LBRACKET && !prev[2].truncated)
				key = prev[2].text;
			if (key && lx.str_len > 0 && key_names_secret(key)) {
				conf_errors_add(warnings,
				                "%s:%zu: warning: \"%s\" is a secret written inline in the config; read it from "
				                "a mounted file or the environment instead (file(\"/run/secrets/NAME\"), "
				                "env(\"NAME\"), or a *_file key such as redis.password_file)",
				                chunkname, t.line, key);
				found++;
			} else if (what) {
				conf_errors_add(warnings,
				                "%s:%zu: warning: a string here holds %s, a secret written inline in the config; "
				                "read it from a mounted file or the environment instead (file(\"PATH\"), "
				                "env(\"NAME\"))",
				                chunkname, t.line, what);
				found++;
			}
		}
		memmove(&prev[1], &prev[0], sizeof prev[0] * 3);
		prev[0] = t;
	}
	return found;
}

size_t conf_secrets_warn(const char *path, FILE *out)
{
	/* conf_read_file refuses a FIFO or a device (which would block or never
	 * end) and caps the size; conf_load reports why, so nothing here */
	struct conf_errors unread;
	conf_errors_init(&unread);
	size_t got = 0;
	char *buf = conf_read_file(path, &got, &unread);
	conf_errors_free(&unread);
	size_t n = 0;
	if (buf) {
		struct conf_errors warnings;
		conf_errors_init(&warnings);
		n = conf_secrets_scan(path, buf, got, &warnings);
		for (size_t i = 0; i < warnings.count; i++)
			fprintf(out, "%s\n", warnings.msgs[i]);
		conf_errors_free(&warnings);
	}
	free(buf);
	return n;
}
