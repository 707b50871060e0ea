#include "ratelimit.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "conf_ratelimit.h"
#include "conf_redis.h"
#include "counters.h"
#include "log.h"
#include "reqkey.h"
#include "rl_bucket.h"
#include "rl_redis.h"
#include "rl_table.h"
#include "snapshot.h"
#include "worker.h"

#define REQ_BUCKETS 1024
/* the worker's takes on their way, by key, for requests that join one */
#define OP_BUCKETS 64
/* A lease is dropped this long after the oldest token in it arrived. Every
 * held token is then younger than this (plus redis.timeout), which bounds
 * over-admission by rate x (TTL + timeout) besides the count bound (docs:
 * "Accuracy bound") and how long a quiet instance sits on tokens. Long
 * enough that a key seen by an instance every few seconds keeps its lease
 * (and never waits); short enough that slow limits stay near exact. */
#define LEASE_TTL_US 10000000u
/* After Redis says a key is empty, each instance waits for the next token
 * plus a random share of the other instances' token intervals, so about one
 * instance asks for each new token; capped so a slow limit (a login's 12 s
 * per token) is not refused much past its Retry-After. */
#define SPREAD_MAX_US 1000000u
#define BEAT_INTERVAL_S 5u
#define BEAT_WINDOW_S 15u
#define KEY_PREFIX "sluice:rl:"
#define INSTANCES_KEY "sluice:rl:instances"
#define SEP '\x1f' /* between key parts: no control byte survives the HTTP parser */

struct rl_limit {
	const struct conf_rate_limit *c;
	struct rl_rate rate;
	uint64_t per_us;
	struct rl_table *table;
};

/* what the limiter does is counted in the registry (counters.h); this is
 * only whether any worker still runs it */
struct rl_totals {
	atomic_uint workers;
};

struct rl_snap {
	const struct conf *conf;
	struct rl_limit *limits;
	size_t num_limits;
	bool any_shared;
	struct rl_redis_config redis;
};

/* The process-wide part (ratelimit.h): what outlives snapshots. */
static struct {
	pthread_once_t once;
	char instance_id[64];
	atomic_uint instances; /* seen in Redis recently (last heartbeat); 0 read as 1 */
	struct rl_totals totals;
} rl_proc = {.once = PTHREAD_ONCE_INIT};

static void rl_proc_init(void)
{
	char host[32] = "";
	if (gethostname(host, sizeof host - 1) != 0)
		snprintf(host, sizeof host, "host");
	uint32_t rnd = 0;
	if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
		rnd = (uint32_t)(uintptr_t)&rnd;
	snprintf(rl_proc.instance_id, sizeof rl_proc.instance_id, "%s:%ld:%08x", host, (long)getpid(), rnd);
}

/* Instances that share the limits (the last heartbeat's count), at least 1. */
static unsigned instances(const struct rl_snap *s)
{
	(void)s;
	unsigned n = atomic_load_explicit(&rl_proc.instances, memory_order_relaxed);
	return n ? n : 1;
}

/* What changes a bucket's meaning: a limit whose fingerprint changes on a
 * reload starts with fresh buckets. */
static uint64_t limit_fingerprint(const struct conf_rate_limit *cl)
{
	uint64_t h = 0xcbf29ce484222325ull;
	const uint64_t parts[] = {cl->rate, cl->per, cl->burst, cl->shared};
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		h = (h ^ parts[i]) * 0x100000001b3ull;
	return h;
}


struct rl_op;

/* How take_done answers one waiter of a take. */
enum wait_outcome { W_ALLOW, W_DENY, W_FALLBACK };

/* A request's rate-limit state, in its arena, found through the worker's map. */
struct rl_req {
	struct rl_req *next;
	const struct request *r;
	uint64_t start_us;
	size_t next_limit;
	/* while suspended: the take it waits for (one it sent or joined), its
	 * place in that take's queue, and what it resumes with */
	struct rl_op *op;
	struct rl_req *next_waiter;
	struct request *wr;
	const struct rl_snap *ws;
	size_t wait_limit;
	enum wait_outcome outcome;
	bool denied;
	bool hdr;
	uint64_t hdr_limit, hdr_remaining, hdr_reset_s;
	struct phase_deny deny;
};

struct rl_worker {
	struct worker *w;
	struct rl_snap *snap; /* the state of the snapshot the worker started on */
	struct rl_redis *redis; /* NULL without shared limits */
	struct event *beat_ev;
	bool up;
	bool ever_up;
	uint64_t down_since_us;
	uint64_t fallback_at_down;
	struct rl_req *reqs[REQ_BUCKETS];
	struct rl_op *ops[OP_BUCKETS]; /* takes on their way that requests may join */
	struct rl_op *free_ops;
	uint64_t rtt_us; /* a take's round trip (mean, a quarter weight per reply; 0: none yet) */
};

/* what the limiter does is counted in the worker's registry set (counters.h) */
#define RL_COUNT(ws, FAMILY, label) CTR_GLOBAL_ADD((ws)->w->counters, FAMILY, label, 1)

static long long rl_own(const struct rl_worker *ws, unsigned slot)
{
	return (long long)ctr_global_own(ws->w->counters, slot);
}

static long long rl_total(unsigned slot)
{
	return (long long)counters_get(counters_process, NULL, CTR_DIM_GLOBAL, 0, slot);
}

/* One take on its way to Redis, with the requests waiting for it (in order:
 * the reply serves them first come first served). Outside exact mode it is
 * in the worker's ops map until it is answered, so that a request finding no
 * lease waits for it instead of sending a take of its own. */
struct rl_op {
	struct rl_op *next_free;
	struct rl_op *next_mapped; /* in ws->ops */
	struct rl_worker *ws;
	struct rl_req *waiters, *waiters_tail;
	size_t num_waiters;
	bool mapped;
	bool answered; /* take_done is answering the waiters (each has its outcome) */
	struct snapshot *snap; /* one reference while in flight */
	const struct rl_snap *s;
	size_t limit;
	uint64_t hash;    /* the key's hash in the limit's table */
	uint64_t since;   /* the entry's refill_since_us this op set (0: it set none) */
	uint64_t sent_us; /* the round trip's start */
	uint8_t key_len;
	char key[RL_KEY_MAX];
};

enum decision { D_ALLOW, D_DENY, D_WAIT };

/* ---- snapshot state ---- */

static void rl_snapshot_free(void *state);

static int rl_snapshot_init(const struct conf *c, void **state, struct conf_errors *errs)
{
	*state = NULL;
	/* state even without limits: a worker's state points at the current snapshot's */
	struct rl_snap *s = calloc(1, sizeof *s);
	if (!s || !(s->limits = calloc(c->num_rate_limits ? c->num_rate_limits : 1, sizeof *s->limits))) {
		free(s);
		conf_errors_add(errs, "%s: rate_limits: out of memory", c->source);
		return -1;
	}
	s->conf = c;
	s->num_limits = c->num_rate_limits;
	for (size_t i = 0; i < c->num_rate_limits; i++) {
		const struct conf_rate_limit *cl = &c->rate_limits[i];
		struct rl_limit *l = &s->limits[i];
		l->c = cl;
		l->per_us = cl->per * 1000;
		if (rl_rate_init(&l->rate, cl->rate, l->per_us, cl->burst) != 0) {
			conf_errors_add(errs, "%s: rate_limits.%s: rate, per and burst must be positive and burst x per at most 2^53 us",
			                c->source, cl->name);
			rl_snapshot_free(s);
			return -1;
		}
		/* an entry idle until its bucket is full again carries no information */
		uint64_t idle_us = l->rate.cap / l->rate.rate + LEASE_TTL_US;
		/* the buckets outlive this snapshot: the same limit in the next config keeps them */
		l->table = rl_table_get(cl->name, cl->max_keys, idle_us, limit_fingerprint(cl));
		if (!l->table) {
			conf_errors_add(errs, "%s: rate_limits.%s: out of memory for %u keys (lower max_keys)", c->source,
			                cl->name, cl->max_keys);
			rl_snapshot_free(s);
			return -1;
		}
		s->any_shared = s->any_shared || cl->shared;
	}
	if (c->redis.enabled) {
		s->redis.host = c->redis.host;
		s->redis.port = c->redis.port;
		s->redis.sentinels = c->redis.sentinels;
		s->redis.num_sentinels = c->redis.num_sentinels;
		s->redis.master_name = c->redis.master;
		s->redis.sentinel_password = c->redis.sentinel_password;
		s->redis.password = c->redis.password;
		s->redis.db = c->redis.db;
		s->redis.timeout_us = c->redis.timeout * 1000;
		s->redis.connect_timeout_us = c->redis.connect_timeout * 1000;
	}
	pthread_once(&rl_proc.once, rl_proc_init);
	*state = s;
	return 0;
}

static void rl_snapshot_free(void *state)
{
	struct rl_snap *s = state;
	if (!s)
		return;
	for (size_t i = 0; i < s->num_limits; i++)
		rl_table_put(s->limits[i].table);
	free(s->limits);
	free(s);
}

/* ---- per-request state ---- */

static size_t req_slot(const struct request *r)
{
	uintptr_t p = (uintptr_t)r;
	return (size_t)((p >> 4) ^ (p >> 14)) & (REQ_BUCKETS - 1);
}

static struct rl_req *req_find(struct rl_worker *ws, const struct request *r)
{
	for (struct rl_req *q = ws->reqs[req_slot(r)]; q; q = q->next)
		if (q->r == r && q->start_us == r->start_mono_us)
			return q;
	return NULL;
}

/* Unlinks r's record (if any) and returns it. */
static struct rl_req *req_detach(struct rl_worker *ws, const struct request *r)
{
	for (struct rl_req **pp = &ws->reqs[req_slot(r)]; *pp; pp = &(*pp)->next) {
		if ((*pp)->r == r) {
			struct rl_req *q = *pp;
			*pp = q->next;
			return q;
		}
	}
	return NULL;
}

static void op_unwait(struct rl_req *q);

static struct rl_req *req_attach(struct rl_worker *ws, struct request *r)
{
	struct rl_req *q = req_find(ws, r);
	if (q)
		return q;
	struct rl_req *stale = req_detach(ws, r); /* a stale record for a recycled request object */
	if (stale && stale->op)
		op_unwait(stale);
	q = arena_alloc(&r->arena, sizeof *q);
	if (!q)
		return NULL;
	memset(q, 0, sizeof *q);
	q->r = r;
	q->start_us = r->start_mono_us;
	size_t slot = req_slot(r);
	q->next = ws->reqs[slot];
	ws->reqs[slot] = q;
	return q;
}

static uint64_t ceil_s(uint64_t us)
{
	return (us + 999999u) / 1000000u;
}

/* Remember the most restrictive limit for the RateLimit-* headers. */
static void note(struct rl_req *q, const struct rl_limit *l, uint64_t remaining, uint64_t full_us, bool force)
{
	if (!force && !l->c->headers)
		return;
	if (q->hdr && remaining >= q->hdr_remaining && !force)
		return;
	q->hdr = true;
	q->hdr_limit = l->c->burst;
	q->hdr_remaining = remaining;
	q->hdr_reset_s = ceil_s(full_us);
}

static void set_deny(struct request *r, struct rl_req *q, const struct rl_limit *l, uint64_t wait_us,
                     uint64_t full_us, struct phase_deny *deny)
{
	note(q, l, 0, full_us, true);
	q->denied = true;
	uint64_t retry = ceil_s(wait_us);
	if (retry == 0)
		retry = 1;
	phase_deny_init(deny, r, 429, REASON_RATE_LIMITED);
	fields_add_u64(&deny->headers, "retry-after", retry);
	fields_add_u64(&deny->headers, "ratelimit-limit", q->hdr_limit);
	fields_add_u64(&deny->headers, "ratelimit-remaining", 0);
	fields_add_u64(&deny->headers, "ratelimit-reset", q->hdr_reset_s);
}

/* ---- keys ---- */

/* 128 bits of a fixed-seed hash: the same on every instance (keys meet in
 * Redis), and only ever applied to keys longer than RL_KEY_MAX. */
static void digest(const char *s, size_t n, char out[34])
{
	uint64_t h[2] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull};
	for (int k = 0; k < 2; k++) {
		uint64_t x = h[k] ^ (uint64_t)n;
		for (size_t i = 0; i < n; i++) {
			x ^= (unsigned char)s[i];
			x *= 0x100000001b3ull;
			x ^= x >> 29;
		}
		x ^= x >> 33;
		x *= 0xff51afd7ed558ccdull;
		x ^= x >> 33;
		h[k] = x;
	}
	snprintf(out, 34, "#%016llx%016llx", (unsigned long long)h[0], (unsigned long long)h[1]);
}

/* The value a Lua policy set under the limit's own name (names are kept
 * lower-case), or NULL. */
static const char *policy_whole_key(const struct request *r, const char *limit, size_t *len)
{
	if (r->policy_keys.n == 0)
		return NULL;
	char lower[128];
	size_t n = strnlen(limit, sizeof lower - 1);
	for (size_t i = 0; i < n; i++)
		lower[i] = limit[i] >= 'A' && limit[i] <= 'Z' ? (char)(limit[i] - 'A' + 'a') : limit[i];
	lower[n] = '\0';
	return fields_value(&r->policy_keys, lower, len);
}

/* The bucket key for limit l, or false when a part is absent (limit skipped). */
static bool build_key(struct request *r, const struct rl_limit *l, char *key, size_t *key_len)
{
	char small[512];
	char *buf = small;
	size_t cap = sizeof small, len = 0;
	/* a Lua policy's r:set_limit_key(LIMIT, value) replaces the whole key */
	size_t whole_len = 0;
	const char *whole = policy_whole_key(r, l->c->name, &whole_len);
	size_t parts = whole ? 1 : l->c->num_keys;
	for (size_t i = 0; i < parts; i++) {
		const struct conf_rl_key *k = &l->c->keys[i];
		const char *v;
		size_t vlen;
		if (whole) {
			v = whole;
			vlen = whole_len;
		} else if (!reqkey_get(r, reqkey_of_rate_key(k->kind), k->name, &v, &vlen)) {
			return false;
		}
		size_t need = len + (i > 0) + vlen;
		if (need > cap) {
			/* a long key: gather it in the request arena, then digest it */
			size_t ncap = need * 2;
			char *nb = arena_alloc(&r->arena, ncap);
			if (!nb)
				return false;
			memcpy(nb, buf, len);
			buf = nb;
			cap = ncap;
		}
		if (i > 0)
			buf[len++] = SEP;
		memcpy(buf + len, v, vlen);
		len += vlen;
	}
	if (len > RL_KEY_MAX) {
		char d[34];
		digest(buf, len, d);
		memcpy(key, d, 33);
		*key_len = 33;
	} else {
		memcpy(key, buf, len);
		*key_len = len;
	}
	return true;
}

/* ---- decisions ---- */

static enum decision decide_local_rate(struct rl_req *q, const struct rl_limit *l, const struct rl_rate *rate,
                                       struct request *r, const char *key, size_t klen, struct phase_deny *deny)
{
	uint64_t now = clock_mono_us();
	bool fresh;
	struct rl_entry *e = rl_table_acquire(l->table, key, klen, now, &fresh, r->worker->counters);
	if (fresh || e->bucket.last_us == 0)
		rl_bucket_init(&e->bucket, rate, now);
	uint64_t got = rl_bucket_take(&e->bucket, rate, now, 1);
	uint64_t tokens = rl_bucket_tokens(&e->bucket, rate);
	uint64_t full = rl_bucket_full_us(&e->bucket, rate);
	uint64_t wait = rl_bucket_wait_us(&e->bucket, rate);
	rl_table_release(l->table, e);
	if (!got) {
		set_deny(r, q, l, wait, full, deny);
		return D_DENY;
	}
	note(q, l, tokens, full, false);
	return D_ALLOW;
}

static enum decision decide_fallback(struct rl_worker *ws, const struct rl_snap *s, struct rl_req *q,
                                     const struct rl_limit *l, struct request *r, const char *key, size_t klen,
                                     struct phase_deny *deny)
{
	RL_COUNT(ws, RL_FALLBACK, 0);
	switch (s->conf->redis.on_failure) {
	case CONF_REDIS_FAIL_ALLOW:
		return D_ALLOW;
	case CONF_REDIS_FAIL_DENY:
		q->denied = true;
		phase_deny_init(deny, r, 503, REASON_REDIS_FALLBACK);
		fields_add_u64(&deny->headers, "retry-after", 1);
		return D_DENY;
	case CONF_REDIS_FAIL_LOCAL:
	default: {
		/* each instance takes its share of the limit */
		struct rl_rate split;
		rl_rate_split(&split, &l->rate, instances(s));
		return decide_local_rate(q, l, &split, r, key, klen, deny);
	}
	}
}

static void take_done(void *arg, bool ok, const struct rl_take_reply *reply);

/* ---- takes on their way, and the requests waiting for them ---- */

static size_t op_slot(uint64_t hash)
{
	return (size_t)(hash ^ (hash >> 29)) & (OP_BUCKETS - 1);
}

static void op_map(struct rl_worker *ws, struct rl_op *op)
{
	size_t slot = op_slot(op->hash);
	op->next_mapped = ws->ops[slot];
	ws->ops[slot] = op;
	op->mapped = true;
}

static void op_unmap(struct rl_worker *ws, struct rl_op *op)
{
	if (!op->mapped)
		return;
	for (struct rl_op **pp = &ws->ops[op_slot(op->hash)]; *pp; pp = &(*pp)->next_mapped) {
		if (*pp == op) {
			*pp = op->next_mapped;
			break;
		}
	}
	op->mapped = false;
}

/* This worker's take on its way for the key of table t, or NULL. Tables are
 * shared by snapshots with the same limit, so a request of a newer snapshot
 * joins a take an older one sent for the same bucket. */
static struct rl_op *op_find(struct rl_worker *ws, const struct rl_table *t, uint64_t hash, const char *key,
                             size_t klen)
{
	for (struct rl_op *op = ws->ops[op_slot(hash)]; op; op = op->next_mapped)
		if (op->hash == hash && op->s->limits[op->limit].table == t && op->key_len == klen &&
		    memcmp(op->key, key, klen) == 0)
			return op;
	return NULL;
}

/* Queues request q (limit li of snapshot state s) behind op. */
static void op_wait(struct rl_op *op, struct rl_req *q, struct request *r, const struct rl_snap *s, size_t li)
{
	q->op = op;
	q->next_waiter = NULL;
	q->wr = r;
	q->ws = s;
	q->wait_limit = li;
	if (op->waiters_tail)
		op->waiters_tail->next_waiter = q;
	else
		op->waiters = q;
	op->waiters_tail = q;
	op->num_waiters++;
}

/* A token given to a waiter that went away before it was resumed: the lease
 * keeps it for the next request. */
static void lease_return(const struct rl_op *op)
{
	const struct rl_limit *l = &op->s->limits[op->limit];
	struct rl_entry *e = rl_table_find(l->table, op->key, op->key_len);
	if (!e)
		return;
	uint64_t now = clock_mono_us();
	if (e->lease == 0 || e->lease_until_us <= now) {
		e->lease = 0;
		e->lease_until_us = now + LEASE_TTL_US;
	}
	e->lease++;
	rl_table_release(l->table, e);
}

/* Takes q out of its op's queue (its client went away): the token the reply
 * would have given it (or gave it, while the reply's waiters are resumed)
 * goes to the lease, for the next request. */
static void op_unwait(struct rl_req *q)
{
	struct rl_op *op = q->op;
	if (!op)
		return;
	if (op->answered && q->outcome == W_ALLOW)
		lease_return(op);
	struct rl_req *prev = NULL;
	for (struct rl_req *w = op->waiters; w; prev = w, w = w->next_waiter) {
		if (w != q)
			continue;
		if (prev)
			prev->next_waiter = q->next_waiter;
		else
			op->waiters = q->next_waiter;
		if (op->waiters_tail == q)
			op->waiters_tail = prev;
		op->num_waiters--;
		break;
	}
	q->op = NULL;
	q->next_waiter = NULL;
}

/* Sends a take of `want` tokens for key of limit li. joinable: requests
 * that find no lease may queue behind it (not in exact mode: there a token
 * is taken by the request that uses it). Returns NULL when it could not go
 * out (the caller decides without Redis). */
static struct rl_op *send_take(struct rl_worker *ws, const struct rl_snap *s, struct snapshot *snap, size_t li,
                               const char *key, size_t klen, uint64_t hash, uint64_t want, uint64_t since,
                               bool joinable)
{
	const struct rl_limit *l = &s->limits[li];
	char rkey[sizeof(KEY_PREFIX) + 256 + RL_KEY_MAX];
	size_t nlen = strlen(l->c->name);
	if (nlen > 256)
		return NULL;
	size_t plen = sizeof(KEY_PREFIX) - 1;
	memcpy(rkey, KEY_PREFIX, plen);
	memcpy(rkey + plen, l->c->name, nlen);
	rkey[plen + nlen] = ':';
	memcpy(rkey + plen + nlen + 1, key, klen);
	size_t rlen = plen + nlen + 1 + klen;

	struct rl_op *op = ws->free_ops;
	if (op)
		ws->free_ops = op->next_free;
	else if (!(op = malloc(sizeof *op)))
		return NULL;
	op->ws = ws;
	op->waiters = op->waiters_tail = NULL;
	op->num_waiters = 0;
	op->mapped = false;
	op->answered = false;
	op->s = s;
	op->limit = li;
	op->hash = hash;
	op->since = since;
	op->sent_us = clock_mono_us();
	op->key_len = (uint8_t)klen;
	memcpy(op->key, key, klen);
	op->snap = snap;
	if (rl_redis_take(ws->redis, rkey, rlen, l->c->rate, l->per_us, l->c->burst, want, take_done, op) != 0) {
		op->next_free = ws->free_ops;
		ws->free_ops = op;
		return NULL;
	}
	/* the op may outlive the requests: keep its snapshot (and our tables) alive */
	snapshot_ref(op->snap);
	if (joinable)
		op_map(ws, op);
	return op;
}


/* Microseconds between two tokens of limit l (at least 1). */
static uint64_t token_interval_us(const struct rl_limit *l)
{
	uint64_t iv = l->per_us / l->c->rate;
	return iv ? iv : 1;
}

/* A take sent on the lease's behalf could not go out: let the next request try. */
static void refill_unsent(const struct rl_limit *l, const char *key, size_t klen, uint64_t since)
{
	struct rl_entry *e = rl_table_find(l->table, key, klen);
	if (!e)
		return;
	if (e->refill_since_us == since)
		e->refill_since_us = 0;
	rl_table_release(l->table, e);
}

/* Sends a take that only feeds the lease (no request waits for it yet). */
static bool send_refill(struct rl_worker *ws, const struct rl_snap *s, struct request *r, size_t li, const char *key,
                        size_t klen, uint64_t hash, uint64_t want, uint64_t since)
{
	if (send_take(ws, s, (struct snapshot *)r->snap, li, key, klen, hash, want, since, true))
		return true;
	refill_unsent(&s->limits[li], key, klen, since);
	return false;
}

/* A window of the key's consumption rate is over (or none started yet). */
static void use_window(struct rl_entry *e, uint64_t now)
{
	/* mark 0: the first use; now before it: another worker read the clock after us */
	if (e->use_mark_us != 0 && now > e->use_mark_us)
		e->use_rate = rl_use_rate(e->use_rate, e->use_count, now - e->use_mark_us);
	e->use_mark_us = now;
	e->use_count = 0;
}

/* Counts a token asked for in the key's consumption rate (entry locked):
 * on the lease's hot path, so the window's end is one unsigned compare. */
static inline void use_note(struct rl_entry *e, uint64_t now)
{
	e->use_count++;
	if (now - e->use_mark_us >= RL_RATE_WINDOW_US)
		use_window(e, now);
}

/* A shared limit (docs/rate-limiting.md, "Shared limits: leases"). In order:
 * 1. a leased token: admit at once; when what is left would not last until a
 *    refill is back (entry->refill_at), refill it in the background (also at
 *    batch 1: the next request then finds a token);
 * 2. Redis said no token before deny_until: refuse locally;
 * 3. Redis said empty recently (within the time the instances need to share
 *    one token each): refuse locally and, unless a take is already on its
 *    way, send one that puts the next token in the lease for the next
 *    request. Tokens are not lost, only passed to the next request, so at or
 *    above the limit nobody waits; in exact mode only the refusal is local;
 * 4. otherwise (a cold key, exact mode, or tokens left in Redis but none
 *    here) the request waits: outside exact mode behind a take this worker
 *    has on its way for the key (its reply serves the waiters first), else
 *    for a take of its own: its token plus, outside exact mode and when no
 *    refill is in flight, the next batch. */
static enum decision decide_shared(struct rl_worker *ws, const struct rl_snap *s, struct rl_req *q, size_t li,
                                   struct request *r, const char *key, size_t klen, struct phase_deny *deny)
{
	const struct rl_limit *l = &s->limits[li];
	if (!ws->redis || !rl_redis_usable(ws->redis))
		return decide_fallback(ws, s, q, l, r, key, klen, deny);
	uint64_t now = clock_mono_us();
	unsigned n = instances(s);
	bool exact = rl_lease_exact(l->c->burst, n);
	bool fresh;
	struct rl_entry *e = rl_table_acquire(l->table, key, klen, now, &fresh, ws->w->counters);
	uint64_t hash = e->hash;
	/* a take older than twice the timeout has failed (the connection is
	 * dropped at the timeout); never let a lost reply block the key. Another
	 * worker may have read the clock after us and set it in the meantime. */
	bool inflight = e->refill_since_us != 0 &&
	                (now < e->refill_since_us || now - e->refill_since_us < 2 * s->redis.timeout_us);
	uint64_t full = e->remote_full_us > now ? e->remote_full_us - now : 0;
	if (e->lease > 0 && now < e->lease_until_us) {
		e->lease--;
		use_note(e, now);
		uint64_t remaining = e->lease + e->remote_tokens;
		/* refill ahead, but not while Redis said it has nothing before deny_until */
		bool refill = !exact && !inflight && e->lease <= e->refill_at &&
		              (e->remote_tokens > 0 || now >= e->deny_until_us);
		uint64_t want = e->want ? e->want : 1;
		if (refill)
			e->refill_since_us = now;
		rl_table_release(l->table, e);
		note(q, l, remaining, full, false);
		if (refill)
			(void)send_refill(ws, s, r, li, key, klen, hash, want, now); /* unsent: the next request asks */
		return D_ALLOW;
	}
	e->lease = 0;
	if (now < e->deny_until_us) {
		uint64_t wait = e->deny_until_us - now;
		rl_table_release(l->table, e);
		set_deny(r, q, l, wait, full, deny);
		return D_DENY;
	}
	uint64_t iv = token_interval_us(l);
	bool exhausted = e->reply_us != 0 && e->remote_tokens == 0 && now - e->deny_until_us < (uint64_t)n * iv;
	if (exhausted && (inflight || !exact)) {
		/* one token cannot serve two requests: with a take on its way (or
		 * about to be), this request is refused and the token goes to the next */
		uint64_t want = e->want ? e->want : 1;
		bool send = !inflight;
		if (send)
			e->refill_since_us = now;
		rl_table_release(l->table, e);
		if (send && !send_refill(ws, s, r, li, key, klen, hash, want, now))
			return decide_fallback(ws, s, q, l, r, key, klen, deny);
		set_deny(r, q, l, iv, full, deny);
		return D_DENY;
	}
	use_note(e, now);
	struct rl_op *op = exact ? NULL : op_find(ws, l->table, hash, key, klen);
	if (op) {
		/* a take of ours is on its way (a refill, or another waiter's):
		 * wait for its reply instead of sending one more */
		rl_table_release(l->table, e);
		op_wait(op, q, r, s, li);
		RL_COUNT(ws, RL_REDIS_WAITS, 0);
		return D_WAIT;
	}
	/* wait: this request's token, plus the next batch when nothing else is on its way */
	uint64_t want = 1;
	uint64_t since = 0;
	if (!inflight) {
		if (!exact)
			want += e->reply_us ? e->want : rl_lease_want(l->c->burst, l->c->burst, n, l->c->batch);
		e->refill_since_us = since = now;
	}
	rl_table_release(l->table, e);
	op = send_take(ws, s, (struct snapshot *)r->snap, li, key, klen, hash, want, since, !exact);
	if (!op) {
		if (since)
			refill_unsent(l, key, klen, since);
		return decide_fallback(ws, s, q, l, r, key, klen, deny);
	}
	op_wait(op, q, r, s, li);
	RL_COUNT(ws, RL_REDIS_WAITS, 0);
	return D_WAIT;
}

static enum phase_result run_limits(struct rl_worker *ws, const struct rl_snap *s, struct request *r,
                                    struct rl_req *q, struct phase_deny *deny)
{
	const struct conf_route *route = &s->conf->routes[r->route];
	while (q->next_limit < route->num_rate_limits) {
		size_t li = route->rate_limits[q->next_limit++];
		const struct rl_limit *l = &s->limits[li];
		char key[RL_KEY_MAX];
		size_t klen;
		if (!build_key(r, l, key, &klen))
			continue;
		enum decision d = l->c->shared ? decide_shared(ws, s, q, li, r, key, klen, deny)
		                               : decide_local_rate(q, l, &l->rate, r, key, klen, deny);
		if (d == D_WAIT)
			return PHASE_SUSPEND;
		if (d == D_DENY) {
			RL_COUNT(ws, RL_DECISIONS, CTR_RL_LIMITED);
			return PHASE_DENY;
		}
	}
	RL_COUNT(ws, RL_DECISIONS, CTR_RL_ALLOWED);
	return PHASE_CONTINUE;
}

/* What a reply settled, for answering the waiters after the entry is released. */
struct take_result {
	size_t served;       /* waiters (from the head) that have a token */
	uint64_t resend;     /* tokens to ask for the waiters left (0: none) */
	uint64_t since;      /* the refill mark the resend set (0: none) */
	uint64_t remaining;  /* tokens here and in Redis, for RateLimit-* */
	uint64_t full_us, wait_us;
};

/* Brings the key's entry up to date with a reply (entry locked inside):
 * Redis's state, the round trip and the next lease size; the grant serves
 * op's waiters in order, then the lease (also what another worker's refill
 * brought) serves who is left, and what is left over goes to the lease. */
static void take_apply(struct rl_worker *ws, struct rl_op *op, const struct rl_take_reply *reply,
                       struct take_result *res)
{
	const struct rl_snap *s = op->s;
	const struct rl_limit *l = &s->limits[op->limit];
	uint64_t now = clock_mono_us();
	uint64_t rtt = now > op->sent_us ? now - op->sent_us : 1;
	ws->rtt_us = ws->rtt_us ? (3 * ws->rtt_us + rtt) / 4 : rtt;
	bool fresh;
	struct rl_entry *e = rl_table_acquire(l->table, op->key, op->key_len, now, &fresh, ws->w->counters);
	unsigned n = instances(s);
	e->reply_us = now;
	e->remote_tokens = reply->tokens;
	e->remote_full_us = now + reply->full_us;
	e->want = rl_lease_size(rl_lease_want(reply->tokens, l->c->burst, n, l->c->batch), e->use_rate, ws->rtt_us);
	e->refill_at = (uint32_t)rl_lease_refill_at(e->want > UINT32_MAX ? UINT32_MAX : e->want, e->use_rate,
	                                           ws->rtt_us);
	if (op->since && e->refill_since_us == op->since)
		e->refill_since_us = 0;
	uint64_t g = reply->granted;
	size_t served = g < op->num_waiters ? (size_t)g : op->num_waiters;
	g -= served;
	if (g > 0) {
		/* the deadline stays the oldest held token's: a lease topped up
		 * ahead of need never keeps a token past the TTL */
		if (e->lease == 0 || e->lease_until_us <= now) {
			e->lease = 0;
			e->lease_until_us = now + LEASE_TTL_US;
		}
		e->lease += g;
	}
	if (served < op->num_waiters && e->lease > 0 && now < e->lease_until_us) {
		size_t more = op->num_waiters - served;
		if (more > e->lease)
			more = (size_t)e->lease;
		e->lease -= more;
		served += more;
	}
	res->served = served;
	res->resend = res->since = 0;
	size_t left = op->num_waiters - served;
	if (left > 0 && reply->tokens > 0) {
		/* more waiters than this take asked for, and Redis has more: one
		 * take for all of them, plus the next batch when no refill is out */
		bool inflight = e->refill_since_us != 0 &&
		                (now < e->refill_since_us || now - e->refill_since_us < 2 * s->redis.timeout_us);
		res->resend = left;
		if (!inflight) {
			res->resend += e->want;
			e->refill_since_us = res->since = now;
		}
	}
	if (reply->tokens > 0) {
		e->deny_until_us = 0; /* Redis has tokens again: an older "empty" no longer holds */
	} else {
		/* Redis is empty until wait_us: refuse locally until then plus a
		 * random share of the other instances' intervals, so that about
		 * one instance (not all of them) asks for each new token;
		 * unclaimed tokens stay in Redis for the next ask */
		uint64_t spread = n > 1 ? (uint64_t)(n - 1) * token_interval_us(l) : 0;
		if (spread > SPREAD_MAX_US)
			spread = SPREAD_MAX_US;
		e->deny_until_us = now + reply->wait_us + (spread ? worker_random(ws->w) % spread : 0);
	}
	res->remaining = e->lease + reply->tokens;
	res->full_us = reply->full_us;
	res->wait_us = reply->wait_us;
	rl_table_release(l->table, e);
}

/* Answers one waiter taken off its op's queue. */
static void waiter_resume(struct rl_worker *ws, struct rl_req *q, const struct rl_op *op, const struct take_result *res)
{
	struct request *r = q->wr;
	const struct rl_snap *s = q->ws;
	const struct rl_limit *l = &s->limits[q->wait_limit];
	struct phase_deny *deny = &q->deny;
	enum phase_result pr;
	enum decision d = D_DENY;
	if (q->outcome == W_ALLOW) {
		note(q, l, res->remaining, res->full_us, false);
		d = D_ALLOW;
	} else if (q->outcome == W_DENY) {
		set_deny(r, q, l, res->wait_us, res->full_us, deny);
	} else {
		d = decide_fallback(ws, s, q, l, r, op->key, op->key_len, deny);
	}
	if (d == D_ALLOW) {
		pr = run_limits(ws, s, r, q, deny);
	} else {
		RL_COUNT(ws, RL_DECISIONS, CTR_RL_LIMITED);
		pr = PHASE_DENY;
	}
	if (pr != PHASE_SUSPEND)
		pipeline_resume(r, pr, deny);
}

/* A take's reply (ok) or failure (!ok: timeout, connection lost, worker
 * stopping or reloading): every waiter is answered exactly once, here or
 * by the take that the waiters left over are moved to. */
static void take_done(void *arg, bool ok, const struct rl_take_reply *reply)
{
	struct rl_op *op = arg;
	struct rl_worker *ws = op->ws;
	const struct rl_snap *s = op->s;
	const struct rl_limit *l = &s->limits[op->limit];
	op_unmap(ws, op); /* answered: nobody joins it any more */
	struct take_result res = {0};
	struct rl_op *next = NULL;
	if (!ok && op->since)
		refill_unsent(l, op->key, op->key_len, op->since);
	if (ok) {
		take_apply(ws, op, reply, &res);
		if (res.resend) {
			next = send_take(ws, s, op->snap, op->limit, op->key, op->key_len, op->hash, res.resend, res.since,
			                 true);
			if (!next && res.since)
				refill_unsent(l, op->key, op->key_len, res.since);
		}
	}
	/* outcomes first (nothing runs in between), then the resumptions, which
	 * may cancel other waiters of this op (an HTTP/2 session closing) */
	op->answered = true;
	size_t i = 0;
	struct rl_req *moved = NULL, *moved_tail = NULL;
	for (struct rl_req **pp = &op->waiters; *pp; i++) {
		struct rl_req *q = *pp;
		if (!ok) {
			q->outcome = W_FALLBACK;
		} else if (i < res.served) {
			q->outcome = W_ALLOW;
		} else if (next) {
			/* Redis has tokens for them: they wait for the next take */
			*pp = q->next_waiter;
			op->num_waiters--;
			q->next_waiter = NULL;
			if (moved_tail)
				moved_tail->next_waiter = q;
			else
				moved = q;
			moved_tail = q;
			continue;
		} else {
			q->outcome = reply->tokens > 0 ? W_FALLBACK : W_DENY;
		}
		op->waiters_tail = q;
		pp = &q->next_waiter;
	}
	if (!op->waiters)
		op->waiters_tail = NULL;
	for (struct rl_req *q = moved, *nq; q; q = nq) {
		nq = q->next_waiter;
		op_wait(next, q, q->wr, q->ws, q->wait_limit);
	}
	struct rl_req *q;
	while ((q = op->waiters)) {
		op->waiters = q->next_waiter;
		if (!op->waiters)
			op->waiters_tail = NULL;
		op->num_waiters--;
		q->op = NULL;
		q->next_waiter = NULL;
		waiter_resume(ws, q, op, &res);
	}
	struct snapshot *snap = op->snap;
	op->next_free = ws->free_ops;
	ws->free_ops = op;
	snapshot_unref(snap);
}

/* ---- module callbacks ---- */

static enum phase_result rl_access(struct request *r, const void *ss, void *wsv, struct phase_deny *deny)
{
	const struct rl_snap *s = ss;
	struct rl_worker *ws = wsv;
	if (!s || !ws || r->route < 0)
		return PHASE_CONTINUE;
	if (s->conf->routes[r->route].num_rate_limits == 0)
		return PHASE_CONTINUE;
	struct rl_req *q = req_attach(ws, r);
	if (!q)
		return PHASE_ERROR;
	return run_limits(ws, s, r, q, deny);
}

static void rl_access_cancel(struct request *r, const void *ss, void *wsv)
{
	(void)ss;
	struct rl_worker *ws = wsv;
	if (!ws)
		return;
	struct rl_req *q = req_find(ws, r);
	if (q)
		op_unwait(q); /* the reply still comes; this request's token goes to the lease */
}

static void rl_response_headers(struct request *r, const void *ss, void *wsv, struct fields *response)
{
	(void)ss;
	struct rl_worker *ws = wsv;
	if (!ws)
		return;
	struct rl_req *q = req_find(ws, r);
	if (!q || q->denied || !q->hdr)
		return;
	fields_add_u64(response, "ratelimit-limit", q->hdr_limit);
	fields_add_u64(response, "ratelimit-remaining", q->hdr_remaining);
	fields_add_u64(response, "ratelimit-reset", q->hdr_reset_s);
}

static void rl_log(const struct request *r, const void *ss, void *wsv)
{
	(void)ss;
	struct rl_worker *ws = wsv;
	if (!ws)
		return;
	struct rl_req *q = req_detach(ws, r);
	if (q && q->op)
		op_unwait(q); /* never left behind in a take's queue */
}

/* ---- the worker's Redis connection ---- */

static void beat_done(void *arg, long long n)
{
	(void)arg;
	if (n > 0)
		atomic_store_explicit(&rl_proc.instances, n > 100000 ? 100000u : (unsigned)n, memory_order_relaxed);
}

static void beat_now(struct rl_worker *ws)
{
	if (!ws->redis)
		return; /* a reload dropped the shared limits */
	rl_redis_beat(ws->redis, INSTANCES_KEY, rl_proc.instance_id, BEAT_WINDOW_S, beat_done, ws);
}

static void beat_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	beat_now(arg);
}

static void log_counters(struct log_line *l, const struct rl_worker *ws)
{
	log_int(l, "allowed", rl_own(ws, CTR_RL_DECISIONS + CTR_RL_ALLOWED));
	log_int(l, "denied", rl_own(ws, CTR_RL_DECISIONS + CTR_RL_LIMITED));
	log_int(l, "fallback", rl_own(ws, CTR_RL_FALLBACK));
	log_int(l, "redis_waits", rl_own(ws, CTR_RL_REDIS_WAITS));
	log_int(l, "redis_commands", (long long)rl_redis_commands(ws->redis));
	log_int(l, "redis_failures", (long long)rl_redis_failures(ws->redis));
	log_int(l, "transitions", rl_own(ws, CTR_RL_REDIS_TRANSITIONS));
}

static void redis_state(void *arg, bool up, const char *why)
{
	struct rl_worker *ws = arg;
	const struct conf_redis *cr = &ws->snap->conf->redis;
	static const char *const modes[] = {"local", "allow", "deny"};
	struct log_line l;
	if (up) {
		bool recovered = ws->ever_up || ws->down_since_us != 0;
		ws->up = true;
		ws->ever_up = true;
		if (recovered)
			RL_COUNT(ws, RL_REDIS_TRANSITIONS, 0);
		log_begin(&l, LOG_INFO, recovered ? "ratelimit: redis available again, shared limits resumed"
		                                  : "ratelimit: redis connected");
		log_int(&l, "worker", ws->w->id);
		log_str(&l, "redis", cr->address);
		log_str(&l, "server", rl_redis_address(ws->redis));
		if (recovered) {
			log_int(&l, "down_ms", (long long)((clock_mono_us() - ws->down_since_us) / 1000));
			log_int(&l, "fallback_while_down", rl_own(ws, CTR_RL_FALLBACK) - (long long)ws->fallback_at_down);
		}
		log_counters(&l, ws);
		log_end(&l);
		ws->down_since_us = 0;
		if (ws->beat_ev)
			beat_now(ws);
		return;
	}
	ws->up = false;
	RL_COUNT(ws, RL_REDIS_TRANSITIONS, 0);
	ws->down_since_us = clock_mono_us();
	ws->fallback_at_down = (uint64_t)rl_own(ws, CTR_RL_FALLBACK);
	log_begin(&l, LOG_WARN, "ratelimit: redis unavailable, shared limits fall back");
	log_int(&l, "worker", ws->w->id);
	log_str(&l, "redis", cr->address);
	log_str(&l, "server", rl_redis_address(ws->redis));
	log_str(&l, "error", why);
	log_str(&l, "on_failure", modes[cr->on_failure]);
	log_int(&l, "instances", instances(ws->snap));
	log_counters(&l, ws);
	log_end(&l);
}

static size_t my_index(void)
{
	for (size_t i = 0; i < module_count; i++)
		if (module_list[i] == &ratelimit_module)
			return i;
	return 0;
}

static void rl_worker_free(void *state);

/* The Redis connection (and on worker 0 the heartbeat) once a snapshot has shared limits. */
static int rl_worker_connect(struct rl_worker *ws)
{
	const struct rl_snap *s = ws->snap;
	if (!s->any_shared || ws->redis)
		return 0;
	if (ws->w->id == 0 && !ws->beat_ev) {
		ws->beat_ev = event_new(ws->w->base, -1, EV_PERSIST, beat_cb, ws);
		struct timeval tv = {BEAT_INTERVAL_S, 0};
		if (!ws->beat_ev || event_add(ws->beat_ev, &tv) != 0)
			return -1;
	}
	ws->redis = rl_redis_new(ws->w->base, &s->redis, ws->w->counters, redis_state, ws);
	return ws->redis ? 0 : -1;
}

static int rl_worker_init(struct worker *w, void **state)
{
	*state = NULL;
	struct rl_snap *s = w->snap->module_state[my_index()];
	if (!s)
		return 0;
	struct rl_worker *ws = calloc(1, sizeof *ws);
	if (!ws)
		return -1;
	ws->w = w;
	ws->snap = s;
	atomic_fetch_add(&rl_proc.totals.workers, 1);
	if (rl_worker_connect(ws) != 0) {
		rl_worker_free(ws);
		return -1;
	}
	*state = ws;
	return 0;
}

/* A reload: requests in flight keep their own snapshot's limits (the
 * pipeline hands them its state); the worker's own pointer follows the new
 * one. New Redis settings (an address, a rotated password, other sentinels)
 * replace the connection: commands waiting on the old one fail and their
 * requests are decided by on_failure, as when a connection drops. */
static void rl_worker_adopt(struct worker *w, void *state, const void *snapshot_state)
{
	struct rl_worker *ws = state;
	if (!ws || !snapshot_state)
		return;
	const struct rl_snap *old = ws->snap, *s = snapshot_state;
	if (ws->redis && (!s->any_shared || !conf_redis_same(&old->conf->redis, &s->conf->redis))) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "ratelimit: redis settings changed by a reload; reconnecting");
		log_int(&l, "worker", w->id);
		log_end(&l);
		rl_redis_free(ws->redis);
		ws->redis = NULL;
		ws->up = false;
	}
	ws->snap = (struct rl_snap *)snapshot_state;
	if (rl_worker_connect(ws) != 0) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "ratelimit: cannot connect to redis for the new config's shared limits");
		log_int(&l, "worker", w->id);
		log_end(&l);
	}
}

/* One line for tests, benchmarks and operators when the last worker ends:
 * what the limiter did (the process's totals, as `ctl show counters` has them). */
static void log_totals(const struct rl_snap *s)
{
	if (s->num_limits == 0 || !counters_process)
		return;
	struct log_line l;
	log_begin(&l, LOG_INFO, "ratelimit totals");
	log_int(&l, "allowed", rl_total(CTR_RL_DECISIONS + CTR_RL_ALLOWED));
	log_int(&l, "denied", rl_total(CTR_RL_DECISIONS + CTR_RL_LIMITED));
	log_int(&l, "fallback", rl_total(CTR_RL_FALLBACK));
	log_int(&l, "redis_waits", rl_total(CTR_RL_REDIS_WAITS));
	log_int(&l, "redis_commands", rl_total(CTR_RL_REDIS_COMMANDS));
	log_int(&l, "redis_failures", rl_total(CTR_RL_REDIS_FAILURES));
	log_int(&l, "transitions", rl_total(CTR_RL_REDIS_TRANSITIONS));
	log_int(&l, "evictions", rl_total(CTR_RL_EVICTIONS));
	log_int(&l, "expired", rl_total(CTR_RL_EXPIRED));
	log_end(&l);
}

static void rl_worker_free(void *state)
{
	struct rl_worker *ws = state;
	struct rl_totals *t = &rl_proc.totals;
	if (ws->beat_ev)
		event_free(ws->beat_ev);
	ws->beat_ev = NULL;
	if (ws->redis) {
		/* fails what is in flight: requests are gone by now, refills land in the table */
		rl_redis_free(ws->redis);
		ws->redis = NULL;
	}
	while (ws->free_ops) {
		struct rl_op *op = ws->free_ops;
		ws->free_ops = op->next_free;
		free(op);
	}
	if (atomic_fetch_sub(&t->workers, 1) == 1)
		log_totals(ws->snap);
	free(ws);
}

const struct module ratelimit_module = {
    .name = "rate_limit",
    .snapshot_init = rl_snapshot_init,
    .snapshot_free = rl_snapshot_free,
    .worker_init = rl_worker_init,
    .worker_free = rl_worker_free,
    .worker_adopt = rl_worker_adopt,
    .access = rl_access,
    .access_cancel = rl_access_cancel,
    .response_headers = rl_response_headers,
    .log = rl_log,
    .conf = &conf_rl_section,
};
