#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "statefile_parse.h"

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

char *statefile_render(const struct runtime *rt, size_t *len)
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
		if (sp->saved_set)
			fprintf(f, "service-saved-weight %s %s %u\n", sp->service, sp->pool, sp->saved_weight);
	}
	for (size_t i = 0; i < rt->num_rollouts; i++)
		fprintf(f, "rollout %s %s\n", rt->rollouts[i].service, rt->rollouts[i].line);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*len = size;
	return buf;
}

static const char *file_kind(mode_t m)
{
	return S_ISLNK(m)   ? "a symbolic link"
	       : S_ISDIR(m) ? "a directory"
	       : S_ISFIFO(m) ? "a FIFO"
	       : S_ISCHR(m) ? "a character device"
	       : S_ISBLK(m) ? "a block device"
	       : S_ISSOCK(m) ? "a socket"
	                     : "not a regular file";
}

/* The directory of path, opened, and the last component's offset in path. */
static int open_dir_of(const char *path, const char **base)
{
	const char *slash = strrchr(path, '/');
	*base = slash ? slash + 1 : path;
	char dir[4096];
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else if ((size_t)(slash - path) < sizeof(dir))
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	else {
		errno = ENAMETOOLONG;
		return -1;
	}
	return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

bool statefile_writable(const struct statefile *sf)
{
	return sf->status == STATEFILE_READ || (sf->status == STATEFILE_UNREADABLE && sf->forced);
}

int statefile_save(struct statefile *sf, const struct runtime *rt, bool force, char *err, size_t err_size)
{
	if (sf->status == STATEFILE_NOT_REGULAR) {
		snprintf(err, err_size, "%s; sluice never replaces it (remove it, or set state_file to a regular file's path)",
		         sf->problem);
		return -1;
	}
	if (sf->status == STATEFILE_UNREADABLE && !sf->forced && !force) {
		snprintf(err, err_size,
		         "%s at start, so it is not overwritten (the changes it holds are kept): fix it and restart, or "
		         "run `sluice ctl save-state --force` to replace it with the running state",
		         sf->problem);
		return -1;
	}
	const char *base = NULL;
	int dfd = open_dir_of(sf->path, &base);
	if (dfd < 0) {
		snprintf(err, err_size, "cannot open the directory of %s: %s", sf->path, strerror(errno));
		return -1;
	}
	/* whatever appeared at the path since start must be a regular file too */
	struct stat st;
	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode)) {
		snprintf(err, err_size, "%s is %s, not a regular file; sluice does not replace it", sf->path,
		         file_kind(st.st_mode));
		close(dfd);
		return -1;
	}
	size_t len = 0;
	char *text = statefile_render(rt, &len);
	if (!text) {
		snprintf(err, err_size, "out of memory rendering %s", sf->path);
		close(dfd);
		return -1;
	}
	char tmp[300];
	if (snprintf(tmp, sizeof(tmp), ".%.255s.tmp.%ld", base, (long)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, err_size, "file name too long: %s", sf->path);
		free(text);
		close(dfd);
		return -1;
	}
	/* a temporary file left by a crash of a process with our pid is ours to remove */
	int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST && unlinkat(dfd, tmp, 0) == 0)
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, err_size, "cannot create a temporary file beside %s: %s", sf->path, strerror(errno));
		free(text);
		close(dfd);
		return -1;
	}
	int rc = write_all(fd, text, len);
	free(text);
	if (rc != 0 || fsync(fd) != 0) {
		snprintf(err, err_size, "cannot write a temporary file beside %s: %s", sf->path, strerror(errno));
		close(fd);
		unlinkat(dfd, tmp, 0);
		close(dfd);
		return -1;
	}
	if (close(fd) != 0 || renameat(dfd, tmp, dfd, base) != 0) {
		snprintf(err, err_size, "cannot replace %s: %s", sf->path, strerror(errno));
		unlinkat(dfd, tmp, 0);
		close(dfd);
		return -1;
	}
	/* the rename is durable only once the directory entry is */
	if (fsync(dfd) != 0) {
		struct log_line l;
		log_begin(&l, LOG_WARN, "state file: fsync of its directory failed");
		log_str(&l, "file", sf->path);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
	}
	close(dfd);
	if (sf->status == STATEFILE_UNREADABLE && !sf->forced) {
		sf->forced = true;
		struct log_line l;
		log_begin(&l, LOG_WARN, "state file replaced by save-state --force: the running state is saved again");
		log_str(&l, "file", sf->path);
		log_str(&l, "was", sf->problem);
		log_end(&l);
	}
	return 0;
}

/* ---- reading at start ---- */

struct statefile_reading {
	struct statefile *sf;
	struct runtime *rt;
	unsigned warned;
};

static void skip_line(unsigned lineno, const char *why, void *arg)
{
	struct statefile_reading *r = arg;
	r->sf->skipped++;
	if (r->warned++ >= STATEFILE_MAX_WARNINGS)
		return;
	struct log_line l;
	log_begin(&l, LOG_WARN, "state file: line skipped");
	log_str(&l, "file", r->sf->path);
	log_int(&l, "line", lineno);
	log_str(&l, "why", why);
	log_end(&l);
}

static void apply_entry(const struct statefile_entry *e, unsigned lineno, void *arg)
{
	struct statefile_reading *r = arg;
	if (e->kind == STATEFILE_ROLLOUT) {
		/* checked against the config by the rollout controller */
		if (runtime_set_rollout_line(r->rt, e->name, e->target) != 0)
			skip_line(lineno, "out of memory", r);
		else
			r->sf->applied++;
		return;
	}
	if (e->kind == STATEFILE_SERVICE_WEIGHT || e->kind == STATEFILE_SERVICE_SAVED) {
		struct runtime_split *sp = runtime_find_split(r->rt, e->name, e->target);
		if (!sp) {
			skip_line(lineno, "no such service and pool in the config", r);
			return;
		}
		if (e->kind == STATEFILE_SERVICE_SAVED) {
			sp->saved_weight = e->weight;
			sp->saved_set = true;
		} else {
			runtime_set_split_weight(sp, e->weight);
		}
		r->sf->applied++;
		return;
	}
	struct runtime_pool *p = runtime_find_pool(r->rt, e->name);
	struct runtime_server *s = p ? runtime_find_server(p, e->target) : NULL;
	if (!s) {
		skip_line(lineno, p ? "no such server in the config" : "no such pool in the config", r);
		return;
	}
	if (e->kind == STATEFILE_WEIGHT)
		runtime_set_weight(s, e->weight);
	else if (e->kind == STATEFILE_DRAIN)
		atomic_store(&s->drained, true);
	else
		atomic_store(&s->disabled, true);
	r->sf->applied++;
}

static void refuse_at_start(struct statefile *sf, enum statefile_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse_at_start(struct statefile *sf, enum statefile_status status, const char *fmt, ...)
{
	sf->status = status;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sf->problem, sizeof(sf->problem), fmt, ap);
	va_end(ap);
	struct log_line l;
	log_begin(&l, LOG_ERROR,
	          status == STATEFILE_NOT_REGULAR
	              ? "state file: not a regular file; not read, and never replaced; starting from the config alone"
	              : "state file: cannot read it; starting from the config alone, and not overwriting it until "
	                "`sluice ctl save-state --force`");
	log_str(&l, "file", sf->path);
	log_str(&l, "error", sf->problem);
	log_end(&l);
}

/* Read the file whole into a buffer (at most STATEFILE_MAX_BYTES), or say why not. */
static char *read_whole(struct statefile *sf, size_t *len)
{
	struct stat st;
	if (lstat(sf->path, &st) != 0) {
		if (errno != ENOENT)
			refuse_at_start(sf, STATEFILE_UNREADABLE, "%s: cannot read it: %s", sf->path, strerror(errno));
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		refuse_at_start(sf, STATEFILE_NOT_REGULAR, "%s is %s, not a regular file", sf->path, file_kind(st.st_mode));
		return NULL;
	}
	/* O_NONBLOCK and O_NOFOLLOW: if it became a FIFO or a link since lstat, nothing waits or follows */
	int fd = open(sf->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		refuse_at_start(sf, errno == ELOOP ? STATEFILE_NOT_REGULAR : STATEFILE_UNREADABLE,
		                "%s: cannot open it: %s", sf->path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0) {
		refuse_at_start(sf, STATEFILE_UNREADABLE, "%s: cannot read it: %s", sf->path, strerror(errno));
		close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		refuse_at_start(sf, STATEFILE_NOT_REGULAR, "%s is %s, not a regular file", sf->path, file_kind(st.st_mode));
		close(fd);
		return NULL;
	}
	if ((unsigned long long)st.st_size > STATEFILE_MAX_BYTES) {
		refuse_at_start(sf, STATEFILE_UNREADABLE, "%s is larger than 16 MiB (a state file is a few KiB)", sf->path);
		close(fd);
		return NULL;
	}
	char *buf = malloc(STATEFILE_MAX_BYTES + 1);
	size_t n = 0;
	while (buf && n <= STATEFILE_MAX_BYTES) {
		ssize_t r = read(fd, buf + n, STATEFILE_MAX_BYTES + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			refuse_at_start(sf, STATEFILE_UNREADABLE, "%s: read error: %s", sf->path, strerror(errno));
			free(buf);
			buf = NULL;
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (!buf) {
		if (sf->status == STATEFILE_READ)
			refuse_at_start(sf, STATEFILE_UNREADABLE, "%s: cannot read it: out of memory", sf->path);
		return NULL;
	}
	if (n > STATEFILE_MAX_BYTES) {
		refuse_at_start(sf, STATEFILE_UNREADABLE, "%s grew past 16 MiB while being read", sf->path);
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

struct statefile *statefile_open(const char *path, struct runtime *rt)
{
	struct statefile *sf = calloc(1, sizeof(*sf));
	if (sf)
		sf->path = strdup(path);
	if (!sf || !sf->path) {
		log_msg(LOG_ERROR, "state file: out of memory");
		free(sf);
		return NULL;
	}
	sf->status = STATEFILE_READ;
	size_t len = 0;
	char *buf = read_whole(sf, &len);
	if (!buf)
		return sf;
	struct statefile_reading r = {.sf = sf, .rt = rt};
	struct statefile_entry *scratch = malloc(sizeof(*scratch));
	if (!scratch) {
		refuse_at_start(sf, STATEFILE_UNREADABLE, "%s: cannot read it: out of memory", sf->path);
		free(buf);
		return sf;
	}
	statefile_parse(buf, len, scratch, apply_entry, skip_line, &r);
	free(scratch);
	free(buf);
	struct log_line l;
	if (r.warned > STATEFILE_MAX_WARNINGS) {
		log_begin(&l, LOG_WARN, "state file: more lines skipped than logged");
		log_str(&l, "file", path);
		log_int(&l, "not_logged", (long long)(r.warned - STATEFILE_MAX_WARNINGS));
		log_end(&l);
	}
	log_begin(&l, LOG_INFO, "state file applied");
	log_str(&l, "file", path);
	log_int(&l, "changes", sf->applied);
	log_int(&l, "skipped", sf->skipped);
	log_end(&l);
	return sf;
}

void statefile_free(struct statefile *sf)
{
	if (!sf)
		return;
	free(sf->path);
	free(sf);
}
