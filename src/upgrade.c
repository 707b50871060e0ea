#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct upgrade_sock {
	unsigned worker;
	char *name;
	char *address;
	int fd;
};

struct upgrade_src {
	struct upgrade_sock *socks;
	size_t count, cap;
};

struct upgrade {
	int conn;
	long old_pid;
	struct upgrade_sock *socks;
	size_t count;
};

static void set_err(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, size, fmt, ap);
	va_end(ap);
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready for events or the deadline passes. 0, or -1 (errno ETIMEDOUT). */
static int wait_fd(int fd, short events, long long deadline)
{
	for (;;) {
		long long left = deadline - mono_ms();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd p = {.fd = fd, .events = events};
		int rc = poll(&p, 1, (int)left);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -1;
	}
}

/* ---- old side ---- */

struct upgrade_src *upgrade_src_new(void)
{
	return calloc(1, sizeof(struct upgrade_src));
}

int upgrade_src_add(struct upgrade_src *s, unsigned worker, const char *name, const char *address, int fd)
{
	if (s->count == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct upgrade_sock *grown = realloc(s->socks, cap * sizeof(*grown));
		if (!grown)
			goto fail;
		s->socks = grown;
		s->cap = cap;
	}
	struct upgrade_sock *k = &s->socks[s->count];
	k->worker = worker;
	k->name = strdup(name);
	k->address = strdup(address);
	k->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (!k->name || !k->address || k->fd < 0) {
		free(k->name);
		free(k->address);
		if (k->fd >= 0)
			close(k->fd);
		goto fail;
	}
	s->count++;
	return 0;
fail:;
	struct log_line l;
	log_begin(&l, LOG_WARN, "upgrade: cannot keep a listening socket for a later binary upgrade");
	log_str(&l, "listener", name);
	log_str(&l, "error", strerror(errno));
	log_end(&l);
	return -1;
}

int upgrade_src_fd(const struct upgrade_src *s, unsigned worker, const char *name, const char *address)
{
	for (size_t i = 0; i < s->count; i++)
		if (s->socks[i].worker == worker && strcmp(s->socks[i].name, name) == 0 &&
		    strcmp(s->socks[i].address, address) == 0)
			return s->socks[i].fd;
	return -1;
}

void upgrade_src_remove(struct upgrade_src *s, const char *name, const char *address)
{
	size_t n = 0;
	for (size_t i = 0; i < s->count; i++) {
		struct upgrade_sock *k = &s->socks[i];
		if (strcmp(k->name, name) == 0 && strcmp(k->address, address) == 0) {
			free(k->name);
			free(k->address);
			close(k->fd);
		} else {
			s->socks[n++] = *k;
		}
	}
	s->count = n;
}

/* Send buf whole, with fd attached to its first byte when fd >= 0; waits
 * while the peer's buffer is full. */
static int send_all(int conn, const char *buf, size_t len, int fd, long long deadline)
{
	size_t sent = 0;
	while (sent < len) {
		struct iovec iov = {.iov_base = (char *)buf + sent, .iov_len = len - sent};
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int))];
		} ctrl;
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		if (fd >= 0 && sent == 0) {
			memset(&ctrl, 0, sizeof(ctrl));
			msg.msg_control = ctrl.buf;
			msg.msg_controllen = sizeof(ctrl.buf);
			struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd, sizeof(int));
		}
		ssize_t n = sendmsg(conn, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			sent += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(conn, POLLOUT, deadline) == 0)
			continue;
		return -1;
	}
	return 0;
}

/* One fixed-size record (text, NUL padded). */
static int send_record(int conn, const char *text, int fd, long long deadline)
{
	char rec[UPGRADE_RECORD];
	memset(rec, 0, sizeof(rec));
	memcpy(rec, text, strlen(text));
	return send_all(conn, rec, sizeof(rec), fd, deadline);
}

int upgrade_src_send(const struct upgrade_src *s, int conn, char *err, size_t err_size)
{
	long long deadline = mono_ms() + UPGRADE_TIMEOUT_MS;
	char text[UPGRADE_RECORD];
	snprintf(text, sizeof(text), "sluice-upgrade 1 %zu %ld\n", s->count, (long)getpid());
	if (send_record(conn, text, -1, deadline) != 0) {
		set_err(err, err_size, "cannot send the header: %s", strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < s->count; i++) {
		const struct upgrade_sock *k = &s->socks[i];
		int len = snprintf(text, sizeof(text), "%u\t%s\t%s\n", k->worker, k->name, k->address);
		if (len < 0 || (size_t)len >= sizeof(text)) {
			set_err(err, err_size, "listener %.100s: name and address too long to hand over", k->name);
			return -1;
		}
		if (send_record(conn, text, k->fd, deadline) != 0) {
			set_err(err, err_size, "cannot send listener %.100s's socket: %s", k->name, strerror(errno));
			return -1;
		}
	}
	return 0;
}

static void socks_free(struct upgrade_sock *socks, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		free(socks[i].name);
		free(socks[i].address);
		if (socks[i].fd >= 0)
			close(socks[i].fd);
	}
	free(socks);
}

void upgrade_src_close(struct upgrade_src *s)
{
	if (!s)
		return;
	socks_free(s->socks, s->count);
	s->socks = NULL;
	s->count = s->cap = 0;
}

void upgrade_src_free(struct upgrade_src *s)
{
	upgrade_src_close(s);
	free(s);
}

/* ---- new side ---- */

/* Read exactly one record into rec; descriptors that arrive go to fds (at most max, *nfds counts). */
static int recv_record(int conn, char *rec, int *fds, size_t max, size_t *nfds, long long deadline)
{
	size_t got = 0;
	memset(rec, 0, UPGRADE_RECORD);
	while (got < UPGRADE_RECORD) {
		struct iovec iov = {.iov_base = rec + got, .iov_len = UPGRADE_RECORD - got};
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int) * 8)];
		} ctrl;
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl.buf,
		                     .msg_controllen = sizeof(ctrl.buf)};
		ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(conn, POLLIN, deadline) != 0)
				return -1;
			continue;
		}
		for (struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL; c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (*nfds < max)
					fds[(*nfds)++] = fd;
				else
					close(fd);
			}
		}
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = ECONNRESET;
			return -1;
		}
		if (msg.msg_flags & MSG_CTRUNC) {
			errno = EPROTO;
			return -1;
		}
		got += (size_t)n;
	}
	rec[UPGRADE_RECORD - 1] = '\0';
	return 0;
}

/* Read one answer line (without its newline) into line. */
static int read_line(int conn, char *line, size_t size, long long deadline)
{
	size_t n = 0;
	for (;;) {
		char ch;
		ssize_t r = recv(conn, &ch, 1, MSG_DONTWAIT);
		if (r == 1) {
			if (ch == '\n')
				break;
			if (n + 1 < size)
				line[n++] = ch;
			continue;
		}
		if (r == 0) {
			errno = ECONNRESET;
			return -1;
		}
		if (errno == EINTR)
			continue;
		if ((errno != EAGAIN && errno != EWOULDBLOCK) || wait_fd(conn, POLLIN, deadline) != 0)
			return -1;
	}
	line[n] = '\0';
	return 0;
}

struct upgrade *upgrade_begin(const char *admin_socket, char *err, size_t err_size)
{
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (!admin_socket) {
		set_err(err, err_size, "the config has no admin.socket: --upgrade asks the running sluice for its sockets "
		                       "over it (set admin.socket to the running one's)");
		return NULL;
	}
	if (strlen(admin_socket) >= sizeof(sun.sun_path)) {
		set_err(err, err_size, "admin.socket %s: path too long", admin_socket);
		return NULL;
	}
	memcpy(sun.sun_path, admin_socket, strlen(admin_socket));
	struct upgrade *u = calloc(1, sizeof(*u));
	if (!u) {
		set_err(err, err_size, "out of memory");
		return NULL;
	}
	long long deadline = mono_ms() + UPGRADE_TIMEOUT_MS;
	char rec[UPGRADE_RECORD];
	int *fds = NULL;
	size_t nfds = 0, count = 0;
	u->conn = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (u->conn < 0 || connect(u->conn, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		set_err(err, err_size, "cannot connect to the running sluice's admin socket %s: %s (is it running, with "
		                       "this admin.socket?)", admin_socket, strerror(errno));
		goto fail;
	}
	if (send_all(u->conn, "upgrade-listeners\n", strlen("upgrade-listeners\n"), -1, deadline) != 0) {
		set_err(err, err_size, "admin socket %s: cannot send: %s", admin_socket, strerror(errno));
		goto fail;
	}
	/* an error answer is one text line; a header record starts with the magic */
	if (recv_record(u->conn, rec, NULL, 0, &nfds, deadline) != 0) {
		if (errno == ECONNRESET && strncmp(rec, "error: ", 7) == 0) {
			rec[strcspn(rec, "\n")] = '\0';
			set_err(err, err_size, "the running sluice refused: %s", rec + 7);
		} else {
			set_err(err, err_size, "admin socket %s: no answer to upgrade-listeners: %s", admin_socket,
			        strerror(errno));
		}
		goto fail;
	}
	if (strncmp(rec, "error: ", 7) == 0) {
		rec[strcspn(rec, "\n")] = '\0';
		set_err(err, err_size, "the running sluice refused: %s", rec + 7);
		goto fail;
	}
	int version = 0;
	if (sscanf(rec, "sluice-upgrade %d %zu %ld", &version, &count, &u->old_pid) != 3 || version != 1 ||
	    count > 65536) {
		set_err(err, err_size, "admin socket %s: not a sluice upgrade answer (an older sluice without "
		                       "--upgrade support?)", admin_socket);
		goto fail;
	}
	fds = malloc((count ? count : 1) * sizeof(int));
	u->socks = calloc(count ? count : 1, sizeof(*u->socks));
	if (!fds || !u->socks) {
		set_err(err, err_size, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < count; i++) {
		if (recv_record(u->conn, rec, fds, count, &nfds, deadline) != 0) {
			set_err(err, err_size, "receiving listening socket %zu of %zu: %s", i + 1, count, strerror(errno));
			goto fail;
		}
		char *name = strchr(rec, '\t');
		char *address = name ? strchr(name + 1, '\t') : NULL;
		if (!address) {
			set_err(err, err_size, "listening socket %zu of %zu: malformed record", i + 1, count);
			goto fail;
		}
		*name++ = '\0';
		*address++ = '\0';
		address[strcspn(address, "\n")] = '\0';
		struct upgrade_sock *k = &u->socks[u->count++];
		k->fd = -1;
		k->worker = (unsigned)strtoul(rec, NULL, 10);
		k->name = strdup(name);
		k->address = strdup(address);
		if (!k->name || !k->address) {
			set_err(err, err_size, "out of memory");
			goto fail;
		}
	}
	if (nfds != count) {
		set_err(err, err_size, "got %zu sockets for %zu listeners", nfds, count);
		goto fail;
	}
	for (size_t i = 0; i < count; i++)
		u->socks[i].fd = fds[i];
	free(fds);
	return u;
fail:
	for (size_t i = 0; i < nfds; i++)
		close(fds[i]);
	free(fds);
	upgrade_free(u);
	return NULL;
}

int upgrade_take(struct upgrade *u, const char *name, const char *address, unsigned worker)
{
	for (size_t i = 0; i < u->count; i++) {
		struct upgrade_sock *k = &u->socks[i];
		if (k->fd >= 0 && k->worker == worker && strcmp(k->name, name) == 0 && strcmp(k->address, address) == 0) {
			int fd = k->fd;
			k->fd = -1;
			return fd;
		}
	}
	return -1;
}

int upgrade_has(const struct upgrade *u, const char *name, const char *address)
{
	for (size_t i = 0; i < u->count; i++)
		if (strcmp(u->socks[i].name, name) == 0 && strcmp(u->socks[i].address, address) == 0)
			return 1;
	return 0;
}

long upgrade_old_pid(const struct upgrade *u)
{
	return u->old_pid;
}

int upgrade_finish(struct upgrade *u, char *err, size_t err_size)
{
	long long deadline = mono_ms() + UPGRADE_TIMEOUT_MS;
	char line[256];
	int rc = -1;
	if (send_all(u->conn, "upgrade-drain\n", strlen("upgrade-drain\n"), -1, deadline) != 0 ||
	    read_line(u->conn, line, sizeof(line), deadline) != 0)
		set_err(err, err_size, "cannot tell the old process (pid %ld) to drain: %s", u->old_pid, strerror(errno));
	else if (strncmp(line, "draining", 8) != 0)
		set_err(err, err_size, "the old process (pid %ld) answered: %s", u->old_pid, line);
	else
		rc = 0;
	upgrade_free(u);
	return rc;
}

void upgrade_free(struct upgrade *u)
{
	if (!u)
		return;
	if (u->conn >= 0)
		close(u->conn);
	socks_free(u->socks, u->count);
	free(u);
}
