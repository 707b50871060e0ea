/* route_path.h - the path as routes see it.
 *
 * RFC 3986 6.2.2 normalization, plus '/' decoded and "//" merged, so that a route's path,
 * path_prefix or path_regex (a deny of /internal/, another pool for /api/) sees what an origin
 * that decodes and resolves the path will serve: "/a/../internal/x", "//internal/x",
 * "/%69nternal/x" and "/internal%2Fx" all become "/internal/x". Percent-encoded unreserved
 * characters and %2F are decoded once (other escapes are kept as sent), runs of '/' merged, "."
 * and ".." segments removed (".." never climbs above "/"). Only for matching: the target goes
 * upstream as the client sent it. A pure function over bytes (no allocation, no state).
 */
#ifndef SLUICE_ROUTE_PATH_H
#define SLUICE_ROUTE_PATH_H

#include <stddef.h>

/* Writes the normalized path to out (at most len bytes: the result is never longer) and returns
 * its length; a path not starting with '/' ("*", "") is copied as it is. out must not overlap path. */
size_t route_path_normalize(const char *path, size_t len, char *out);

#endif
