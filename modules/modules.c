/* modules.c - the registration list: the order here is the order in which
 * the access and log phases call modules. */
#include "accesslog.h"
#include "module.h"
#include "ratelimit.h"

const struct module *const module_list[] = {
    &accesslog_module,
    &ratelimit_module,
};

const size_t module_count = sizeof(module_list) / sizeof(module_list[0]);
