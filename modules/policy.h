/* policy.h - the Lua policy module (docs/policies.md): the scripts a route
 * names in `policies = { ... }` run, in order, in the access phase (before
 * rate limits, so a policy can set a rate-limit key), the response phase
 * (the response head, before it goes to the client) and the log phase.
 *
 * Per (snapshot, worker): one Lua state (lua_rt.h) with every policy of the
 * snapshot compiled into it once, built when the worker starts on the
 * snapshot (or on its first request that needs it) and freed once the
 * worker has moved to a newer snapshot and the last request that started on
 * this one is logged. A call runs under its policy's instruction and memory
 * budget; a script that fails is logged with FILE:LINE, counted, and the
 * request gets the policy's on_error outcome (pass, or 403 policy_error);
 * the worker goes on.
 *
 * What a script decides reaches the other phases through the request:
 * header fields are changed in place (fields.h), r:set_pool sets r->pool
 * (one of the route's service's pools: the proxy takes it instead of its
 * weighted draw), r:set_limit_key and r:log add to r->policy_keys and
 * r->log_fields, read by the rate-limit and access-log modules. */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include "module.h"

extern const struct module policy_module;

#endif
