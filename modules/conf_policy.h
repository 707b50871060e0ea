/* conf_policy.h - the config section of Lua policies: top-level `policies`
 * (named scripts with their own `config`) and the route key `policies` (the
 * policies a route runs, in order). docs/policies.md is the reference.
 *
 * The policy module owns this section (conf_policy_section is its `conf`,
 * module.h). While the config loads, on the main thread, every script is
 * read (paths relative to the config file's directory), compiled and run
 * once in the sandbox of lua_rt.h with its config, so that a syntax error,
 * an error in its top level or a phase that is not a function fails
 * `sluice check` and a reload with FILE:LINE; modules it requires are read
 * from the policy directories then and kept, so workers open no files.
 * Contract: conf_schema.h rules; everything is owned by the struct conf and
 * released by the section's free. */
#ifndef SLUICE_CONF_POLICY_H
#define SLUICE_CONF_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "conf_schema.h"
#include "lua_rt.h"

enum conf_policy_phase { CONF_POLICY_ACCESS, CONF_POLICY_RESPONSE, CONF_POLICY_LOG, CONF_POLICY_PHASES };

struct conf_policy {
	char *name;
	char *file;          /* as written: the chunk name in messages (FILE:LINE) */
	char *path;          /* the script, resolved against the config's directory */
	char *src;           /* its text, read once */
	size_t src_len;
	char *config_src;    /* the `config` table as a Lua chunk ("return { ... }") */
	bool on_error_deny;  /* on_error = "deny" (default "pass") */
	bool phases[CONF_POLICY_PHASES]; /* which phase functions the script returns */
	uint64_t instructions; /* per call; default 1,000,000 */
	uint64_t memory;       /* bytes a call may allocate; default 8m */
	uint64_t body;         /* body = "64k": a route using the policy reads that much request
	                        * body before the access phase (routes[N].request_buffering); 0: none */
};

struct conf_policies {
	struct conf_policy *v;
	size_t n;
	struct lua_rt_module *modules; /* required modules, read while loading */
	size_t num_modules;
	uint64_t state_memory; /* a worker's Lua state as a whole */
};

extern const struct conf_section conf_policy_section;

/* The limits a policy's calls run under. */
void conf_policy_limits(const struct conf_policies *ps, const struct conf_policy *p, struct lua_rt_limits *out);

/* Loads policy p into rt: runs its chunk with its config (the chunk's `...`
 * and its global `config`) and leaves two values on the stack: the config
 * table and the returned table of phase functions. false (nothing left) with
 * "FILE:LINE: message" in err. */
bool conf_policy_instantiate(struct lua_rt *rt, const struct conf_policy *p, char *err, size_t err_size);

#endif
