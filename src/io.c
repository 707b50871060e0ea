#include "io.h"

#include <errno.h>

#include <event2/buffer.h>

#include "conn_sock.h"

static void io_unqueue(struct io_flusher *f)
{
	if (!f->scheduled)
		return;
	if (f->prev)
		f->prev->next = f->next;
	else
		f->queue->head = f->next;
	if (f->next)
		f->next->prev = f->prev;
	f->prev = f->next = NULL;
	f->scheduled = false;
}

bool io_flusher_write(struct io_flusher *f)
{
	struct bufferevent *bev = f->bev;
	struct evbuffer *out = bufferevent_get_output(bev);
	if (evbuffer_get_length(out) == 0)
		return true;
	if (bufferevent_get_enabled(bev) & EV_WRITE)
		return false; /* the write event has it */
	evutil_socket_t sock = bufferevent_getfd(bev);
	/* a socket bufferevent keeps the start of its output frozen (only its
	 * own write callback may drain it); thaw it just for our write */
	evbuffer_unfreeze(out, 1);
	while (evbuffer_get_length(out) > 0) {
		int n = evbuffer_write(out, sock);
		if (n <= 0)
			break; /* would block, or an error the write event will report */
	}
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) > 0) {
		/* the socket is full (or broken): the bufferevent takes over, with its
		 * write timeout and its error reporting */
		bufferevent_enable(bev, EV_WRITE);
		return false;
	}
	return true;
}

static void io_flush_one(struct io_flusher *f)
{
	struct bufferevent *bev = f->bev;
	struct evbuffer *out = bufferevent_get_output(bev);
	if (!(bufferevent_get_enabled(bev) & EV_WRITE) && !io_flusher_write(f))
		return;
	size_t low = 0;
	if (bufferevent_getwatermark(bev, EV_WRITE, &low, NULL) != 0 || evbuffer_get_length(out) > low)
		return;
	bufferevent_data_cb writecb = NULL;
	void *cbarg = NULL;
	bufferevent_getcb(bev, NULL, &writecb, NULL, &cbarg);
	if (writecb)
		writecb(bev, cbarg);
}

static void io_flush_queue_run(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct io_flush_queue *q = arg;
	/* a write callback may free other connections or schedule new flushes:
	 * always take the current head afresh */
	while (q->head) {
		struct io_flusher *f = q->head;
		io_unqueue(f);
		if (f->flush_cb)
			f->flush_cb(f, f->flush_arg);
		else
			io_flush_one(f);
	}
}

static void io_schedule(struct io_flusher *f)
{
	if (f->scheduled || (!f->flush_cb && (bufferevent_get_enabled(f->bev) & EV_WRITE)))
		return;
	struct io_flush_queue *q = f->queue;
	bool was_empty = q->head == NULL;
	f->scheduled = true;
	f->prev = NULL;
	f->next = q->head;
	if (q->head)
		q->head->prev = f;
	q->head = f;
	if (was_empty)
		event_active(q->ev, EV_TIMEOUT, 1);
}

int io_flush_queue_init(struct io_flush_queue *q, struct event_base *base)
{
	q->head = NULL;
	q->ev = event_new(base, -1, 0, io_flush_queue_run, q);
	return q->ev ? 0 : -1;
}

void io_flush_queue_free(struct io_flush_queue *q)
{
	while (q->head)
		io_unqueue(q->head);
	if (q->ev)
		event_free(q->ev);
	q->ev = NULL;
}

static void io_output_changed(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	(void)buf;
	if (info->n_added > 0)
		io_schedule(arg);
}

static void io_flusher_reset(struct io_flusher *f, struct io_flush_queue *q, struct bufferevent *bev)
{
	f->bev = bev;
	f->queue = q;
	f->scheduled = false;
	f->prev = f->next = NULL;
	f->flush_cb = NULL;
	f->flush_arg = NULL;
	f->cb = NULL;
	f->on = true;
}

static int io_flusher_setup(struct io_flusher *f, struct io_flush_queue *q, struct bufferevent *bev, bool watch)
{
	io_flusher_reset(f, q, bev);
	if (watch && !(f->cb = evbuffer_add_cb(bufferevent_get_output(bev), io_output_changed, f))) {
		io_flusher_free(f);
		return -1;
	}
	if (bufferevent_disable(bev, EV_WRITE) != 0) {
		io_flusher_free(f);
		return -1;
	}
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		io_schedule(f);
	return 0;
}

int io_flusher_init(struct io_flusher *f, struct io_flush_queue *q, struct bufferevent *bev)
{
	return io_flusher_setup(f, q, bev, true);
}

int io_flusher_init_explicit(struct io_flusher *f, struct io_flush_queue *q, struct bufferevent *bev)
{
	return io_flusher_setup(f, q, bev, false);
}

void io_flusher_init_cb(struct io_flusher *f, struct io_flush_queue *q, io_flush_cb cb, void *arg)
{
	io_flusher_reset(f, q, NULL);
	io_flusher_set_cb(f, cb, arg);
}

void io_flusher_free(struct io_flusher *f)
{
	if (f->cb)
		evbuffer_remove_cb_entry(bufferevent_get_output(f->bev), f->cb);
	if (f->queue)
		io_unqueue(f);
	f->cb = NULL;
	f->queue = NULL;
	f->on = false;
}

bool io_flusher_active(const struct io_flusher *f)
{
	return f->on;
}

void io_flusher_set_cb(struct io_flusher *f, io_flush_cb cb, void *arg)
{
	f->flush_cb = cb;
	f->flush_arg = arg;
}

void io_flusher_schedule(struct io_flusher *f)
{
	if (f->on)
		io_schedule(f);
}

void io_flusher_drained(struct io_flusher *f)
{
	if (f->on && f->bev && (bufferevent_get_enabled(f->bev) & EV_WRITE) &&
	    evbuffer_get_length(bufferevent_get_output(f->bev)) == 0)
		bufferevent_disable(f->bev, EV_WRITE);
}

/* One readv's reservation. evbuffer rounds a new chain (with its header) up to
 * a power of two, and glibc serves 128 KiB or more by mmap: one 256 KiB
 * reservation per response made every stream's body a 260 KiB mapping, and
 * once glibc raised its thresholds to match, each burst grew and trimmed the
 * worker's heap (mprotect, MADV_DONTNEED, then a page fault per page touched
 * again). 16 KiB steps keep chains near what the socket really holds. */
#define IO_READ_STEP (16 * 1024 - 128)

void io_read_more(struct bufferevent *bev, size_t limit)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	evutil_socket_t sock = bufferevent_getfd(bev);
	if (sock < 0)
		return;
	/* a socket bufferevent freezes the end of its input (only it may add):
	 * thaw it for these reads. Nothing (EAGAIN), EOF or an error: the read
	 * event will say which. */
	evbuffer_unfreeze(in, 0);
	(void)conn_sock_read(sock, in, IO_READ_STEP, limit);
	evbuffer_freeze(in, 0);
}
