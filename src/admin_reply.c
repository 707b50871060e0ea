#include "admin_reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "json_str.h"

void admin_reply_json_str(struct evbuffer *out, const char *s)
{
	json_str_add_quoted(out, s, strlen(s));
}

/* Text answers carry names a client typed (an unknown pool, say): control
 * bytes, and every byte above 0x7f (so no C1 control slips through as UTF-8),
 * are written as \xHH, never raw, so an answer cannot drive the operator's
 * terminal. */
void admin_reply_text(struct evbuffer *out, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const char *run = s;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x20 && c < 0x7f)
			continue;
		evbuffer_add(out, run, (size_t)(s - run));
		char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
		evbuffer_add(out, esc, sizeof(esc));
		run = s + 1;
	}
	evbuffer_add(out, run, (size_t)(s - run));
}

void admin_reply_error(struct evbuffer *out, bool json, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (json) {
		evbuffer_add_printf(out, "{\"ok\":false,\"error\":");
		admin_reply_json_str(out, msg);
		evbuffer_add_printf(out, "}\n");
	} else {
		evbuffer_add_printf(out, "error: ");
		admin_reply_text(out, msg);
		evbuffer_add(out, "\n", 1);
	}
}
