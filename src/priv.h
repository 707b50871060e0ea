/* priv.h - dropping root privileges once the process holds what needs them
 * (listening sockets bound, certificates and keys read).
 *
 * Process code, not TLS: it runs on the main thread, once, before the
 * workers start, so no request is ever served with root rights. */
#ifndef SLUICE_PRIV_H
#define SLUICE_PRIV_H

/* Switch to user's uid, gid and only its primary group. NULL: stay as we are.
 * Started as that very user: nothing to do. 0, or -1 after logging why (an
 * unknown user, not started as root, a failing set*id, or privileges that
 * could be regained afterwards). */
int priv_drop(const char *user);

#endif
