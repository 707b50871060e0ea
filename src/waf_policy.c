/* waf_policy.c - a policy's plan over a rule set (waf_policy.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "waf_policy.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "waf_compiled.h"

static bool policy_has(const uint32_t *ids, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

static bool rule_active(const struct waf_rule *r, const struct waf_policy *p)
{
	if (policy_has(p->exclude_ids, p->nexclude_ids, r->id))
		return false;
	/* a rule tried in detect mode runs whatever its paranoia level */
	if (r->paranoia > p->paranoia && !policy_has(p->detect_ids, p->ndetect_ids, r->id))
		return false;
	for (size_t i = 0; i < p->nexclude_tags; i++)
		for (char **t = r->tags; *t; t++)
			if (strcmp(*t, p->exclude_tags[i]) == 0)
				return false;
	return true;
}

static void plan_free(struct waf_plan *pl)
{
	if (!pl)
		return;
	for (int k = 0; k < WAF_TGT_COUNT; k++) {
		free(pl->kinds[k].e);
		free(pl->kinds[k].entry_of);
		free(pl->kinds[k].local_of);
		free(pl->kinds[k].o);
		free(pl->kinds[k].bits);
		free(pl->kinds[k].with);
	}
	free(pl->active);
	free(pl->detect);
	free(pl->missing);
	free(pl);
}

static int name_index(struct plan_kind *pk, const char *name)
{
	for (size_t i = 0; i < pk->nnames; i++)
		if (strcasecmp(pk->names[i], name) == 0)
			return (int)i;
	if (pk->nnames == MAX_NAMES)
		return -1;
	pk->names[pk->nnames] = name;
	pk->name_len[pk->nnames] = strlen(name);
	return (int)pk->nnames++;
}

#define SETBIT(set, i) ((set)[(i) / 64] |= 1ull << ((i) % 64))
#define HASBIT(set, i) (((set)[(i) / 64] >> ((i) % 64)) & 1)

static bool plan_kind_build(struct plan_kind *pk, const struct waf_ruleset *rs, const uint8_t *active, int k)
{
	pk->entry_of = malloc((rs->nrules + 1) * sizeof(*pk->entry_of));
	pk->local_of = malloc((rs->nrules + 1) * sizeof(*pk->local_of));
	pk->e = calloc(rs->ngroups + 1, sizeof(*pk->e));
	pk->o = calloc(rs->nrules + 1, sizeof(*pk->o));
	if (!pk->entry_of || !pk->local_of || !pk->e || !pk->o)
		return false;
	for (size_t i = 0; i < rs->nrules; i++)
		pk->entry_of[i] = pk->local_of[i] = -1;
	for (size_t g = 0; g < rs->ngroups; g++) {
		const struct group *gr = &rs->groups[g];
		struct entry *e = &pk->e[pk->n];
		bool used = false;
		for (size_t i = 0; i < rs->nrules; i++) {
			const struct waf_rule *r = &rs->rules[i];
			if (r->group != g || !active[i] || !(r->target_mask & (1u << k)) || r->op == OP_MISSING)
				continue;
			used = true;
			pk->entry_of[i] = (int32_t)pk->n;
			bool all = false;
			uint32_t names = 0;
			for (size_t t = 0; t < r->ntargets; t++) {
				if (r->targets[t].kind != (enum waf_target)k)
					continue;
				int ni = r->targets[t].name ? name_index(pk, r->targets[t].name) : -1;
				if (ni < 0)
					all = true; /* every name, or past MAX_NAMES: applies() still checks */
				else
					names |= 1u << ni;
			}
			if (r->op == OP_PHRASES) {
				e->phrases = true;
				e->phrase_all |= all;
				e->phrase_names |= names;
				pk->phrases = true;
				continue;
			}
			struct orule *o = &pk->o[pk->no];
			o->ri = i;
			o->entry = pk->n;
			o->all_names = all;
			o->names = names;
			pk->any_lits |= r->lits;
			pk->local_of[i] = (int32_t)pk->no++;
		}
		if (!used)
			continue;
		e->group = g;
		size_t nci = gr->nchain;
		while (nci > 0 && gr->chain[nci - 1] == WAF_T_LOWERCASE)
			nci--;
		e->nchain_ci = nci;
		size_t nb64 = 0;
		for (size_t d = 0; d < gr->nchain; d++) {
			e->tset |= (uint16_t)(1u << gr->chain[d]);
			nb64 += gr->chain[d] == WAF_T_BASE64;
		}
		e->base64_last = nb64 == 1 && gr->chain[gr->nchain - 1] == WAF_T_BASE64;
		pk->tset |= e->tset;
		pk->n++;
	}
	pk->enw = pk->n / 64 + 1;
	pk->with = calloc((size_t)WAF_T_COUNT * pk->enw, sizeof(uint64_t));
	if (!pk->with)
		return false;
	for (size_t i = 0; i < pk->n; i++)
		for (int t = 0; t < WAF_T_COUNT; t++)
			if (pk->e[i].tset & (1u << t))
				SETBIT(pk->with + (size_t)t * pk->enw, i);
	size_t nw = pk->no / 64 + 1;
	pk->nw = nw;
	pk->bits = calloc((3 + 2 * NCLASS + pk->n + 1) * nw, sizeof(uint64_t));
	if (!pk->bits)
		return false;
	pk->first_any = pk->bits;
	pk->last_any = pk->first_any + nw;
	pk->lits = pk->last_any + nw;
	pk->first = pk->lits + nw;
	pk->last = pk->first + NCLASS * nw;
	pk->of_entry = pk->last + NCLASS * nw;
	for (size_t j = 0; j < pk->no; j++) {
		const struct waf_rule *r = &rs->rules[pk->o[j].ri];
		if (!r->need_first)
			SETBIT(pk->first_any, j);
		if (!r->need_last)
			SETBIT(pk->last_any, j);
		if (r->lits)
			SETBIT(pk->lits, j);
		for (int c = 0; c < NCLASS; c++) {
			if (r->need_first & (1ull << c))
				SETBIT(pk->first + (size_t)c * nw, j);
			if (r->need_last & (1ull << c))
				SETBIT(pk->last + (size_t)c * nw, j);
		}
		SETBIT(pk->of_entry + pk->o[j].entry * nw, j);
	}
	return true;
}

static struct waf_plan *plan_new(const struct waf_ruleset *rs, const struct waf_policy *pol)
{
	struct waf_plan *pl = calloc(1, sizeof(*pl));
	if (!pl)
		return NULL;
	pl->rs = rs;
	pl->active = calloc(rs->nrules + 1, 1);
	pl->detect = calloc(rs->nrules + 1, 1);
	if (!pl->active || !pl->detect)
		goto oom;
	pl->missing = calloc(rs->nrules + 1, sizeof(*pl->missing));
	if (!pl->missing)
		goto oom;
	for (size_t i = 0; i < rs->nrules; i++) {
		const struct waf_rule *r = &rs->rules[i];
		pl->active[i] = rule_active(r, pol);
		pl->detect[i] = r->detect || policy_has(pol->detect_ids, pol->ndetect_ids, r->id);
		if (pl->active[i] && r->op == OP_MISSING)
			pl->missing[pl->nmissing++] = i;
	}
	for (int k = 0; k < WAF_TGT_COUNT; k++) {
		if (!plan_kind_build(&pl->kinds[k], rs, pl->active, k))
			goto oom;
		if (pl->kinds[k].nw > pl->max_nw)
			pl->max_nw = pl->kinds[k].nw;
	}
	return pl;
oom:
	plan_free(pl);
	return NULL;
}

bool waf_policy_prepare(const struct waf_ruleset *rs, struct waf_policy *pol)
{
	waf_policy_release(pol);
	pol->plan = plan_new(rs, pol);
	return pol->plan != NULL;
}

void waf_policy_release(struct waf_policy *pol)
{
	plan_free(pol->plan);
	pol->plan = NULL;
}
