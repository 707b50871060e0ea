/* rl_script.h - the Redis-side bucket script (lua/redis/ratelimit.lua),
 * embedded into the binary at build time: Makefile.am generates
 * modules/rl_script.c (in the build directory) from the .lua file with od
 * and sed, so an installed sluice never reads its source tree. */
#ifndef SLUICE_RL_SCRIPT_H
#define SLUICE_RL_SCRIPT_H

#include <stddef.h>

extern const char rl_script_text[]; /* NUL-terminated */
extern const size_t rl_script_len;  /* without the NUL */

#endif
