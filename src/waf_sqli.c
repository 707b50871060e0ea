/* waf_sqli.c - SQL tokenizer and injection shapes (waf_sqli.h). */
#include "waf_sqli.h"

#include <stdint.h>
#include <string.h>

#define NAME_MAX_LEN 24
#define FIRST_MAX 8
#define RING 8

struct tok {
	char type;
	char op[4];                /* operator text ('o', '&' from symbols) */
	char name[NAME_MAX_LEN];   /* lower-cased word, truncated (words, functions, variables) */
	const char *text;          /* the literal's bytes (strings: inside the quotes) */
	size_t len;
	bool comment_after;        /* a comment followed this token */
};

struct lexer {
	const char *s;
	size_t n, i;
	char quote;      /* the reading: the value continues a string quoted with this */
	bool started;    /* the opening string of a quoted reading was produced */
	bool in_exec;    /* inside a MySQL executable comment */
};

struct word {
	const char *name;
	char type;
};

/* How words read. Words not here are barewords ('b'), or function calls ('f')
 * when a '(' follows. */
static const struct word words[] = {
    {"and", '&'},        {"or", '&'},         {"xor", '&'},       {"not", 'o'},       {"like", 'o'},
    {"rlike", 'o'},      {"regexp", 'o'},     {"is", 'o'},        {"in", 'o'},        {"between", 'o'},
    {"div", 'o'},        {"mod", 'o'},        {"sounds", 'o'},    {"collate", 'o'},   {"escape", 'o'},
    {"union", 'U'},      {"select", 'E'},     {"insert", 'E'},    {"update", 'E'},    {"delete", 'E'},
    {"drop", 'E'},       {"exec", 'E'},       {"execute", 'E'},   {"declare", 'E'},   {"shutdown", 'E'},
    {"create", 'E'},     {"alter", 'E'},      {"truncate", 'E'},  {"waitfor", 'E'},   {"handler", 'E'},
    {"from", 'k'},       {"where", 'k'},      {"order", 'k'},     {"group", 'k'},     {"by", 'k'},
    {"having", 'k'},     {"limit", 'k'},      {"into", 'k'},      {"set", 'k'},       {"table", 'k'},
    {"database", 'k'},   {"view", 'k'},       {"all", 'k'},       {"distinct", 'k'},  {"values", 'k'},
    {"case", 'k'},       {"when", 'k'},       {"then", 'k'},      {"else", 'k'},      {"end", 'k'},
    {"as", 'k'},         {"join", 'k'},       {"on", 'k'},        {"top", 'k'},       {"offset", 'k'},
    {"procedure", 'k'},  {"outfile", 'k'},    {"dumpfile", 'k'},  {"delay", 'k'},     {"exists", 'k'},
    {"null", 'n'},       {"true", 'n'},       {"false", 'n'},     {"having", 'k'},    {"asc", 'k'},
    {"desc", 'k'},       {"like", 'o'},       {"index", 'k'},     {"trigger", 'k'},   {"function", 'k'},
};

/* Called, these are an injection whatever surrounds them: time delays, file
 * access, error-based extraction, OS commands. */
static const char *const strong_functions[] = {
    "sleep",        "benchmark",     "pg_sleep",         "load_file",   "extractvalue", "updatexml",
    "xp_cmdshell",  "sys_eval",      "sys_exec",         "receive_message", "get_host_address",
    "name_const",   "randomblob",    "group_concat",     "concat_ws",   "make_set",     "gtid_subset",
    "geometrycollection", "multipoint", "polygon",       "utl_inaddr",  "dbms_pipe",    "sp_oacreate",
    "sp_executesql", "xp_dirtree",   "dbms_lock",        "pg_read_file", "lo_import",   "lo_export",
};

/* Called with no argument, these read what an attacker maps a database by. */
static const char *const info_functions[] = {
    "version", "database", "user", "current_user", "system_user", "session_user", "schema", "connection_id",
    "@@version", "db_name", "user_name", "current_database",
};

static bool in_list(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, list[i]) == 0)
			return true;
	return false;
}

#define IN(name, list) in_list((name), (list), sizeof(list) / sizeof((list)[0]))

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0xa0;
}

static bool is_word(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
	       c >= 0x80;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static void set_name(struct tok *t, const char *s, size_t n)
{
	size_t k = n < NAME_MAX_LEN - 1 ? n : NAME_MAX_LEN - 1;
	for (size_t i = 0; i < k; i++) {
		unsigned char c = (unsigned char)s[i];
		t->name[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
	}
	t->name[k] = '\0';
}

/* The end of a string quoted with q starting at i (just past the opening
 * quote): the index of the closing quote, or n if unterminated. */
static size_t string_end(const char *s, size_t n, size_t i, char q)
{
	while (i < n) {
		if (s[i] == '\\') {
			i += 2;
			continue;
		}
		if (s[i] == q) {
			if (i + 1 < n && s[i + 1] == q) {
				i += 2;
				continue;
			}
			return i;
		}
		i++;
	}
	return n;
}

/* Skips whitespace and comments; true if a comment was skipped. */
static bool skip_blank(struct lexer *lx)
{
	bool comment = false;
	const char *s = lx->s;
	size_t n = lx->n;
	while (lx->i < n) {
		size_t i = lx->i;
		unsigned char c = (unsigned char)s[i];
		if (is_space(c)) {
			lx->i++;
		} else if (c == '/' && i + 1 < n && s[i + 1] == '*') {
			if (i + 2 < n && s[i + 2] == '!') {
				/* MySQL runs what is inside: read it as code */
				lx->i = i + 3;
				while (lx->i < n && is_digit((unsigned char)s[lx->i]) && lx->i < i + 9)
					lx->i++;
				lx->in_exec = true;
			} else {
				size_t j = i + 2;
				while (j + 1 < n && !(s[j] == '*' && s[j + 1] == '/'))
					j++;
				lx->i = j + 1 < n ? j + 2 : n;
				comment = true;
			}
		} else if (c == '*' && lx->in_exec && i + 1 < n && s[i + 1] == '/') {
			lx->i += 2;
			lx->in_exec = false;
		} else if (c == '#' || (c == '-' && i + 1 < n && s[i + 1] == '-')) {
			while (lx->i < n && s[lx->i] != '\n')
				lx->i++;
			comment = true;
		} else {
			break;
		}
	}
	return comment;
}

static const char *const two_char_ops[] = {"<=", ">=", "<>", "!=", "||", "&&", ":=", "<<", ">>", "=="};

static bool next_token(struct lexer *lx, struct tok *t)
{
	memset(t, 0, sizeof(*t));
	const char *s = lx->s;
	size_t n = lx->n;
	if (lx->quote && !lx->started) {
		lx->started = true;
		size_t e = string_end(s, n, 0, lx->quote);
		t->type = 's';
		t->text = s;
		t->len = e;
		lx->i = e < n ? e + 1 : n;
		return true;
	}
	skip_blank(lx);
	if (lx->i >= n)
		return false;
	size_t i = lx->i;
	unsigned char c = (unsigned char)s[i];
	if (c == '\'' || c == '"') {
		size_t e = string_end(s, n, i + 1, (char)c);
		t->type = 's';
		t->text = s + i + 1;
		t->len = e - i - 1;
		lx->i = e < n ? e + 1 : n;
		return true;
	}
	if (c == '`' || c == '[') {
		char close = c == '`' ? '`' : ']';
		size_t j = i + 1;
		while (j < n && s[j] != close)
			j++;
		t->type = 'b';
		set_name(t, s + i + 1, j - i - 1);
		lx->i = j < n ? j + 1 : n;
		return true;
	}
	if (is_digit(c) || (c == '.' && i + 1 < n && is_digit((unsigned char)s[i + 1]))) {
		size_t j = i;
		if (c == '0' && j + 1 < n && (s[j + 1] == 'x' || s[j + 1] == 'X' || s[j + 1] == 'b' || s[j + 1] == 'B'))
			j += 2;
		while (j < n && (is_digit((unsigned char)s[j]) || s[j] == '.' ||
		                 ((s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'f' && j > i + 1 && (s[i + 1] | 0x20) == 'x')))
			j++;
		if (j < n && (s[j] == 'e' || s[j] == 'E') && j + 1 < n &&
		    (is_digit((unsigned char)s[j + 1]) || s[j + 1] == '-' || s[j + 1] == '+')) {
			j += 2;
			while (j < n && is_digit((unsigned char)s[j]))
				j++;
		}
		t->type = 'n';
		t->text = s + i;
		t->len = j - i;
		lx->i = j;
		return true;
	}
	if (c == '@') {
		size_t j = i + 1;
		if (j < n && s[j] == '@')
			j++;
		while (j < n && (is_word((unsigned char)s[j]) || s[j] == '.'))
			j++;
		t->type = 'v';
		set_name(t, s + i, j - i);
		lx->i = j;
		return true;
	}
	if (is_word(c)) {
		size_t j = i;
		while (j < n && is_word((unsigned char)s[j]))
			j++;
		set_name(t, s + i, j - i);
		t->text = s + i;
		t->len = j - i;
		lx->i = j;
		t->type = 'b';
		for (size_t w = 0; w < sizeof(words) / sizeof(words[0]) && j - i <= 9; w++)
			if (words[w].name[0] == t->name[0] && strcmp(words[w].name, t->name) == 0) {
				t->type = words[w].type;
				break;
			}
		if (t->type == 'b' || (t->type == 'k' && strcmp(t->name, "user") == 0)) {
			size_t k = j;
			struct lexer peek = *lx;
			skip_blank(&peek);
			k = peek.i;
			if (k < n && s[k] == '(')
				t->type = 'f';
		}
		return true;
	}
	if (strchr("(),;.", (int)c) && c != '\0') {
		t->type = (char)c;
		lx->i = i + 1;
		return true;
	}
	if (strchr("=<>!|&^~+-*/%:", (int)c) && c != '\0') {
		size_t len = 1;
		for (size_t k = 0; k < sizeof(two_char_ops) / sizeof(two_char_ops[0]); k++)
			if (i + 1 < n && s[i] == two_char_ops[k][0] && s[i + 1] == two_char_ops[k][1])
				len = 2;
		memcpy(t->op, s + i, len);
		t->type = (len == 2 && (memcmp(t->op, "||", 2) == 0 || memcmp(t->op, "&&", 2) == 0)) ? '&' : 'o';
		lx->i = i + len;
		return true;
	}
	t->type = 'x';
	lx->i = i + 1;
	return true;
}

static bool named(const struct tok *t, const char *name)
{
	return strcmp(t->name, name) == 0;
}

static bool is_cmp(const struct tok *t)
{
	if (t->type != 'o')
		return false;
	if (t->op[0])
		return strchr("=<>!", t->op[0]) != NULL;
	return named(t, "like") || named(t, "rlike") || named(t, "regexp") || named(t, "is") || named(t, "in") ||
	       named(t, "between");
}

static bool is_operand(const struct tok *t)
{
	return t->type == 'n' || t->type == 's' || t->type == 'v' || t->type == 'f' || t->type == '(' ||
	       t->type == 'b';
}

struct scan {
	struct tok first[FIRST_MAX];
	size_t nfirst;
	struct tok ring[RING];
	size_t count;         /* tokens pushed */
	int select_left;      /* tokens after a SELECT still watched for FROM */
	bool select_sqlish;
	int from_wait;        /* after SELECT ... FROM: 1 the table is next, 2 what follows the table */
	const char *shape;
};

static const struct tok *back(const struct scan *sc, size_t k)
{
	if (k >= sc->count || k >= RING)
		return NULL;
	return &sc->ring[(sc->count - 1 - k) % RING];
}

static bool type_at(const struct scan *sc, size_t k, char type)
{
	const struct tok *t = back(sc, k);
	return t && t->type == type;
}

static bool name_at(const struct scan *sc, size_t k, char type, const char *name)
{
	const struct tok *t = back(sc, k);
	return t && t->type == type && named(t, name);
}

/* Shapes that end at the token just pushed, wherever they are. */
static const char *shape_anywhere(struct scan *sc)
{
	const struct tok *t = back(sc, 0);
	/* UNION [ALL|DISTINCT] [(] SELECT */
	if (t->type == 'E' && named(t, "select")) {
		size_t k = 1;
		if (type_at(sc, k, '('))
			k++;
		if (name_at(sc, k, 'k', "all") || name_at(sc, k, 'k', "distinct"))
			k++;
		if (type_at(sc, k, 'U'))
			return "union select";
		sc->select_left = 6;
		sc->select_sqlish = false;
		return NULL;
	}
	if (sc->select_left > 0) {
		sc->select_left--;
		if (t->type == 'f' || t->type == 'v' || t->type == ',' || (t->type == 'o' && t->op[0] == '*'))
			sc->select_sqlish = true;
		if (t->type == 'k' && named(t, "from") && sc->select_sqlish) {
			/* prose says "select * from our list": a table name is followed
			 * by a clause, a separator or the end, not by another word */
			sc->from_wait = 1;
			sc->select_left = 0;
			return NULL;
		}
		if ((t->type == 'v' || t->type == 'f') && name_at(sc, 1, 'E', "select"))
			return "select function or variable";
	}
	if (sc->from_wait == 1) {
		sc->from_wait = (t->type == 'b' || t->type == '(' || t->type == 'f') ? 2 : 0;
		if (sc->from_wait == 2 && t->comment_after)
			return "select ... from";
		return NULL;
	}
	if (sc->from_wait == 2) {
		sc->from_wait = 0;
		if (strchr("k;).,U&o", t->type))
			return "select ... from";
	}
	/* a statement stacked after ';' with its own grammar */
	if (back(sc, 1) && back(sc, 2) && type_at(sc, 2, ';') && back(sc, 1)->type == 'E') {
		const struct tok *v = back(sc, 1);
		if ((named(v, "drop") || named(v, "create") || named(v, "alter") || named(v, "truncate")) &&
		    t->type == 'k')
			return "stacked ddl";
		if (named(v, "delete") && named(t, "from"))
			return "stacked delete";
		if (named(v, "insert") && named(t, "into"))
			return "stacked insert";
		if ((named(v, "exec") || named(v, "execute")) && (t->type == 'b' || t->type == 'f' || t->type == 'v'))
			return "stacked exec";
		if (named(v, "declare") && t->type == 'v')
			return "stacked declare";
		if (named(v, "waitfor") && (named(t, "delay") || named(t, "time")))
			return "stacked waitfor";
		if (named(v, "select") && (t->type == 'n' || t->type == 'f' || t->type == 'v' || t->type == 'o'))
			return "stacked select";
		if (named(v, "shutdown"))
			return "stacked shutdown";
	}
	if (t->type == 'k' && named(t, "set") && type_at(sc, 1, 'b') && name_at(sc, 2, 'E', "update") &&
	    type_at(sc, 3, ';'))
		return "stacked update";
	if (t->type == ';' && name_at(sc, 1, 'E', "shutdown"))
		return "stacked shutdown";
	/* WAITFOR DELAY '0:0:5' anywhere (T-SQL has no separator requirement) */
	if (t->type == 's' && name_at(sc, 1, 'k', "delay") && name_at(sc, 2, 'E', "waitfor"))
		return "waitfor delay";
	/* time, file and error-based functions called */
	if (t->type == '(' && back(sc, 1) && back(sc, 1)->type == 'f' && IN(back(sc, 1)->name, strong_functions))
		return "dangerous function";
	if (t->type == ')' && type_at(sc, 1, '(') && back(sc, 2) && back(sc, 2)->type == 'f' &&
	    IN(back(sc, 2)->name, info_functions) && back(sc, 3) &&
	    strchr("&o(,;EUs", back(sc, 3)->type))
		return "information function";
	if (t->type == 'v' && strncmp(t->name, "@@", 2) == 0 && back(sc, 1) && strchr("&o(,EU", back(sc, 1)->type))
		return "system variable";
	/* OR 1=1, AND 'a'='a', OR 2>1: a logic operator then a comparison of literals */
	if ((t->type == 'n' || t->type == 's') && back(sc, 1) && is_cmp(back(sc, 1)) && back(sc, 2) &&
	    (back(sc, 2)->type == 'n' || back(sc, 2)->type == 's') && type_at(sc, 3, '&'))
		return "tautology";
	/* OR a=a */
	if (t->type == 'b' && back(sc, 1) && is_cmp(back(sc, 1)) && back(sc, 2) && back(sc, 2)->type == 'b' &&
	    strcmp(back(sc, 2)->name, t->name) == 0 && type_at(sc, 3, '&'))
		return "tautology";
	return NULL;
}

static bool ends_expr(const struct tok *t)
{
	return !t || t->type == 'o' || t->type == '&' || t->type == ';' || t->type == ')' || t->type == 'k' ||
	       t->type == 'U';
}

/* Shapes at the start of a reading: the value broke out of a string or a number. */
static const char *shape_start(const struct scan *sc)
{
	const struct tok *f = sc->first;
	size_t n = sc->nfirst;
	const struct tok *t1 = n > 1 ? &f[1] : NULL, *t2 = n > 2 ? &f[2] : NULL, *t3 = n > 3 ? &f[3] : NULL;
	if (n == 0)
		return NULL;
	bool broke = f[0].type == 's' || f[0].type == 'n';
	if (!broke)
		return NULL;
	if (f[0].type == 's' && f[0].comment_after && (n == 1 || t1->type != 'b'))
		return "quote break then comment";
	if (!t1)
		return NULL;
	/* skip the closing parentheses of an expression broken out of */
	size_t k = 1;
	while (k < n && f[k].type == ')')
		k++;
	const struct tok *a = k < n ? &f[k] : NULL, *b = k + 1 < n ? &f[k + 1] : NULL;
	const struct tok *c = k + 2 < n ? &f[k + 2] : NULL;
	if (a && a->type == '&' && b) {
		if (b->type == 'f' || b->type == '(' || b->type == 'v')
			return "break then logic";
		if ((b->type == 'n' || b->type == 's') && (ends_expr(c) || b->comment_after))
			return "break then logic";
		if (b->type == 'b' && c && c->type == 'o')
			return "break then logic";
		if (b->type == 'o' && named(b, "not"))
			return "break then logic";
	}
	if (a && a->type == 'U')
		return "break then union";
	if (a && a->type == ';' && b && (b->type == 'E' || b->type == 'k'))
		return "break then statement";
	if (f[0].type == 's' && a == t1 && t1->type == 'o' && t1->op[0] && t2 && is_operand(t2) && t2->type != 'b' &&
	    (ends_expr(t3) || t2->comment_after || t2->type == 'f'))
		return "quote break then operator";
	if (a && (named(a, "order") || named(a, "group")) && b && named(b, "by") && c && (c->type == 'n'))
		return "break then order by";
	if (a && a->type == 'k' && (named(a, "having") || named(a, "procedure") || named(a, "into")) && b &&
	    (b->type == 'n' || b->type == 'b' || b->type == 'k' || b->type == 'f'))
		return "break then clause";
	if (f[0].type == 's' && k > 1 && a && (a->type == '&' || a->type == ';' || a->type == 'U' || a->type == 'o'))
		return "break then parenthesis";
	return NULL;
}

static bool scan_reading(const char *s, size_t n, char quote, struct waf_sqli_result *out)
{
	struct lexer lx = {.s = s, .n = n, .quote = quote};
	struct scan sc;
	memset(&sc, 0, sizeof(sc));
	struct tok t;
	const char *shape = NULL;
	bool start_done = false;
	while (next_token(&lx, &t)) {
		size_t save = lx.i;
		bool comment = skip_blank(&lx);
		lx.i = save;
		t.comment_after = comment;
		if (sc.nfirst < FIRST_MAX)
			sc.first[sc.nfirst++] = t;
		sc.ring[sc.count % RING] = t;
		sc.count++;
		shape = shape_anywhere(&sc);
		if (shape)
			break;
		if (!start_done && sc.nfirst == FIRST_MAX) {
			start_done = true;
			shape = shape_start(&sc);
			if (shape)
				break;
		}
	}
	if (!shape && sc.from_wait == 2)
		shape = "select ... from";
	if (!shape && !start_done)
		shape = shape_start(&sc);
	if (!shape)
		return false;
	if (out) {
		size_t k = sc.nfirst < WAF_SQLI_FP_LEN ? sc.nfirst : WAF_SQLI_FP_LEN;
		for (size_t i = 0; i < k; i++)
			out->fingerprint[i] = sc.first[i].type;
		out->fingerprint[k] = '\0';
		out->shape = shape;
		out->context = quote;
	}
	return true;
}

/* Whether s[a..b) ends with w[0..l) (ASCII case aside). */
static bool ends_with_ci(const char *s, size_t a, size_t b, const char *w, size_t l)
{
	if (l > b - a)
		return false;
	for (size_t j = 0; j < l; j++) {
		unsigned char c = (unsigned char)s[b - l + j];
		if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)w[j])
			return false;
	}
	return true;
}

#define ENDS(w) ends_with_ci(s, a, b, (w), sizeof(w) - 1)

/* Whether the run of word bytes s[a..b) ends with a word whose token every
 * shape of an unquoted reading needs one of: the logic operators, UNION,
 * the statements, and the words that read as a number (besides what needs
 * '@', '(' or a quote). A word token is always a suffix of such a run (a
 * number before it in the same run is a token of its own). */
static bool run_ends_in_shape_word(const char *s, size_t a, size_t b)
{
	switch (s[b - 1] | 0x20) {
	case 'c':
		return ENDS("exec");
	case 'd':
		return ENDS("and");
	case 'e':
		return ENDS("update") || ENDS("delete") || ENDS("execute") || ENDS("declare") || ENDS("create") ||
		       ENDS("truncate") || ENDS("true") || ENDS("false");
	case 'l':
		return ENDS("null");
	case 'n':
		return ENDS("union") || ENDS("shutdown");
	case 'p':
		return ENDS("drop");
	case 'r':
		return ENDS("or") || ENDS("xor") || ENDS("alter") || ENDS("waitfor") || ENDS("handler");
	case 't':
		return ENDS("select") || ENDS("insert");
	default:
		return false;
	}
}

#undef ENDS

static bool run_ends_in(const char *s, size_t a, size_t b, const char *const *list, size_t n)
{
	for (size_t k = 0; k < n; k++)
		if (ends_with_ci(s, a, b, list[k], strlen(list[k])))
			return true;
	return false;
}

#define RUN_ENDS_IN(s, a, b, list) run_ends_in((s), (a), (b), (list), sizeof(list) / sizeof((list)[0]))

/* False when no reading can have a shape, found without tokenizing: no
 * quote (the quoted readings and every string token need one), no comment,
 * no '@' (variables), no "||" or "&&", not starting with a number, no word
 * of shape_words, and no '(' after a known function's name. Most values
 * (search words, names, header values) are decided here. */
/* worth_reading's byte classes: SQ_WORD a word byte (is_word), SQ_SPECIAL
 * a byte it looks closer at, SQ_NOT_PLAIN a byte other than a word byte
 * below 0x80, '.' or '-'. */
enum { SQ_WORD = 1, SQ_SPECIAL = 2, SQ_NOT_PLAIN = 4 };
static const unsigned char sq_class[256] = {
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 6, 6, 1, 4, 6, 6, 6, 4, 6, 4, 4, 2, 0, 6,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4,
	6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 1,
	4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 6, 4, 4, 4,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
};

static bool worth_reading(const char *s, size_t n)
{
	/* A value of letters, digits, '_', '$', '.' and '-' alone ("plain"):
	 * words can only follow numbers or dots, so the shapes a leading number
	 * starts (a clause, ORDER BY, a statement) cannot be made; only a shape
	 * word (or a "--" comment) can. Most cookie values, ids and numbers are
	 * such values. */
	unsigned seen = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		unsigned k = sq_class[c];
		if (k & SQ_WORD) {
			/* a run of word bytes, read in one go: only its end matters */
			size_t run = i;
			do {
				seen |= k;
				i++;
			} while (i < n && ((k = sq_class[(unsigned char)s[i]]) & SQ_WORD));
			if (run_ends_in_shape_word(s, run, i))
				return true;
			if (i == n)
				break;
			c = (unsigned char)s[i];
		}
		seen |= k;
		if (!(k & SQ_SPECIAL))
			continue;
		switch (c) {
		case '\'':
		case '"':
		case '@':
		case '#':
			return true;
		case '/':
		case '*':
			if ((c == '/' && i + 1 < n && s[i + 1] == '*') || (c == '*' && i + 1 < n && s[i + 1] == '/'))
				return true;
			break;
		case '-':
		case '|':
		case '&':
			if (i + 1 < n && s[i + 1] == (char)c)
				return true;
			break;
		case '(': {
			size_t e = i;
			while (e > 0 && is_space((unsigned char)s[e - 1]))
				e--;
			/* the functions' names all end in a letter (or '_'): "5.0 (" is no call */
			if (e == 0 || !(((s[e - 1] | 0x20) >= 'a' && (s[e - 1] | 0x20) <= 'z') || s[e - 1] == '_'))
				break;
			size_t a = e;
			while (a > 0 && is_word((unsigned char)s[a - 1]))
				a--;
			if (RUN_ENDS_IN(s, a, e, strong_functions) || RUN_ENDS_IN(s, a, e, info_functions))
				return true;
			break;
		}
		default:
			break;
		}
	}
	if (!(seen & SQ_NOT_PLAIN))
		return false;
	size_t i = 0;
	while (i < n && is_space((unsigned char)s[i]))
		i++;
	return i < n && (is_digit((unsigned char)s[i]) || (s[i] == '.' && i + 1 < n && is_digit((unsigned char)s[i + 1])));
}

static bool detect(const char *s, size_t n, struct waf_sqli_result *out, bool shortcut)
{
	if (n > WAF_SQLI_MAX_INPUT)
		n = WAF_SQLI_MAX_INPUT;
	if (shortcut && !worth_reading(s, n))
		return false;
	if (scan_reading(s, n, 0, out))
		return true;
	if (memchr(s, '\'', n) && scan_reading(s, n, '\'', out))
		return true;
	if (memchr(s, '"', n) && scan_reading(s, n, '"', out))
		return true;
	return false;
}

bool waf_sqli_detect(const char *s, size_t n, struct waf_sqli_result *out)
{
	return detect(s, n, out, true);
}

bool waf_sqli_detect_all(const char *s, size_t n, struct waf_sqli_result *out)
{
	return detect(s, n, out, false);
}
