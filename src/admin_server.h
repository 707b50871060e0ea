/* admin_server.h - the admin socket's server (admin_server.c) and the admin
 * object it shares with the command table (admin.c). The API callers use is
 * admin.h; this header is for the two halves only.
 *
 * admin_server.c binds the socket (under PATH.new, renamed into place once
 * listening, so whoever sees the file can connect), accepts with the peer
 * check (SO_PEERCRED uid against geteuid()), keeps at most
 * admin.max_connections (the last slot for the owner or root, who may evict
 * the longest idle connection), closes idle connections, stops reading a
 * connection whose unread answers pass the cap until they drain, and reads
 * lines: a last line without its newline after the half-close, the file
 * after "restore-state BYTES", and the binary upgrade's lines, which need
 * the connection itself. Every other line goes to admin_execute() (admin.c),
 * which alone knows what a command means.
 *
 * Ownership: main thread only. admin_start*() allocate the object and
 * admin_stop() frees it with its connections, its rollout controller and
 * its snapshot reference; admin.c reads the socket's fields (the upgrade
 * state, the counters) and never frees anything. */
#ifndef SLUICE_ADMIN_SERVER_H
#define SLUICE_ADMIN_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "admin.h"
#include "admin_cmd.h"

struct admin_conn;
struct admin_show_limits;
struct evconnlistener;
struct rollout_ctl;

struct admin {
	struct event_base *base;
	struct evconnlistener *listener;
	char *path;
	struct runtime *rt;
	struct snapshot *snap;
	struct health *health;
	struct statefile *sf; /* NULL: no state_file */
	struct admin_conn *conns;
	unsigned num_conns;
	unsigned max_conns; /* admin.max_connections */
	uid_t owner;        /* the socket file's owner: the user sluice runs as */
	/* since start, for `show admin` */
	unsigned long long accepted, refused_uid, refused_full, evicted, paused, idle_closed;
	struct admin_cmd cmd; /* the command being run (4 KiB: kept off the stack) */
	admin_reload_fn *reload;
	void *reload_arg;
	admin_reopen_logs_fn *reopen_logs;
	void *reopen_logs_arg;
	struct rollout_ctl *rollouts; /* the rollout controller, reading a->snap */
	struct control *control;      /* fleet control (NULL: none); owned by the server */
	/* binary upgrade (upgrade.h) */
	const struct admin_upgrade_ops *up_ops;
	void *up_arg;
	struct admin_conn *upgrading; /* the new process's connection, once it took the sockets */
	bool handed_over;             /* draining for a new process */
	bool published;               /* the socket file at path is ours (not only at tmp_path) */
	char *tmp_path;               /* admin_start_upgrade: where it listens until admin_publish */
	dev_t dev;                    /* the socket file we made: only that one is removed at exit */
	ino_t ino;
};

/* `show admin`: the socket's limits and what they did since start. */
void admin_server_limits(const struct admin *a, struct admin_show_limits *out);

/* From the command table (admin.c), for the file that follows "restore-state
 * BYTES": check it whole, then restore it (nothing on error), and answer. */
void admin_restore_state(struct admin *a, unsigned uid, const char *body, size_t len, bool json,
                         struct evbuffer *out);

#endif
