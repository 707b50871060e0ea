/* probe.h - health probes for places with no shell and no curl, e.g. a
 * container image's exec-form HEALTHCHECK:
 *   sluice probe tcp HOST:PORT [--timeout DURATION]
 *     connects to HOST:PORT (a config-style address, resolved once) within
 *     the timeout (default 2s) and closes at once;
 *   sluice probe http http://HOST:PORT/PATH [--timeout D] [--token-file F]
 *     sends one GET (plain HTTP/1.1, Connection: close; with F's content as a
 *     bearer token) and reads the status line, all within the timeout: meant
 *     for the admin listener's /readyz and /healthz.
 * Exit status: 0 connected / answered 2xx, 1 not (why on stderr), 2 usage
 * error. It shares no state with a running gateway and needs no config file. */
#ifndef SLUICE_PROBE_H
#define SLUICE_PROBE_H

/* argv[0] is "probe". Returns the exit status. */
int probe_main(int argc, char **argv);

#endif
