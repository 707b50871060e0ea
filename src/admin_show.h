/* admin_show.h - the answers of the admin socket's `show ...` commands
 * (docs/admin.md): pools, servers, breakers, config, diff, admin, state-file,
 * redis, services, each as aligned text columns or as one JSON object a
 * line ({"ok":true,...}). Rendering only: the command table (admin.c) picks
 * the renderer, and nothing here changes state.
 *
 * The view borrows what it describes; the caller keeps it alive for the
 * call. Runtime tables are read with atomic loads and counters are summed
 * from the process registry (counters.h), so a renderer runs on the main
 * thread, like every admin command. Names a client typed come back escaped
 * (admin_reply.h). */
#ifndef SLUICE_ADMIN_SHOW_H
#define SLUICE_ADMIN_SHOW_H

#include <stdbool.h>

struct control;
struct evbuffer;
struct health;
struct runtime;
struct snapshot;
struct statefile;

/* What the answers describe. */
struct admin_show_view {
	const struct snapshot *snap; /* the running config (and its counter names) */
	const struct runtime *rt;
	const struct health *health; /* the last check of each server; NULL: none */
	const struct statefile *sf;  /* NULL: no state_file */
	struct control *control;     /* NULL: no fleet control (show services adds its brief) */
};

void admin_show_pools(const struct admin_show_view *v, bool json, struct evbuffer *out);
/* only: one pool (NULL: all); an unknown one is answered with an error. */
void admin_show_servers(const struct admin_show_view *v, const char *only, bool json, struct evbuffer *out);
void admin_show_breakers(const struct admin_show_view *v, bool json, struct evbuffer *out);
void admin_show_config(const struct admin_show_view *v, bool json, struct evbuffer *out);
void admin_show_diff(const struct admin_show_view *v, bool json, struct evbuffer *out);
void admin_show_state_file(const struct admin_show_view *v, bool json, struct evbuffer *out);
void admin_show_redis(const struct admin_show_view *v, bool json, struct evbuffer *out);
/* only: one service (NULL: every service the config names); unknown: an error. */
void admin_show_services(const struct admin_show_view *v, const char *only, bool json, struct evbuffer *out);

/* `show admin`: the socket's limits and what they did since start. */
struct admin_show_limits {
	unsigned num_conns, max_conns; /* open now; admin.max_connections */
	int idle_seconds;              /* a connection idle this long is closed */
	unsigned max_pending_output;   /* unread answer bytes past which a connection is not read */
	unsigned long long accepted, refused_uid, refused_full, evicted, paused, idle_closed;
};
void admin_show_admin(const struct admin_show_limits *s, bool json, struct evbuffer *out);

#endif
