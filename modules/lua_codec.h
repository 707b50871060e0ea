/* lua_codec.h - decoders for request scripts (policies, the WAF): URL
 * (percent and form encoding), HTML entities, base64 (standard and URL
 * alphabets) and JSON, as C functions and as the Lua libraries `url`,
 * `html`, `base64` and `json` (docs/policies.md, "Helpers").
 *
 * Every decoder is linear in its input and allocates only the Lua values it
 * returns (under the calling state's memory cap); JSON nesting is bounded.
 * Malformed input: the Lua functions return nil and a message, never raise. */
#ifndef SLUICE_LUA_CODEC_H
#define SLUICE_LUA_CODEC_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* Pushes s[0..n) percent-decoded ('+' as a space when form). Invalid escapes stay as they are. */
void codec_push_url_decoded(lua_State *L, const char *s, size_t n, bool form);

/* Sets url, html, base64 and json in the table at stack index t. */
void codec_open(lua_State *L, int t);

#endif
