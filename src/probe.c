/* probe.c - `sluice probe tcp`: see probe.h. */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conf.h"

#define PROBE_DEFAULT_TIMEOUT_MS 2000

static void probe_usage(FILE *out)
{
	fprintf(out, "usage: sluice probe tcp HOST:PORT [--timeout DURATION]\n"
	             "  exit 0 if a TCP connection to HOST:PORT opens within DURATION (default 2s), else 1\n");
}

static long long probe_now_ms(void)
{
	return (long long)(clock_mono_us() / 1000u);
}

/* Returns 0 when connected, else an errno value (ETIMEDOUT at the deadline). */
static int probe_connect(const struct sockaddr_storage *ss, socklen_t len, conf_msec timeout_ms)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	int err = 0;
	if (connect(fd, (const struct sockaddr *)ss, len) != 0) {
		err = errno;
		if (err == EINPROGRESS) {
			long long deadline = probe_now_ms() + (long long)timeout_ms;
			for (;;) {
				long long left = deadline - probe_now_ms();
				if (left <= 0) {
					err = ETIMEDOUT;
					break;
				}
				struct pollfd p = {.fd = fd, .events = POLLOUT};
				int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0) {
					err = errno;
					break;
				}
				if (n == 0)
					continue;
				socklen_t elen = sizeof err;
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
					err = errno;
				break;
			}
		}
	}
	close(fd);
	return err;
}

int probe_main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		probe_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "tcp") != 0) {
		fprintf(stderr, "sluice probe: unknown probe \"%s\" (only tcp exists)\n", argv[1]);
		probe_usage(stderr);
		return 2;
	}
	const char *target = NULL;
	conf_msec timeout_ms = PROBE_DEFAULT_TIMEOUT_MS;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			const char *t = argv[++i];
			if (!conf_parse_duration(t, &timeout_ms) || timeout_ms == 0) {
				fprintf(stderr, "sluice probe: --timeout: \"%s\" is not a duration above 0 (write e.g. \"2s\")\n",
				        t);
				return 2;
			}
		} else if (!target && argv[i][0] != '-') {
			target = argv[i];
		} else {
			fprintf(stderr, "sluice probe tcp: unexpected argument \"%s\"\n", argv[i]);
			probe_usage(stderr);
			return 2;
		}
	}
	if (!target) {
		fprintf(stderr, "sluice probe tcp: needs an address: sluice probe tcp HOST:PORT\n");
		return 2;
	}
	struct sockaddr_storage ss;
	socklen_t len = 0;
	char why[160] = "";
	if (!conf_parse_address_why(target, &ss, &len, why, sizeof why)) {
		fprintf(stderr, "sluice probe tcp: %s: %s\n", target, why[0] ? why : "not a HOST:PORT address");
		return 2;
	}
	int err = probe_connect(&ss, len, timeout_ms);
	if (err != 0) {
		fprintf(stderr, "sluice probe tcp: %s: %s\n", target,
		        err == ETIMEDOUT ? "no connection within the timeout" : strerror(err));
		return 1;
	}
	return 0;
}
