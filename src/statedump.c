#include "statedump.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "conf.h"
#include "json_str.h"
#include "log.h"
#include "redis_sentinel.h"
#include "rollout.h"
#include "runtime.h"
#include "statedump_parse.h"
#include "statefile.h"
#include "statefile_parse.h"

/* the heartbeat set (modules/ratelimit.c): transient, rebuilt within seconds */
#define INSTANCES_KEY "sluice:rl:instances"
#define SCAN_COUNT "1000"
#define RESTORE_BATCH 1000

static uint64_t redis_timeout_us(const struct conf *c)
{
	uint64_t t = (uint64_t)c->redis.connect_timeout * 1000;
	return t < 1000000 ? 1000000 : t;
}

static void hex(struct evbuffer *out, const unsigned char *s, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char buf[512];
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		buf[k++] = digits[s[i] >> 4];
		buf[k++] = digits[s[i] & 15];
		if (k == sizeof buf) {
			evbuffer_add(out, buf, k);
			k = 0;
		}
	}
	evbuffer_add(out, buf, k);
}

static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

/* One page of keys: PTTL and DUMP of each, pipelined, appended to out. */
static int dump_page(redisContext *rc, const redisReply *keys, struct evbuffer *out, size_t *count, char *err,
                     size_t err_size)
{
	size_t sent = 0;
	for (size_t i = 0; i < keys->elements; i++) {
		const redisReply *k = keys->element[i];
		if (k->type != REDIS_REPLY_STRING)
			continue;
		if (k->len == strlen(INSTANCES_KEY) && memcmp(k->str, INSTANCES_KEY, k->len) == 0)
			continue;
		const char *a1[2] = {"PTTL", k->str}, *a2[2] = {"DUMP", k->str};
		size_t l1[2] = {4, k->len}, l2[2] = {4, k->len};
		if (redisAppendCommandArgv(rc, 2, a1, l1) != REDIS_OK || redisAppendCommandArgv(rc, 2, a2, l2) != REDIS_OK) {
			snprintf(err, err_size, "redis: %s", rc->errstr);
			return -1;
		}
		sent++;
	}
	int rcode = 0;
	size_t got = 0;
	for (size_t i = 0; i < keys->elements && got < sent; i++) {
		const redisReply *k = keys->element[i];
		if (k->type != REDIS_REPLY_STRING ||
		    (k->len == strlen(INSTANCES_KEY) && memcmp(k->str, INSTANCES_KEY, k->len) == 0))
			continue;
		got++;
		redisReply *pttl = NULL, *dump = NULL;
		if (redisGetReply(rc, (void **)&pttl) != REDIS_OK || redisGetReply(rc, (void **)&dump) != REDIS_OK) {
			snprintf(err, err_size, "redis: %s", rc->errstr);
			if (pttl)
				freeReplyObject(pttl);
			return -1; /* the connection is unusable now: the caller frees it */
		}
		/* gone between SCAN and DUMP (expired): nothing to keep */
		bool keep = rcode == 0 && pttl->type == REDIS_REPLY_INTEGER && pttl->integer != -2 &&
		            dump->type == REDIS_REPLY_STRING;
		if (rcode == 0 && (pttl->type == REDIS_REPLY_ERROR || dump->type == REDIS_REPLY_ERROR)) {
			snprintf(err, err_size, "redis refused DUMP/PTTL: %.200s",
			         pttl->type == REDIS_REPLY_ERROR ? pttl->str : dump->str);
			rcode = -1;
		}
		if (keep && *count >= STATEDUMP_MAX_KEYS) {
			snprintf(err, err_size,
			         "more than %u keys under " STATEDUMP_PREFIX " (a dump this large is refused, not cut short)",
			         STATEDUMP_MAX_KEYS);
			rcode = -1;
			keep = false;
		}
		if (keep) {
			evbuffer_add_printf(out, "%s\n    {\"%s\":", *count ? "," : "", printable(k->str, k->len) ? "key" : "key_hex");
			if (printable(k->str, k->len)) {
				json_str_add_quoted(out, k->str, k->len);
			} else {
				evbuffer_add(out, "\"", 1);
				hex(out, (const unsigned char *)k->str, k->len);
				evbuffer_add(out, "\"", 1);
			}
			/* PTTL 0 is "expires now": keep it 1 ms so the file stays valid */
			evbuffer_add_printf(out, ",\"pttl\":%lld,\"dump\":\"", pttl->integer == 0 ? 1 : pttl->integer);
			hex(out, (const unsigned char *)dump->str, dump->len);
			evbuffer_add(out, "\"}", 2);
			(*count)++;
		}
		freeReplyObject(pttl);
		freeReplyObject(dump);
	}
	return rcode;
}

static int dump_redis(const struct conf *c, struct evbuffer *out, char *err, size_t err_size)
{
	struct rs_addr m;
	char why[400];
	redisContext *rc = rs_connect(&c->redis, redis_timeout_us(c), &m, why, sizeof why);
	if (!rc) {
		snprintf(err, err_size, "cannot reach redis: %s (nothing written)", why);
		return -1;
	}
	char server[80];
	rs_addr_format(&m, server, sizeof server);
	evbuffer_add_printf(out, "  \"redis\": {\"mode\":\"%s\",\"server\":", c->redis.num_sentinels ? "sentinel" : "address");
	json_str_add_quoted(out, server, strlen(server));
	evbuffer_add_printf(out, ",\"db\":%u,\"prefix\":\"" STATEDUMP_PREFIX "\",\"keys\":[", c->redis.db);
	char cursor[32] = "0";
	size_t count = 0;
	int rcode = 0;
	do {
		const char *argv[6] = {"SCAN", cursor, "MATCH", STATEDUMP_PREFIX "*", "COUNT", SCAN_COUNT};
		size_t lens[6];
		for (int i = 0; i < 6; i++)
			lens[i] = strlen(argv[i]);
		redisReply *r = redisCommandArgv(rc, 6, argv, lens);
		if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[0]->len >= sizeof cursor || r->element[1]->type != REDIS_REPLY_ARRAY) {
			snprintf(err, err_size, "redis SCAN failed: %.200s",
			         !r ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected answer");
			if (r)
				freeReplyObject(r);
			rcode = -1;
			break;
		}
		memcpy(cursor, r->element[0]->str, r->element[0]->len);
		cursor[r->element[0]->len] = '\0';
		rcode = dump_page(rc, r->element[1], out, &count, err, err_size);
		freeReplyObject(r);
	} while (rcode == 0 && strcmp(cursor, "0") != 0);
	redisFree(rc);
	evbuffer_add_printf(out, "\n  ]}\n");
	return rcode;
}

int statedump_write(const struct statedump_ctx *x, struct evbuffer *out, char *err, size_t err_size)
{
	struct evbuffer *doc = evbuffer_new();
	size_t len = 0;
	char *text = statefile_render(x->rt, &len);
	if (!doc || !text) {
		snprintf(err, err_size, "out of memory");
		if (doc)
			evbuffer_free(doc);
		free(text);
		return -1;
	}
	char when[32], host[128] = "";
	log_format_time(clock_wall_us(), when);
	if (gethostname(host, sizeof host - 1) != 0)
		host[0] = '\0';
	evbuffer_add_printf(doc, "{\n  \"format\": \"" STATEDUMP_FORMAT "\",\n  \"version\": %d,\n  \"created\": \"%s\",\n"
	                         "  \"host\": ",
	                    STATEDUMP_VERSION, when);
	json_str_add_quoted(doc, host, strlen(host));
	evbuffer_add_printf(doc, ",\n  \"pid\": %ld,\n  \"config\": ", (long)getpid());
	json_str_add_quoted(doc, x->conf->source, strlen(x->conf->source));
	evbuffer_add_printf(doc, ",\n  \"generation\": %llu,\n  \"runtime\": [", x->generation);
	size_t n = 0;
	for (char *line = text, *end; line < text + len; line = end + 1) {
		end = memchr(line, '\n', (size_t)(text + len - line));
		if (!end)
			end = text + len;
		if (end > line && line[0] != '#') {
			evbuffer_add_printf(doc, "%s\n    ", n++ ? "," : "");
			json_str_add_quoted(doc, line, (size_t)(end - line));
		}
	}
	free(text);
	evbuffer_add_printf(doc, "%s],\n", n ? "\n  " : "");
	int rc = 0;
	if (x->conf->redis.enabled)
		rc = dump_redis(x->conf, doc, err, err_size);
	else
		evbuffer_add_printf(doc, "  \"redis\": null\n");
	evbuffer_add_printf(doc, "}\n");
	if (rc == 0)
		evbuffer_add_buffer(out, doc);
	evbuffer_free(doc);
	return rc;
}

/* ---- restore ---- */

static void where(const struct statedump_line *l, char *buf, size_t size)
{
	snprintf(buf, size, "line %u, column %u: runtime \"%.120s\"", l->line, l->col, l->text);
}

/* Every runtime line names what the running config has. */
static int check_runtime(const struct statedump_ctx *x, const struct statedump *d, struct statefile_entry *e,
                         char *err, size_t err_size)
{
	for (size_t i = 0; i < d->num_lines; i++) {
		const struct statedump_line *l = &d->lines[i];
		char at[200];
		where(l, at, sizeof at);
		if (statefile_parse_line(l->text, strlen(l->text), e) != NULL) {
			snprintf(err, err_size, "%s: malformed", at);
			return -1;
		}
		const char *why = NULL;
		if (e->kind == STATEFILE_ROLLOUT) {
			if (!x->rollouts)
				why = "rollouts are not available in this process";
			else if (rollout_ctl_check_line(x->rollouts, e->name, e->target, &why))
				why = NULL;
			else if (!why)
				why = "not a rollout this sluice can resume";
		} else if (e->kind == STATEFILE_SERVICE_WEIGHT || e->kind == STATEFILE_SERVICE_SAVED) {
			if (conf_find_service(x->conf, e->name) < 0 || !runtime_find_split(x->rt, e->name, e->target))
				why = "the running config has no such service and pool";
		} else {
			struct runtime_pool *p = conf_find_pool(x->conf, e->name) >= 0 ? runtime_find_pool(x->rt, e->name) : NULL;
			if (!p)
				why = "the running config has no such pool";
			else if (!runtime_find_server(p, e->target))
				why = "the pool has no such server in the running config";
		}
		if (why) {
			snprintf(err, err_size, "%s: %s (nothing was restored)", at, why);
			return -1;
		}
	}
	/* every service must keep somewhere to send traffic */
	for (size_t s = 0; s < x->conf->num_services; s++) {
		const struct conf_service *sv = &x->conf->services[s];
		uint64_t total = 0;
		for (size_t j = 0; j < sv->num_pools; j++) {
			struct runtime_split *sp = runtime_service_split(x->rt, x->conf, sv, j);
			unsigned w = sp ? atomic_load(&sp->config_weight) : 0;
			for (size_t i = 0; sp && i < d->num_lines; i++)
				if (statefile_parse_line(d->lines[i].text, strlen(d->lines[i].text), e) == NULL &&
				    e->kind == STATEFILE_SERVICE_WEIGHT && strcmp(e->name, sv->name) == 0 &&
				    strcmp(e->target, sp->pool) == 0)
					w = e->weight;
			total += w;
		}
		if (sv->num_pools && total == 0) {
			snprintf(err, err_size, "service %s: every pool would have weight 0 (nothing was restored)", sv->name);
			return -1;
		}
	}
	return 0;
}

static void apply_runtime(const struct statedump_ctx *x, const struct statedump *d, struct statefile_entry *e,
                          unsigned *applied)
{
	struct runtime *rt = x->rt;
	/* servers: the file's overrides and marks, nothing else */
	for (size_t i = 0; i < rt->num_pools; i++) {
		struct runtime_pool *p = rt->pools[i];
		for (size_t j = 0; j < p->num_servers; j++) {
			struct runtime_server *s = p->servers[j];
			bool weight = false, drained = false, disabled = false;
			unsigned w = 0;
			for (size_t k = 0; k < d->num_lines; k++) {
				if (statefile_parse_line(d->lines[k].text, strlen(d->lines[k].text), e) != NULL ||
				    strcmp(e->name, p->name) != 0 || strcmp(e->target, s->address) != 0)
					continue;
				if (e->kind == STATEFILE_WEIGHT) {
					weight = true;
					w = e->weight;
				}
				drained = drained || e->kind == STATEFILE_DRAIN;
				disabled = disabled || e->kind == STATEFILE_DISABLE;
			}
			if (weight)
				runtime_set_weight(s, w);
			else
				runtime_clear_weight(s);
			atomic_store(&s->drained, drained);
			atomic_store(&s->disabled, disabled);
		}
	}
	/* service splits: raised before lowered, so no pick finds every weight 0 */
	for (size_t si = 0; si < x->conf->num_services; si++) {
		const struct conf_service *sv = &x->conf->services[si];
		unsigned *w = calloc(sv->num_pools ? sv->num_pools : 1, sizeof *w);
		bool *set = calloc(sv->num_pools ? sv->num_pools : 1, sizeof *set);
		if (!w || !set) {
			free(w);
			free(set);
			log_msg(LOG_ERROR, "restore-state: out of memory setting service weights");
			continue;
		}
		for (size_t j = 0; j < sv->num_pools; j++) {
			struct runtime_split *sp = runtime_service_split(rt, x->conf, sv, j);
			if (!sp)
				continue;
			w[j] = atomic_load(&sp->config_weight);
			sp->saved_set = false;
			for (size_t k = 0; k < d->num_lines; k++) {
				if (statefile_parse_line(d->lines[k].text, strlen(d->lines[k].text), e) != NULL ||
				    strcmp(e->name, sv->name) != 0 || strcmp(e->target, sp->pool) != 0)
					continue;
				if (e->kind == STATEFILE_SERVICE_WEIGHT) {
					w[j] = e->weight;
					set[j] = true;
				} else if (e->kind == STATEFILE_SERVICE_SAVED) {
					sp->saved_weight = e->weight;
					sp->saved_set = true;
				}
			}
		}
		runtime_set_service_weights(rt, x->conf, sv, w);
		for (size_t j = 0; j < sv->num_pools; j++) {
			struct runtime_split *sp = runtime_service_split(rt, x->conf, sv, j);
			if (sp && !set[j])
				atomic_store(&sp->weight_set, false);
		}
		free(w);
		free(set);
	}
	for (size_t k = 0; k < d->num_lines; k++) {
		if (statefile_parse_line(d->lines[k].text, strlen(d->lines[k].text), e) != NULL)
			continue;
		const char *why = NULL;
		if (e->kind == STATEFILE_ROLLOUT && !rollout_ctl_restore(x->rollouts, e->name, e->target, &why)) {
			struct log_line l;
			log_begin(&l, LOG_ERROR, "restore-state: rollout not restored");
			log_str(&l, "service", e->name);
			log_str(&l, "why", why);
			log_end(&l);
			continue;
		}
		(*applied)++;
	}
}

/* RESTORE every key (REPLACE), pipelined in batches; -1 with err and *done. */
static int restore_keys(redisContext *rc, const struct statedump *d, size_t *done, char *err, size_t err_size)
{
	*done = 0;
	for (size_t start = 0; start < d->num_keys; start += RESTORE_BATCH) {
		size_t end = start + RESTORE_BATCH < d->num_keys ? start + RESTORE_BATCH : d->num_keys;
		for (size_t i = start; i < end; i++) {
			const struct statedump_key *k = &d->keys[i];
			char ttl[24];
			int tl = snprintf(ttl, sizeof ttl, "%lld", k->pttl < 0 ? 0LL : k->pttl);
			const char *argv[5] = {"RESTORE", (const char *)k->key, ttl, (const char *)k->dump, "REPLACE"};
			size_t lens[5] = {7, k->key_len, (size_t)tl, k->dump_len, 7};
			if (redisAppendCommandArgv(rc, 5, argv, lens) != REDIS_OK) {
				snprintf(err, err_size, "redis: %s", rc->errstr);
				return -1;
			}
		}
		int result = 0;
		for (size_t i = start; i < end; i++) {
			redisReply *r = NULL;
			if (redisGetReply(rc, (void **)&r) != REDIS_OK) {
				snprintf(err, err_size, "redis: %s", rc->errstr);
				return -1;
			}
			if (r->type == REDIS_REPLY_ERROR && result == 0) {
				snprintf(err, err_size, "line %u, column %u: RESTORE of key %zu refused by redis: %.200s",
				         d->keys[i].line, d->keys[i].col, i, r->str);
				result = -1;
			} else if (r->type != REDIS_REPLY_ERROR) {
				(*done)++;
			}
			freeReplyObject(r);
		}
		if (result != 0)
			return -1;
	}
	return 0;
}

int statedump_restore(const struct statedump_ctx *x, const char *buf, size_t len, char *summary, size_t summary_size,
                      char *err, size_t err_size)
{
	char why[600];
	struct statedump *d = statedump_parse(buf, len, why, sizeof why);
	if (!d) {
		snprintf(err, err_size, "%s (nothing was restored)", why);
		return -1;
	}
	struct statefile_entry *e = malloc(sizeof *e);
	if (!e) {
		statedump_free(d);
		snprintf(err, err_size, "out of memory (nothing was restored)");
		return -1;
	}
	int rcode = -1;
	redisContext *rc = NULL;
	if (check_runtime(x, d, e, err, err_size) != 0)
		goto out;
	if (d->num_keys && !x->conf->redis.enabled) {
		snprintf(err, err_size, "the file has %zu Redis keys but the running config has no `redis` section "
		                        "(nothing was restored)", d->num_keys);
		goto out;
	}
	struct rs_addr m;
	if (d->num_keys && !(rc = rs_connect(&x->conf->redis, redis_timeout_us(x->conf), &m, why, sizeof why))) {
		snprintf(err, err_size, "cannot reach redis: %s (nothing was restored)", why);
		goto out;
	}
	size_t keys_done = 0;
	if (rc && restore_keys(rc, d, &keys_done, why, sizeof why) != 0) {
		snprintf(err, err_size, "%s; %zu of %zu keys restored before it, the runtime state NOT applied", why,
		         keys_done, d->num_keys);
		goto out;
	}
	unsigned applied = 0;
	apply_runtime(x, d, e, &applied);
	char saved[700] = "";
	if (x->sf && statefile_save(x->sf, x->rt, false, why, sizeof why) != 0)
		snprintf(saved, sizeof saved, "; NOT saved to the state file (%.500s): a restart would undo it", why);
	else if (!x->sf)
		snprintf(saved, sizeof saved, "; no state_file configured: a restart would undo it");
	char server[80] = "";
	if (rc)
		rs_addr_format(&m, server, sizeof server);
	snprintf(summary, summary_size, "restored: %zu runtime change%s (%u applied), %zu redis key%s%s%s%s", d->num_lines,
	         d->num_lines == 1 ? "" : "s", applied, keys_done, keys_done == 1 ? "" : "s", rc ? " into " : "", server,
	         saved);
	rcode = 0;
out:
	if (rc)
		redisFree(rc);
	free(e);
	statedump_free(d);
	return rcode;
}
