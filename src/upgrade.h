/* upgrade.h - binary upgrade: a new `sluice run --upgrade` process takes the
 * listening sockets of the running one over its admin socket (SCM_RIGHTS),
 * serves on them, then tells the old one to drain and exit.
 *
 * Old side: the server keeps a table of its listening sockets (struct
 * upgrade_src: a CLOEXEC duplicate of each worker's socket per listener, with
 * the listener's name and address), and the admin socket's
 * `upgrade-listeners` command sends it (upgrade_src_send). The table is
 * closed when the process starts draining, so a socket the new process did
 * not take leaves the SO_REUSEPORT group at once.
 *
 * New side: upgrade_begin() connects to the admin socket, asks for the
 * sockets and keeps the connection; upgrade_take() hands out the one for a
 * (listener, worker) whose name and address match; upgrade_finish() sends
 * `upgrade-drain` and waits for the old process's answer, then closes what
 * was not taken. If the new process exits before upgrade_finish() the old
 * one sees the connection close and keeps serving.
 *
 * Wire format (stream socket): fixed UPGRADE_RECORD bytes of text, NUL
 * padded: a header "sluice-upgrade 1 COUNT PID\n" without a descriptor, then
 * COUNT records "WORKER\tNAME\tADDRESS\n", each sent with its socket.
 *
 * Ownership: main thread only; each object owns its descriptors. */
#ifndef SLUICE_UPGRADE_H
#define SLUICE_UPGRADE_H

#include <stddef.h>

#define UPGRADE_RECORD 512
/* The worker number under which the admin HTTP listener's socket goes. */
#define UPGRADE_ADMIN_HTTP 4294967295u
/* How long either side waits for the other at each step. */
#define UPGRADE_TIMEOUT_MS 10000

struct upgrade_src;
struct upgrade;

/* ---- old side ---- */
struct upgrade_src *upgrade_src_new(void);
/* Remember a duplicate of fd as worker's socket of listener name/address. -1 on failure (logged). */
int upgrade_src_add(struct upgrade_src *s, unsigned worker, const char *name, const char *address, int fd);
/* The kept duplicate of worker's socket of listener name/address (still the
 * table's), or -1. */
int upgrade_src_fd(const struct upgrade_src *s, unsigned worker, const char *name, const char *address);
/* Forget (and close) every worker's socket of listener name/address: a
 * reload removed it, and a kept duplicate would hold it in its
 * SO_REUSEPORT group. */
void upgrade_src_remove(struct upgrade_src *s, const char *name, const char *address);
/* Send the table over the connected admin socket fd. 0, or -1 with why in err. */
int upgrade_src_send(const struct upgrade_src *s, int fd, char *err, size_t err_size);
/* Close every socket in the table (the process drains). */
void upgrade_src_close(struct upgrade_src *s);
void upgrade_src_free(struct upgrade_src *s);

/* ---- new side ---- */
/* Connect to the running process's admin socket and take its listening sockets.
 * NULL with why in err. */
struct upgrade *upgrade_begin(const char *admin_socket, char *err, size_t err_size);
/* The old process's socket for (name, address, worker), or -1 (bind a fresh one). The caller owns it. */
int upgrade_take(struct upgrade *u, const char *name, const char *address, unsigned worker);
/* Whether the old process listens on this name and address at all (then the
 * address being in use is expected). */
int upgrade_has(const struct upgrade *u, const char *name, const char *address);
/* The old process's pid (from the header). */
long upgrade_old_pid(const struct upgrade *u);
/* Tell the old process to drain and exit; closes the sockets not taken. 0, or
 * -1 with why in err (the old process may keep serving: the caller logs it). */
int upgrade_finish(struct upgrade *u, char *err, size_t err_size);
/* Close the connection (the old process keeps serving) and what was not taken. */
void upgrade_free(struct upgrade *u);

#endif
