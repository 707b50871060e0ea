/* policy.c - the Lua policy module (policy.h): per-(snapshot, worker) Lua
 * states, the phases, and the request object scripts see (docs/policies.md). */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <lauxlib.h>

#include "accesslog.h"
#include "clock.h"
#include "conf_policy.h"
#include "counters.h"
#include "exchange.h"
#include "log.h"
#include "lua_cache.h"
#include "lua_codec.h"
#include "lua_rt.h"
#include "reqkey.h"
#include "snapshot.h"
#include "tls_io.h"
#include "worker.h"

enum pol_phase { PH_ACCESS = CONF_POLICY_ACCESS, PH_RESPONSE = CONF_POLICY_RESPONSE, PH_LOG = CONF_POLICY_LOG };
static const char *const phase_name[] = {"access", "response", "log"};

/* The stack slots a state keeps between calls (gen_new). */
enum { POL_SLOT_HANDLER = 1, POL_SLOT_R = 2 };

/* Failure lines a worker writes per second at most (the rest are counted). */
enum { POL_LOG_PER_SECOND = 20, POL_MAX_ARGS = 100, POL_NAME_MAX = 128 };
/* The per-worker `cache`: entries and bytes (docs/policies.md). */
enum { POL_CACHE_ENTRIES = 10000, POL_CACHE_BYTES = 16 << 20 };

/* One snapshot's policies on one worker. */
struct pol_gen {
	const struct snapshot *snap;
	uint64_t generation;
	const struct conf_policies *ps;
	struct lua_rt *rt;
	int r_ref;         /* the request object (one per state, valid during a call) */
	int headers_ref[2]; /* r.req_headers, r.resp_headers */
	int *fn_ref;       /* [policy * 3 + phase], LUA_NOREF when absent */
	int *config_ref;   /* per policy */
	unsigned users;    /* requests that started on it */
	struct pol_gen *next;
	struct pol_name *names; /* POL_NAME_SLOTS */
};

struct pol_worker {
	struct worker *w;
	struct lua_cache *cache; /* the scripts' `cache`, across snapshots */
	struct pol_gen *gens;
	uint64_t log_window_us;
	unsigned logged;
	uint64_t suppressed;
};

/* Header names the scripts pass, lowered and checked once per Lua state: a
 * script names the same few headers in every request (string constants of
 * its code). Direct-mapped by the Lua string's address; a slot holds a
 * registry reference to its string, so the string lives while the slot
 * does and an equal address is the same string. */
enum { POL_NAME_SLOTS = 16 };
struct pol_name {
	const char *s; /* the Lua string's bytes; NULL: empty */
	size_t len;
	int ref;
	bool token;       /* every byte a token character (a name that may be set) */
	bool reserved[2]; /* set by the gateway: [0] in a response head, [1] in a request head */
	char lower[POL_NAME_MAX];
};

/* A request's policy state, in its arena (r->policy). */
struct pol_req {
	struct pol_gen *gen;
	int ctx_ref;
};

/* The call in progress (the runtime's user pointer). */
struct pol_call {
	struct request *r;
	struct pol_req *q;
	const struct conf_policy *p;
	size_t policy;
	enum pol_phase phase;
	struct fields *resp;
	struct phase_deny *deny;
	bool decided;
};

/* ---- per-(snapshot, worker) state ---- */

static size_t my_index(void)
{
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i] == &policy_module)
			return i;
	return 0;
}

static int pol_snapshot_init(const struct conf *c, void **state, struct conf_errors *errs)
{
	(void)errs;
	*state = c->policies && c->policies->n ? (void *)c->policies : NULL;
	return 0;
}

static void gen_free(struct pol_gen *g)
{
	if (!g)
		return;
	lua_rt_free(g->rt);
	free(g->names);
	free(g->fn_ref);
	free(g->config_ref);
	free(g);
}

static void push_request_objects(struct pol_gen *g);

static struct pol_gen *gen_new(const struct snapshot *snap, struct lua_cache *cache)
{
	const struct conf_policies *ps = snap->conf->policies;
	struct pol_gen *g = calloc(1, sizeof *g);
	if (!g)
		return NULL;
	g->snap = snap;
	g->generation = snap->generation;
	g->ps = ps;
	g->fn_ref = calloc(ps->n * CONF_POLICY_PHASES + 1, sizeof *g->fn_ref);
	g->config_ref = calloc(ps->n + 1, sizeof *g->config_ref);
	g->names = calloc(POL_NAME_SLOTS, sizeof *g->names);
	struct lua_rt_limits lim;
	conf_policy_limits(ps, NULL, &lim);
	if (!g->fn_ref || !g->config_ref || !g->names || !(g->rt = lua_rt_new(&lim))) {
		gen_free(g);
		return NULL;
	}
	lua_rt_set_modules(g->rt, ps->modules, ps->num_modules);
	lua_rt_open_cache(g->rt, cache);
	lua_State *L = g->rt->L;
	push_request_objects(g);
	for (size_t i = 0; i < ps->n; i++) {
		char err[512];
		if (!conf_policy_instantiate(g->rt, &ps->v[i], err, sizeof err)) {
			struct log_line l;
			log_begin(&l, LOG_ERROR, "policy failed to load on a worker");
			log_str(&l, "policy", ps->v[i].name);
			log_str(&l, "error", err);
			log_end(&l);
			gen_free(g);
			return NULL;
		}
		for (int ph = 0; ph < CONF_POLICY_PHASES; ph++) {
			lua_getfield(L, -1, phase_name[ph]);
			g->fn_ref[i * CONF_POLICY_PHASES + (size_t)ph] =
			    lua_isfunction(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX) : (lua_pop(L, 1), LUA_NOREF);
		}
		lua_pop(L, 1);
		g->config_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	/* kept at the bottom of the stack for every call: the message handler
	 * (slot POL_SLOT_HANDLER) and the request object (POL_SLOT_R) */
	lua_settop(L, 0);
	lua_rt_push_handler(g->rt);
	lua_rawgeti(L, LUA_REGISTRYINDEX, g->r_ref);
	lua_gc(L, LUA_GCCOLLECT, 0);
	return g;
}

static bool gen_current(const struct pol_worker *ws, const struct pol_gen *g)
{
	const struct snapshot *cur = ws->w->snap;
	return cur && cur == g->snap && cur->generation == g->generation;
}

/* Free the states of snapshots the worker left whose last request is done. */
static void gens_sweep(struct pol_worker *ws)
{
	for (struct pol_gen **pp = &ws->gens; *pp;) {
		struct pol_gen *g = *pp;
		if (g->users == 0 && !gen_current(ws, g)) {
			*pp = g->next;
			gen_free(g);
		} else {
			pp = &g->next;
		}
	}
}

static struct pol_gen *gen_get(struct pol_worker *ws, const struct snapshot *snap)
{
	for (struct pol_gen *g = ws->gens; g; g = g->next)
		if (g->snap == snap && g->generation == snap->generation)
			return g;
	gens_sweep(ws);
	struct pol_gen *g = gen_new(snap, ws->cache);
	if (!g)
		return NULL;
	g->next = ws->gens;
	ws->gens = g;
	return g;
}

static int pol_worker_init(struct worker *w, void **state)
{
	struct pol_worker *ws = calloc(1, sizeof *ws);
	if (!ws)
		return -1;
	ws->w = w;
	*state = ws;
	if (!(ws->cache = lua_cache_new(POL_CACHE_ENTRIES, POL_CACHE_BYTES)))
		return -1;
	/* compile now, not on the first request */
	if (w->snap && w->snap->module_state[my_index()] && !gen_get(ws, w->snap))
		return -1;
	return 0;
}

/* A reload: compile the new snapshot's policies now, not on its first
 * request, and free the states no request uses any more. */
static void pol_worker_adopt(struct worker *w, void *state, const void *snapshot_state)
{
	struct pol_worker *ws = state;
	gens_sweep(ws);
	if (snapshot_state && w->snap)
		gen_get(ws, w->snap); /* on failure (logged) the first request tries again */
}

static void pol_worker_free(void *state)
{
	struct pol_worker *ws = state;
	if (!ws)
		return;
	while (ws->gens) {
		struct pol_gen *g = ws->gens;
		ws->gens = g->next;
		gen_free(g);
	}
	lua_cache_free(ws->cache);
	free(ws);
}

/* ---- the request object ---- */

static struct pol_call *call_of(lua_State *L)
{
	struct pol_call *call = lua_rt_of(L)->user;
	if (!call)
		luaL_error(L, "the request object is used outside a policy call");
	return call;
}

/* A header name's characters (RFC 9110 tchar: letters, digits and
 * !#$%&'*+-.^_`|~), lower-cased; 0: not allowed. */
static const unsigned char name_char[256] = {
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,  33,   0,  35,  36,  37,  38,  39,   0,   0,  42,  43,   0,  45,  46,   0,
	 48,  49,  50,  51,  52,  53,  54,  55,  56,  57,   0,   0,   0,   0,   0,   0,
	  0,  97,  98,  99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
	112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122,   0,   0,   0,  94,  95,
	 96,  97,  98,  99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
	112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122,   0, 124,   0, 126,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
	  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
};

static size_t lower_name(lua_State *L, int idx, char out[POL_NAME_MAX], bool check_token, bool *token)
{
	size_t n;
	const char *s = luaL_checklstring(L, idx, &n);
	if (n == 0 || n >= POL_NAME_MAX)
		luaL_argerror(L, idx, "a header name of 1 to 127 characters");
	bool valid = true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = name_char[(unsigned char)s[i]];
		valid = valid && c != 0;
		/* outside tokens (a lookup by any name): lower-case letters, keep the rest */
		out[i] = c ? (char)c : s[i];
	}
	if (check_token && !valid)
		luaL_argerror(L, idx, "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)");
	if (token)
		*token = valid;
	out[n] = '\0';
	return n;
}

/* A header value a script sets: no CR, LF or NUL (no header injection). */
static const char *checked_value(lua_State *L, int idx, size_t *len)
{
	size_t n;
	const char *v = luaL_checklstring(L, idx, &n);
	for (size_t i = 0; i < n; i++)
		if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
			luaL_argerror(L, idx, "header values must not contain CR, LF or NUL");
	if (len)
		*len = n;
	return v;
}

/* Appends copies (one piece of the request's arena) of a name and value of known lengths. */
static void add_copies(struct fields *f, const char *name, size_t nlen, const char *value, size_t vlen)
{
	char *p = arena_alloc(f->arena, nlen + vlen + 2);
	memcpy(p, name, nlen);
	p[nlen] = '\0';
	memcpy(p + nlen + 1, value, vlen);
	p[nlen + 1 + vlen] = '\0';
	fields_add(f, p, nlen, p + nlen + 1, vlen);
}

/* Fields only the gateway sets: framing, hop-by-hop, the routing Host
 * (compared only when the length is one of theirs). */
static bool reserved_header(const char *lower, bool request)
{
	static const char *const names[] = {"content-length", "transfer-encoding", "connection", "keep-alive",
	                                    "te", "trailer", "upgrade", "proxy-connection", NULL};
	size_t n = strlen(lower);
	if (n != 2 && n != 4 && n != 7 && n != 10 && n != 14 && n != 16 && n != 17)
		return false;
	for (const char *const *p = names; *p; p++)
		if (strcmp(*p, lower) == 0)
			return true;
	return request && strcmp(lower, "host") == 0;
}

/* The header name at idx, lowered, from the state's slots (made on a miss):
 * argument errors as lower_name's. */
static const struct pol_name *name_at(lua_State *L, struct pol_gen *g, int idx)
{
	size_t n;
	const char *s = luaL_checklstring(L, idx, &n);
	struct pol_name *e = &g->names[((uintptr_t)s >> 4) % POL_NAME_SLOTS];
	if (e->s == s && e->len == n)
		return e;
	char lower[POL_NAME_MAX];
	bool token;
	lower_name(L, idx, lower, false, &token);
	if (e->s) {
		e->s = NULL;
		luaL_unref(L, LUA_REGISTRYINDEX, e->ref);
	}
	lua_pushvalue(L, idx);
	int ref = luaL_ref(L, LUA_REGISTRYINDEX); /* may raise (memory): the slot stays empty */
	memcpy(e->lower, lower, n + 1);
	e->len = n;
	e->token = token;
	e->reserved[0] = reserved_header(lower, false);
	e->reserved[1] = reserved_header(lower, true);
	e->ref = ref;
	e->s = s;
	return e;
}

/* The fields a headers method stands for: which 0 the request's, 1 the
 * response's, -1 the current phase's (r:set_header and friends). */
static struct fields *headers_of(lua_State *L, struct pol_call *call, int which, bool write, bool *request)
{
	if (which < 0) /* r:set_header and friends: the phase's own head */
		which = call->phase == PH_RESPONSE ? 1 : 0;
	*request = which == 0;
	if (*request) {
		if (write && call->phase != PH_ACCESS)
			luaL_error(L, "request headers can be changed only in the access phase");
		return &call->r->headers;
	}
	if (call->phase != PH_RESPONSE || !call->resp)
		luaL_error(L, "response headers exist only in the response phase");
	return call->resp;
}

static int h_get_in(lua_State *L, int which)
{
	bool req;
	struct pol_call *call = call_of(L);
	struct fields *f = headers_of(L, call, which, false, &req);
	const struct pol_name *name = name_at(L, call->q->gen, 2);
	size_t n;
	const char *v = fields_value(f, name->lower, &n);
	if (v)
		lua_pushlstring(L, v, n);
	else
		lua_pushnil(L);
	return 1;
}

static int h_get_all_in(lua_State *L, int which)
{
	bool req;
	struct fields *f = headers_of(L, call_of(L), which, false, &req);
	char name[POL_NAME_MAX];
	lower_name(L, 2, name, false, NULL);
	lua_newtable(L);
	lua_Integer k = 0;
	for (int i = fields_find(f, name, 0); i >= 0; i = fields_find(f, name, (size_t)i + 1)) {
		lua_pushlstring(L, f->v[i].value, f->v[i].value_len);
		lua_rawseti(L, -2, ++k);
	}
	return 1;
}

static struct fields *writable(lua_State *L, int which, const struct pol_name **name)
{
	bool req;
	struct pol_call *call = call_of(L);
	struct fields *f = headers_of(L, call, which, true, &req);
	*name = name_at(L, call->q->gen, 2);
	if (!(*name)->token)
		luaL_argerror(L, 2, "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)");
	if ((*name)->reserved[req])
		luaL_error(L, "header \"%s\" is set by the gateway and cannot be changed by a policy", (*name)->lower);
	return f;
}

static int h_set_in(lua_State *L, int which)
{
	const struct pol_name *name;
	size_t vlen;
	struct fields *f = writable(L, which, &name);
	if (lua_isnil(L, 3)) {
		fields_remove_len(f, name->lower, name->len);
		return 0;
	}
	const char *v = checked_value(L, 3, &vlen);
	fields_remove_len(f, name->lower, name->len);
	add_copies(f, name->lower, name->len, v, vlen);
	return 0;
}

static int h_add_in(lua_State *L, int which)
{
	const struct pol_name *name;
	size_t vlen;
	struct fields *f = writable(L, which, &name);
	const char *v = checked_value(L, 3, &vlen);
	add_copies(f, name->lower, name->len, v, vlen);
	return 0;
}

static int h_remove_in(lua_State *L, int which)
{
	const struct pol_name *name;
	struct fields *f = writable(L, which, &name);
	lua_pushinteger(L, (lua_Integer)fields_remove_len(f, name->lower, name->len));
	return 1;
}

/* The methods of each head, without an upvalue to read per call: _req the
 * request's, _resp the response's, _phase the current phase's. */
#define HEADER_READERS(SUFFIX, WHICH)                                                                             \
	static int h_get##SUFFIX(lua_State *L) { return h_get_in(L, WHICH); }                                     \
	static int h_get_all##SUFFIX(lua_State *L) { return h_get_all_in(L, WHICH); }
#define HEADER_WRITERS(SUFFIX, WHICH)                                                                             \
	static int h_set##SUFFIX(lua_State *L) { return h_set_in(L, WHICH); }                                     \
	static int h_add##SUFFIX(lua_State *L) { return h_add_in(L, WHICH); }                                     \
	static int h_remove##SUFFIX(lua_State *L) { return h_remove_in(L, WHICH); }
HEADER_READERS(_req, 0)
HEADER_READERS(_resp, 1)
HEADER_WRITERS(_req, 0)
HEADER_WRITERS(_resp, 1)
HEADER_WRITERS(_phase, -1)
#undef HEADER_READERS
#undef HEADER_WRITERS

/* r:header(name): the request's first field of that name, or nil. */
static int r_header(lua_State *L)
{
	struct pol_call *call = call_of(L);
	const struct pol_name *name = name_at(L, call->q->gen, 2);
	size_t n;
	const char *v = fields_value(&call->r->headers, name->lower, &n);
	if (v)
		lua_pushlstring(L, v, n);
	else
		lua_pushnil(L);
	return 1;
}

static int r_cookie(lua_State *L)
{
	struct pol_call *call = call_of(L);
	const char *name = luaL_checkstring(L, 2);
	const char *v;
	size_t vlen;
	if (reqkey_get(call->r, REQKEY_COOKIE, name, &v, &vlen))
		lua_pushlstring(L, v, vlen);
	else
		lua_pushnil(L);
	return 1;
}

static const char *query_of(const struct request *r, size_t *len)
{
	const char *q = strchr(r->origin_target, '?');
	if (!q) {
		*len = 0;
		return "";
	}
	*len = strlen(q + 1);
	return q + 1;
}

/* r:args(): the decoded query arguments; a repeated name gives a list. */
static int r_args(lua_State *L)
{
	struct pol_call *call = call_of(L);
	size_t len;
	const char *q = query_of(call->r, &len);
	const char *end = q + len;
	lua_newtable(L);
	int t = lua_gettop(L);
	int count = 0;
	while (q < end && count < POL_MAX_ARGS) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *item_end = amp ? amp : end;
		if (item_end > q) {
			const char *eq = memchr(q, '=', (size_t)(item_end - q));
			const char *kend = eq ? eq : item_end;
			codec_push_url_decoded(L, q, (size_t)(kend - q), true);
			if (eq)
				codec_push_url_decoded(L, eq + 1, (size_t)(item_end - eq - 1), true);
			else
				lua_pushliteral(L, "");
			lua_pushvalue(L, -2);
			int old = lua_rawget(L, t);
			if (old == LUA_TNIL) {
				lua_pop(L, 1);
				lua_rawset(L, t);
			} else if (old == LUA_TSTRING) {
				lua_createtable(L, 2, 0);
				lua_insert(L, -2);
				lua_rawseti(L, -2, 1);
				lua_insert(L, -2);
				lua_rawseti(L, -2, 2);
				lua_rawset(L, t);
			} else {
				lua_insert(L, -2);
				lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
				lua_pop(L, 2);
			}
			count++;
		}
		q = amp ? amp + 1 : end;
	}
	return 1;
}

static void need_access(lua_State *L, const struct pol_call *call, const char *what)
{
	if (call->phase != PH_ACCESS)
		luaL_error(L, "%s works only in the access phase", what);
}

/* r:deny([status [, reason]]): refuse the request (403 by default). */
static int r_deny(lua_State *L)
{
	struct pol_call *call = call_of(L);
	need_access(L, call, "r:deny");
	lua_Integer status = luaL_optinteger(L, 2, 403);
	luaL_argcheck(L, status >= 400 && status <= 599, 2, "a status from 400 to 599");
	size_t rlen = 0;
	const char *reason = luaL_optlstring(L, 3, NULL, &rlen);
	struct request *r = call->r;
	phase_deny_init(call->deny, r, (int)status, REASON_POLICY_DENIED);
	if (reason && rlen) {
		char *body = arena_alloc(&r->arena, rlen + 2);
		memcpy(body, reason, rlen);
		body[rlen] = '\n';
		body[rlen + 1] = '\0';
		call->deny->body = body;
		call->deny->body_len = rlen + 1;
	}
	call->decided = true;
	return lua_rt_stop(L);
}

/* r:respond(status [, body [, headers]]): answer the request here. */
static int r_respond(lua_State *L)
{
	struct pol_call *call = call_of(L);
	need_access(L, call, "r:respond");
	lua_Integer status = luaL_checkinteger(L, 2);
	luaL_argcheck(L, status >= 200 && status <= 599, 2, "a status from 200 to 599");
	size_t blen = 0;
	const char *body = luaL_optlstring(L, 3, "", &blen);
	if (!lua_isnoneornil(L, 4))
		luaL_checktype(L, 4, LUA_TTABLE);
	struct request *r = call->r;
	struct phase_deny *d = call->deny;
	phase_deny_init(d, r, (int)status, REASON_NONE);
	if (!lua_isnoneornil(L, 4)) {
		lua_pushnil(L);
		while (lua_next(L, 4)) {
			if (lua_type(L, -2) != LUA_TSTRING)
				return luaL_error(L, "r:respond: header names must be strings");
			char name[POL_NAME_MAX];
			lua_pushvalue(L, -2);
			lower_name(L, lua_gettop(L), name, true, NULL);
			lua_pop(L, 1);
			if (reserved_header(name, false))
				return luaL_error(L, "r:respond: header \"%s\" is set by the gateway", name);
			if (!lua_isstring(L, -1))
				return luaL_error(L, "r:respond: the value of header \"%s\" must be a string", name);
			const char *v = checked_value(L, lua_gettop(L), NULL);
			if (strcmp(name, "content-type") == 0)
				d->content_type = arena_strndup(&r->arena, v, strlen(v));
			else
				fields_add_copy(&d->headers, name, v);
			lua_pop(L, 1);
		}
	}
	char *copy = arena_alloc(&r->arena, blen + 1);
	memcpy(copy, body, blen);
	copy[blen] = '\0';
	d->body = copy;
	d->body_len = blen;
	call->decided = true;
	return lua_rt_stop(L);
}

static int r_set_pool(lua_State *L)
{
	struct pol_call *call = call_of(L);
	need_access(L, call, "r:set_pool");
	const char *name = luaL_checkstring(L, 2);
	struct request *r = call->r;
	const struct conf *c = r->snap->conf;
	const struct conf_service *svc = &c->services[r->service];
	for (size_t i = 0; i < svc->num_pools; i++) {
		if (strcmp(c->pools[svc->pools[i].pool].name, name) == 0) {
			r->pool = (int)svc->pools[i].pool;
			return 0;
		}
	}
	return luaL_error(L, "r:set_pool: pool \"%s\" is not one of service \"%s\"'s pools", name, svc->name);
}

static void fields_ready(struct fields *f, struct request *r)
{
	if (!f->arena)
		fields_init(f, &r->arena);
}

static int r_set_limit_key(lua_State *L)
{
	struct pol_call *call = call_of(L);
	need_access(L, call, "r:set_limit_key");
	char name[POL_NAME_MAX];
	lower_name(L, 2, name, false, NULL);
	const char *v = luaL_checkstring(L, 3);
	struct request *r = call->r;
	fields_ready(&r->policy_keys, r);
	fields_set(&r->policy_keys, name, v);
	return 0;
}

static int r_log(lua_State *L)
{
	struct pol_call *call = call_of(L);
	size_t klen;
	const char *key = luaL_checklstring(L, 2, &klen);
	luaL_argcheck(L, klen > 0 && klen < 64, 2, "a key of 1 to 63 characters");
	for (size_t i = 0; i < klen; i++)
		if (!((key[i] >= 'a' && key[i] <= 'z') || (key[i] >= '0' && key[i] <= '9') || key[i] == '_'))
			return luaL_argerror(L, 2, "a key of lower-case letters, digits and _");
	if (accesslog_is_field(key))
		return luaL_error(L, "r:log: \"%s\" is one of the access log's own fields; choose another key", key);
	int t = lua_type(L, 3);
	if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
		return luaL_argerror(L, 3, "a string, number or boolean");
	const char *v = t == LUA_TBOOLEAN ? (lua_toboolean(L, 3) ? "true" : "false") : lua_tostring(L, 3);
	struct request *r = call->r;
	fields_ready(&r->log_fields, r);
	fields_set(&r->log_fields, key, v);
	return 0;
}

static void push_str(lua_State *L, const char *s)
{
	if (s)
		lua_pushstring(L, s);
	else
		lua_pushnil(L);
}

static void push_ctx(lua_State *L, struct pol_call *call)
{
	struct pol_req *q = call->q;
	if (q->ctx_ref == LUA_NOREF) {
		lua_newtable(L);
		lua_pushvalue(L, -1);
		q->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		return;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, q->ctx_ref);
}

/* The request's fields, read through r's __index (the methods and
 * req_headers are plain fields of the table r itself). */
enum r_field {
	RF_METHOD = 1, RF_PATH, RF_QUERY, RF_TARGET, RF_HOST, RF_SCHEME, RF_PROTOCOL, RF_CLIENT_IP, RF_CLIENT_PORT,
	RF_TLS_VERSION, RF_TLS_CLIENT_SUBJECT, RF_TLS_SNI, RF_ROUTE, RF_SERVICE, RF_POOL, RF_LISTENER, RF_REQUEST_ID,
	RF_STATUS, RF_UPSTREAM_STATUS, RF_UPSTREAM, RF_REASON, RF_PHASE, RF_CTX, RF_CONFIG, RF_RESP_HEADERS,
	RF_BODY, RF_BODY_COMPLETE,
};

static const char *const r_field_names[] = {
    NULL, "method", "path", "query", "target", "host", "scheme", "protocol", "client_ip", "client_port",
    "tls_version", "tls_client_subject", "tls_sni", "route", "service", "pool", "listener", "request_id",
    "status", "upstream_status", "upstream", "reason", "phase", "ctx", "config", "resp_headers",
    "body", "body_complete",
};

/* r.body in the access phase: the request body read before it (the route's
 * request_buffering, or a policy's body = "64k"), decoded; nil when the
 * route reads none, and in the later phases (the proxy has sent it on). */
static void push_body(lua_State *L, const struct pol_call *call)
{
	const struct exchange *ex = ex_of(call->r);
	const struct conf *c = call->r->snap->conf;
	if (call->phase != PH_ACCESS || call->r->route < 0 || !c->routes[call->r->route].request_buffering) {
		lua_pushnil(L);
		return;
	}
	size_t n = ex->body_buf ? evbuffer_get_length(ex->body_buf) : 0;
	if (!n) {
		lua_pushliteral(L, "");
		return;
	}
	const unsigned char *bytes = evbuffer_pullup(ex->body_buf, -1);
	if (bytes)
		lua_pushlstring(L, (const char *)bytes, n);
	else
		lua_pushnil(L);
}

static void push_status(lua_State *L, int status)
{
	if (status)
		lua_pushinteger(L, status);
	else
		lua_pushnil(L);
}

/* r.NAME: upvalue 1 maps each field name to its enum r_field (one table
 * lookup of an interned string, no string comparisons). */
static int r_index(lua_State *L)
{
	lua_pushvalue(L, 2);
	lua_rawget(L, lua_upvalueindex(1));
	int field = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	if (field == 0) {
		lua_pushnil(L);
		return 1;
	}
	struct pol_call *call = call_of(L);
	struct request *r = call->r;
	const struct conf *c = r->snap->conf;
	struct tls_info ti;
	size_t n;
	switch ((enum r_field)field) {
	case RF_METHOD: lua_pushstring(L, r->method); break;
	case RF_PATH: lua_pushstring(L, r->path); break;
	case RF_QUERY: {
		const char *q = query_of(r, &n);
		lua_pushlstring(L, q, n);
		break;
	}
	case RF_TARGET: lua_pushstring(L, r->target); break;
	case RF_HOST: lua_pushstring(L, r->host); break;
	case RF_SCHEME: lua_pushstring(L, r->scheme); break;
	case RF_PROTOCOL: lua_pushstring(L, r->protocol); break;
	case RF_CLIENT_IP: lua_pushstring(L, r->client_ip); break;
	case RF_CLIENT_PORT: lua_pushinteger(L, r->client_port); break;
	case RF_TLS_VERSION: push_str(L, pipeline_tls_info(r, &ti) ? ti.version : NULL); break;
	case RF_TLS_CLIENT_SUBJECT:
		push_str(L, pipeline_tls_info(r, &ti) && ti.client_subject[0] ? ti.client_subject : NULL);
		break;
	case RF_TLS_SNI: push_str(L, pipeline_tls_info(r, &ti) && ti.sni[0] ? ti.sni : NULL); break;
	case RF_ROUTE: lua_pushstring(L, r->route_name); break;
	case RF_SERVICE: push_str(L, r->service >= 0 ? c->services[r->service].name : NULL); break;
	case RF_POOL: push_str(L, r->pool >= 0 ? c->pools[r->pool].name : NULL); break;
	case RF_LISTENER: lua_pushstring(L, r->listener); break;
	case RF_REQUEST_ID: lua_pushstring(L, r->request_id); break;
	case RF_STATUS: push_status(L, r->status); break;
	case RF_UPSTREAM_STATUS: push_status(L, r->upstream_status); break;
	case RF_UPSTREAM: push_str(L, r->upstream[0] ? r->upstream : NULL); break;
	case RF_REASON: lua_pushstring(L, reason_name(r->reason)); break;
	case RF_PHASE: lua_pushstring(L, phase_name[call->phase]); break;
	case RF_CTX: push_ctx(L, call); break;
	case RF_CONFIG: lua_rawgeti(L, LUA_REGISTRYINDEX, call->q->gen->config_ref[call->policy]); break;
	case RF_RESP_HEADERS:
		if (call->phase == PH_RESPONSE && call->resp)
			lua_rawgeti(L, LUA_REGISTRYINDEX, call->q->gen->headers_ref[1]);
		else
			lua_pushnil(L);
		break;
	case RF_BODY: push_body(L, call); break;
	case RF_BODY_COMPLETE: lua_pushboolean(L, call->phase == PH_ACCESS && ex_of(r)->body_done); break;
	default: lua_pushnil(L); break;
	}
	return 1;
}

static int r_newindex(lua_State *L)
{
	return luaL_error(L, "the request object is read-only (use r.ctx for your own values)");
}

static int locked_newindex(lua_State *L)
{
	return luaL_error(L, "a headers object is read-only (use its set, add and remove)");
}

/* A headers object: a table of functions that each know which fields they
 * stand for (0: the request's, 1: the response's), so a call needs no type
 * check. */
static int push_headers_object(lua_State *L, int which)
{
	static const luaL_Reg methods[2][6] = {
	    {{"get", h_get_req}, {"get_all", h_get_all_req}, {"set", h_set_req}, {"add", h_add_req},
	     {"remove", h_remove_req}, {NULL, NULL}},
	    {{"get", h_get_resp}, {"get_all", h_get_all_resp}, {"set", h_set_resp}, {"add", h_add_resp},
	     {"remove", h_remove_resp}, {NULL, NULL}},
	};
	lua_createtable(L, 0, 5);
	luaL_setfuncs(L, methods[which], 0);
	lua_createtable(L, 0, 2);
	lua_pushcfunction(L, locked_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushliteral(L, "locked");
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, -2);
	return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* r: one table per state, reused by every request: its methods and
 * req_headers are its own fields, the rest comes through __index; writes
 * are refused (a field added by one request would be seen by the next). */
static void push_request_objects(struct pol_gen *g)
{
	static const luaL_Reg methods[] = {
	    {"args", r_args},       {"header", r_header},   {"cookie", r_cookie},           {"deny", r_deny},
	    {"respond", r_respond}, {"set_pool", r_set_pool}, {"set_limit_key", r_set_limit_key}, {"log", r_log},
	    {NULL, NULL},
	};
	/* shorthands on r for the head of the current phase: the request's in
	 * access and log, the response's in response */
	static const luaL_Reg phase_header_methods[] = {
	    {"set_header", h_set_phase}, {"add_header", h_add_phase}, {"remove_header", h_remove_phase},
	    {"resp_header", h_get_resp}, {NULL, NULL},
	};
	lua_State *L = g->rt->L;
	g->headers_ref[0] = push_headers_object(L, 0);
	g->headers_ref[1] = push_headers_object(L, 1);
	lua_createtable(L, 0, 16);
	luaL_setfuncs(L, methods, 0);
	luaL_setfuncs(L, phase_header_methods, 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, g->headers_ref[0]);
	lua_setfield(L, -2, "req_headers");
	lua_createtable(L, 0, 4);
	lua_createtable(L, 0, (int)(sizeof r_field_names / sizeof r_field_names[0]));
	for (size_t i = 1; i < sizeof r_field_names / sizeof r_field_names[0]; i++) {
		lua_pushinteger(L, (lua_Integer)i);
		lua_setfield(L, -2, r_field_names[i]);
	}
	lua_pushcclosure(L, r_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, r_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushliteral(L, "locked");
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, -2);
	g->r_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---- running a phase ---- */

/* The outcome a failed call gives its request (sluice_route_policy_total). */
static enum ctr_policy_outcome failure_outcome(const struct lua_rt *rt)
{
	return rt->out_of_budget ? CTR_POLICY_BUDGET : rt->out_of_memory ? CTR_POLICY_MEMORY : CTR_POLICY_ERROR;
}

static const enum ctr_policy_phase ctr_phase[] = {[PH_ACCESS] = CTR_POLICY_PHASE_ACCESS,
                                                  [PH_RESPONSE] = CTR_POLICY_PHASE_RESPONSE,
                                                  [PH_LOG] = CTR_POLICY_PHASE_LOG};

static void note_failure(struct pol_worker *ws, const struct pol_call *call, const struct lua_rt *rt,
                         const char *err, bool denied)
{
	struct request *r = call->r;
	counters_route_add(r, CTR_ROUTE_POLICY_ERRORS + ctr_phase[call->phase], 1);
	fields_ready(&r->log_fields, r);
	char *v = arena_strndup(&r->arena, call->p->name, strlen(call->p->name));
	fields_set(&r->log_fields, "policy_error", v);
	uint64_t now = clock_mono_us();
	if (now - ws->log_window_us >= 1000000) {
		ws->log_window_us = now;
		ws->logged = 0;
	}
	if (ws->logged >= POL_LOG_PER_SECOND) {
		ws->suppressed++;
		return;
	}
	ws->logged++;
	struct log_line l;
	log_begin(&l, LOG_WARN, "policy failed");
	log_str(&l, "policy", call->p->name);
	log_str(&l, "phase", phase_name[call->phase]);
	log_str(&l, "error", err);
	log_str(&l, "kind", rt->out_of_budget ? "instructions" : rt->out_of_memory ? "memory" : "error");
	log_str(&l, "outcome", denied ? "deny" : "pass");
	log_str(&l, "route", r->route_name);
	log_str(&l, "request_id", r->request_id);
	if (ws->suppressed) {
		log_int(&l, "suppressed", (long long)ws->suppressed);
		ws->suppressed = 0;
	}
	log_end(&l);
}

/* One phase function of one policy; false when it failed. */
static bool run_phase(struct pol_worker *ws, struct pol_call *call)
{
	struct pol_gen *g = call->q->gen;
	int ref = g->fn_ref[call->policy * CONF_POLICY_PHASES + call->phase];
	if (ref == LUA_NOREF)
		return true;
	struct lua_rt *rt = g->rt;
	lua_State *L = rt->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	lua_pushvalue(L, POL_SLOT_R);
	rt->user = call;
	rt->call_instructions = call->p->instructions;
	rt->call_memory = (size_t)call->p->memory;
	char err[512];
	bool ok = lua_rt_call_at(rt, POL_SLOT_HANDLER, 1, 0, err, sizeof err);
	rt->user = NULL;
	if (!ok)
		note_failure(ws, call, rt, err, call->phase == PH_ACCESS && call->p->on_error_deny);
	return ok;
}

static const struct conf_route *route_of(const struct request *r)
{
	return r->route >= 0 ? &r->snap->conf->routes[r->route] : NULL;
}

static enum phase_result pol_access(struct request *r, const void *ss, void *wsv, struct phase_deny *deny)
{
	const struct conf_route *route = route_of(r);
	struct pol_worker *ws = wsv;
	if (!ss || !ws || !route || route->num_policies == 0)
		return PHASE_CONTINUE;
	const struct conf_policies *ps = ss;
	struct pol_gen *g = gen_get(ws, r->snap);
	struct pol_req *q = arena_alloc(&r->arena, sizeof *q);
	q->gen = g;
	q->ctx_ref = LUA_NOREF;
	if (!g) {
		/* no Lua state (out of memory): each policy's on_error decides */
		counters_route_add(r, CTR_ROUTE_POLICY + CTR_POLICY_ERROR, 1);
		for (size_t i = 0; i < route->num_policies; i++) {
			if (ps->v[route->policies[i]].on_error_deny) {
				phase_deny_init(deny, r, 403, REASON_POLICY_ERROR);
				return PHASE_DENY;
			}
		}
		return PHASE_CONTINUE;
	}
	g->users++;
	r->policy = q;
	/* one outcome per request: a decision, else the first failure (passed
	 * or denied by on_error), else allowed */
	enum ctr_policy_outcome outcome = CTR_POLICY_ALLOWED;
	for (size_t i = 0; i < route->num_policies; i++) {
		struct pol_call call = {.r = r, .q = q, .p = &ps->v[route->policies[i]], .policy = route->policies[i],
		                        .phase = PH_ACCESS, .deny = deny};
		bool ok = run_phase(ws, &call);
		if (!ok && outcome == CTR_POLICY_ALLOWED)
			outcome = failure_outcome(g->rt);
		if (call.decided) {
			counters_route_add(r, CTR_ROUTE_POLICY +
			                          (deny->reason == REASON_POLICY_DENIED ? CTR_POLICY_DENIED : CTR_POLICY_RESPONDED),
			                   1);
			fields_ready(&r->log_fields, r);
			fields_set(&r->log_fields, "policy", call.p->name);
			return PHASE_DENY;
		}
		if (!ok && call.p->on_error_deny) {
			counters_route_add(r, CTR_ROUTE_POLICY + outcome, 1);
			phase_deny_init(deny, r, 403, REASON_POLICY_ERROR);
			return PHASE_DENY;
		}
	}
	counters_route_add(r, CTR_ROUTE_POLICY + outcome, 1);
	return PHASE_CONTINUE;
}

static void pol_response_headers(struct request *r, const void *ss, void *wsv, struct fields *response)
{
	struct pol_req *q = r->policy;
	struct pol_worker *ws = wsv;
	const struct conf_route *route = route_of(r);
	if (!q || !q->gen || !ws || !route)
		return;
	const struct conf_policies *ps = ss;
	for (size_t i = 0; i < route->num_policies; i++) {
		const struct conf_policy *p = &ps->v[route->policies[i]];
		if (!p->phases[PH_RESPONSE])
			continue;
		struct pol_call call = {.r = r, .q = q, .p = p, .policy = route->policies[i], .phase = PH_RESPONSE,
		                        .resp = response};
		run_phase(ws, &call);
	}
}

static void pol_log(const struct request *cr, const void *ss, void *wsv)
{
	struct request *r = (struct request *)cr; /* r:log may still add fields for the access log */
	struct pol_req *q = r->policy;
	struct pol_worker *ws = wsv;
	const struct conf_route *route = route_of(r);
	if (!q || !q->gen || !ws)
		return;
	const struct conf_policies *ps = ss;
	for (size_t i = 0; route && i < route->num_policies; i++) {
		const struct conf_policy *p = &ps->v[route->policies[i]];
		if (!p->phases[PH_LOG])
			continue;
		struct pol_call call = {.r = r, .q = q, .p = p, .policy = route->policies[i], .phase = PH_LOG};
		run_phase(ws, &call);
	}
	struct pol_gen *g = q->gen;
	if (q->ctx_ref != LUA_NOREF)
		luaL_unref(g->rt->L, LUA_REGISTRYINDEX, q->ctx_ref);
	q->ctx_ref = LUA_NOREF;
	r->policy = NULL;
	if (--g->users == 0 && !gen_current(ws, g))
		gens_sweep(ws);
}

const struct module policy_module = {
    .name = "policy",
    .snapshot_init = pol_snapshot_init,
    .worker_init = pol_worker_init,
    .worker_free = pol_worker_free,
    .worker_adopt = pol_worker_adopt,
    .access = pol_access,
    .response_headers = pol_response_headers,
    .log = pol_log,
    .conf = &conf_policy_section,
};
