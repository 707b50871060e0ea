#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define CTL_MAX_LINE 4096
/* While the backlog of a busy gateway is full, connect() is retried this often. */
#define CTL_CONNECT_RETRY_MS 20

static void ctl_usage(FILE *out)
{
	fprintf(out, "usage: sluice ctl [-s SOCKET] [--json] [--timeout SECONDS] COMMAND...\n"
	             "  SOCKET defaults to $SLUICE_ADMIN_SOCKET, else " CTL_DEFAULT_SOCKET "\n"
	             "  --timeout bounds the whole exchange, connect included (default %d s)\n"
	             "  sluice ctl help   lists the commands\n",
	        CTL_DEFAULT_TIMEOUT_MS / 1000);
}

static int64_t ctl_now_ms(void)
{
	return (int64_t)(clock_mono_us() / 1000u);
}

/* Milliseconds left before the deadline, for poll(): 0 once it has passed. */
static int ctl_left_ms(int64_t deadline)
{
	int64_t left = deadline - ctl_now_ms();
	return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Wait for events on fd until the deadline: 1 ready, 0 deadline passed, -1 error. */
static int ctl_wait(int fd, short events, int64_t deadline)
{
	for (;;) {
		int left = ctl_left_ms(deadline);
		if (left == 0)
			return 0;
		struct pollfd pfd = {.fd = fd, .events = events};
		int rc = poll(&pfd, 1, left);
		if (rc < 0 && errno == EINTR)
			continue;
		return rc < 0 ? -1 : rc > 0 ? 1 : 0;
	}
}

void ctl_escape_init(struct ctl_escape *e)
{
	e->have = e->need = 0;
}

static size_t ctl_hex(unsigned char c, char *out)
{
	static const char hex[] = "0123456789abcdef";
	out[0] = '\\';
	out[1] = 'x';
	out[2] = hex[c >> 4];
	out[3] = hex[c & 15];
	return 4;
}

/* The bytes of an unfinished UTF-8 sequence, escaped: they were not text. */
static size_t ctl_flush_pending(struct ctl_escape *e, char *out)
{
	size_t o = 0;
	for (unsigned k = 0; k < e->have; k++)
		o += ctl_hex(e->seq[k], out + o);
	e->have = e->need = 0;
	return o;
}

/* C0 controls (save LF and TAB), DEL, the C1 controls (U+0080..U+009F) and
 * every byte that is not part of well-formed UTF-8 (a lone 0x9b is CSI to an
 * 8-bit terminal) are printed as \xHH: an answer can then never move the
 * cursor, retitle a terminal or hide text from the operator. */
size_t ctl_escape(struct ctl_escape *e, const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = in[i];
		if (e->need) {
			if (c >= 0x80 && c <= 0xbf) {
				e->seq[e->have++] = c;
				if (e->have < e->need)
					continue;
				if (e->seq[0] == 0xc2 && e->seq[1] <= 0x9f) {
					o += ctl_flush_pending(e, out + o);
				} else {
					memcpy(out + o, e->seq, e->have);
					o += e->have;
					e->have = e->need = 0;
				}
				continue;
			}
			o += ctl_flush_pending(e, out + o);
		}
		if (c >= 0xc2 && c <= 0xf4) {
			e->seq[0] = c;
			e->have = 1;
			e->need = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
		} else if ((c < 0x20 && c != '\n' && c != '\t') || c >= 0x7f) {
			o += ctl_hex(c, out + o);
		} else {
			out[o++] = (char)c;
		}
	}
	return o;
}

size_t ctl_escape_finish(struct ctl_escape *e, char *out)
{
	return ctl_flush_pending(e, out);
}

static int write_all(int fd, const char *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		/* a refused peer is closed at once: EPIPE, not a signal, and its answer is still read */
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (ctl_wait(fd, POLLOUT, deadline) != 1) {
					errno = ETIMEDOUT;
					return -1;
				}
				continue;
			}
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* What sits at path, when it is not a socket, in words; NULL if it is one or cannot be told. */
static const char *ctl_not_a_socket(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0 || S_ISSOCK(st.st_mode))
		return NULL;
	if (S_ISREG(st.st_mode))
		return "a regular file";
	if (S_ISDIR(st.st_mode))
		return "a directory";
	if (S_ISFIFO(st.st_mode))
		return "a FIFO";
	if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
		return "a device";
	return "not a socket";
}

/* A non-blocking connect bounded by the deadline. A Unix socket whose accept
 * queue is full answers EAGAIN at once (a blocking connect would wait without
 * end): retried until the deadline. Returns 0, or -1 with errno (ETIMEDOUT). */
static int ctl_connect(int fd, const struct sockaddr_un *sun, int64_t deadline, bool *queue_full)
{
	for (;;) {
		if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			*queue_full = true;
			int left = ctl_left_ms(deadline);
			if (left == 0) {
				errno = ETIMEDOUT;
				return -1;
			}
			struct timespec pause = {0, (long)(left < CTL_CONNECT_RETRY_MS ? left : CTL_CONNECT_RETRY_MS) * 1000000L};
			nanosleep(&pause, NULL);
			continue;
		}
		if (errno != EINPROGRESS)
			return -1;
		int rc = ctl_wait(fd, POLLOUT, deadline);
		if (rc <= 0) {
			errno = rc == 0 ? ETIMEDOUT : errno;
			return -1;
		}
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			return -1;
		if (err == 0)
			return 0;
		errno = err;
		return -1;
	}
}

static int ctl_parse_timeout(const char *s, int *ms)
{
	char *end = NULL;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v <= 0 || v > 86400)
		return -1;
	*ms = (int)(v * 1000);
	if (*ms < 1)
		*ms = 1;
	return 0;
}

/* restore-state FILE: the whole file (at most CTL_MAX_ANSWER bytes), or NULL after saying why. */
static char *ctl_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > CTL_MAX_ANSWER) {
		fprintf(stderr, "sluice ctl: restore-state: cannot use %s: %s\n", path,
		        fd < 0                                 ? strerror(errno)
		        : !S_ISREG(st.st_mode)                 ? "not a regular file"
		        : st.st_size <= 0                      ? "empty (a file written by sluice ctl dump-state is needed)"
		                                               : "larger than 64 MiB");
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	char *buf = malloc((size_t)st.st_size);
	size_t got = 0;
	while (buf && got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (!buf || got != (size_t)st.st_size) {
		fprintf(stderr, "sluice ctl: restore-state: cannot read %s: %s\n", path, buf ? strerror(errno) : "out of memory");
		free(buf);
		return NULL;
	}
	*len = got;
	return buf;
}

/* dump-state FILE: the answer into FILE, atomically (a temporary file beside it, renamed). */
static int ctl_write_dump(const char *path, const char *buf, size_t len)
{
	char tmp[4096];
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
		fprintf(stderr, "sluice ctl: dump-state: path too long: %s\n", path);
		return 2;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	bool ok = fd >= 0;
	for (size_t off = 0; ok && off < len;) {
		ssize_t n = write(fd, buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		ok = n > 0;
		off += ok ? (size_t)n : 0;
	}
	ok = ok && fsync(fd) == 0;
	int err = errno;
	if (fd >= 0 && close(fd) != 0 && ok) {
		ok = false;
		err = errno;
	}
	if (ok && rename(tmp, path) != 0) {
		ok = false;
		err = errno;
	}
	if (!ok) {
		fprintf(stderr, "sluice ctl: dump-state: cannot write %s: %s (nothing written)\n", path, strerror(err));
		if (fd >= 0)
			unlink(tmp);
		return 2;
	}
	fprintf(stderr, "sluice ctl: dump-state: wrote %s (%zu bytes)\n", path, len);
	return 0;
}

int ctl_main(int argc, char **argv)
{
	const char *path = getenv("SLUICE_ADMIN_SOCKET");
	if (!path || !*path)
		path = CTL_DEFAULT_SOCKET;
	bool json = false;
	int timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
	int i = 1;
	for (; i < argc; i++) {
		if ((strcmp(argv[i], "-s") == 0 || strcmp(argv[i], "--socket") == 0) && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (strcmp(argv[i], "--timeout") == 0) {
			if (i + 1 >= argc || ctl_parse_timeout(argv[i + 1], &timeout_ms) != 0) {
				fprintf(stderr, "sluice ctl: --timeout needs a number of seconds above 0 (at most 86400), "
				                "e.g. --timeout 30\n");
				return 2;
			}
			i++;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			ctl_usage(stdout);
			return 0;
		} else {
			break;
		}
	}
	if (i >= argc) {
		ctl_usage(stderr);
		return 2;
	}
	int64_t deadline = ctl_now_ms() + timeout_ms;
	char line[CTL_MAX_LINE + 2];
	size_t len = 0;
	/* dump-state [FILE] and restore-state FILE carry a file: not words of the line */
	bool dump = strcmp(argv[i], "dump-state") == 0;
	const char *dump_file = NULL;
	char *body = NULL;
	size_t body_len = 0;
	if (dump) {
		if (argc - i > 2) {
			fprintf(stderr, "usage: sluice ctl dump-state [FILE]   (stdout without FILE)\n");
			return 2;
		}
		dump_file = argc - i == 2 ? argv[i + 1] : NULL;
		argc = i + 1;
	} else if (strcmp(argv[i], "restore-state") == 0) {
		if (argc - i != 2) {
			fprintf(stderr, "usage: sluice ctl restore-state FILE   (a file written by dump-state)\n");
			return 2;
		}
		if (!(body = ctl_read_file(argv[i + 1], &body_len)))
			return 2;
		len = (size_t)snprintf(line, sizeof line, "restore-state %zu", body_len);
		i = argc;
	}
	for (; i < argc; i++) {
		size_t n = strlen(argv[i]);
		if (strchr(argv[i], '\n') || len + n + 1 > CTL_MAX_LINE) {
			fprintf(stderr, "sluice ctl: the command is too long or has a line break\n");
			return 2;
		}
		if (len)
			line[len++] = ' ';
		memcpy(line + len, argv[i], n);
		len += n;
	}
	if (json) {
		if (len + 7 > CTL_MAX_LINE) {
			fprintf(stderr, "sluice ctl: the command is too long\n");
			return 2;
		}
		memcpy(line + len, " --json", 7);
		len += 7;
	}
	line[len++] = '\n';

	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "sluice ctl: socket path too long (at most %zu bytes): %s\n", sizeof(sun.sun_path) - 1, path);
		return 2;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	const char *what = ctl_not_a_socket(path);
	if (what) {
		fprintf(stderr, "sluice ctl: %s is %s, not a socket: give the path of admin.socket in sluice's config (-s SOCKET)\n",
		        path, what);
		return 2;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		fprintf(stderr, "sluice ctl: socket: %s\n", strerror(errno));
		return 2;
	}
	bool queue_full = false;
	if (ctl_connect(fd, &sun, deadline, &queue_full) != 0) {
		int err = errno;
		if (err == ETIMEDOUT)
			fprintf(stderr, "sluice ctl: cannot connect to %s within %g s: %s (--timeout SECONDS to wait longer)\n",
			        path, timeout_ms / 1000.0,
			        queue_full ? "its accept queue stayed full (the gateway is busy or hung)" : "no answer");
		else
			fprintf(stderr, "sluice ctl: cannot connect to %s: %s%s\n", path, strerror(err),
			        err == ENOENT || err == ECONNREFUSED ? " (is sluice running with admin.socket set? use -s SOCKET)"
			        : err == EACCES                      ? " (run as the user sluice runs as)"
			                                             : "");
		close(fd);
		return 2;
	}
	/* a refused peer is answered and closed at once: a failed write then is not the story */
	bool sent = write_all(fd, line, len, deadline) == 0;
	if (sent && body)
		sent = write_all(fd, body, body_len, deadline) == 0;
	free(body);
	if (sent && shutdown(fd, SHUT_WR) != 0)
		sent = false;
	/* dump-state: the whole answer is kept, written (or shown) once it is complete and not an error */
	char *kept = NULL;
	size_t kept_len = 0, kept_cap = 0;
	unsigned char buf[8192];
	char esc[sizeof(buf) * 4 + 16];
	struct ctl_escape e;
	ctl_escape_init(&e);
	char head[11];
	size_t head_len = 0, total = 0;
	int rc = -1; /* -1 while reading; then the exit status */
	while (rc < 0) {
		int w = ctl_wait(fd, POLLIN, deadline);
		if (w <= 0) {
			fprintf(stderr, "sluice ctl: %s %s within %g s (--timeout SECONDS to wait longer)\n", path,
			        total ? "did not finish its answer" : "did not answer", timeout_ms / 1000.0);
			rc = 2;
			break;
		}
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		/* ECONNRESET: the gateway closed with our command unread (a refusal) */
		if (n <= 0)
			break;
		if (total + (size_t)n > CTL_MAX_ANSWER) {
			n = (ssize_t)(CTL_MAX_ANSWER - total);
			rc = 2;
		}
		size_t take = head_len < sizeof(head) ? sizeof(head) - head_len : 0;
		if (take > (size_t)n)
			take = (size_t)n;
		memcpy(head + head_len, buf, take);
		head_len += take;
		if (dump && rc < 0) {
			if (kept_len + (size_t)n > kept_cap) {
				size_t ncap = kept_cap ? kept_cap * 2 : 65536;
				while (ncap < kept_len + (size_t)n)
					ncap *= 2;
				char *g = realloc(kept, ncap);
				if (!g) {
					fprintf(stderr, "sluice ctl: out of memory keeping the dump\n");
					rc = 2;
					break;
				}
				kept = g;
				kept_cap = ncap;
			}
			memcpy(kept + kept_len, buf, (size_t)n);
			kept_len += (size_t)n;
			total += (size_t)n;
			continue;
		}
		size_t m = ctl_escape(&e, buf, (size_t)n, esc);
		if (fwrite(esc, 1, m, stdout) != m) {
			close(fd);
			return 2;
		}
		total += (size_t)n;
		if (rc == 2)
			fprintf(stderr, "sluice ctl: the answer from %s passed %d MiB; stopped reading (is it a sluice admin socket?)\n",
			        path, CTL_MAX_ANSWER >> 20);
	}
	close(fd);
	if (dump) {
		bool error_answer = kept_len == 0 || (kept_len >= 6 && memcmp(kept, "error:", 6) == 0) ||
		                    (kept_len >= 11 && memcmp(kept, "{\"ok\":false", 11) == 0);
		int status = rc >= 0 ? rc : error_answer ? (kept_len ? 1 : 2) : 0;
		if (kept_len == 0 && rc < 0)
			fprintf(stderr, "sluice ctl: %s closed without an answer\n", path);
		if (status == 0 && dump_file) {
			status = ctl_write_dump(dump_file, kept, kept_len);
		} else if (kept_len) {
			/* an error, or no FILE: shown like any answer */
			size_t at = 0;
			while (at < kept_len) {
				size_t piece = kept_len - at < sizeof buf ? kept_len - at : sizeof buf;
				size_t m = ctl_escape(&e, (const unsigned char *)kept + at, piece, esc);
				if (fwrite(esc, 1, m, stdout) != m)
					status = 2;
				at += piece;
			}
			size_t m = ctl_escape_finish(&e, esc);
			if ((m && fwrite(esc, 1, m, stdout) != m) || fflush(stdout) != 0)
				status = 2;
		}
		free(kept);
		return status;
	}
	size_t m = ctl_escape_finish(&e, esc);
	if ((m && fwrite(esc, 1, m, stdout) != m) || fflush(stdout) != 0)
		return 2;
	if (rc >= 0)
		return rc;
	if (total == 0) {
		fprintf(stderr, "sluice ctl: %s closed without an answer%s\n", path, sent ? "" : " (the command was not sent)");
		return 2;
	}
	bool error_answer = (head_len >= 6 && memcmp(head, "error:", 6) == 0) ||
	                    (head_len >= 11 && memcmp(head, "{\"ok\":false", 11) == 0);
	return error_answer ? 1 : 0;
}
