/* server.h - the process: load the config into a snapshot, bind listeners,
 * start the workers, handle signals on the main thread, and shut down
 * gracefully (stop accepting, let in-flight requests finish within
 * drain_timeout, exit 0).
 *
 * The struct server lives on main()'s stack; workers only call
 * server_worker_exited(), which is thread-safe. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct server;
struct conf_errors;
struct runtime;
struct addrcount_shared;

/* Run until SIGTERM/SIGINT. Returns the process exit status. upgrade: take
 * the listening sockets of the sluice running on the config's admin.socket,
 * then tell it to drain (upgrade.h); if this process fails first, the
 * running one keeps serving. */
int server_run(const char *config_path, bool upgrade);

/* The runtime state table (runtime.h) of the running process: pools'
 * entries exist for the current snapshot before any worker is built. */
struct runtime *server_runtime(struct server *srv);
/* Open client connections per client address, for the whole process
 * (addrcount.h; limits.max_connections_per_client): every worker counts in
 * it; it outlives them and every reload. */
struct addrcount_shared *server_conns_by_addr(struct server *srv);
/* HTTP/2 streams whose request body is still arriving, per client address,
 * for the whole process (http2.max_uploading_streams_per_client), keyed as
 * server_conns_by_addr; it outlives the workers and every reload. */
struct addrcount_shared *server_uploads_by_addr(struct server *srv);

/* Called by a worker thread when its loop has ended. */
void server_worker_exited(struct server *srv);
/* Called by a worker thread once it adopted a published snapshot. */
void server_worker_adopted(struct server *srv);

/* Reload (main thread): re-read the config file given to `sluice run -c`,
 * evaluate and check it; on any error change nothing and return -1 with
 * every error in errs (the messages `sluice check` prints). Otherwise sync
 * the runtime state by name, publish the new snapshot to every worker, wait
 * (a bounded time) until each adopted it, restart the health checks, point
 * the admin socket at it, and write the one-line summary ("reloaded:
 * generation N, R routes, P pools, S services in T ms") into msg. uid is
 * the requester's (-1: unknown), how says through what ("ctl reload",
 * "SIGHUP"); both are shown by `sluice ctl show config`. Settings that
 * cannot change without a restart (docs/configuration.md) are errors. */
int server_reload(struct server *srv, long long uid, const char *how, struct conf_errors *errs, char *msg,
                  size_t msg_size);

/* Print a summary or every error of the config at path; returns the exit status. */
int server_check(const char *config_path);

#endif
