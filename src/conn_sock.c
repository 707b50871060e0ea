#include "conn_sock.h"

#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

/* One readv's reservation after the first (io.c says why not one large one). */
#define CONN_SOCK_READ_STEP (16 * 1024 - 128)

struct evbuffer *conn_sock_buf_get(struct conn_sock_pool *p)
{
	if (p->n > 0)
		return p->free[--p->n];
	return evbuffer_new();
}

void conn_sock_buf_put(struct conn_sock_pool *p, struct evbuffer **b)
{
	if (!*b || evbuffer_get_length(*b) != 0)
		return;
	if (p->n < CONN_SOCK_POOL_MAX)
		p->free[p->n++] = *b;
	else
		evbuffer_free(*b);
	*b = NULL;
}

void conn_sock_pool_free(struct conn_sock_pool *p)
{
	while (p->n > 0)
		evbuffer_free(p->free[--p->n]);
}

ssize_t conn_sock_read(int fd, struct evbuffer *in, size_t first, size_t limit)
{
	size_t have = evbuffer_get_length(in), got_total = 0;
	size_t step = first;
	if (have >= limit)
		return -2; /* the caller bounds its input: nothing is read past it */
	while (have < limit) {
		size_t want = limit - have < step ? limit - have : step;
		struct evbuffer_iovec vec[2];
		int nvec = evbuffer_reserve_space(in, (ev_ssize_t)want, vec, 2);
		if (nvec <= 0) {
			errno = ENOMEM;
			return got_total > 0 ? (ssize_t)got_total : -1;
		}
		/* the reservation may offer more than asked: read no more than asked */
		struct iovec iov[2];
		size_t room = 0;
		for (int i = 0; i < nvec; i++) {
			size_t len = vec[i].iov_len < want - room ? vec[i].iov_len : want - room;
			iov[i].iov_base = vec[i].iov_base;
			iov[i].iov_len = len;
			room += len;
		}
		ssize_t n = nvec == 1 ? read(fd, iov[0].iov_base, iov[0].iov_len) : readv(fd, iov, nvec);
		if (n <= 0) {
			int err = errno;
			evbuffer_commit_space(in, vec, 0);
			if (got_total > 0)
				return (ssize_t)got_total; /* EOF or the error shows on the next read */
			if (n == 0)
				return 0;
			if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
				return -2;
			errno = err;
			return -1;
		}
		size_t got = (size_t)n;
		for (int i = 0; i < nvec; i++) {
			size_t take = got < vec[i].iov_len ? got : vec[i].iov_len;
			vec[i].iov_len = take;
			got -= take;
		}
		evbuffer_commit_space(in, vec, nvec);
		have += (size_t)n;
		got_total += (size_t)n;
		if ((size_t)n < room)
			break; /* the socket is empty for now */
		step = CONN_SOCK_READ_STEP;
	}
	return (ssize_t)got_total;
}

ssize_t conn_sock_write(int fd, struct evbuffer *out)
{
	while (evbuffer_get_length(out) > 0) {
		int n = evbuffer_write(out, fd);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				break;
			return -1;
		}
		if (n == 0)
			break;
	}
	return (ssize_t)evbuffer_get_length(out);
}
