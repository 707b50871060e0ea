#include "io.h"


#include <event2/buffer.h>

static void io_flush_now(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct io_flusher *f = arg;
	struct bufferevent *bev = f->bev;
	struct evbuffer *out = bufferevent_get_output(bev);
	f->scheduled = false;
	if (!(bufferevent_get_enabled(bev) & EV_WRITE)) {
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
			return;
		}
	}
	size_t low = 0;
	if (bufferevent_getwatermark(bev, EV_WRITE, &low, NULL) == 0 && evbuffer_get_length(out) <= low && f->drained)
		f->drained(bev, f->arg);
}

static void io_output_changed(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	(void)buf;
	struct io_flusher *f = arg;
	if (info->n_added == 0 || f->scheduled || (bufferevent_get_enabled(f->bev) & EV_WRITE))
		return;
	f->scheduled = true;
	event_active(f->ev, EV_TIMEOUT, 1);
}

int io_flusher_init(struct io_flusher *f, struct event_base *base, struct bufferevent *bev,
                    void (*drained)(struct bufferevent *, void *), void *arg)
{
	f->bev = bev;
	f->drained = drained;
	f->arg = arg;
	f->scheduled = false;
	f->ev = event_new(base, -1, 0, io_flush_now, f);
	if (!f->ev)
		return -1;
	f->cb = evbuffer_add_cb(bufferevent_get_output(bev), io_output_changed, f);
	if (!f->cb || bufferevent_disable(bev, EV_WRITE) != 0) {
		if (f->cb)
			evbuffer_remove_cb_entry(bufferevent_get_output(bev), f->cb);
		event_free(f->ev);
		f->ev = NULL;
		f->cb = NULL;
		return -1;
	}
	return 0;
}

void io_flusher_free(struct io_flusher *f)
{
	if (f->cb)
		evbuffer_remove_cb_entry(bufferevent_get_output(f->bev), f->cb);
	if (f->ev)
		event_free(f->ev);
	f->cb = NULL;
	f->ev = NULL;
}

void io_flusher_drained(struct io_flusher *f)
{
	if (f->ev && evbuffer_get_length(bufferevent_get_output(f->bev)) == 0)
		bufferevent_disable(f->bev, EV_WRITE);
}
