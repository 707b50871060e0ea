/* clock.h - the process's two clocks (DESIGN.md "Shared vocabulary: Time").
 *
 * clock_mono_us(): CLOCK_MONOTONIC, for every duration, timeout, deadline,
 * breaker window, open time and slow-call measure. It never steps, so a
 * subtraction of two readings is a real elapsed time.
 * clock_wall_us(): CLOCK_REALTIME, only for timestamps people read (log
 * lines, the access log's time, when a snapshot was loaded, the state file).
 * Never subtract two wall readings: an NTP step or a manual date change
 * makes the difference negative (a huge unsigned value) or wrong.
 *
 * Both are read through the vDSO (no system call, a few tens of
 * nanoseconds); there is deliberately no per-iteration cache (libevent's is
 * either 4 ms coarse or costs a timerfd re-arm per wakeup). Any thread. */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_read_us(clockid_t id)
{
	struct timespec ts;
	/* cannot fail for these two clocks on Linux; 0 keeps callers defined if it did */
	if (clock_gettime(id, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Monotonic microseconds (arbitrary origin): durations and deadlines. */
static inline uint64_t clock_mono_us(void)
{
	return clock_read_us(CLOCK_MONOTONIC);
}

/* Monotonic nanoseconds, for budgets finer than a microsecond. */
static inline uint64_t clock_mono_ns(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Microseconds since the Unix epoch: timestamps only. */
static inline uint64_t clock_wall_us(void)
{
	return clock_read_us(CLOCK_REALTIME);
}

/* now - since, or 0 if now is earlier (a reading from the wrong clock, or
 * two threads' readings raced): a duration is never "negative", i.e. huge. */
static inline uint64_t clock_elapsed_us(uint64_t since, uint64_t now)
{
	return now > since ? now - since : 0;
}

#endif
