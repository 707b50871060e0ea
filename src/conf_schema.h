/* conf_schema.h - the schema toolkit behind conf_load(), for the files that
 * check one section of the config each (conf_listeners.c, conf_pools.c,
 * conf_services.c, conf_routes.c, conf_limits.c, conf_logging.c, conf_tls.c,
 * conf_resilience.c, and a module's own section such as rate limits).
 *
 * Contract: a walker is only alive inside conf_load(). Values are Lua stack
 * slots; a field "opened" with conf_field_open/conf_item_open/conf_entry_open
 * has its value on the stack top and its name pushed onto w->path, and must be
 * closed with conf_field_close. Every problem is reported with conf_werr*
 * ("FILE: PATH: message") and the walk goes on, so that all errors are
 * reported at once. Strings from conf_value_string belong to Lua: copy them
 * with conf_xstrdup before the field is closed. conf_x* allocation helpers
 * abort on out-of-memory (a config that large is a bug, not a condition). */
#ifndef SLUICE_CONF_SCHEMA_H
#define SLUICE_CONF_SCHEMA_H

#include <lua.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "conf.h"

/* Name lengths: pool and service names, listener and route labels, host names. */
enum { CONF_NAME_MAX_LEN = 64, CONF_LABEL_MAX_LEN = 128, CONF_HOST_MAX_LEN = 253 };

/* Character classes, ASCII only: config syntax must not depend on locale. */
static inline bool conf_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool conf_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline char conf_ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static inline char conf_ascii_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* RFC 9110 tchar: what method and header names are made of. */
static inline bool conf_is_tchar(char c)
{
	return conf_is_alpha(c) || conf_is_digit(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static inline bool conf_is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!conf_is_tchar(*s))
			return false;
	return true;
}

struct conf_section;

struct conf_walker {
	lua_State *L;
	struct conf *c;
	struct conf_errors *errs;
	const char *source;
	const char *base_dir; /* directory of the config file: relative paths resolve against it */
	char *path;           /* Lua path of the value being checked, e.g. pools.web.servers[1] */
	size_t path_len;
	size_t path_cap;
	size_t services_cap;
	const struct conf_trace *trace; /* NULL unless a tool explores the schema */
	const struct conf_section *const *modules; /* the modules' own sections, in registration order */
	size_t num_modules;
};

/* A config section a module owns: its top-level keys, and optionally keys in
 * every route, with the functions that check them and free what they
 * allocated. Registered through struct module's `conf` (module.h), so a
 * module's config never touches the core's config code. walk runs after
 * listeners, pools and services and before routes (so routes can name what
 * the section defines); walk_route runs for each route table; free runs from
 * conf_free before the core's data (routes included) is freed. */
struct conf_section {
	const char *const *root_keys;  /* NULL-terminated */
	void (*walk)(struct conf_walker *w, int root);
	const char *const *route_keys; /* NULL: none */
	void (*walk_route)(struct conf_walker *w, int route_table, struct conf_route *r);
	void (*free)(struct conf *c);
};

/* Pushes a userdata holding a NULL-terminated key list: base followed by
 * every module section's root_keys (or route_keys when route). */
const char **conf_keys_with_modules(const struct conf_walker *w, const char *const *base, bool route);

/* A field being checked: its value is on the stack top and its path pushed. */
struct conf_field {
	int top;
	size_t mark;
};

enum conf_field_status { CONF_FIELD_ABSENT, CONF_FIELD_SET, CONF_FIELD_INVALID };

/* Allocation that aborts on failure. */
void *conf_xmalloc(size_t n);
void *conf_xcalloc(size_t n, size_t size);
void *conf_xreallocarray(void *p, size_t n, size_t size);
char *conf_xstrndup(const char *s, size_t n);
char *conf_xstrdup(const char *s);
char *conf_xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
char *conf_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* file as written in the config, resolved against the config file's directory (a copy) */
char *conf_resolve_path(const struct conf_walker *w, const char *file);
/* A user-supplied string for a message: quoted, control bytes escaped, long ones cut (caller frees). */
char *conf_quoted(const char *s);

/* Errors at the current path, at path.key, at path[index]. */
void conf_werr(struct conf_walker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conf_werr_key(struct conf_walker *w, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void conf_werr_index(struct conf_walker *w, size_t index, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "expected EXPECTED, got TYPE" for the value at stack slot v. */
void conf_type_error(struct conf_walker *w, int v, const char *expected);

size_t conf_path_push_key(struct conf_walker *w, const char *key);
size_t conf_path_push_index(struct conf_walker *w, size_t index);
void conf_path_pop(struct conf_walker *w, size_t mark);

/* The three table readers below check that slot t holds a table themselves
 * (reporting any other type), so no caller can hand lua_next a non-table. */
/* Reports every key of the record t that is not in known (NULL-terminated), with a did-you-mean. */
void conf_check_record_keys(struct conf_walker *w, int t, const char *const *known);
/* Checks that t is a list {[1]=..., [n]=...}; example shows the expected shape; *n is 0 on false. */
bool conf_list_length(struct conf_walker *w, int t, const char *example, size_t *n);
/* Pushes a userdata holding the string keys of the map t, sorted; reports other keys (none when t is no table). */
const char **conf_map_keys(struct conf_walker *w, int t, const char *example, size_t *n);

/* Open t[key]: false (nothing pushed) when absent. */
bool conf_field_open(struct conf_walker *w, int t, const char *key, struct conf_field *f);
void conf_item_open(struct conf_walker *w, int list, size_t index, struct conf_field *f);
void conf_entry_open(struct conf_walker *w, int map, const char *key, struct conf_field *f);
void conf_field_close(struct conf_walker *w, const struct conf_field *f);
/* Opens t[key] as a record with the given keys; false if absent or not a table (reported). */
bool conf_field_open_record(struct conf_walker *w, int t, const char *key, const char *const *keys,
                            const char *example, struct conf_field *f);

/* Typed values at stack slot v; false (reported) when wrong. */
const char *conf_value_string(struct conf_walker *w, int v);
bool conf_value_integer(struct conf_walker *w, int v, long long lo, long long hi, long long *out);
bool conf_value_duration(struct conf_walker *w, int v, bool allow_zero, conf_msec *out);
bool conf_value_size(struct conf_walker *w, int v, uint64_t lo, uint64_t hi, uint64_t *out);
/* Reads an address string and resolves it; *len stays 0 when invalid. */
const char *conf_value_address(struct conf_walker *w, int v, struct sockaddr_storage *ss, socklen_t *len);

/* Typed fields t[key]: absent, set, or invalid (reported). */
enum conf_field_status conf_field_unsigned(struct conf_walker *w, int t, const char *key, unsigned lo, unsigned hi,
                                           unsigned *out);
enum conf_field_status conf_field_duration(struct conf_walker *w, int t, const char *key, bool allow_zero,
                                           conf_msec *out);
enum conf_field_status conf_field_size(struct conf_walker *w, int t, const char *key, uint64_t lo, uint64_t hi,
                                       uint64_t *out);

/* Opens path for reading only if it is a regular file: a FIFO would block the
 * open (and the loader with it), a device like /dev/zero or /dev/urandom never
 * ends. Returns the descriptor (O_CLOEXEC) with *st filled, or -1 with what is
 * wrong in why ("is a FIFO (named pipe), not a regular file", strerror(), ...). */
int conf_open_regular_file(const char *path, struct stat *st, char *why, size_t why_size);

/* Two optional config strings are the same: both NULL, or equal text. */
bool conf_same_str(const char *a, const char *b);
/* Same address and port (either may be unset: len 0, never equal). */
bool conf_sockaddr_equal(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                         socklen_t blen);
/* A total order on addresses, 0 exactly when conf_sockaddr_equal (unset ones: never 0). */
int conf_sockaddr_compare(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                          socklen_t blen);

/* An item equal to an earlier one: its index and the first one's. */
struct conf_duplicate {
	size_t index;
	size_t first;
};
/* The items of an array (n items of size bytes at base) equal to an earlier
 * one, found by sorting (n log n, for configs of tens of thousands of routes
 * or servers): compare orders two items, 0 when equal. Fills out (room for
 * n) in index order; returns how many. */
size_t conf_find_duplicates(const void *base, size_t n, size_t size, int (*compare)(const void *, const void *),
                            struct conf_duplicate *out);

/* Number of entries of the table t. */
size_t conf_count_entries(lua_State *L, int t);

/* Did you mean: consider candidates for word, then the text to append. */
struct conf_suggestion {
	const char *best;
	unsigned distance;
};
void conf_suggest_consider(struct conf_suggestion *s, const char *word, const char *candidate);
/* " (did you mean "x"?)" or "" (caller frees). */
char *conf_suggestion_text(const struct conf_suggestion *s);

/* Pool and service names: 1 to CONF_NAME_MAX_LEN letters, digits, "_", "-", "." (reported otherwise). */
bool conf_check_object_name(struct conf_walker *w, const char *kind, const char *name);
/* Listener and route names: printable, no quotes or backslashes; NULL (reported) otherwise. */
const char *conf_value_label(struct conf_walker *w, int v);

/* Opens t[key] as a list that must hold at least one item. Returns false after
 * reporting why (missing, not a table, not a list, empty) with the field
 * already closed; on true the caller walks *list (n items) and closes f. */
bool conf_open_required_list(struct conf_walker *w, int t, const char *key, const char *missing, const char *what,
                             const char *example, const char *empty, struct conf_field *f, int *list, size_t *n);

#endif
