/* conf_secrets.h - warn about secrets written inline in a config file.
 *
 * The config should take secrets from files or the environment (file("PATH"),
 * env("NAME"), redis.password_file). conf_secrets_scan() reads the Lua source
 * text (the evaluated table cannot tell a literal from what env() returned)
 * and reports each string literal that looks like a secret:
 *   - the value assigned to a key named like one (containing password,
 *     passwd, secret, token, api_key/apikey, access_key, private_key,
 *     credential, auth_key, authorization; or exactly auth, pass, pwd, psk),
 *     unless the key ends in _file, _path or _env (those name where it is);
 *   - any literal holding a PEM private key, an AWS access key id, a URL with
 *     a password (scheme://user:password@host), an HTTP Authorization value
 *     (Bearer/Basic), a JSON Web Token, or a GitHub or Slack token.
 * Each warning names FILE:LINE and the key, never the value. Comments are
 * skipped. It is advice: `sluice check` prints the warnings on stderr and its
 * verdict does not change. No state; safe from any thread.
 */
#ifndef SLUICE_CONF_SECRETS_H
#define SLUICE_CONF_SECRETS_H

#include <stddef.h>
#include <stdio.h>

#include "conf.h"

/* Appends one message per finding to warnings ("CHUNK:LINE: warning: ...").
 * Returns the number added. */
size_t conf_secrets_scan(const char *chunkname, const char *src, size_t len, struct conf_errors *warnings);

/* Reads the file at path and prints each finding as a line on out. A file that
 * cannot be read gives no warning (loading the config reports that). Returns
 * the number of findings. */
size_t conf_secrets_warn(const char *path, FILE *out);

#endif
