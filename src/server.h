/* server.h - the process: load the config into a snapshot, bind listeners,
 * start the workers, handle signals on the main thread, and shut down
 * gracefully (stop accepting, let in-flight requests finish within
 * drain_timeout, exit 0).
 *
 * The struct server lives on main()'s stack; workers only call
 * server_worker_exited(), which is thread-safe. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

struct server;
struct runtime;

/* Run until SIGTERM/SIGINT. Returns the process exit status. */
int server_run(const char *config_path);

/* The runtime state table (runtime.h) of the running process: pools'
 * entries exist for the current snapshot before any worker is built. */
struct runtime *server_runtime(struct server *srv);

/* Called by a worker thread when its loop has ended. */
void server_worker_exited(struct server *srv);

/* Print a summary or every error of the config at path; returns the exit status. */
int server_check(const char *config_path);

#endif
