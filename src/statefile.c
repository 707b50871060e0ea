#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* The directory part of path, for fsync after the rename. */
static void dir_of(const char *path, char *out, size_t size)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(out, size, ".");
	else if (slash == path)
		snprintf(out, size, "/");
	else
		snprintf(out, size, "%.*s", (int)(slash - path), path);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
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

static char *render(const struct runtime *rt, size_t *len)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (!f)
		return NULL;
	fprintf(f, "# sluice state: changes made through the admin socket, re-applied at start.\n"
	           "# Written by sluice; edit only while it is stopped.\n");
	for (size_t i = 0; i < rt->num_pools; i++) {
		const struct runtime_pool *p = rt->pools[i];
		for (size_t j = 0; j < p->num_servers; j++) {
			const struct runtime_server *s = p->servers[j];
			if (atomic_load(&s->weight_set))
				fprintf(f, "weight %s %s %u\n", p->name, s->address, atomic_load(&s->weight));
			if (atomic_load(&s->drained))
				fprintf(f, "drain %s %s\n", p->name, s->address);
			if (atomic_load(&s->disabled))
				fprintf(f, "disable %s %s\n", p->name, s->address);
		}
	}
	for (size_t i = 0; i < rt->num_splits; i++) {
		const struct runtime_split *sp = rt->splits[i];
		if (atomic_load(&sp->weight_set))
			fprintf(f, "service-weight %s %s %u\n", sp->service, sp->pool, atomic_load(&sp->weight));
	}
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*len = size;
	return buf;
}

int statefile_save(const char *path, const struct runtime *rt, char *err, size_t err_size)
{
	size_t len = 0;
	char *text = render(rt, &len);
	if (!text) {
		snprintf(err, err_size, "out of memory");
		return -1;
	}
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, err_size, "path too long");
		free(text);
		return -1;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, err_size, "cannot create %s: %s", tmp, strerror(errno));
		free(text);
		return -1;
	}
	int rc = write_all(fd, text, len);
	free(text);
	if (rc != 0 || fsync(fd) != 0) {
		snprintf(err, err_size, "cannot write %s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (close(fd) != 0 || rename(tmp, path) != 0) {
		snprintf(err, err_size, "cannot replace %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	/* the rename is durable only once the directory entry is */
	char dir[4096];
	dir_of(path, dir, sizeof(dir));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		if (fsync(dfd) != 0)
			log_msg(LOG_WARN, "state file: fsync of its directory failed");
		close(dfd);
	}
	return 0;
}

static void skip(const char *path, unsigned line, const char *why)
{
	struct log_line l;
	log_begin(&l, LOG_WARN, "state file: line skipped");
	log_str(&l, "file", path);
	log_int(&l, "line", line);
	log_str(&l, "why", why);
	log_end(&l);
}

static bool parse_weight(const char *s, unsigned *out)
{
	char *end = NULL;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || !*s || *end || v > 1000 || *s == '-' || *s == '+')
		return false;
	*out = (unsigned)v;
	return true;
}

int statefile_apply(const char *path, struct runtime *rt)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		struct log_line l;
		log_begin(&l, LOG_ERROR, "state file: cannot read it; starting from the config alone");
		log_str(&l, "file", path);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
		return -1;
	}
	char buf[1024];
	unsigned lineno = 0;
	int applied = 0;
	while (fgets(buf, sizeof(buf), f)) {
		lineno++;
		size_t n = strlen(buf);
		if (n == sizeof(buf) - 1 && buf[n - 1] != '\n') {
			skip(path, lineno, "line too long");
			int c;
			while ((c = fgetc(f)) != EOF && c != '\n')
				;
			continue;
		}
		char *words[6];
		size_t nw = 0;
		char *save = NULL;
		for (char *w = strtok_r(buf, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save)) {
			if (nw == 6)
				break;
			words[nw++] = w;
		}
		if (nw == 0 || words[0][0] == '#')
			continue;
		bool server_cmd = strcmp(words[0], "weight") == 0 || strcmp(words[0], "drain") == 0 ||
		                  strcmp(words[0], "disable") == 0;
		if (server_cmd) {
			size_t want = strcmp(words[0], "weight") == 0 ? 4 : 3;
			unsigned weight = 0;
			if (nw != want || (want == 4 && !parse_weight(words[3], &weight))) {
				skip(path, lineno, "malformed");
				continue;
			}
			struct runtime_pool *p = runtime_find_pool(rt, words[1]);
			struct runtime_server *s = p ? runtime_find_server(p, words[2]) : NULL;
			if (!s) {
				skip(path, lineno, p ? "no such server in the config" : "no such pool in the config");
				continue;
			}
			if (want == 4)
				runtime_set_weight(s, weight);
			else if (strcmp(words[0], "drain") == 0)
				atomic_store(&s->drained, true);
			else
				atomic_store(&s->disabled, true);
			applied++;
		} else if (strcmp(words[0], "service-weight") == 0) {
			unsigned weight = 0;
			if (nw != 4 || !parse_weight(words[3], &weight)) {
				skip(path, lineno, "malformed");
				continue;
			}
			struct runtime_split *sp = runtime_find_split(rt, words[1], words[2]);
			if (!sp) {
				skip(path, lineno, "no such service and pool in the config");
				continue;
			}
			runtime_set_split_weight(sp, weight);
			applied++;
		} else {
			skip(path, lineno, "unknown change");
		}
	}
	bool read_error = ferror(f) != 0;
	fclose(f);
	if (read_error) {
		log_msg(LOG_ERROR, "state file: read error; some changes may not be applied");
		return -1;
	}
	struct log_line l;
	log_begin(&l, LOG_INFO, "state file applied");
	log_str(&l, "file", path);
	log_int(&l, "changes", applied);
	log_end(&l);
	return applied;
}
