/* admin.h - the admin socket: a Unix stream socket on the main thread's
 * event loop where deployers (through `sluice ctl`, ctl.h) read and steer the
 * runtime state of every pool.
 *
 * Protocol: one command a line, answered in text, or as one JSON object a
 * line when the command has the word --json. A client that half-closes gets
 * its answers and then the close. Only the user sluice runs as may talk to
 * it: the socket file gets the configured mode (default 0600) and every
 * connection's peer credentials (SO_PEERCRED) are checked against
 * geteuid(); anyone else gets one error line and the close. Every change
 * answers with what it changed, is logged with the peer's uid, applies to
 * every worker at once (atomic stores into runtime.h's table) and is written
 * to the state file (statefile.h) when one is configured. Unknown or
 * malformed commands get a one-line error and change nothing; commands are
 * parsed by admin_cmd.h (bytes with a length; a last line without its
 * newline before the half-close counts).
 *
 * Three files behind this header: admin.c, the command table (what each
 * command does, its hooks); admin_server.c, the socket (binding, the peer
 * check, caps, reading lines; admin_server.h); admin_show.c, the `show`
 * answers (admin_show.h).
 *
 * No client can hold the main thread's socket: at most admin.max_connections
 * at once (the last slot kept for the owner or root, who may evict the
 * longest idle connection), idle ones closed after ADMIN_IDLE_SECONDS, and a
 * connection whose unread answers pass 1 MiB is not read until they drain.
 * Text answers escape control and non-ASCII bytes as \xHH.
 *
 * Ownership: main thread only. The admin keeps its own reference to the
 * snapshot it describes (replaced at each reload); the runtime, health and
 * state-file objects must outlive it. */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stddef.h>

#include <event2/event.h>

struct admin;
struct runtime;
struct snapshot;
struct health;
struct statefile;

/* Listen on snap->conf->admin.socket. NULL (after logging why) on failure.
 * sf (NULL without a state_file) must outlive the admin. */
struct admin *admin_start(struct event_base *base, struct runtime *rt, struct snapshot *snap, struct health *health,
                          struct statefile *sf);
/* `reload`: the process's reload (server.h server_reload): returns 0 with a
 * one-line summary in msg, or -1 with every error in errs. */
struct conf_errors;
typedef int admin_reload_fn(void *arg, long long uid, struct conf_errors *errs, char *msg, size_t msg_size);
void admin_set_reload(struct admin *a, admin_reload_fn *fn, void *arg);
/* `reopen-logs`: the process's log reopening (what SIGUSR1 does). */
typedef void admin_reopen_logs_fn(void *arg);
void admin_set_reopen_logs(struct admin *a, admin_reopen_logs_fn *fn, void *arg);
/* After a reload: describe snap (takes a reference) and ask health for check results. */
void admin_set_snapshot(struct admin *a, struct snapshot *snap, struct health *health);
/* Fleet control (control.h; NULL: none): changes are written to it, `show
 * control` reports it, and it drives the rollout controller. Detach (NULL)
 * before freeing it. */
struct control;
void admin_set_control(struct admin *a, struct control *ctl);

/* Binary upgrade (upgrade.h), the running process's side: `upgrade-listeners`
 * calls send (the connection's descriptor; 0, or -1 with why in err) and
 * from then on changes (set, drain, reload, save-state, ...) are refused
 * until that connection closes; `upgrade-drain` on the same connection
 * answers "draining: ..." and calls drain. */
struct admin_upgrade_ops {
	int (*send)(void *arg, int fd, char *err, size_t err_size);
	void (*drain)(void *arg);
};
void admin_set_upgrade(struct admin *a, const struct admin_upgrade_ops *ops, void *arg);
/* The new process's side: as admin_start, but listen under PATH.new and
 * leave the running process's socket at PATH; admin_publish() renames it
 * into place (0, or -1 logged). */
struct admin *admin_start_upgrade(struct event_base *base, struct runtime *rt, struct snapshot *snap,
                                  struct health *health, struct statefile *sf);
int admin_publish(struct admin *a);

/* Close the socket and every admin connection, remove the socket file if it
 * is still this process's (not a new process's after an upgrade). */
void admin_stop(struct admin *a);

#include <stddef.h>

/* Run one command line (bytes, without its newline) as uid; the answer (text or JSON, ending in a
 * newline) is appended to out. Exposed for tests and for the socket. */
struct evbuffer;
void admin_execute(struct admin *a, const char *line, size_t len, unsigned uid, struct evbuffer *out);

#endif
