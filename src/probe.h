/* probe.h - `sluice probe tcp HOST:PORT [--timeout DURATION]`: a health probe
 * for places with no shell and no curl, e.g. a container image's exec-form
 * HEALTHCHECK. It connects to HOST:PORT (a config-style address, resolved
 * once) within the timeout (default 2s) and closes at once.
 * Exit status: 0 connected, 1 not (why on stderr), 2 usage error.
 * It shares no state with a running gateway and needs no config file. */
#ifndef SLUICE_PROBE_H
#define SLUICE_PROBE_H

/* argv[0] is "probe". Returns the exit status. */
int probe_main(int argc, char **argv);

#endif
