/* ctl.h - `sluice ctl [-s SOCKET] [--json] COMMAND...`: the admin socket's
 * client (admin.h has the protocol). The socket path comes from -s, else
 * $SLUICE_ADMIN_SOCKET, else /run/sluice/admin.sock. Sends the command as one
 * line, prints the answer on stdout. Exit status: 0 answered, 1 the gateway
 * answered with an error, 2 usage error or the socket could not be used. */
#ifndef SLUICE_CTL_H
#define SLUICE_CTL_H

#define CTL_DEFAULT_SOCKET "/run/sluice/admin.sock"

/* argv[0] is "ctl". Returns the exit status. */
int ctl_main(int argc, char **argv);

#endif
