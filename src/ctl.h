/* ctl.h - `sluice ctl [-s SOCKET] [--json] [--timeout SECONDS] COMMAND...`:
 * the admin socket's client (admin.h has the protocol). The socket path comes
 * from -s, else $SLUICE_ADMIN_SOCKET, else /run/sluice/admin.sock. Sends the
 * command as one line, prints the answer on stdout.
 *
 * It never waits without end: one deadline (--timeout, default 10 s) bounds
 * the whole exchange, the connect included (non-blocking, retried while the
 * gateway's accept queue is full); an answer longer than CTL_MAX_ANSWER is
 * cut; control bytes in the answer are printed escaped (\xHH), so whatever
 * the socket sends cannot drive the operator's terminal.
 *
 * Exit status: 0 answered, 1 the gateway answered with an error, 2 usage
 * error, the socket could not be used, or the deadline or the cap was hit. */
#ifndef SLUICE_CTL_H
#define SLUICE_CTL_H

#include <stdbool.h>
#include <stddef.h>

#define CTL_DEFAULT_SOCKET "/run/sluice/admin.sock"
#define CTL_DEFAULT_TIMEOUT_MS 10000
#define CTL_MAX_ANSWER (64u << 20) /* 64 MiB: `show servers` of 50,000 pools is about 8 MiB */

/* argv[0] is "ctl". Returns the exit status. */
int ctl_main(int argc, char **argv);

/* The escaping of an answer, in pieces as they arrive: ctl_escape writes at
 * most 4 * n + 12 bytes to out (each byte becomes at most \xHH, plus an
 * unfinished UTF-8 sequence held from the piece before); ctl_escape_finish
 * at most 12 (such a sequence, escaped). */
struct ctl_escape {
	unsigned char seq[4];
	unsigned have, need;
};
void ctl_escape_init(struct ctl_escape *e);
size_t ctl_escape(struct ctl_escape *e, const unsigned char *in, size_t n, char *out);
size_t ctl_escape_finish(struct ctl_escape *e, char *out);

#endif
