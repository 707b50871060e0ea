/* admin_reply.h - how an admin answer is written, shared by the command
 * table (admin.c), the `show` renderers (admin_show.h) and the socket's own
 * refusals: JSON strings escaped, text that cannot drive a terminal, and the
 * one form of an error line.
 *
 * Text answers carry names a client typed (an unknown pool, say):
 * admin_reply_text writes control bytes and every byte above 0x7f as \xHH,
 * never raw. JSON strings are escaped by json_str.h (UTF-8 kept, controls
 * and bytes that are not UTF-8 as \u00HH), whole. Stateless; any thread,
 * though today only the main thread writes admin answers. */
#ifndef SLUICE_ADMIN_REPLY_H
#define SLUICE_ADMIN_REPLY_H

#include <stdbool.h>

struct evbuffer;

/* s as a quoted, escaped JSON string. */
void admin_reply_json_str(struct evbuffer *out, const char *s);
/* s as text, control and non-ASCII bytes as \xHH. */
void admin_reply_text(struct evbuffer *out, const char *s);
/* One error answer: "error: MSG\n", or {"ok":false,"error":"MSG"} a line when json. */
void admin_reply_error(struct evbuffer *out, bool json, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
