/* waf_compiled.h - the layout of what the WAF compiles, for its own three
 * files only: waf_rules.c writes a struct waf_ruleset (the rules, their
 * transform groups, the union automaton, the byte-class table),
 * waf_policy.c writes a struct waf_plan for a policy over it, and
 * waf_eval.c reads both per request. Callers outside the WAF use the
 * opaque types of waf_rules.h, waf_policy.h and waf_eval.h.
 *
 * Both are built on the main thread and immutable afterwards, so any number
 * of workers read them without locks. The fields are here rather than
 * behind functions because the evaluator reads them in its inner loops.
 * Type-only: no functions.
 */
#ifndef SLUICE_WAF_COMPILED_H
#define SLUICE_WAF_COMPILED_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif

#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "waf_ac.h"
#include "waf_rules.h"
#include "waf_transform.h"

#define MAX_CHAIN 8
#define MAX_RULE_TARGETS 16

enum waf_op { OP_PHRASES, OP_REGEX, OP_SQLI, OP_XSS, OP_NOT_WITHIN, OP_MISSING, OP_LENGTH_OVER };

struct rule_target {
	enum waf_target kind;
	char *name; /* NULL: every name */
};

struct waf_rule {
	uint32_t id;
	int paranoia;
	int score;
	bool detect;
	struct rule_target targets[MAX_RULE_TARGETS];
	size_t ntargets;
	uint32_t target_mask;
	size_t group;
	enum waf_op op;
	pcre2_code *re;
	char **words; /* not_within */
	size_t nwords;
	size_t length_over;
	/* necessary bytes, as class masks (0: none known): a value none of whose
	 * bytes is in need_first, or in need_last, or shorter than minlen, is
	 * not matched (regexes: from PCRE2's own analysis; xss: its detector's) */
	uint64_t need_first, need_last;
	size_t minlen;
	bool lits;        /* a regex with a literal prefilter in the union automaton (ids nrules + index) */
	uint32_t all_names; /* kinds (bits) the rule reads every name of */
	char *message;
	char **tags; /* NULL-terminated */
	uint32_t groups; /* bits of enum ctr_waf_group, from the tags */
};

/* The rules that share one transform chain. */
struct group {
	enum waf_transform chain[MAX_CHAIN];
	size_t nchain;
};

/* Byte classes (waf_rules.c): one bit per ASCII punctuation byte and one per
 * kind of the other bytes. A value's class mask (the OR over its bytes, one
 * pass) says which transforms can change it and which rules cannot match it. */
struct class_masks {
	uint64_t url, amp, upper, space, ws_other, hash, slash, star, dash, dot, backslash, cmdline, nul, base64;
	uint64_t by_content; /* classes whose bytes' places, not presence, decide a transform */
};

struct waf_ruleset {
	struct waf_rule *rules;
	size_t nrules;
	struct group *groups;
	size_t ngroups;
	struct waf_ac *uac; /* every phrase of every rule (ids: rule indexes), for values no chain changes */
	uint64_t cls[256];
	struct class_masks cm;
};

/* A policy's plan (waf_policy.c): what runs for each target kind, worked
 * out once per policy instead of per request. An entry is one group that has an active
 * rule reading the kind. The kind's non-phrase rules are numbered (local
 * indexes) and kept as bitsets: which may run when a byte class occurs
 * (from need_first and need_last), which belong to each entry, which have
 * a literal prefilter. A value's candidates are then a few ORs and ANDs of
 * bitsets instead of a test per rule; `names` lists the names the kind's
 * named targets use (headers:user-agent), so a header no rule reads by name
 * costs one bit test per rule. */
struct entry {
	size_t group;
	uint16_t tset;     /* the transforms of the chain, as bits */
	size_t nchain_ci;  /* the chain without trailing lowercase steps: enough for phrases (matched case-insensitively) */
	bool phrases;      /* an active phrase rule of the group reads this kind */
	bool phrase_all;   /* one of them reads every name of the kind */
	uint32_t phrase_names;
	bool base64_last;  /* the chain ends with its only base64_decode */
};

struct orule {
	size_t ri;      /* rule index */
	size_t entry;
	bool all_names; /* reads every name of the kind */
	uint32_t names; /* else: bit i, reads names[i] */
};

#define MAX_NAMES 32
#define NCLASS 64

struct plan_kind {
	struct entry *e;
	size_t n;
	uint16_t tset;     /* every entry's transforms */
	const char *names[MAX_NAMES];
	size_t name_len[MAX_NAMES];
	size_t nnames;
	int32_t *entry_of; /* per rule: the entry of its group, -1 */
	int32_t *local_of; /* per rule: its index in o, -1 */
	bool phrases;      /* some entry has phrases */
	bool any_lits;     /* some rule has literals */
	struct orule *o;   /* the active non-phrase rules reading this kind, in group order */
	size_t no, nw;     /* nw: 64-bit words of a bitset over o */
	uint64_t *bits;    /* the bitsets below, in one allocation */
	uint64_t *first_any, *last_any, *lits; /* need no first / no last class; have literals */
	uint64_t *first, *last;                /* [class][nw]: may run when the class occurs */
	uint64_t *of_entry;                    /* [entry][nw] */
	size_t enw;                            /* 64-bit words of a bitset over e */
	uint64_t *with;                        /* [transform][enw]: the entries whose chain has it */
};

struct waf_plan {
	const struct waf_ruleset *rs;
	uint8_t *active; /* per rule: runs under the policy */
	uint8_t *detect; /* per rule: never counts towards a block */
	struct plan_kind kinds[WAF_TGT_COUNT];
	size_t max_nw;
	size_t *missing; /* the active `missing` rules */
	size_t nmissing;
};

/* One bit of a bitset of 64-bit words (the plan's and the evaluator's). */
#define SETBIT(set, i) ((set)[(i) / 64] |= 1ull << ((i) % 64))
#define HASBIT(set, i) (((set)[(i) / 64] >> ((i) % 64)) & 1)

#endif
