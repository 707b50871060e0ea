#include "admin_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "admin_reply.h"
#include "admin_show.h"
#include "clock.h"
#include "log.h"
#include "rollout.h"
#include "snapshot.h"

/* A connection whose unread answers pass this stops being read until they
 * drain: 400 KB of "help" lines once left 90 MB queued. */
#define ADMIN_MAX_PENDING_OUTPUT (1u << 20)
/* Connections a client has made that the gateway has not accepted yet. */
#define ADMIN_BACKLOG 16
/* No command, and no answer taken by the client, for this long: closed. */
#define ADMIN_IDLE_SECONDS 10

struct admin_conn {
	struct admin *a;
	struct bufferevent *bev;
	unsigned uid;
	bool closing;
	bool paused;      /* not read while its answers are not taken */
	bool eof;         /* the client half-closed */
	uint64_t last_us; /* last command or answer taken: the longest idle is evicted first */
	size_t body_want; /* restore-state N: the N bytes of the file still to come */
	bool body_json;
	struct admin_conn *prev, *next;
};

/* The file restore-state sends after its line: at most this many bytes. */
#define ADMIN_MAX_RESTORE_BYTES (64u << 20)

void admin_server_limits(const struct admin *a, struct admin_show_limits *out)
{
	*out = (struct admin_show_limits){
	    .num_conns = a->num_conns,
	    .max_conns = a->max_conns,
	    .idle_seconds = ADMIN_IDLE_SECONDS,
	    .max_pending_output = ADMIN_MAX_PENDING_OUTPUT,
	    .accepted = a->accepted,
	    .refused_uid = a->refused_uid,
	    .refused_full = a->refused_full,
	    .evicted = a->evicted,
	    .paused = a->paused,
	    .idle_closed = a->idle_closed,
	};
}

void admin_set_snapshot(struct admin *a, struct snapshot *snap, struct health *health)
{
	snapshot_ref(snap);
	snapshot_unref(a->snap);
	a->snap = snap;
	a->health = health;
	/* a reload may change these two; the path needs a restart (server.c) */
	const struct conf_admin *ca = &snap->conf->admin;
	a->max_conns = ca->max_connections ? ca->max_connections : 1;
	const char *mine = a->published ? a->path : a->tmp_path;
	struct stat st;
	if (mine && lstat(mine, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino &&
	    (st.st_mode & 07777) != ca->mode && chmod(mine, ca->mode) != 0) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "admin: cannot change the socket's mode");
		log_str(&l, "socket", mine);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
	}
}

/* ---- connections ---- */

static void conn_free(struct admin_conn *c)
{
	struct admin *a = c->a;
	if (a->upgrading == c) {
		a->upgrading = NULL;
		if (!a->handed_over) {
			rollout_ctl_hold(a->rollouts, false);
			log_msg(LOG_WARN, "upgrade abandoned: the new process went away before taking over; this process "
			                  "keeps serving and takes changes again");
		}
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		a->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	a->num_conns--;
	bufferevent_free(c->bev);
	free(c);
}

/* Returns false if c was freed (nothing left to send). */
static bool conn_close_after_flush(struct admin_conn *c)
{
	c->closing = true;
	if (bufferevent_disable(c->bev, EV_READ) != 0 || evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_free(c);
		return false;
	}
	return true;
}

/* `upgrade-listeners` and `upgrade-drain` (upgrade.h) need the connection
 * itself: the sockets go out with sendmsg, past the bufferevent. Returns
 * whether line was one of them. */
static bool conn_upgrade_line(struct admin_conn *c, const char *line, size_t len, struct evbuffer *out)
{
	struct admin *a = c->a;
	bool listeners = len == strlen("upgrade-listeners") && memcmp(line, "upgrade-listeners", len) == 0;
	bool drain = len == strlen("upgrade-drain") && memcmp(line, "upgrade-drain", len) == 0;
	if (!listeners && !drain)
		return false;
	int fd = bufferevent_getfd(c->bev);
	struct ucred cred = {.pid = -1};
	socklen_t cl = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0)
		cred.pid = -1;
	char err[256] = "";
	if (!a->up_ops)
		snprintf(err, sizeof(err), "binary upgrade is not available in this process");
	else if (a->handed_over)
		snprintf(err, sizeof(err), "this process (pid %ld) already hands over to another one", (long)getpid());
	else if (listeners && a->upgrading)
		snprintf(err, sizeof(err), "another upgrade is in progress");
	else if (drain && a->upgrading != c)
		snprintf(err, sizeof(err), "upgrade-drain comes after upgrade-listeners on the same connection");
	else if (listeners && evbuffer_get_length(out) > 0)
		snprintf(err, sizeof(err), "upgrade-listeners must be the first command on its connection");
	else if (listeners && a->up_ops->send(a->up_arg, fd, err, sizeof(err)) != 0 && !err[0])
		snprintf(err, sizeof(err), "cannot send the listening sockets");
	if (err[0]) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "upgrade refused");
		log_str(&l, "error", err);
		log_int(&l, "peer_pid", cred.pid);
		log_end(&l);
		admin_reply_error(out, false, "%s", err);
		/* the peer reads the error and the close; anything after it would be misread */
		c->closing = true;
		if (bufferevent_disable(c->bev, EV_READ) != 0)
			log_msg(LOG_DEBUG, "admin: cannot stop reading a refused upgrade connection");
		return true;
	}
	struct log_line l;
	if (listeners) {
		a->upgrading = c;
		/* before the new process reads the state file: no rollout step may land here after it */
		rollout_ctl_hold(a->rollouts, true);
		log_begin(&l, LOG_INFO, "upgrade: listening sockets handed to a new process; changes are refused until it "
		                        "takes over or goes away");
	} else {
		a->handed_over = true;
		/* sent now, not queued: with no connection left this process exits before the loop would flush it */
		char ans[96];
		int n = snprintf(ans, sizeof(ans), "draining: pid %ld hands over to pid %ld\n", (long)getpid(),
		                 (long)cred.pid);
		if (evbuffer_get_length(out) > 0 || send(fd, ans, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
			evbuffer_add(out, ans, (size_t)n);
		log_begin(&l, LOG_INFO, "upgrade: the new process serves; draining");
	}
	log_int(&l, "new_pid", cred.pid);
	log_end(&l);
	if (drain)
		a->up_ops->drain(a->up_arg);
	return true;
}

static void conn_run_line(struct admin_conn *c, struct evbuffer *in, size_t len, struct evbuffer *out)
{
	char line[ADMIN_CMD_MAX_LINE];
	if (len > sizeof(line)) {
		evbuffer_drain(in, len);
		admin_reply_error(out, false, "line too long (at most %d bytes)", ADMIN_CMD_MAX_LINE);
		return;
	}
	if (evbuffer_remove(in, line, len) != (int)len) {
		admin_reply_error(out, false, "internal error reading the command");
		return;
	}
	if (conn_upgrade_line(c, line, len, out))
		return;
	/* restore-state BYTES: the file follows the line (conn_process reads it) */
	struct admin_cmd *cmd = &c->a->cmd;
	if (len > 14 && memcmp(line, "restore-state ", 14) == 0 && !admin_cmd_parse(line, len, cmd) &&
	    cmd->num_words == 2) {
		char *end = NULL;
		unsigned long long want = strtoull(cmd->words[1], &end, 10);
		if (!end || *end || cmd->words[1][0] < '0' || cmd->words[1][0] > '9' || want == 0 ||
		    want > ADMIN_MAX_RESTORE_BYTES) {
			admin_reply_error(out, cmd->json, "restore-state: the size must be 1 to %u bytes", ADMIN_MAX_RESTORE_BYTES);
			/* the bytes that follow are a file, not commands: nothing more is read */
			c->closing = true;
			if (bufferevent_disable(c->bev, EV_READ) != 0)
				log_msg(LOG_DEBUG, "admin: cannot stop reading a refused restore-state");
			return;
		}
		c->body_want = (size_t)want;
		c->body_json = cmd->json;
		return;
	}
	admin_execute(c->a, line, len, c->uid, out);
}

/* The file after "restore-state BYTES": false while it has not all arrived. */
static bool conn_body(struct admin_conn *c, struct evbuffer *in, struct evbuffer *out)
{
	size_t avail = evbuffer_get_length(in);
	if (avail < c->body_want) {
		if (!c->eof)
			return false;
		admin_reply_error(out, c->body_json, "restore-state: the file ended after %zu of %zu bytes (nothing was restored)",
		                  avail, c->body_want);
		evbuffer_drain(in, avail);
		c->body_want = 0;
		return true;
	}
	if (c->a->upgrading || c->a->handed_over) {
		/* the new process read the state file already: a restore here would be lost */
		admin_reply_error(out, c->body_json, "a binary upgrade is in progress: this process (pid %ld) is handing over to a "
		                                     "new one; retry the restore in a moment (it goes to the new process)",
		                  (long)getpid());
		evbuffer_drain(in, c->body_want);
		c->body_want = 0;
		return true;
	}
	char *body = malloc(c->body_want);
	if (!body || evbuffer_remove(in, body, c->body_want) != (int)c->body_want) {
		admin_reply_error(out, c->body_json, "restore-state: out of memory reading the file (nothing was restored)");
		evbuffer_drain(in, c->body_want);
	} else {
		admin_restore_state(c->a, c->uid, body, c->body_want, c->body_json, out);
	}
	free(body);
	c->body_want = 0;
	return true;
}

/* Run every complete line in the input, in order, until the client's unread
 * answers pass the cap (then stop reading it until they drain); after the
 * client's half-close, a last line without its newline is a command too.
 * Returns false if c was freed. */
static bool conn_process(struct admin_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	while (!c->closing) {
		if (evbuffer_get_length(out) > ADMIN_MAX_PENDING_OUTPUT) {
			if (!c->paused) {
				c->paused = true;
				c->a->paused++;
				log_msg(LOG_INFO, "admin: a client is not reading its answers; its commands wait until it does");
			}
			if (bufferevent_disable(c->bev, EV_READ) != 0) {
				conn_free(c);
				return false;
			}
			return true;
		}
		if (c->body_want) {
			if (!conn_body(c, in, out))
				break;
			continue;
		}
		size_t eol_len = 0;
		struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		size_t avail = evbuffer_get_length(in);
		if (eol.pos >= 0) {
			conn_run_line(c, in, (size_t)eol.pos, out);
			evbuffer_drain(in, eol_len);
			continue;
		}
		if (avail > ADMIN_CMD_MAX_LINE) {
			admin_reply_error(out, false, "line too long (at most %d bytes)", ADMIN_CMD_MAX_LINE);
			evbuffer_drain(in, avail);
			return conn_close_after_flush(c);
		}
		if (c->eof && avail > 0) {
			conn_run_line(c, in, avail, out);
			continue;
		}
		break;
	}
	if (c->eof && !c->closing && evbuffer_get_length(in) == 0)
		return conn_close_after_flush(c);
	return true;
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct admin_conn *c = arg;
	c->last_us = clock_mono_us();
	conn_process(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct admin_conn *c = arg;
	c->last_us = clock_mono_us();
	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_free(c);
		return;
	}
	if (c->paused && evbuffer_get_length(bufferevent_get_output(bev)) <= ADMIN_MAX_PENDING_OUTPUT / 4) {
		c->paused = false;
		if (!conn_process(c))
			return;
		if (!c->paused && !c->closing && !c->eof && bufferevent_enable(bev, EV_READ) != 0)
			conn_free(c);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct admin_conn *c = arg;
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
		c->eof = true;
		if (!c->paused)
			conn_process(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		c->a->idle_closed++;
		log_msg(LOG_DEBUG, "admin: idle connection closed");
	}
	conn_free(c);
}

static void refuse(int fd, const char *msg)
{
	/* one best-effort line: the peer is not ours and gets nothing else */
	ssize_t n = send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)n;
	/* what the peer already sent is dropped unread, so the close does not reset the answer away */
	char sink[512];
	for (int i = 0; i < 128 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	if (shutdown(fd, SHUT_WR) != 0)
		log_msg(LOG_DEBUG, "admin: shutdown of a refused connection failed");
	close(fd);
}

/* Every slot is taken and the owner (or root) knocks: the connection idle the
 * longest (nothing unread, nothing unanswered) makes room. Returns whether one
 * was closed. */
static bool evict_idle(struct admin *a)
{
	struct admin_conn *oldest = NULL;
	for (struct admin_conn *c = a->conns; c; c = c->next) {
		if (c->closing || c->paused || evbuffer_get_length(bufferevent_get_output(c->bev)) > 0 ||
		    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
			continue;
		if (!oldest || c->last_us < oldest->last_us)
			oldest = c;
	}
	if (!oldest)
		return false;
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin: every connection slot taken; the longest idle connection closed to make room");
	log_int(&l, "idle_ms", (long long)((clock_mono_us() - oldest->last_us) / 1000));
	log_int(&l, "max_connections", a->max_conns);
	log_end(&l);
	a->evicted++;
	conn_free(oldest);
	return true;
}

static void admin_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	struct admin *a = arg;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
		log_msg(LOG_WARN, "admin: cannot read a peer's credentials; refused");
		a->refused_uid++;
		refuse(fd, "error: permission denied (unknown peer)\n");
		return;
	}
	if (cred.uid != geteuid()) {
		struct log_line ll;
		log_begin(&ll, LOG_WARN, "admin: connection refused: peer is not the user sluice runs as");
		log_int(&ll, "uid", cred.uid);
		log_int(&ll, "pid", cred.pid);
		log_end(&ll);
		a->refused_uid++;
		char msg[128];
		snprintf(msg, sizeof(msg), "error: permission denied: uid %u may not use this socket\n", (unsigned)cred.uid);
		refuse(fd, msg);
		return;
	}
	/* the last slot is kept for the socket's owner or root, who may also make
	 * room by closing the longest idle connection */
	bool privileged = cred.uid == 0 || cred.uid == a->owner;
	unsigned open_slots = a->max_conns - (a->num_conns < a->max_conns ? a->num_conns : a->max_conns);
	if ((open_slots == 0 || (open_slots == 1 && !privileged)) && !(privileged && evict_idle(a))) {
		a->refused_full++;
		struct log_line ll;
		log_begin(&ll, LOG_WARN, "admin: connection refused: every connection slot is busy");
		log_int(&ll, "max_connections", a->max_conns);
		log_int(&ll, "pid", cred.pid);
		log_end(&ll);
		char msg[160];
		snprintf(msg, sizeof(msg),
		         "error: too many admin connections (%u busy, admin.max_connections); try again shortly\n",
		         a->num_conns);
		refuse(fd, msg);
		return;
	}
	struct admin_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->a = a;
	c->uid = (unsigned)cred.uid;
	c->last_us = clock_mono_us();
	c->bev = bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		close(fd);
		free(c);
		return;
	}
	c->next = a->conns;
	if (a->conns)
		a->conns->prev = c;
	a->conns = c;
	a->num_conns++;
	a->accepted++;
	struct timeval idle = {.tv_sec = ADMIN_IDLE_SECONDS, .tv_usec = 0};
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	/* the write callback also runs once the answers fall to a quarter of the cap: a paused client resumes */
	bufferevent_setwatermark(c->bev, EV_WRITE, ADMIN_MAX_PENDING_OUTPUT / 4, 0);
	if (bufferevent_set_timeouts(c->bev, &idle, &idle) != 0 || bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0)
		conn_free(c);
}

/* A socket file left by a process that is gone may be replaced; a live one may not. */
static bool stale_socket(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return errno == ENOENT;
	if (!S_ISSOCK(st.st_mode))
		return false;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	bool live = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	close(fd);
	return !live && unlink(path) == 0;
}

/* upgrade: the running process's socket stays at the path until admin_publish(). */
static struct admin *admin_start_at(struct event_base *base, struct runtime *rt, struct snapshot *snap,
                                    struct health *health, struct statefile *sf, bool upgrade)
{
	const struct conf_admin *ca = &snap->conf->admin;
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (!ca->socket || strlen(ca->socket) >= sizeof(sun.sun_path))
		return NULL;
	/* bound under a temporary name and renamed once listening: whoever waits
	 * for the socket file to appear can connect as soon as it does */
	char tmp[sizeof(sun.sun_path)];
	bool via_tmp = strlen(ca->socket) + 4 < sizeof(tmp);
	snprintf(tmp, sizeof(tmp), via_tmp ? "%s.new" : "%s", ca->socket);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", tmp);
	const char *problem = NULL;
	int fd = -1;
	if (upgrade && !via_tmp) {
		problem = "the path is too long to bind beside it for an upgrade (use a shorter admin.socket)";
	} else if ((!upgrade && !stale_socket(ca->socket)) || (via_tmp && !stale_socket(tmp))) {
		problem = "the path exists and is not a stale socket (another sluice running?)";
	} else if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
		problem = strerror(errno);
	} else {
		/* the socket must never be reachable with looser permissions, not even between bind and chmod */
		mode_t old = umask(0777 & ~ca->mode);
		int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
		umask(old);
		if (rc != 0 || chmod(tmp, ca->mode) != 0 || listen(fd, ADMIN_BACKLOG) != 0 ||
		    (via_tmp && !upgrade && rename(tmp, ca->socket) != 0)) {
			problem = strerror(errno);
			if (rc == 0)
				unlink(tmp);
		}
	}
	if (problem) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "admin: cannot listen on the admin socket");
		log_str(&l, "socket", ca->socket);
		log_str(&l, "error", problem);
		log_end(&l);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct admin *a = calloc(1, sizeof(*a));
	if (a)
		a->path = strdup(ca->socket);
	if (a && a->path && upgrade && !(a->tmp_path = strdup(tmp)))
		free(a->path), a->path = NULL;
	if (a && a->path)
		a->listener = evconnlistener_new(base, admin_accept_cb, a, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (!a || !a->path || !a->listener) {
		log_msg(LOG_ERROR, "admin: out of memory");
		if (!a || !a->listener)
			close(fd);
		if (a)
			free(a->path);
		free(a);
		unlink(upgrade ? tmp : ca->socket);
		return NULL;
	}
	struct stat st;
	if (stat(tmp, &st) == 0 || stat(ca->socket, &st) == 0) {
		a->dev = st.st_dev;
		a->ino = st.st_ino;
	}
	a->published = !upgrade;
	a->base = base;
	a->rt = rt;
	a->health = health;
	a->owner = geteuid();
	a->sf = sf;
	a->max_conns = ca->max_connections ? ca->max_connections : 1;
	snapshot_ref(snap);
	a->snap = snap;
	a->rollouts = rollout_ctl_new(base, rt, &a->snap, sf);
	if (!a->rollouts) {
		log_msg(LOG_ERROR, "admin: out of memory");
		admin_stop(a);
		return NULL;
	}
	if (a->published) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "admin socket listening");
		log_str(&l, "socket", a->path);
		log_int(&l, "max_connections", a->max_conns);
		log_end(&l);
	}
	return a;
}

struct admin *admin_start(struct event_base *base, struct runtime *rt, struct snapshot *snap, struct health *health,
                          struct statefile *sf)
{
	return admin_start_at(base, rt, snap, health, sf, false);
}

struct admin *admin_start_upgrade(struct event_base *base, struct runtime *rt, struct snapshot *snap,
                                  struct health *health, struct statefile *sf)
{
	return admin_start_at(base, rt, snap, health, sf, true);
}

int admin_publish(struct admin *a)
{
	if (a->published)
		return 0;
	if (rename(a->tmp_path, a->path) != 0) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "admin: cannot move the admin socket into place");
		log_str(&l, "socket", a->path);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
		return -1;
	}
	a->published = true;
	struct log_line l;
	log_begin(&l, LOG_INFO, "admin socket listening");
	log_str(&l, "socket", a->path);
	log_int(&l, "max_connections", a->max_conns);
	log_end(&l);
	return 0;
}

void admin_set_upgrade(struct admin *a, const struct admin_upgrade_ops *ops, void *arg)
{
	a->up_ops = ops;
	a->up_arg = arg;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	while (a->conns)
		conn_free(a->conns);
	rollout_ctl_free(a->rollouts);
	evconnlistener_free(a->listener);
	/* after a binary upgrade the file at the path is the new process's socket: only ours is removed */
	const char *mine = a->published ? a->path : a->tmp_path;
	struct stat st;
	if (lstat(mine, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino && unlink(mine) != 0 && errno != ENOENT)
		log_msg(LOG_WARN, "admin: cannot remove the socket file");
	free(a->path);
	free(a->tmp_path);
	snapshot_unref(a->snap);
	free(a);
}
