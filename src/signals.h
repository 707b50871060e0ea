/* signals.h - what the process does with each signal an operator (or an init
 * system, logrotate, a terminal) may send; docs/signals.md is the table.
 *
 *   SIGTERM, SIGINT      graceful shutdown (ops->shutdown)
 *   SIGHUP               reload the config (ops->reload)
 *   SIGUSR1              reopen log files (ops->reopen_logs)
 *   every other signal whose default would stop or kill the process, save
 *   the synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT,
 *   SIGSYS): ignored, with one log line (at most one a second per signal, the
 *   rest counted into the next line). SIGPIPE is ignored silently: write
 *   errors are handled where they happen.
 *
 * signals_ignore_early() makes those signals harmless from the first line of
 * `sluice run`, before the event loop exists (SIGTERM and SIGINT aside: until
 * the loop runs they stop the process at once, as a stop should); signals_start() then delivers
 * them through the main thread's event loop (libevent's signal events), and
 * signals_block_for_threads() keeps them away from threads started while it
 * is in effect. Main thread only; the callbacks run on the main loop. */
#ifndef SLUICE_SIGNALS_H
#define SLUICE_SIGNALS_H

#include <signal.h>

#include <event2/event.h>

struct signals_ops {
	void (*shutdown)(void *arg, const char *signal_name);
	void (*reload)(void *arg);
	void (*reopen_logs)(void *arg);
};

struct signals;

/* Set every signal this module handles, save SIGTERM and SIGINT, to SIG_IGN
 * until signals_start(). */
void signals_ignore_early(void);
/* Register the handlers on base. NULL (after logging why) on failure. */
struct signals *signals_start(struct event_base *base, const struct signals_ops *ops, void *arg);
/* Remove the handlers; the signals go back to being ignored (not to their
 * default; SIGTERM and SIGINT to their default), so a late SIGHUP during
 * cleanup cannot kill the process. */
void signals_stop(struct signals *s);
/* Block every handled signal in the calling thread (for the threads it
 * creates next); old receives the mask to restore. Returns 0 or an errno. */
int signals_block_for_threads(sigset_t *old);
/* "SIGHUP" for SIGHUP, "SIGRTMIN+3" for a real-time signal. */
const char *signals_name(int sig, char buf[16]);

#endif
