/* modules.c - the registration list: the order here is the order in which
 * the access and log phases call modules. */
#include "accesslog.h"
#include "module.h"
#include "policy.h"
#include "ratelimit.h"
#include "tracing.h"
#include "waf.h"

/* Tracing first: every response, a denial included, carries the request's
 * trace, and the other modules see its ids. Policies next: their access phase may set a rate-limit key, and their
 * log phase may add fields to the access-log line. The WAF next: a request
 * it refuses uses up no rate-limit token. */
const struct module *const module_list[] = {
    &tracing_module,
    &policy_module,
    &waf_module,
    &accesslog_module,
    &ratelimit_module,
};

const size_t module_count = sizeof(module_list) / sizeof(module_list[0]);
