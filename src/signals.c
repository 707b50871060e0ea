#include "signals.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

/* The signals sluice ignores on purpose (with a log line): each would stop or
 * kill the process by default, and none means anything to a gateway. */
static const struct {
	int sig;
	const char *name;
	const char *why;
} signals_ignored[] = {
	{SIGUSR2, "SIGUSR2", "SIGUSR2 has no meaning for sluice"},
	{SIGQUIT, "SIGQUIT", "send SIGTERM to stop sluice gracefully"},
	{SIGALRM, "SIGALRM", "sluice uses no interval timers"},
	{SIGVTALRM, "SIGVTALRM", "sluice uses no interval timers"},
	{SIGPROF, "SIGPROF", "sluice uses no interval timers"},
	{SIGTSTP, "SIGTSTP", "a gateway does not stop for a terminal (send SIGSTOP to freeze it)"},
	{SIGTTIN, "SIGTTIN", "a gateway does not stop for a terminal"},
	{SIGTTOU, "SIGTTOU", "a gateway does not stop for a terminal"},
	{SIGWINCH, "SIGWINCH", "sluice has no terminal to redraw"},
	{SIGURG, "SIGURG", "sluice uses no out-of-band data"},
	{SIGXCPU, "SIGXCPU", "the CPU time limit is the operator's: the hard limit still applies"},
	{SIGXFSZ, "SIGXFSZ", "a write past the file size limit fails and is reported where it happens"},
	{SIGIO, "SIGIO", "sluice uses no signal-driven I/O"},
#ifdef SIGPWR
	{SIGPWR, "SIGPWR", "power events are the init system's to act on (it sends SIGTERM)"},
#endif
#ifdef SIGSTKFLT
	{SIGSTKFLT, "SIGSTKFLT", "SIGSTKFLT has no meaning for sluice"},
#endif
};

#define SIGNALS_N_IGNORED (sizeof(signals_ignored) / sizeof(signals_ignored[0]))
#define SIGNALS_MAX 65 /* Linux: 1..64 */
#define SIGNALS_LOG_INTERVAL_US 1000000u

struct signals {
	struct signals_ops ops;
	void *arg;
	struct event *ev[SIGNALS_MAX];
	uint64_t last_log_us[SIGNALS_MAX];
	unsigned long long suppressed[SIGNALS_MAX];
};

const char *signals_name(int sig, char buf[16])
{
	switch (sig) {
	case SIGTERM:
		return "SIGTERM";
	case SIGINT:
		return "SIGINT";
	case SIGHUP:
		return "SIGHUP";
	case SIGUSR1:
		return "SIGUSR1";
	default:
		break;
	}
	for (size_t i = 0; i < SIGNALS_N_IGNORED; i++)
		if (signals_ignored[i].sig == sig)
			return signals_ignored[i].name;
	if (sig >= SIGRTMIN && sig <= SIGRTMAX)
		snprintf(buf, 16, "SIGRTMIN+%d", sig - SIGRTMIN);
	else
		snprintf(buf, 16, "signal %d", sig);
	return buf;
}

static const char *signals_why(int sig)
{
	for (size_t i = 0; i < SIGNALS_N_IGNORED; i++)
		if (signals_ignored[i].sig == sig)
			return signals_ignored[i].why;
	return "real-time signals have no meaning for sluice";
}

/* Every signal this module takes over, in one list: the fixed ones and the
 * real-time range (whose bounds glibc knows only at run time). */
static size_t signals_list(int *out)
{
	static const int fixed[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGPIPE};
	size_t n = 0;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		out[n++] = fixed[i];
	for (size_t i = 0; i < SIGNALS_N_IGNORED; i++)
		out[n++] = signals_ignored[i].sig;
	for (int s = SIGRTMIN; s <= SIGRTMAX && s < SIGNALS_MAX; s++)
		out[n++] = s;
	return n;
}

void signals_ignore_early(void)
{
	int sigs[SIGNALS_MAX * 2];
	size_t n = signals_list(sigs);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < n; i++) {
		/* SIGTERM and SIGINT keep their default while sluice starts: a stop
		 * asked for then is a stop, not a request lost before the loop runs */
		if (sigs[i] == SIGTERM || sigs[i] == SIGINT)
			continue;
		if (sigaction(sigs[i], &sa, NULL) != 0)
			log_msg(LOG_WARN, "cannot ignore a signal");
	}
}

static void signals_log_ignored(struct signals *s, int sig)
{
	uint64_t now = clock_mono_us();
	if (s->last_log_us[sig] && now - s->last_log_us[sig] < SIGNALS_LOG_INTERVAL_US) {
		s->suppressed[sig]++;
		return;
	}
	char buf[16];
	struct log_line l;
	log_begin(&l, LOG_INFO, "signal ignored");
	log_str(&l, "signal", signals_name(sig, buf));
	log_str(&l, "why", signals_why(sig));
	if (s->suppressed[sig])
		log_int(&l, "repeats_not_logged", (long long)s->suppressed[sig]);
	log_end(&l);
	s->last_log_us[sig] = now;
	s->suppressed[sig] = 0;
}

static void signals_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct signals *s = arg;
	int sig = (int)fd;
	if (sig == SIGTERM || sig == SIGINT) {
		s->ops.shutdown(s->arg, sig == SIGINT ? "SIGINT" : "SIGTERM");
	} else if (sig == SIGHUP) {
		log_msg(LOG_INFO, "SIGHUP: reloading the config");
		s->ops.reload(s->arg);
	} else if (sig == SIGUSR1) {
		log_msg(LOG_INFO, "SIGUSR1: reopening log files");
		s->ops.reopen_logs(s->arg);
	} else if (sig > 0 && sig < SIGNALS_MAX) {
		signals_log_ignored(s, sig);
	}
}

struct signals *signals_start(struct event_base *base, const struct signals_ops *ops, void *arg)
{
	struct signals *s = calloc(1, sizeof(*s));
	if (!s) {
		log_msg(LOG_ERROR, "cannot set up signal handling: out of memory");
		return NULL;
	}
	s->ops = *ops;
	s->arg = arg;
	int sigs[SIGNALS_MAX * 2];
	size_t n = signals_list(sigs);
	for (size_t i = 0; i < n; i++) {
		int sig = sigs[i];
		if (sig == SIGPIPE)
			continue; /* stays SIG_IGN: a peer closing mid-write is an error return */
		s->ev[sig] = evsignal_new(base, sig, signals_cb, s);
		int rc = s->ev[sig] ? evsignal_add(s->ev[sig], NULL) : -1;
		if (rc != 0 && s->ev[sig] && sig >= SIGRTMIN) {
			/* a real-time signal someone else reserved (valgrind keeps the
			 * last ones for itself): it stays ignored, as signals_ignore_early() set it */
			event_free(s->ev[sig]);
			s->ev[sig] = NULL;
			continue;
		}
		if (rc != 0) {
			char buf[16];
			struct log_line l;
			log_begin(&l, LOG_ERROR, "cannot set up signal handling");
			log_str(&l, "signal", signals_name(sig, buf));
			log_end(&l);
			signals_stop(s);
			return NULL;
		}
	}
	return s;
}

void signals_stop(struct signals *s)
{
	if (!s)
		return;
	for (int i = 0; i < SIGNALS_MAX; i++)
		if (s->ev[i])
			event_free(s->ev[i]);
	free(s);
	/* libevent restores the handler it found: SIG_IGN from signals_ignore_early() */
}

int signals_block_for_threads(sigset_t *old)
{
	int sigs[SIGNALS_MAX * 2];
	size_t n = signals_list(sigs);
	sigset_t block;
	sigemptyset(&block);
	for (size_t i = 0; i < n; i++)
		sigaddset(&block, sigs[i]);
	return pthread_sigmask(SIG_BLOCK, &block, old);
}
