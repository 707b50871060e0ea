/* control.c - fleet control through Redis (control.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "conf_control.h"
#include "control_codec.h"
#include "json_str.h"
#include "log.h"
#include "redis_link.h"
#include "redis_sentinel.h"
#include "rollout.h"
#include "runtime.h"
#include "snapshot.h"
#include "statefile.h"
#include "statefile_parse.h"

#define CONTROL_TICK_MS 200
#define CONTROL_POLL_MS 1000
#define CONTROL_FIGURES_MS 1000
#define CONTROL_FIGURES_MAX_AGE_MS (10u * 60 * 1000)
#define CONTROL_FIGURES_MAX_BYTES (256u << 10)
#define CONTROL_RELEASE_TIMEOUT_MS 300

/* Writes entries (ARGV: origin, channel, the highest version the writer has
 * seen, then key, line, base triples): raises PREFIX:version to that floor
 * (a Redis that lost its data never hands out a version again), INCR, HSET
 * each entry as "VERSION ORIGIN LINE", PUBLISH. A base says when to write:
 * "*" always (a change made now), "+" only where Redis has no entry (state
 * written back into a Redis that lost it), a number only where Redis's entry
 * is not newer than that version (a change made during an outage: a newer one
 * from another instance wins). Returns {version, skipped keys}. */
static const char write_script[] =
	"local floor = tonumber(ARGV[3])\n"
	"local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
	"if cur < floor then redis.call('SET', KEYS[1], floor) end\n"
	"local v = redis.call('INCR', KEYS[1])\n"
	"local skipped = {}\n"
	"for i = 4, #ARGV, 3 do\n"
	"  local base, write = ARGV[i + 2], true\n"
	"  if base ~= '*' then\n"
	"    local have = redis.call('HGET', KEYS[2], ARGV[i])\n"
	"    if have then\n"
	"      if base == '+' then write = false else\n"
	"        local hv = tonumber(string.match(have, '^(%d+) '))\n"
	"        if hv and hv > tonumber(base) then write = false end\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"  if write then\n"
	"    redis.call('HSET', KEYS[2], ARGV[i], v .. ' ' .. ARGV[1] .. ' ' .. ARGV[i + 1])\n"
	"  else\n"
	"    skipped[#skipped + 1] = ARGV[i]\n"
	"  end\n"
	"end\n"
	"redis.call('PUBLISH', ARGV[2], v .. ' ' .. ARGV[1])\n"
	"return {v, skipped}\n";

/* Takes or renews a lease (ARGV: origin, ms); returns the holder. */
static const char lease_script[] =
	"local h = redis.call('GET', KEYS[1])\n"
	"if h == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return h end\n"
	"if not h then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return ARGV[1] end\n"
	"return h\n";

/* Deletes the lease if this instance holds it. */
static const char release_script[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
	"return 0\n";

enum req_kind { REQ_VERSION, REQ_PULL, REQ_WRITE, REQ_LEASE, REQ_RELEASE, REQ_FIGURES, REQ_OTHER };

struct control_lease {
	char *service;
	bool held, busy;
	uint64_t valid_until_ms;
	char holder[CONTROL_ORIGIN_MAX]; /* the last one seen; "" unknown */
};

struct control_figures {
	char *origin;
	char *text; /* "POOL ATTEMPTS ERRORS L0 .. L15" lines */
};

struct control {
	struct runtime *rt;
	struct statefile *sf;
	struct rollout_ctl *rc;
	struct snapshot *const *snap;
	/* settings (copies) */
	char *prefix;
	bool uses_main;
	bool has_password; /* the control Redis block has a password_file (for the hint when Redis refuses) */
	uint64_t lease_ms;
	char name[CONF_CONTROL_INSTANCE_MAX + 80]; /* as shown */
	char origin[CONTROL_ORIGIN_MAX];          /* name#nonce: this run's writes and leases */
	char *k_version, *k_state, *k_channel, *k_figures, *sidecar;
	struct redis_link *link; /* the master, its command and subscriber connections */
	bool synced;             /* a full read since the link came up */
	struct event *tick;
	uint64_t last_poll_ms, last_lease_ms, last_figures_ms;
	bool pull_busy, pull_again, reconcile;
	bool restoring;           /* Redis lost the fleet's state: writing it back */
	uint64_t max_version;     /* the highest fleet version seen */
	/* the fleet's state as this instance knows it */
	struct control_set known;
	uint64_t applied_version; /* every entry up to it is in the local state */
	uint64_t floor;           /* from the sidecar at start: the local state includes this version */
	bool floor_dirty;
	unsigned long long written, applied, conflicts;
	uint64_t last_applied_wall_us;
	struct control_lease *leases;
	size_t num_leases;
	struct control_figures *figs;
	size_t num_figs;
};

struct control_req {
	struct control *ctl;
	enum req_kind kind;
	uint64_t sent_ms;
	uint64_t version; /* REQ_PULL: the version read before */
	char *service;    /* REQ_LEASE */
	char **keys;      /* REQ_WRITE */
	size_t num_keys;
};

static uint64_t mono_ms(void)
{
	return clock_mono_us() / 1000;
}

static void req_free(struct control_req *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->num_keys; i++)
		free(r->keys[i]);
	free(r->keys);
	free(r->service);
	free(r);
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	char *s = malloc((size_t)n + 1);
	if (!s)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

/* ---- the link --------------------------------------------------------- */

static void reply_cb(void *arg, const redisReply *reply);
static void poll_version(struct control *ctl);

/* False (r freed) when it was not sent. */
static bool send_req(struct control *ctl, struct control_req *r, int argc, const char **argv, const size_t *lens)
{
	if (!r || !redis_link_command(ctl->link, reply_cb, r, argc, argv, lens)) {
		req_free(r);
		return false;
	}
	return true;
}

static struct control_req *req_new(struct control *ctl, enum req_kind kind)
{
	struct control_req *r = calloc(1, sizeof *r);
	if (r) {
		r->ctl = ctl;
		r->kind = kind;
		r->sent_ms = mono_ms();
	}
	return r;
}

static void link_went_up(void *arg, const struct rs_addr *switched_from, bool after_outage)
{
	struct control *ctl = arg;
	struct redis_link_status st;
	redis_link_status(ctl->link, &st);
	if (switched_from) {
		char from[80];
		rs_addr_format(switched_from, from, sizeof from);
		struct log_line l;
		log_begin(&l, LOG_WARN, "fleet control: Redis master switched");
		log_str(&l, "master_name", st.master_name);
		log_str(&l, "from", from);
		log_str(&l, "to", st.master);
		log_end(&l);
	}
	ctl->reconcile = true;
	ctl->synced = false;
	if (after_outage) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "fleet control: Redis reachable again; re-syncing (the newest change wins)");
		log_str(&l, "redis", st.address);
		if (st.master_name)
			log_str(&l, "master", st.master);
		log_end(&l);
	} else {
		struct log_line l;
		log_begin(&l, LOG_INFO, "fleet control: connected to Redis");
		log_str(&l, "redis", st.address);
		if (st.master_name)
			log_str(&l, "master", st.master);
		log_str(&l, "prefix", ctl->prefix);
		log_str(&l, "instance", ctl->origin);
		log_end(&l);
	}
	poll_version(ctl);
}

/* Redis answered the link's AUTH, SELECT or SUBSCRIBE with an error: a
 * config (or server) mistake that retrying does not mend, logged once per
 * outage with where it is configured and how to fix it. */
static void log_refused(struct control *ctl, const struct redis_link_status *st)
{
	const char *block = ctl->uses_main ? "redis" : "control.redis";
	char fix[400];
	if (ctl->has_password)
		snprintf(fix, sizeof fix,
		         "check the password in the file %s.password_file names: it must be the one this Redis expects "
		         "(requirepass or its ACL user); if the error is about the db, %s.db must be below the server's "
		         "`databases`. Fix the file and restart sluice (control is restart-only), or fix Redis: the link "
		         "retries each second",
		         block, block);
	else
		snprintf(fix, sizeof fix,
		         "this Redis requires a password: set %s.password_file to a file holding it and restart sluice "
		         "(control is restart-only); the link retries each second",
		         block);
	struct log_line l;
	log_begin(&l, LOG_ERROR, "fleet control: Redis refused this instance (password or db); serving with this "
	                         "instance's state, changes are written to Redis once it accepts them");
	log_str(&l, "config", ctl->uses_main ? "redis (control.redis = \"main\")" : "control.redis");
	log_str(&l, "redis", st->address);
	if (st->master_name)
		log_str(&l, "master", st->master);
	log_str(&l, "why", st->why);
	log_str(&l, "fix", fix);
	log_end(&l);
}

static void link_went_down(void *arg, const char *why, bool report)
{
	struct control *ctl = arg;
	ctl->synced = false;
	ctl->pull_busy = false;
	if (!report)
		return;
	struct redis_link_status st;
	redis_link_status(ctl->link, &st);
	if (st.refused) {
		log_refused(ctl, &st);
		return;
	}
	struct log_line l;
	log_begin(&l, LOG_WARN, "fleet control: Redis unreachable; serving with this instance's state, "
	                        "changes are written to Redis when it is back");
	log_str(&l, "redis", st.address);
	if (st.master_name)
		log_str(&l, "master", st.master);
	log_str(&l, "why", why);
	log_end(&l);
}

/* A message on PREFIX:changes, "VERSION ORIGIN": read the state when it is news. */
static void link_message(void *arg, const char *payload, size_t len)
{
	(void)len;
	struct control *ctl = arg;
	unsigned long long v = strtoull(payload, NULL, 10);
	if (v > ctl->applied_version && redis_link_is_up(ctl->link))
		poll_version(ctl);
}

/* ---- the local state as entries ---------------------------------------- */

/* What this instance has now: the state file's lines and the rollouts' verdicts. */
static int current_set(struct control *ctl, struct control_set *cur)
{
	size_t len = 0;
	char *text = statefile_render(ctl->rt, &len);
	if (!text)
		return -1;
	int rc = control_set_add_text(cur, text, len);
	free(text);
	for (size_t i = 0; rc == 0 && ctl->rc && i < ctl->rt->num_rollouts; i++) {
		const char *svc = ctl->rt->rollouts[i].service;
		const char *verdict = rollout_ctl_verdict(ctl->rc, svc);
		if (!verdict || !*verdict)
			continue;
		char key[STATEFILE_MAX_LINE + 32];
		char *line = xasprintf("verdict %s %s", svc, verdict);
		if (!line || !control_entry_key(line, key, sizeof key) || !control_set_put(cur, key, line))
			rc = -1;
		free(line);
	}
	return rc;
}

/* ---- writing ------------------------------------------------------------ */

enum write_mode { WRITE_NOW, WRITE_RECONCILE };

struct write_batch {
	struct control *ctl;
	enum write_mode mode;
	const char **argv;
	size_t *lens;
	char **owned; /* strings argv points at */
	size_t argc, cap, num_owned;
	struct control_req *req;
	bool failed;
};

static bool batch_push(struct write_batch *b, char *s)
{
	if (!s) {
		b->failed = true;
		return false;
	}
	if (b->argc == b->cap) {
		size_t cap = b->cap * 2;
		const char **argv = realloc(b->argv, cap * sizeof *argv);
		if (argv)
			b->argv = argv;
		size_t *lens = realloc(b->lens, cap * sizeof *lens);
		if (lens)
			b->lens = lens;
		char **owned = realloc(b->owned, cap * sizeof *owned);
		if (owned)
			b->owned = owned;
		if (!argv || !lens || !owned) {
			free(s);
			b->failed = true;
			return false;
		}
		b->cap = cap;
	}
	b->owned[b->num_owned++] = s;
	b->argv[b->argc] = s;
	b->lens[b->argc++] = strlen(s);
	return true;
}

/* Does this instance's config have what key names (the server in its pool,
 * the pool in its service, the service)? */
static bool configured(const struct control *ctl, const char *key)
{
	const struct conf *c = (*ctl->snap)->conf;
	char a[STATEFILE_MAX_LINE + 1];
	const char *sp = strchr(key, ' ');
	if (!sp)
		return false;
	size_t n = strcspn(sp + 1, " ");
	if (n >= sizeof a)
		return false;
	memcpy(a, sp + 1, n);
	a[n] = '\0';
	const char *b = sp[1 + n] == ' ' ? sp + 2 + n : NULL; /* the rest: ADDRESS or POOL */
	if (strncmp(key, "rollout ", 8) == 0 || strncmp(key, "verdict ", 8) == 0)
		return conf_find_service(c, a) >= 0;
	if (strncmp(key, "service-", 8) == 0) {
		int si = conf_find_service(c, a);
		for (size_t i = 0; si >= 0 && b && i < c->services[si].num_pools; i++)
			if (strcmp(c->pools[c->services[si].pools[i].pool].name, b) == 0)
				return true;
		return false;
	}
	int pi = conf_find_pool(c, a);
	for (size_t i = 0; pi >= 0 && b && i < c->pools[pi].num_servers; i++)
		if (strcmp(c->pools[pi].servers[i].address, b) == 0)
			return true;
	return false;
}

static void diff_one(void *arg, const char *key, const char *line, const struct control_item *known)
{
	struct write_batch *b = arg;
	if (b->failed)
		return;
	/* gone here because this config lacks it (a reload pruned it), not undone */
	if (!line && !configured(b->ctl, key))
		return;
	char **keys = realloc(b->req->keys, (b->req->num_keys + 1) * sizeof *keys);
	if (!keys) {
		b->failed = true;
		return;
	}
	b->req->keys = keys;
	if (!(keys[b->req->num_keys] = strdup(key))) {
		b->failed = true;
		return;
	}
	b->req->num_keys++;
	batch_push(b, strdup(key));
	batch_push(b, strdup(line ? line : CONTROL_TOMBSTONE));
	bool same = known && ((!line && !known->line) || (line && known->line && strcmp(line, known->line) == 0));
	if (b->mode == WRITE_NOW)
		batch_push(b, strdup("*"));
	else if (b->ctl->restoring && same) /* unchanged here: back into Redis unless another put it back first */
		batch_push(b, strdup("+"));
	else if (b->ctl->restoring) /* changed here while Redis was away: there is nothing newer to lose */
		batch_push(b, strdup("*"));
	else
		batch_push(b, xasprintf("%" PRIu64, known ? known->version : 0));
}

/* Writes what differs between the runtime and what Redis holds.
 * WRITE_RECONCILE: after an outage or at start, where Redis may be newer. */
static void flush(struct control *ctl, enum write_mode mode)
{
	if (!redis_link_is_up(ctl->link))
		return;
	struct control_set cur;
	control_set_init(&cur);
	struct write_batch b = { .ctl = ctl, .mode = mode, .cap = 16 };
	b.argv = calloc(b.cap, sizeof *b.argv);
	b.lens = calloc(b.cap, sizeof *b.lens);
	b.owned = calloc(b.cap, sizeof *b.owned);
	b.req = req_new(ctl, REQ_WRITE);
	if (!b.argv || !b.lens || !b.owned || !b.req || current_set(ctl, &cur) != 0) {
		b.failed = true;
	} else {
		batch_push(&b, strdup("EVAL"));
		batch_push(&b, strdup(write_script));
		batch_push(&b, strdup("2"));
		batch_push(&b, strdup(ctl->k_version));
		batch_push(&b, strdup(ctl->k_state));
		batch_push(&b, strdup(ctl->origin));
		batch_push(&b, strdup(ctl->k_channel));
		batch_push(&b, xasprintf("%" PRIu64, ctl->max_version));
		control_set_diff(&cur, &ctl->known, diff_one, &b);
	}
	if (b.failed) {
		log_msg(LOG_ERROR, "fleet control: out of memory writing a change to Redis");
		req_free(b.req);
	} else if (b.req->num_keys == 0) {
		req_free(b.req);
	} else {
		struct control_req *req = b.req;
		size_t n = req->num_keys;
		char **keys = calloc(n, sizeof *keys);
		for (size_t i = 0; keys && i < n; i++)
			keys[i] = req->keys[i]; /* borrowed: req lives until its reply */
		if (!keys) {
			log_msg(LOG_ERROR, "fleet control: out of memory writing a change to Redis");
			req_free(req);
		} else if (send_req(ctl, req, (int)b.argc, b.argv, b.lens)) {
			/* what Redis will hold once the reply comes */
			for (size_t i = 0; i < n; i++) {
				struct control_item *have = control_set_find(&cur, keys[i]);
				struct control_item *k = control_set_put(&ctl->known, keys[i], have ? have->line : NULL);
				if (k) {
					k->pending++;
					k->unknown = false;
				}
			}
			ctl->written += n;
		} else {
			redis_link_drop(ctl->link, "cannot send a command");
		}
		free(keys);
	}
	for (size_t i = 0; i < b.num_owned; i++)
		free(b.owned[i]);
	free(b.owned);
	free(b.argv);
	free(b.lens);
	control_set_free(&cur);
}

static void write_reply(struct control *ctl, struct control_req *r, const redisReply *reply)
{
	bool ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	          reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[1]->type == REDIS_REPLY_ARRAY;
	uint64_t v = ok ? (uint64_t)reply->element[0]->integer : 0;
	bool need_pull = false;
	for (size_t i = 0; i < r->num_keys; i++) {
		struct control_item *k = control_set_find(&ctl->known, r->keys[i]);
		if (!k)
			continue;
		if (k->pending)
			k->pending--;
		if (!ok) {
			k->unknown = true; /* written again at the next sync */
			continue;
		}
		bool skipped = false;
		const redisReply *sk = reply->element[1];
		for (size_t j = 0; j < sk->elements; j++)
			if (sk->element[j]->type == REDIS_REPLY_STRING && strcmp(sk->element[j]->str, r->keys[i]) == 0)
				skipped = true;
		if (skipped) {
			/* another instance changed it while this one could not write: theirs is newer */
			k->unknown = true;
			ctl->conflicts++;
			need_pull = true;
		} else if (v > k->version) {
			k->version = v;
		}
	}
	if (v > ctl->max_version)
		ctl->max_version = v;
	if (ok && reply && reply->type == REDIS_REPLY_ERROR)
		log_msg(LOG_WARN, "fleet control: Redis refused a write");
	if (!ok && reply) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "fleet control: Redis refused a write; it is retried at the next sync");
		log_str(&l, "error", reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
		log_end(&l);
	}
	if (need_pull)
		poll_version(ctl);
}

/* ---- reading and applying ------------------------------------------------ */

struct split_change {
	struct runtime_split *sp;
	unsigned weight;
	bool clear;
};

struct apply_batch {
	struct split_change *splits;
	size_t num_splits;
	char **adopt;          /* services whose rollout or verdict changed */
	char **verdicts;       /* their verdict (NULL: unchanged) */
	size_t num_adopt;
	size_t changes;
};

static size_t adopt_index(struct apply_batch *ab, const char *service)
{
	for (size_t i = 0; i < ab->num_adopt; i++)
		if (strcmp(ab->adopt[i], service) == 0)
			return i;
	char **a = realloc(ab->adopt, (ab->num_adopt + 1) * sizeof *a);
	if (a)
		ab->adopt = a;
	char **v = realloc(ab->verdicts, (ab->num_adopt + 1) * sizeof *v);
	if (v)
		ab->verdicts = v;
	char *s = strdup(service);
	if (!a || !v || !s) {
		free(s);
		return SIZE_MAX;
	}
	ab->adopt[ab->num_adopt] = s;
	ab->verdicts[ab->num_adopt] = NULL;
	return ab->num_adopt++;
}

static void apply_skipped(const char *key, const char *why)
{
	struct log_line l;
	log_begin(&l, LOG_WARN, "fleet control: change not applied here");
	log_str(&l, "entry", key);
	log_str(&l, "why", why);
	log_end(&l);
}

/* Applies one entry (line NULL: undo it). Split weights wait in ab so that
 * they are stored raising first. Returns false when it did not apply. */
static bool apply_entry(struct control *ctl, const char *key, const char *line, struct apply_batch *ab)
{
	char kind[32], a[STATEFILE_MAX_LINE + 1], b[STATEFILE_MAX_LINE + 1];
	const char *sp1 = strchr(key, ' ');
	if (!sp1 || (size_t)(sp1 - key) >= sizeof kind)
		return false;
	memcpy(kind, key, (size_t)(sp1 - key));
	kind[sp1 - key] = '\0';
	const char *sp2 = strchr(sp1 + 1, ' ');
	size_t alen = sp2 ? (size_t)(sp2 - sp1 - 1) : strlen(sp1 + 1);
	if (alen >= sizeof a)
		return false;
	memcpy(a, sp1 + 1, alen);
	a[alen] = '\0';
	snprintf(b, sizeof b, "%s", sp2 ? sp2 + 1 : "");
	if (strcmp(kind, "verdict") == 0) {
		size_t i = adopt_index(ab, a);
		if (i != SIZE_MAX && line && strlen(line) > 9 + alen) {
			free(ab->verdicts[i]);
			ab->verdicts[i] = strdup(line + 9 + alen);
		}
		return true;
	}
	struct statefile_entry *e = NULL;
	char check[STATEFILE_MAX_LINE + 32];
	if (line) {
		if (!(e = malloc(sizeof *e)))
			return false;
		if (statefile_parse_line(line, strlen(line), e) != NULL || !control_entry_key(line, check, sizeof check) ||
		    strcmp(check, key) != 0) {
			free(e);
			apply_skipped(key, "malformed entry in Redis");
			return false;
		}
	}
	bool ok = true;
	if (strcmp(kind, "rollout") == 0) {
		if (runtime_set_rollout_line(ctl->rt, a, e ? e->target : NULL) != 0)
			ok = false;
		else
			adopt_index(ab, a);
	} else if (strcmp(kind, "service-weight") == 0 || strcmp(kind, "service-saved-weight") == 0) {
		struct runtime_split *sp = runtime_find_split(ctl->rt, a, b);
		if (!sp) {
			apply_skipped(key, "no such service and pool in this instance's config");
			ok = false;
		} else if (kind[8] == 's') { /* service-saved-weight */
			sp->saved_set = e != NULL;
			sp->saved_weight = e ? e->weight : 0;
		} else {
			struct split_change *g = realloc(ab->splits, (ab->num_splits + 1) * sizeof *g);
			if (g) {
				ab->splits = g;
				g[ab->num_splits++] = (struct split_change){ sp, e ? e->weight : 0, e == NULL };
			}
			ok = g != NULL;
		}
	} else {
		struct runtime_pool *p = runtime_find_pool(ctl->rt, a);
		struct runtime_server *s = p ? runtime_find_server(p, b) : NULL;
		if (!s) {
			apply_skipped(key, p ? "no such server in this instance's config" : "no such pool in this instance's config");
			ok = false;
		} else if (strcmp(kind, "weight") == 0) {
			if (e)
				runtime_set_weight(s, e->weight);
			else
				runtime_clear_weight(s);
		} else if (strcmp(kind, "drain") == 0) {
			atomic_store(&s->drained, e != NULL);
		} else if (strcmp(kind, "disable") == 0) {
			atomic_store(&s->disabled, e != NULL);
		} else {
			ok = false;
		}
	}
	free(e);
	return ok;
}

static void apply_splits(struct apply_batch *ab)
{
	/* raising first, then lowering: no pick finds every weight at 0 */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < ab->num_splits; i++) {
			struct split_change *g = &ab->splits[i];
			unsigned target = g->clear ? atomic_load(&g->sp->config_weight) : g->weight;
			bool raising = target >= atomic_load(&g->sp->weight);
			if (raising != (pass == 0))
				continue;
			if (g->clear) {
				atomic_store(&g->sp->weight_set, false);
				atomic_store(&g->sp->weight, target);
			} else {
				runtime_set_split_weight(g->sp, target);
			}
		}
}

static void finish_batch(struct control *ctl, struct apply_batch *ab)
{
	apply_splits(ab);
	for (size_t i = 0; i < ab->num_adopt; i++) {
		if (ctl->rc)
			rollout_ctl_adopt(ctl->rc, ab->adopt[i], ab->verdicts[i]);
		free(ab->adopt[i]);
		free(ab->verdicts[i]);
	}
	free(ab->adopt);
	free(ab->verdicts);
	free(ab->splits);
	if (ab->changes && ctl->sf) {
		char err[512];
		if (statefile_save(ctl->sf, ctl->rt, false, err, sizeof err) != 0) {
			struct log_line l;
			log_begin(&l, LOG_WARN, "fleet control: changes applied, but not saved to the state file");
			log_str(&l, "error", err);
			log_end(&l);
		}
	}
}

static void pull_reply(struct control *ctl, struct control_req *r, const redisReply *reply)
{
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2) {
		log_msg(LOG_WARN, "fleet control: unexpected answer reading the fleet state");
		return;
	}
	struct apply_batch ab = { 0 };
	for (size_t i = 0; i + 1 < reply->elements; i += 2) {
		const redisReply *k = reply->element[i], *v = reply->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		uint64_t version;
		char origin[CONTROL_ORIGIN_MAX];
		const char *line;
		if (!control_value_parse(v->str, &version, origin, sizeof origin, &line))
			continue;
		struct control_item *known = control_set_find(&ctl->known, k->str);
		enum control_action act = control_decide(version, origin, known, ctl->floor, ctl->origin);
		if (act == CONTROL_WAIT || (act == CONTROL_KEEP && known))
			continue;
		bool ok = true;
		if (act == CONTROL_APPLY) {
			ok = apply_entry(ctl, k->str, line, &ab);
			if (ok) {
				ab.changes++;
				ctl->applied++;
				ctl->last_applied_wall_us = clock_wall_us();
			}
			struct log_line l;
			log_begin(&l, LOG_INFO, "fleet change applied");
			log_str(&l, "entry", k->str);
			log_str(&l, "now", line ? line : "(undone)");
			log_str(&l, "from", origin);
			log_int(&l, "version", (long long)version);
			log_end(&l);
		}
		/* KEEP of a new key (already in the local state), ACK, APPLY: remember it */
		struct control_item *item = control_set_put(&ctl->known, k->str, line);
		if (item) {
			item->version = version;
			item->unknown = false;
			/* not applied here (this config lacks it): never undone from here */
			item->inapplicable = !ok;
		}
	}
	finish_batch(ctl, &ab);
	if (r->version > ctl->applied_version) {
		ctl->applied_version = r->version;
		ctl->floor_dirty = true;
	}
	if (r->version > ctl->max_version)
		ctl->max_version = r->version;
	if (ctl->reconcile) {
		ctl->reconcile = false;
		flush(ctl, WRITE_RECONCILE);
		ctl->restoring = false;
	} else {
		/* a change made here while the read was on its way */
		flush(ctl, WRITE_NOW);
	}
	ctl->synced = true;
}

static void version_reply(struct control *ctl, const redisReply *reply)
{
	uint64_t v = 0;
	if (reply->type == REDIS_REPLY_STRING)
		v = strtoull(reply->str, NULL, 10);
	else if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
		v = (uint64_t)reply->integer;
	if (v < ctl->applied_version) {
		/* Redis lost the fleet's state (restarted without persistence, flushed) */
		struct log_line l;
		log_begin(&l, LOG_WARN, "fleet control: Redis holds an older fleet version than this instance has applied "
		                        "(Redis lost its data?); writing this instance's state back");
		log_int(&l, "redis_version", (long long)v);
		log_int(&l, "applied_version", (long long)ctl->applied_version);
		log_end(&l);
		for (size_t i = 0; i < ctl->known.n; i++)
			ctl->known.items[i].unknown = true;
		ctl->restoring = true;
		ctl->reconcile = true;
	}
	if (v == ctl->applied_version && !ctl->reconcile) {
		ctl->pull_busy = false;
		ctl->synced = true;
		return;
	}
	struct control_req *r = req_new(ctl, REQ_PULL);
	if (!r) {
		ctl->pull_busy = false;
		return;
	}
	r->version = v;
	const char *argv[] = { "HGETALL", ctl->k_state };
	size_t lens[] = { 7, strlen(ctl->k_state) };
	if (!send_req(ctl, r, 2, argv, lens))
		ctl->pull_busy = false;
}

static void poll_version(struct control *ctl)
{
	if (!redis_link_is_up(ctl->link))
		return;
	if (ctl->pull_busy) {
		ctl->pull_again = true;
		return;
	}
	ctl->pull_busy = true;
	ctl->pull_again = false;
	ctl->last_poll_ms = mono_ms();
	const char *argv[] = { "GET", ctl->k_version };
	size_t lens[] = { 3, strlen(ctl->k_version) };
	if (!send_req(ctl, req_new(ctl, REQ_VERSION), 2, argv, lens))
		ctl->pull_busy = false;
}

/* ---- leases ------------------------------------------------------------ */

static struct control_lease *lease_find(struct control *ctl, const char *service, bool create)
{
	for (size_t i = 0; i < ctl->num_leases; i++)
		if (strcmp(ctl->leases[i].service, service) == 0)
			return &ctl->leases[i];
	if (!create)
		return NULL;
	struct control_lease *grown = realloc(ctl->leases, (ctl->num_leases + 1) * sizeof *grown);
	if (!grown)
		return NULL;
	ctl->leases = grown;
	struct control_lease *l = &ctl->leases[ctl->num_leases];
	memset(l, 0, sizeof *l);
	if (!(l->service = strdup(service)))
		return NULL;
	ctl->num_leases++;
	return l;
}

static bool line_running(const char *line)
{
	return strstr(line, " state=running") != NULL;
}

static bool lease_valid(const struct control_lease *l)
{
	return l && l->held && mono_ms() < l->valid_until_ms;
}

static void lease_send(struct control *ctl, struct control_lease *l, bool release)
{
	char *key = xasprintf("%s:lease:%s", ctl->prefix, l->service);
	char ms[24];
	snprintf(ms, sizeof ms, "%" PRIu64, ctl->lease_ms);
	struct control_req *r = req_new(ctl, release ? REQ_RELEASE : REQ_LEASE);
	if (!key || !r || !(r->service = strdup(l->service))) {
		free(key);
		req_free(r);
		return;
	}
	const char *script = release ? release_script : lease_script;
	const char *argv[] = { "EVAL", script, "1", key, ctl->origin, ms };
	size_t lens[] = { 4, strlen(script), 1, strlen(key), strlen(ctl->origin), strlen(ms) };
	if (send_req(ctl, r, release ? 5 : 6, argv, lens))
		l->busy = !release;
	free(key);
}

static void leases_tick(struct control *ctl)
{
	ctl->last_lease_ms = mono_ms();
	if (!redis_link_is_up(ctl->link) || !ctl->synced || !ctl->rc)
		return;
	for (size_t i = 0; i < ctl->rt->num_rollouts; i++) {
		if (!line_running(ctl->rt->rollouts[i].line))
			continue;
		struct control_lease *l = lease_find(ctl, ctl->rt->rollouts[i].service, true);
		if (l && !l->busy)
			lease_send(ctl, l, false);
	}
	for (size_t i = 0; i < ctl->num_leases; i++) {
		struct control_lease *l = &ctl->leases[i];
		const char *line = runtime_rollout_line(ctl->rt, l->service);
		if (l->held && (!line || !line_running(line))) {
			l->held = false;
			lease_send(ctl, l, true);
			struct log_line ll;
			log_begin(&ll, LOG_INFO, "fleet control: rollout lease released");
			log_str(&ll, "service", l->service);
			log_end(&ll);
		}
	}
}

static void lease_reply(struct control *ctl, struct control_req *r, const redisReply *reply)
{
	struct control_lease *l = lease_find(ctl, r->service, false);
	if (!l)
		return;
	l->busy = false;
	if (reply->type != REDIS_REPLY_STRING)
		return;
	snprintf(l->holder, sizeof l->holder, "%s", reply->str);
	bool mine = strcmp(reply->str, ctl->origin) == 0;
	const char *line = runtime_rollout_line(ctl->rt, l->service);
	if (mine && (!line || !line_running(line))) {
		/* stopped while the request was on its way */
		lease_send(ctl, l, true);
		l->held = false;
		return;
	}
	bool was = lease_valid(l);
	if (mine) {
		l->held = true;
		/* Redis counts from when it got the command, later than sent_ms */
		l->valid_until_ms = r->sent_ms + ctl->lease_ms;
		if (!was) {
			struct log_line ll;
			log_begin(&ll, LOG_INFO, "fleet control: driving the rollout (lease taken)");
			log_str(&ll, "service", l->service);
			log_str(&ll, "instance", ctl->origin);
			log_end(&ll);
			if (ctl->rc) /* a fresh interval on the fleet's figures */
				rollout_ctl_adopt(ctl->rc, l->service, NULL);
		}
	} else {
		if (l->held) {
			struct log_line ll;
			log_begin(&ll, LOG_WARN, "fleet control: rollout lease lost to another instance");
			log_str(&ll, "service", l->service);
			log_str(&ll, "driver", reply->str);
			log_end(&ll);
		}
		l->held = false;
	}
}

/* ---- figures ------------------------------------------------------------ */

static void figures_tick(struct control *ctl)
{
	ctl->last_figures_ms = mono_ms();
	if (!redis_link_is_up(ctl->link) || !ctl->synced)
		return;
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (!f)
		return;
	fprintf(f, "%" PRIu64 "\n", clock_wall_us() / 1000);
	for (size_t i = 0; i < ctl->rt->num_splits; i++) {
		const char *pool = ctl->rt->splits[i]->pool;
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(ctl->rt->splits[j]->pool, pool) == 0;
		struct runtime_pool *p = seen ? NULL : runtime_find_pool(ctl->rt, pool);
		if (!p || ftell(f) > (long)CONTROL_FIGURES_MAX_BYTES)
			continue;
		struct runtime_figures fig;
		runtime_outcome_read(p, &fig);
		fprintf(f, "%s %" PRIu64 " %" PRIu64, pool, fig.attempts, fig.errors);
		for (size_t b = 0; b < RUNTIME_LATENCY_BUCKETS; b++)
			fprintf(f, " %" PRIu64, fig.latency[b]);
		fputc('\n', f);
	}
	if (fclose(f) != 0) {
		free(buf);
		return;
	}
	const char *argv[] = { "HSET", ctl->k_figures, ctl->origin, buf };
	size_t lens[] = { 4, strlen(ctl->k_figures), strlen(ctl->origin), size };
	send_req(ctl, req_new(ctl, REQ_OTHER), 4, argv, lens);
	free(buf);
	const char *gargv[] = { "HGETALL", ctl->k_figures };
	size_t glens[] = { 7, strlen(ctl->k_figures) };
	send_req(ctl, req_new(ctl, REQ_FIGURES), 2, gargv, glens);
}

static void figures_free(struct control *ctl)
{
	for (size_t i = 0; i < ctl->num_figs; i++) {
		free(ctl->figs[i].origin);
		free(ctl->figs[i].text);
	}
	free(ctl->figs);
	ctl->figs = NULL;
	ctl->num_figs = 0;
}

static void figures_reply(struct control *ctl, const redisReply *reply)
{
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2)
		return;
	struct control_figures *figs = calloc(reply->elements / 2 + 1, sizeof *figs);
	if (!figs)
		return;
	size_t n = 0;
	uint64_t now = clock_wall_us() / 1000;
	for (size_t i = 0; i + 1 < reply->elements; i += 2) {
		const redisReply *k = reply->element[i], *v = reply->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		uint64_t at = strtoull(v->str, NULL, 10);
		if (at + CONTROL_FIGURES_MAX_AGE_MS < now) { /* an instance long gone */
			const char *argv[] = { "HDEL", ctl->k_figures, k->str };
			size_t lens[] = { 4, strlen(ctl->k_figures), k->len };
			send_req(ctl, req_new(ctl, REQ_OTHER), 3, argv, lens);
			continue;
		}
		if (strcmp(k->str, ctl->origin) == 0)
			continue;
		figs[n].origin = strdup(k->str);
		figs[n].text = strdup(v->str);
		if (!figs[n].origin || !figs[n].text) {
			free(figs[n].origin);
			free(figs[n].text);
			continue;
		}
		n++;
	}
	figures_free(ctl);
	ctl->figs = figs;
	ctl->num_figs = n;
}

static void fleet_add_figures(void *arg, const char *pool, struct runtime_figures *f)
{
	struct control *ctl = arg;
	size_t plen = strlen(pool);
	for (size_t i = 0; i < ctl->num_figs; i++) {
		const char *p = strchr(ctl->figs[i].text, '\n');
		while (p && *p) {
			p++;
			if (strncmp(p, pool, plen) == 0 && p[plen] == ' ') {
				char *end;
				const char *q = p + plen;
				f->attempts += strtoull(q, &end, 10);
				q = end;
				f->errors += strtoull(q, &end, 10);
				q = end;
				for (size_t b = 0; b < RUNTIME_LATENCY_BUCKETS; b++) {
					f->latency[b] += strtoull(q, &end, 10);
					q = end;
				}
				break;
			}
			p = strchr(p, '\n');
		}
	}
}

static bool fleet_may_drive(void *arg, const char *service)
{
	struct control *ctl = arg;
	return lease_valid(lease_find(ctl, service, false));
}

static void fleet_changed(void *arg)
{
	control_changed(arg);
}

static void fleet_driver(void *arg, const char *service, char *buf, size_t size)
{
	struct control *ctl = arg;
	const struct control_lease *l = lease_find(ctl, service, false);
	if (lease_valid(l))
		snprintf(buf, size, "this instance (%s), lease held", ctl->origin);
	else if (!redis_link_is_up(ctl->link))
		snprintf(buf, size, "unknown: Redis is unreachable (no instance judges this rollout until it is back)");
	else if (l && l->holder[0] && strcmp(l->holder, ctl->origin) != 0)
		snprintf(buf, size, "instance %s (this one contributes its counters)", l->holder);
	else
		snprintf(buf, size, "none yet (the lease is being taken)");
}

/* ---- the clock ---------------------------------------------------------- */

static void write_sidecar(struct control *ctl)
{
	ctl->floor_dirty = false;
	if (!ctl->sidecar)
		return;
	char *tmp = xasprintf("%s.tmp", ctl->sidecar);
	if (!tmp)
		return;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	char text[200];
	int n = snprintf(text, sizeof text, "sluice-fleet %s %" PRIu64 "\n", ctl->prefix, ctl->applied_version);
	bool ok = fd >= 0 && n > 0 && write(fd, text, (size_t)n) == n;
	if (fd >= 0 && close(fd) != 0)
		ok = false;
	if (ok && rename(tmp, ctl->sidecar) != 0)
		ok = false;
	if (!ok) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "fleet control: cannot write the fleet version next to the state file");
		log_str(&l, "path", ctl->sidecar);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
		unlink(tmp);
	}
	free(tmp);
}

static void read_sidecar(struct control *ctl)
{
	if (!ctl->sidecar)
		return;
	FILE *f = fopen(ctl->sidecar, "re");
	if (!f)
		return;
	char prefix[CONF_CONTROL_PREFIX_MAX + 2];
	unsigned long long v;
	if (fscanf(f, "sluice-fleet %65s %llu", prefix, &v) == 2 && strcmp(prefix, ctl->prefix) == 0)
		ctl->floor = ctl->applied_version = ctl->max_version = v;
	fclose(f);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct control *ctl = arg;
	uint64_t now = mono_ms();
	if (redis_link_is_up(ctl->link)) {
		if (now - ctl->last_poll_ms >= CONTROL_POLL_MS)
			poll_version(ctl);
		if (now - ctl->last_lease_ms >= ctl->lease_ms / 3)
			leases_tick(ctl);
		if (now - ctl->last_figures_ms >= CONTROL_FIGURES_MS)
			figures_tick(ctl);
	}
	if (ctl->floor_dirty)
		write_sidecar(ctl);
}

/* Every answer to a command of control's (the link's own AUTH, SELECT and ROLE stay in redis_link.c). */
static void reply_cb(void *arg, const redisReply *reply)
{
	struct control_req *r = arg;
	struct control *ctl = r->ctl;
	if (r->kind == REQ_WRITE) {
		write_reply(ctl, r, reply);
	} else if (!reply) {
		if (r->kind == REQ_LEASE) {
			struct control_lease *l = lease_find(ctl, r->service, false);
			if (l)
				l->busy = false;
		}
	} else if (reply->type == REDIS_REPLY_ERROR && r->kind == REQ_VERSION) {
		char why[200];
		snprintf(why, sizeof why, "GET refused: %.150s", reply->str);
		redis_link_drop(ctl->link, why);
	} else if (r->kind == REQ_VERSION) {
		version_reply(ctl, reply);
	} else if (r->kind == REQ_PULL) {
		pull_reply(ctl, r, reply);
		ctl->pull_busy = false;
		if (ctl->pull_again)
			poll_version(ctl);
	} else if (r->kind == REQ_LEASE) {
		lease_reply(ctl, r, reply);
	} else if (r->kind == REQ_FIGURES) {
		figures_reply(ctl, reply);
	}
	req_free(r);
}

/* ---- public ------------------------------------------------------------- */

struct control *control_new(struct event_base *base, const struct conf_control *cfg, struct runtime *rt,
                            struct statefile *sf, struct snapshot *const *snap)
{
	struct control *ctl = calloc(1, sizeof *ctl);
	if (!ctl)
		goto oom;
	ctl->snap = snap;
	ctl->rt = rt;
	ctl->sf = sf;
	ctl->uses_main = cfg->uses_main;
	ctl->has_password = cfg->redis.password != NULL;
	ctl->lease_ms = cfg->lease;
	control_set_init(&ctl->known);
	if (cfg->instance) {
		snprintf(ctl->name, sizeof ctl->name, "%s", cfg->instance);
	} else {
		char host[64] = "";
		if (gethostname(host, sizeof host - 1) != 0 || !host[0])
			snprintf(host, sizeof host, "sluice");
		snprintf(ctl->name, sizeof ctl->name, "%s:%ld", host, (long)getpid());
	}
	uint32_t nonce = 0;
	if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
		nonce = (uint32_t)clock_wall_us();
	/* a restarted instance of the same name is a new writer: its old entries are not its own */
	snprintf(ctl->origin, sizeof ctl->origin, "%.120s#%08x", ctl->name, nonce);
	for (char *p = ctl->origin; *p; p++)
		if (*p == ' ')
			*p = '_';
	ctl->prefix = strdup(cfg->prefix);
	ctl->k_version = xasprintf("%s:version", cfg->prefix);
	ctl->k_state = xasprintf("%s:state", cfg->prefix);
	ctl->k_channel = xasprintf("%s:changes", cfg->prefix);
	ctl->k_figures = xasprintf("%s:figures", cfg->prefix);
	ctl->sidecar = sf ? xasprintf("%s.fleet", sf->path) : NULL;
	static const struct redis_link_events events = {
		.up = link_went_up,
		.down = link_went_down,
		.message = link_message,
	};
	if (ctl->k_channel)
		ctl->link = redis_link_new(base, &cfg->redis, ctl->k_channel, cfg->redis.timeout ? cfg->redis.timeout : 2000,
		                           cfg->redis.connect_timeout ? cfg->redis.connect_timeout : 500, &events, ctl);
	ctl->tick = event_new(base, -1, EV_PERSIST, tick_cb, ctl);
	struct timeval tv = { 0, CONTROL_TICK_MS * 1000 };
	if (!ctl->link || !ctl->prefix || !ctl->k_version || !ctl->k_state || !ctl->k_channel || !ctl->k_figures ||
	    (sf && !ctl->sidecar) || !ctl->tick || event_add(ctl->tick, &tv) != 0)
		goto oom;
	read_sidecar(ctl);
	redis_link_start(ctl->link);
	return ctl;
oom:
	log_msg(LOG_ERROR, "fleet control: out of memory starting");
	control_free(ctl);
	return NULL;
}

/* Held leases go at once (a short blocking exchange), so that another
 * instance takes the rollouts over now rather than after the lease time. */
static void release_leases_now(struct control *ctl)
{
	bool any = false;
	for (size_t i = 0; i < ctl->num_leases; i++)
		any = any || lease_valid(&ctl->leases[i]);
	if (!any || !ctl->link)
		return;
	redisContext *c = redis_link_connect_blocking(ctl->link, CONTROL_RELEASE_TIMEOUT_MS * 1000);
	if (!c)
		return;
	for (size_t i = 0; i < ctl->num_leases; i++) {
		if (!lease_valid(&ctl->leases[i]))
			continue;
		redisReply *rep = redisCommand(c, "EVAL %s 1 %s:lease:%s %s", release_script, ctl->prefix, ctl->leases[i].service,
		                   ctl->origin);
		if (!rep)
			break;
		freeReplyObject(rep);
		struct log_line l;
		log_begin(&l, LOG_INFO, "fleet control: rollout lease released at exit");
		log_str(&l, "service", ctl->leases[i].service);
		log_end(&l);
	}
	redisFree(c);
}

void control_free(struct control *ctl)
{
	if (!ctl)
		return;
	release_leases_now(ctl);
	if (ctl->rc)
		rollout_ctl_set_fleet(ctl->rc, NULL, NULL);
	if (ctl->floor_dirty)
		write_sidecar(ctl);
	redis_link_free(ctl->link); /* fails the commands in flight: their replies are handled here */
	if (ctl->tick)
		event_free(ctl->tick);
	control_set_free(&ctl->known);
	for (size_t i = 0; i < ctl->num_leases; i++)
		free(ctl->leases[i].service);
	free(ctl->leases);
	figures_free(ctl);
	free(ctl->prefix);
	free(ctl->k_version);
	free(ctl->k_state);
	free(ctl->k_channel);
	free(ctl->k_figures);
	free(ctl->sidecar);
	free(ctl);
}

void control_set_rollouts(struct control *ctl, struct rollout_ctl *rc)
{
	static const struct rollout_fleet_ops ops = {
		.may_drive = fleet_may_drive,
		.add_figures = fleet_add_figures,
		.changed = fleet_changed,
		.driver = fleet_driver,
	};
	if (ctl->rc)
		rollout_ctl_set_fleet(ctl->rc, NULL, NULL);
	ctl->rc = rc;
	if (rc)
		rollout_ctl_set_fleet(rc, &ops, ctl);
}

void control_changed(struct control *ctl)
{
	/* before the first read after connecting, the reconcile writes it */
	if (!redis_link_is_up(ctl->link) || !ctl->synced)
		return;
	flush(ctl, WRITE_NOW);
	leases_tick(ctl); /* a rollout started here: take its lease first */
}

/* Local entries Redis does not have yet. */
static void count_one(void *arg, const char *key, const char *line, const struct control_item *known)
{
	(void)known;
	struct control *ctl = ((void **)arg)[0];
	if (line || configured(ctl, key))
		(*(size_t *)((void **)arg)[1])++;
}

static size_t unsynced(struct control *ctl)
{
	struct control_set cur;
	control_set_init(&cur);
	size_t n = 0;
	void *args[2] = { ctl, &n };
	if (current_set(ctl, &cur) == 0)
		control_set_diff(&cur, &ctl->known, count_one, args);
	control_set_free(&cur);
	return n;
}

static void when_text(uint64_t wall_us, char *buf, size_t size)
{
	time_t t = (time_t)(wall_us / 1000000);
	struct tm tm;
	buf[0] = '\0';
	if (gmtime_r(&t, &tm))
		strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* whole, however long (a Redis error or address is not cut at a buffer) */
static void json_str(struct evbuffer *out, const char *s)
{
	(void)json_str_add_quoted(out, s, strlen(s));
}

static void state_text(struct control *ctl, const struct redis_link_status *link, char *buf, size_t size)
{
	char since[40];
	when_text(link->since_wall_us, since, sizeof since);
	if (link->state == REDIS_LINK_UP)
		snprintf(buf, size, "up since %s, %s, fleet version %" PRIu64, since, ctl->synced ? "in sync" : "syncing",
		         ctl->applied_version);
	else if (link->state == REDIS_LINK_CONNECTING)
		snprintf(buf, size, "connecting (since %s)%s%s", since, link->why[0] ? "; last error: " : "", link->why);
	else
		snprintf(buf, size, "REDIS DOWN since %s: %s; serving with this instance's state (fleet version %" PRIu64
		                    "), changes are written to Redis when it is back",
		         since, link->why, ctl->applied_version);
}

void control_brief(struct control *ctl, bool json, struct evbuffer *out)
{
	char st[400];
	struct redis_link_status link;
	redis_link_status(ctl->link, &link);
	state_text(ctl, &link, st, sizeof st);
	if (json) {
		evbuffer_add_printf(out, "{\"state\":\"%s\",\"synced\":%s,\"version\":%" PRIu64 ",\"status\":",
		                    link.state_name, ctl->synced ? "true" : "false", ctl->applied_version);
		json_str(out, st);
		evbuffer_add_printf(out, "}");
	} else {
		evbuffer_add_printf(out, "fleet control: %s\n", st);
	}
}

void control_show(struct control *ctl, bool json, struct evbuffer *out)
{
	char st[400], last[40] = "never";
	struct redis_link_status link;
	redis_link_status(ctl->link, &link);
	bool up = link.state == REDIS_LINK_UP;
	state_text(ctl, &link, st, sizeof st);
	if (ctl->last_applied_wall_us)
		when_text(ctl->last_applied_wall_us, last, sizeof last);
	size_t pending = unsynced(ctl);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"control\":{\"redis\":");
		json_str(out, link.address);
		evbuffer_add_printf(out, ",\"master\":");
		json_str(out, up ? link.master : "");
		evbuffer_add_printf(out, ",\"redis_block\":\"%s\",\"prefix\":", ctl->uses_main ? "main" : "own");
		json_str(out, ctl->prefix);
		evbuffer_add_printf(out, ",\"instance\":");
		json_str(out, ctl->origin);
		evbuffer_add_printf(out,
		                    ",\"state\":\"%s\",\"synced\":%s,\"since_ms\":%" PRIu64 ",\"version\":%" PRIu64
		                    ",\"written\":%llu,\"applied\":%llu,\"conflicts\":%llu,\"unsynced\":%zu,\"error\":",
		                    link.state_name, ctl->synced ? "true" : "false", link.since_wall_us / 1000,
		                    ctl->applied_version, ctl->written, ctl->applied, ctl->conflicts, pending);
		json_str(out, up ? "" : link.why);
		evbuffer_add_printf(out, ",\"status\":");
		json_str(out, st);
		evbuffer_add_printf(out, ",\"leases\":[");
		for (size_t i = 0; i < ctl->num_leases; i++) {
			char d[256];
			fleet_driver(ctl, ctl->leases[i].service, d, sizeof d);
			evbuffer_add_printf(out, "%s{\"service\":", i ? "," : "");
			json_str(out, ctl->leases[i].service);
			evbuffer_add_printf(out, ",\"held\":%s,\"holder\":", lease_valid(&ctl->leases[i]) ? "true" : "false");
			json_str(out, ctl->leases[i].holder);
			evbuffer_add_printf(out, ",\"driver\":");
			json_str(out, d);
			evbuffer_add_printf(out, "}");
		}
		evbuffer_add_printf(out, "]}}\n");
		return;
	}
	evbuffer_add_printf(out, "redis      %s (%s), key prefix \"%s\"\n", link.address,
	                    ctl->uses_main ? "the top-level redis block \"main\"" : "control's own", ctl->prefix);
	if (link.master_name)
		evbuffer_add_printf(out, "master     %s (\"%s\" as the sentinels name it; followed across failovers)\n",
		                    up ? link.master : "not reached", link.master_name);
	evbuffer_add_printf(out, "instance   %s\n", ctl->origin);
	evbuffer_add_printf(out, "state      %s\n", st);
	evbuffer_add_printf(out, "changes    %llu entries written by this instance, %llu applied from others (last %s), "
	                         "%llu conflicts (a newer change elsewhere won)\n",
	                    ctl->written, ctl->applied, last, ctl->conflicts);
	evbuffer_add_printf(out, "unsynced   %zu local entries not yet in Redis\n", pending);
	for (size_t i = 0; i < ctl->num_leases; i++) {
		char d[256];
		fleet_driver(ctl, ctl->leases[i].service, d, sizeof d);
		evbuffer_add_printf(out, "rollout    %s: driver %s\n", ctl->leases[i].service, d);
	}
}
