#include "ctl.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* An admin answer that has not come in this long is a hung gateway. */
#define CTL_TIMEOUT_MS 10000
#define CTL_MAX_LINE 4096

static void ctl_usage(FILE *out)
{
	fprintf(out, "usage: sluice ctl [-s SOCKET] [--json] COMMAND...\n"
	             "  SOCKET defaults to $SLUICE_ADMIN_SOCKET, else " CTL_DEFAULT_SOCKET "\n"
	             "  sluice ctl help   lists the commands\n");
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		/* a refused peer is closed at once: EPIPE, not a signal, and its answer is still read */
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int ctl_main(int argc, char **argv)
{
	const char *path = getenv("SLUICE_ADMIN_SOCKET");
	if (!path || !*path)
		path = CTL_DEFAULT_SOCKET;
	bool json = false;
	int i = 1;
	for (; i < argc; i++) {
		if ((strcmp(argv[i], "-s") == 0 || strcmp(argv[i], "--socket") == 0) && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			ctl_usage(stdout);
			return 0;
		} else
			break;
	}
	if (i >= argc) {
		ctl_usage(stderr);
		return 2;
	}
	char line[CTL_MAX_LINE + 2];
	size_t len = 0;
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
		fprintf(stderr, "sluice ctl: socket path too long: %s\n", path);
		return 2;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "sluice ctl: socket: %s\n", strerror(errno));
		return 2;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		int err = errno;
		fprintf(stderr, "sluice ctl: cannot connect to %s: %s%s\n", path, strerror(err),
		        err == ENOENT || err == ECONNREFUSED ? " (is sluice running with admin.socket set? use -s SOCKET)"
		        : err == EACCES                      ? " (run as the user sluice runs as)"
		                                             : "");
		close(fd);
		return 2;
	}
	/* a refused peer is answered and closed at once: a failed write then is not the story */
	bool sent = write_all(fd, line, len) == 0;
	if (sent && shutdown(fd, SHUT_WR) != 0)
		sent = false;
	char buf[8192];
	size_t total = 0;
	bool first_chunk = true, error_answer = false;
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int pr = poll(&pfd, 1, CTL_TIMEOUT_MS);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			fprintf(stderr, "sluice ctl: no answer from %s within %d s\n", path, CTL_TIMEOUT_MS / 1000);
			close(fd);
			return 2;
		}
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		/* ECONNRESET: the gateway closed with our command unread (a refusal) */
		if (n <= 0)
			break;
		if (first_chunk) {
			error_answer = (n >= 6 && memcmp(buf, "error:", 6) == 0) || (n >= 11 && memcmp(buf, "{\"ok\":false", 11) == 0);
			first_chunk = false;
		}
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) {
			close(fd);
			return 2;
		}
		total += (size_t)n;
	}
	close(fd);
	if (fflush(stdout) != 0)
		return 2;
	if (total == 0) {
		fprintf(stderr, "sluice ctl: %s closed without an answer%s\n", path, sent ? "" : " (the command was not sent)");
		return 2;
	}
	return error_answer ? 1 : 0;
}
