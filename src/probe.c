/* probe.c - `sluice probe tcp|http`: see probe.h. */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conf.h"

#define PROBE_DEFAULT_TIMEOUT_MS 2000
/* enough for any status line and then some; the rest of the answer is not read */
#define PROBE_HTTP_READ_MAX 1024
/* a bearer token longer than this is not a token but a wrong file */
#define PROBE_TOKEN_MAX 4096

static void probe_usage(FILE *out)
{
	fprintf(out, "usage: sluice probe tcp HOST:PORT [--timeout DURATION]\n"
	             "       sluice probe http http://HOST:PORT/PATH [--timeout DURATION] [--token-file FILE]\n"
	             "  tcp:  exit 0 if a TCP connection to HOST:PORT opens within DURATION (default 2s), else 1\n"
	             "  http: exit 0 if GET PATH answers 2xx within DURATION (e.g. the admin listener's /readyz), else 1;\n"
	             "        --token-file sends its content as \"Authorization: Bearer\" (admin.http_token_file)\n");
}

static long long probe_now_ms(void)
{
	return (long long)(clock_mono_us() / 1000u);
}

/* Waits for `events` on fd until deadline_ms. 0 ready, else an errno value
 * (ETIMEDOUT at the deadline). */
static int probe_wait(int fd, short events, long long deadline_ms)
{
	for (;;) {
		long long left = deadline_ms - probe_now_ms();
		if (left <= 0)
			return ETIMEDOUT;
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		if (n > 0)
			return 0;
	}
}

/* Connects a non-blocking socket by deadline_ms. Returns the fd, or -1 with
 * *err set (ETIMEDOUT at the deadline). */
static int probe_connect(const struct sockaddr_storage *ss, socklen_t len, long long deadline_ms, int *err)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	*err = 0;
	if (connect(fd, (const struct sockaddr *)ss, len) != 0) {
		*err = errno;
		if (*err == EINPROGRESS) {
			*err = probe_wait(fd, POLLOUT, deadline_ms);
			if (*err == 0) {
				socklen_t elen = sizeof *err;
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &elen) != 0)
					*err = errno;
			}
		}
	}
	if (*err != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static const char *probe_errtext(int err)
{
	return err == ETIMEDOUT ? "no answer within the timeout" : strerror(err);
}

/* "http://HOST[:PORT][/PATH]" -> address text "HOST:PORT" and path ("/" when
 * absent). False with *why set when it is not such a URL. */
static bool probe_split_url(const char *url, char *addr, size_t addr_cap, const char **path, const char **why)
{
	static const char scheme[] = "http://";
	if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
		*why = strncmp(url, "https://", 8) == 0
		               ? "https is not supported: probe the plain admin listener (admin.http), e.g. "
		                 "http://127.0.0.1:9901/readyz"
		               : "not an http:// URL (write e.g. http://127.0.0.1:9901/readyz)";
		return false;
	}
	const char *host = url + sizeof scheme - 1;
	const char *slash = strchr(host, '/');
	size_t host_len = slash ? (size_t)(slash - host) : strlen(host);
	*path = slash ? slash : "/";
	if (host_len == 0) {
		*why = "the URL has no host (write e.g. http://127.0.0.1:9901/readyz)";
		return false;
	}
	for (const char *p = *path; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f) {
			*why = "the path holds a space or a control character";
			return false;
		}
	/* a port is there when the text after the last ':' follows a ']' or holds the only ':' */
	const char *colon = memrchr(host, ':', host_len);
	const char *bracket = memrchr(host, ']', host_len);
	bool has_port = colon && (!bracket || colon > bracket);
	int n = snprintf(addr, addr_cap, "%.*s%s", (int)host_len, host, has_port ? "" : ":80");
	if (n < 0 || (size_t)n >= addr_cap) {
		*why = "the host is too long";
		return false;
	}
	return true;
}

/* Reads the token file into buf (trailing newlines cut). False with a message printed. */
static bool probe_read_token(const char *file, char *buf, size_t cap, size_t *len)
{
	FILE *f = fopen(file, "rb");
	if (!f) {
		fprintf(stderr, "sluice probe http: --token-file %s: %s\n", file, strerror(errno));
		return false;
	}
	size_t n = fread(buf, 1, cap, f);
	bool err = ferror(f) != 0;
	fclose(f);
	if (err || n == cap) {
		fprintf(stderr, "sluice probe http: --token-file %s: %s\n", file,
		        err ? "could not be read" : "is longer than a token can be (4 KiB)");
		return false;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)buf[i] < ' ' || buf[i] == 0x7f) {
			fprintf(stderr, "sluice probe http: --token-file %s: the token holds a control character\n", file);
			return false;
		}
	if (n == 0) {
		fprintf(stderr, "sluice probe http: --token-file %s: the file is empty\n", file);
		return false;
	}
	*len = n;
	return true;
}

/* Sends all of buf by the deadline. 0 or an errno value. */
static int probe_send_all(int fd, const char *buf, size_t len, long long deadline_ms)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return errno;
		int err = probe_wait(fd, POLLOUT, deadline_ms);
		if (err)
			return err;
	}
	return 0;
}

/* Reads until the status line is complete (or EOF / the cap). Returns the
 * bytes read, or -1 with *err set. */
static ssize_t probe_read_status(int fd, char *buf, size_t cap, long long deadline_ms, int *err)
{
	size_t got = 0;
	while (got < cap - 1) {
		ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
		if (n > 0) {
			got += (size_t)n;
			buf[got] = '\0';
			if (memchr(buf, '\n', got))
				break;
			continue;
		}
		if (n == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			*err = errno;
			return -1;
		}
		*err = probe_wait(fd, POLLIN, deadline_ms);
		if (*err)
			return -1;
	}
	buf[got] = '\0';
	return (ssize_t)got;
}

struct probe_args {
	const char *target;
	const char *token_file;
	conf_msec timeout_ms;
};

/* argv[2..]: the target and options. 0 or the usage-error exit status. */
static int probe_parse_args(int argc, char **argv, struct probe_args *a)
{
	const char *kind = argv[1];
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			const char *t = argv[++i];
			if (!conf_parse_duration(t, &a->timeout_ms) || a->timeout_ms == 0) {
				fprintf(stderr, "sluice probe: --timeout: \"%s\" is not a duration above 0 (write e.g. \"2s\")\n",
				        t);
				return 2;
			}
		} else if (strcmp(kind, "http") == 0 && strcmp(argv[i], "--token-file") == 0 && i + 1 < argc) {
			a->token_file = argv[++i];
		} else if (!a->target && argv[i][0] != '-') {
			a->target = argv[i];
		} else {
			fprintf(stderr, "sluice probe %s: unexpected argument \"%s\"\n", kind, argv[i]);
			probe_usage(stderr);
			return 2;
		}
	}
	if (!a->target) {
		if (strcmp(kind, "tcp") == 0)
			fprintf(stderr, "sluice probe tcp: needs an address: sluice probe tcp HOST:PORT\n");
		else
			fprintf(stderr, "sluice probe http: needs a URL: sluice probe http http://127.0.0.1:9901/readyz\n");
		return 2;
	}
	return 0;
}

static int probe_resolve(const char *kind, const char *label, const char *addr, struct sockaddr_storage *ss,
                         socklen_t *len)
{
	char why[160] = "";
	if (!conf_parse_address_why(addr, ss, len, why, sizeof why)) {
		fprintf(stderr, "sluice probe %s: %s: %s\n", kind, label, why[0] ? why : "not a HOST:PORT address");
		return 2;
	}
	return 0;
}

static int probe_tcp(const struct probe_args *a)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	int rc = probe_resolve("tcp", a->target, a->target, &ss, &len);
	if (rc)
		return rc;
	int err = 0;
	int fd = probe_connect(&ss, len, probe_now_ms() + (long long)a->timeout_ms, &err);
	if (fd < 0) {
		fprintf(stderr, "sluice probe tcp: %s: %s\n", a->target,
		        err == ETIMEDOUT ? "no connection within the timeout" : strerror(err));
		return 1;
	}
	close(fd);
	return 0;
}

static int probe_http(const struct probe_args *a)
{
	char addr[300];
	const char *path = NULL, *why = NULL;
	if (!probe_split_url(a->target, addr, sizeof addr, &path, &why)) {
		fprintf(stderr, "sluice probe http: %s: %s\n", a->target, why);
		return 2;
	}
	char token[PROBE_TOKEN_MAX];
	size_t token_len = 0;
	if (a->token_file && !probe_read_token(a->token_file, token, sizeof token, &token_len))
		return 2;
	struct sockaddr_storage ss;
	socklen_t len = 0;
	int rc = probe_resolve("http", a->target, addr, &ss, &len);
	if (rc)
		return rc;
	long long deadline = probe_now_ms() + (long long)a->timeout_ms;
	int err = 0;
	int fd = probe_connect(&ss, len, deadline, &err);
	if (fd < 0) {
		fprintf(stderr, "sluice probe http: %s: %s\n", a->target,
		        err == ETIMEDOUT ? "no connection within the timeout" : strerror(err));
		return 1;
	}
	char req[PROBE_TOKEN_MAX + 1400];
	int n = snprintf(req, sizeof req,
	                 "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sluice-probe\r\n%s%.*s%sConnection: close\r\n\r\n",
	                 path, addr, token_len ? "Authorization: Bearer " : "", (int)token_len, token,
	                 token_len ? "\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof req) {
		close(fd);
		fprintf(stderr, "sluice probe http: %s: the URL is too long\n", a->target);
		return 2;
	}
	char answer[PROBE_HTTP_READ_MAX];
	ssize_t got = -1;
	err = probe_send_all(fd, req, (size_t)n, deadline);
	if (!err)
		got = probe_read_status(fd, answer, sizeof answer, deadline, &err);
	close(fd);
	if (got < 0) {
		fprintf(stderr, "sluice probe http: %s: %s\n", a->target, probe_errtext(err));
		return 1;
	}
	int status = 0;
	char *eol = strpbrk(answer, "\r\n");
	if (eol)
		*eol = '\0';
	if (sscanf(answer, "HTTP/1.%*1[01] %3d", &status) != 1 || status < 100 || status > 599) {
		fprintf(stderr, "sluice probe http: %s: not an HTTP answer%s\n", a->target,
		        got == 0 ? " (the connection closed without one)" : "");
		return 1;
	}
	if (status < 200 || status > 299) {
		/* the status line tells why: "503 ..." from /readyz says "not ready: draining" in its body */
		fprintf(stderr, "sluice probe http: %s: answered %d\n", a->target, status);
		return 1;
	}
	return 0;
}

int probe_main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		probe_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	bool tcp = strcmp(argv[1], "tcp") == 0, http = strcmp(argv[1], "http") == 0;
	if (!tcp && !http) {
		fprintf(stderr, "sluice probe: unknown probe \"%s\" (tcp or http)\n", argv[1]);
		probe_usage(stderr);
		return 2;
	}
	struct probe_args a = {.timeout_ms = PROBE_DEFAULT_TIMEOUT_MS};
	int rc = probe_parse_args(argc, argv, &a);
	if (rc)
		return rc;
	return tcp ? probe_tcp(&a) : probe_http(&a);
}
