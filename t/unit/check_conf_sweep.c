/* check_conf_sweep.c - every key of the config schema, given every Lua type,
 * must give a clear "FILE: PATH: message" error (or be accepted), never a
 * crash or a hang (issue 17: `retry = { on = "5xx" }` crashed `sluice check`).
 *
 * The keys are not listed here: they are discovered from the loader itself.
 * conf_load_string_traced() reports every record the schema walk checks, with
 * the record's key list, and every map, list and present value. Starting from
 * the shipped configs (conf/sluice.lua and every .lua file in conf/examples), each key that a
 * record accepts but the config leaves out is probed with an empty table, so
 * the records below it (retry, breaker, tls, ...) are walked and their keys
 * learnt too; maps get a probe entry and lists a first item, until nothing new
 * turns up. A key added to the C schema is therefore swept without touching
 * this file. Every discovered slot is then set to each value of sweep_values.
 * SWEEP_LIST=1 prints the slots discovered.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"

#ifndef SLUICE_SRCDIR
#define SLUICE_SRCDIR "."
#endif

static const char *srcdir(void)
{
	const char *d = getenv("SLUICE_SRCDIR");
	return d && *d ? d : SLUICE_SRCDIR;
}

/* One of each Lua type, and the numbers that break naive conversions. */
static const char *const sweep_values[] = {
	"true", "false", "0", "-1", "1.5", "0/0", "1e300", "-1e300", "math.huge", "math.mininteger",
	"\"\"", "\"x\"", "\"5xx\"", "string.rep(\"a\", 300)", "\"a\\0b\"", "{}", "{ {} }", "{ x = { y = {} } }",
	"{ \"a\", \"b\" }", "function() end",
};

/* A growable set of strings. */
struct strset {
	char **items;
	size_t count, cap;
};

static bool strset_has(const struct strset *s, const char *v)
{
	for (size_t i = 0; i < s->count; i++)
		if (strcmp(s->items[i], v) == 0)
			return true;
	return false;
}

static bool strset_add(struct strset *s, const char *v)
{
	if (strset_has(s, v))
		return false;
	if (s->count == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->items = realloc(s->items, s->cap * sizeof *s->items);
		ck_assert_ptr_nonnull(s->items);
	}
	s->items[s->count] = strdup(v);
	ck_assert_ptr_nonnull(s->items[s->count]);
	s->count++;
	return true;
}

static void strset_free(struct strset *s)
{
	for (size_t i = 0; i < s->count; i++)
		free(s->items[i]);
	free(s->items);
	memset(s, 0, sizeof *s);
}

/* What the exploration has learnt so far. */
struct explore {
	struct strset present;  /* paths whose value exists in some probe */
	struct strset probes;   /* paths set to {} to walk what lies below */
	struct strset slots;    /* paths to sweep */
	const void **kinds;     /* record key lists already expanded into slots */
	size_t num_kinds, cap_kinds;
	struct strset *keys;    /* every record key seen, for the docs check (may be NULL) */
};

static char *child_path(const char *path, const char *suffix)
{
	size_t n = strlen(path) + strlen(suffix) + 2;
	char *out = malloc(n);
	ck_assert_ptr_nonnull(out);
	if (!*path || suffix[0] == '[')
		snprintf(out, n, "%s%s", path, suffix);
	else
		snprintf(out, n, "%s.%s", path, suffix);
	return out;
}

static void visit(void *ud, enum conf_trace_kind kind, const char *path, const char *const *keys)
{
	struct explore *x = ud;
	switch (kind) {
	case CONF_TRACE_VALUE:
		strset_add(&x->present, path);
		break;
	case CONF_TRACE_RECORD: {
		for (size_t i = 0; i < x->num_kinds; i++)
			if (x->kinds[i] == keys)
				return;
		if (x->num_kinds == x->cap_kinds) {
			x->cap_kinds = x->cap_kinds ? x->cap_kinds * 2 : 32;
			x->kinds = realloc(x->kinds, x->cap_kinds * sizeof *x->kinds);
			ck_assert_ptr_nonnull(x->kinds);
		}
		x->kinds[x->num_kinds++] = keys;
		for (const char *const *k = keys; *k; k++) {
			if (x->keys)
				strset_add(x->keys, *k);
			char *slot = child_path(path, *k);
			strset_add(&x->slots, slot);
			free(slot);
		}
		break;
	}
	case CONF_TRACE_MAP: {
		char *entry = child_path(path, "sweep_entry");
		strset_add(&x->slots, entry);
		strset_add(&x->probes, entry);
		free(entry);
		break;
	}
	case CONF_TRACE_LIST: {
		char *item = child_path(path, "[1]");
		strset_add(&x->slots, item);
		strset_add(&x->probes, item);
		free(item);
		break;
	}
	}
}

/* The walker's path ("pools.web.servers[1]", "headers[\"x-env\"]") as a Lua
 * list of keys: { "pools", "web", "servers", 1 }. */
static char *lua_key_list(const char *path)
{
	size_t cap = strlen(path) * 2 + 8;
	char *out = malloc(cap);
	ck_assert_ptr_nonnull(out);
	size_t o = 0;
	out[o++] = '{';
	const char *p = path;
	while (*p) {
		if (o > 1)
			out[o++] = ',';
		if (*p == '.')
			p++;
		if (*p == '[' && p[1] == '"') {
			const char *q = p + 2;
			while (*q && *q != '"')
				q += *q == '\\' && q[1] ? 2 : 1;
			ck_assert_msg(q[0] == '"' && q[1] == ']', "cannot parse path %s", path);
			memcpy(out + o, p + 1, (size_t)(q - p));
			o += (size_t)(q - p);
			p = q + 2;
		} else if (*p == '[') {
			const char *q = strchr(p, ']');
			ck_assert_msg(q != NULL, "cannot parse path %s", path);
			memcpy(out + o, p + 1, (size_t)(q - p - 1));
			o += (size_t)(q - p - 1);
			p = q + 1;
		} else {
			size_t n = strcspn(p, ".[");
			out[o++] = '"';
			memcpy(out + o, p, n);
			o += n;
			out[o++] = '"';
			p += n;
		}
	}
	out[o++] = '}';
	out[o] = '\0';
	return out;
}

/* The seed config with path set to value (NULL path: the seed as it is). */
static char *mutated(const char *seed, const char *path, const char *value)
{
	char *keys = path ? lua_key_list(path) : strdup("nil");
	ck_assert_ptr_nonnull(keys);
	size_t n = strlen(seed) + strlen(keys) + strlen(value) + 512;
	char *out = malloc(n);
	ck_assert_ptr_nonnull(out);
	snprintf(out, n,
	         "local function sweep_set(t, keys, v)\n"
	         "  if not keys then return end\n"
	         "  for i = 1, #keys - 1 do\n"
	         "    if type(rawget(t, keys[i])) ~= \"table\" then rawset(t, keys[i], {}) end\n"
	         "    t = rawget(t, keys[i])\n"
	         "  end\n"
	         "  rawset(t, keys[#keys], v)\n"
	         "end\n"
	         "local c = (function()\n%s\nend)()\n"
	         "sweep_set(c, %s, %s)\n"
	         "return c\n",
	         seed, keys, value);
	free(keys);
	return out;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len + 4096 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
			ck_assert_ptr_nonnull(buf);
		}
		size_t r = fread(buf + len, 1, cap - len - 1, f);
		len += r;
		if (r == 0)
			break;
	}
	fclose(f);
	buf[len] = '\0';
	return buf;
}

/* The mutation being loaded, shown if it crashes the test. */
static char crash_context[1024];

static void on_fatal_signal(int sig)
{
	static const char head[] = "check_conf_sweep: crashed while loading: ";
	ssize_t r = write(2, head, sizeof head - 1);
	r = write(2, crash_context, strlen(crash_context));
	r = write(2, "\n", 1);
	(void)r;
	signal(sig, SIG_DFL);
	raise(sig);
}

static bool starts_with_path(const char *rest, const char *path)
{
	size_t n = strlen(path);
	return n > 0 && strncmp(rest, path, n) == 0 && (rest[n] == ':' || rest[n] == '.' || rest[n] == '[');
}

/* Is some message about path, a value inside it, or a record around it (not the root)? */
static bool names_path(const struct conf_errors *e, const char *source, const char *path)
{
	size_t src_len = strlen(source);
	for (size_t i = 0; i < e->count; i++) {
		const char *rest = e->msgs[i] + src_len + 2;
		if (starts_with_path(rest, path))
			return true;
		/* an ancestor: a constraint between fields is reported on their record */
		size_t plen = strcspn(rest, ":");
		if (plen > 0 && plen < strlen(path) && strncmp(rest, path, plen) == 0 &&
		    (path[plen] == '.' || path[plen] == '['))
			return true;
	}
	return false;
}

/* Is every message of e also one of without? */
static bool subset_of(const struct conf_errors *e, const struct conf_errors *without)
{
	for (size_t i = 0; i < e->count; i++) {
		bool found = false;
		for (size_t j = 0; j < without->count && !found; j++)
			found = strcmp(e->msgs[i], without->msgs[j]) == 0;
		if (!found)
			return false;
	}
	return true;
}

/* absent: the messages with the key taken away (what a value that is valid
 * in itself, like an empty pool table, may also cause elsewhere). */
static void check_errors(const struct conf_errors *e, const struct conf_errors *absent, const char *source,
                         const char *path, const char *value)
{
	ck_assert_msg(e->count > 0, "%s = %s: rejected without a message", path, value);
	size_t src_len = strlen(source);
	for (size_t i = 0; i < e->count; i++) {
		const char *m = e->msgs[i];
		ck_assert_msg(strncmp(m, source, src_len) == 0 && m[src_len] == ':' && m[src_len + 1] == ' ' &&
		                  m[src_len + 2] != '\0',
		              "%s = %s: message without the file name: %s", path, value, m);
		ck_assert_msg(strstr(m, "(null)") == NULL, "%s = %s: %s", path, value, m);
		for (const char *p = m; *p; p++)
			ck_assert_msg((unsigned char)*p >= 0x20 && *p != 0x7f, "%s = %s: control byte in: %s", path, value, m);
	}
	/* Taking a key away may only break a reference elsewhere (a pool a route
	 * names), and so may a value valid in itself; anything else must be
	 * reported where it is. */
	if (absent && !subset_of(e, absent)) {
		char *all = NULL;
		size_t len = 0;
		FILE *mem = open_memstream(&all, &len);
		ck_assert_ptr_nonnull(mem);
		for (size_t i = 0; i < e->count; i++)
			fprintf(mem, "  %s\n", e->msgs[i]);
		fclose(mem);
		ck_assert_msg(names_path(e, source, path), "%s = %s: no message names the path:\n%s", path, value, all);
		free(all);
	}
}

/* Loads seed with path = value (or as is), learning into x (may be NULL);
 * absent as in check_errors (NULL when value is nil); the messages are left in out. */
static void load_traced(const char *source, const char *seed, const char *path, const char *value, struct explore *x,
                        const struct conf_errors *absent, struct conf_errors *out)
{
	char *src = mutated(seed, path, value);
	snprintf(crash_context, sizeof crash_context, "%s with %s = %s", source, path ? path : "(nothing)", value);
	struct conf_trace tr = { visit, x };
	struct conf *c = conf_load_string_traced(source, src, out, x ? &tr : NULL);
	if (c)
		conf_free(c);
	else if (path)
		check_errors(out, absent, source, path, value);
	else
		ck_abort_msg("the seed %s does not load: %s", source, out->count ? out->msgs[0] : "?");
	free(src);
}

static size_t sweep_file(const char *source, size_t *num_slots, struct strset *keys)
{
	char *seed = read_file(source);
	struct explore x;
	memset(&x, 0, sizeof x);
	x.keys = keys;
	struct conf_errors e;
	conf_errors_init(&e);
	load_traced(source, seed, NULL, "nil", &x, NULL, &e);
	conf_errors_free(&e);
	/* Probe every slot not present in the seed with {}, and what that reveals. */
	for (size_t done = 0;;) {
		for (size_t i = 0; i < x.slots.count; i++)
			if (!strset_has(&x.present, x.slots.items[i]))
				strset_add(&x.probes, x.slots.items[i]);
		if (done == x.probes.count)
			break;
		char *probe = strdup(x.probes.items[done++]);
		ck_assert_ptr_nonnull(probe);
		char *src = mutated(seed, probe, "{}");
		snprintf(crash_context, sizeof crash_context, "%s with %s = {}", source, probe);
		struct conf_trace tr = { visit, &x };
		conf_free(conf_load_string_traced(source, src, &e, &tr));
		conf_errors_free(&e);
		free(src);
		free(probe);
	}
	size_t loads = 0;
	for (size_t i = 0; i < x.slots.count; i++) {
		struct conf_errors absent;
		conf_errors_init(&absent);
		load_traced(source, seed, x.slots.items[i], "nil", NULL, NULL, &absent);
		for (size_t v = 0; v < sizeof sweep_values / sizeof sweep_values[0]; v++) {
			conf_errors_init(&e);
			load_traced(source, seed, x.slots.items[i], sweep_values[v], NULL, &absent, &e);
			conf_errors_free(&e);
			loads++;
		}
		conf_errors_free(&absent);
	}
	if (getenv("SWEEP_LIST"))
		for (size_t i = 0; i < x.slots.count; i++)
			fprintf(stderr, "slot %s\n", x.slots.items[i]);
	*num_slots = x.slots.count;
	strset_free(&x.present);
	strset_free(&x.probes);
	strset_free(&x.slots);
	free(x.kinds);
	free(seed);
	return loads;
}


START_TEST(test_sweep_shipped_configs)
{
	signal(SIGSEGV, on_fatal_signal);
	signal(SIGBUS, on_fatal_signal);
	signal(SIGABRT, on_fatal_signal);
	signal(SIGFPE, on_fatal_signal);
	char path[4096];
	snprintf(path, sizeof path, "%s/conf/sluice.lua", srcdir());
	struct strset keys;
	memset(&keys, 0, sizeof keys);
	size_t slots = 0, loads = sweep_file(path, &slots, &keys);
	/* Far more than any hand-made list: the walk found the nested records. */
	ck_assert_msg(slots > 150, "only %zu slots discovered from %s", slots, path);

	snprintf(path, sizeof path, "%s/conf/examples", srcdir());
	DIR *d = opendir(path);
	ck_assert_msg(d != NULL, "cannot open %s", path);
	struct dirent *de;
	size_t files = 0;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		if (n < 5 || strcmp(de->d_name + n - 4, ".lua") != 0)
			continue;
		char file[4096 + 256];
		snprintf(file, sizeof file, "%s/%s", path, de->d_name);
		size_t s;
		loads += sweep_file(file, &s, &keys);
		files++;
	}
	closedir(d);
	ck_assert_uint_gt(files, 0);
	fprintf(stderr, "check_conf_sweep: %zu slots in conf/sluice.lua, %zu loads over %zu files\n", slots, loads,
	        files + 1);

	/* Every key the schema checks is documented: docs/configuration.md and
	 * the pages it sends sections to (a module's, TLS), as `key`, key = or .key`. */
	static const char *const pages[] = { "configuration.md", "rate-limiting.md", "tls.md" };
	char *docs = NULL;
	size_t docs_len = 0;
	FILE *mem = open_memstream(&docs, &docs_len);
	ck_assert_ptr_nonnull(mem);
	for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
		snprintf(path, sizeof path, "%s/docs/%s", srcdir(), pages[i]);
		char *text = read_file(path);
		fputs(text, mem);
		free(text);
	}
	fclose(mem);
	for (size_t i = 0; i < keys.count; i++) {
		char ticked[128], assigned[128], dotted[128];
		snprintf(ticked, sizeof ticked, "`%s`", keys.items[i]);
		snprintf(assigned, sizeof assigned, " %s = ", keys.items[i]);
		snprintf(dotted, sizeof dotted, ".%s`", keys.items[i]);
		ck_assert_msg(strstr(docs, ticked) || strstr(docs, assigned) || strstr(docs, dotted),
		              "config key \"%s\" is not in docs/configuration.md (nor the pages it refers to)",
		              keys.items[i]);
	}
	ck_assert_uint_gt(keys.count, 100);
	free(docs);
	strset_free(&keys);
}
END_TEST

/* The crash of issue 17, named: a string where a list belongs. */
START_TEST(test_list_given_a_scalar)
{
	static const char *const cases[][2] = {
		{ "retry = { on = \"5xx\" }", "pools.web.retry.on: expected a list" },
		{ "failure_statuses = 503", "pools.web.failure_statuses: expected a list" },
		{ "failure_statuses = \"503\"", "pools.web.failure_statuses: expected a list" },
		{ "retry = { on = true }", "pools.web.retry.on: expected a list" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char src[1024];
		snprintf(src, sizeof src,
		         "return { listeners = { { address = \"127.0.0.1:8080\" } },\n"
		         "  pools = { web = { servers = { \"127.0.0.1:9001\" }, %s } } }",
		         cases[i][0]);
		struct conf_errors e;
		conf_errors_init(&e);
		struct conf *c = conf_load_string("t.lua", src, &e);
		ck_assert_ptr_null(c);
		ck_assert_uint_eq(e.count, 1);
		char want[256];
		snprintf(want, sizeof want, "t.lua: %s", cases[i][1]);
		ck_assert_msg(strncmp(e.msgs[0], want, strlen(want)) == 0, "%s: got %s", cases[i][0], e.msgs[0]);
		conf_errors_free(&e);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_sweep");
	TCase *tc = tcase_create("sweep");
	/* a few thousand loads; generous for ASan builds on a busy machine */
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_list_given_a_scalar);
	tcase_add_test(tc, test_sweep_shipped_configs);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
