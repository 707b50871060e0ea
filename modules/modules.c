/* modules.c - the registration list: the order here is the order in which
 * the access and log phases call modules. */
#include "accesslog.h"
#include "module.h"
#include "policy.h"
#include "ratelimit.h"
#include "waf.h"

/* Policies first: their access phase may set a rate-limit key, and their
 * log phase may add fields to the access-log line. The WAF next: a request
 * it refuses uses up no rate-limit token. */
const struct module *const module_list[] = {
    &policy_module,
    &waf_module,
    &accesslog_module,
    &ratelimit_module,
};

const size_t module_count = sizeof(module_list) / sizeof(module_list[0]);
