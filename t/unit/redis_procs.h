/* redis_procs.h - real redis-server and redis-sentinel processes for the
 * unit tests that need a Redis peer (check_rs_finder, check_redis_link).
 *
 * Servers listen on free loopback ports, each in its own directory under one
 * temporary directory (proc_main makes it and removes it). Every process
 * started gets PR_SET_PDEATHSIG: it dies with the test process that started
 * it, a failed test's forked child (CK_FORK) or one Check's timeout killed
 * included; a test stops what it started with proc_stop. Failures are Check
 * failures. */
#ifndef SLUICE_T_REDIS_PROCS_H
#define SLUICE_T_REDIS_PROCS_H

#include <stdbool.h>
#include <sys/types.h>

#include <event2/event.h>

#include <hiredis/hiredis.h>

/* main(): runs the suite (CK_NORMAL) with the temporary directory made first
 * and removed after; fails at once when redis-server or redis-sentinel is
 * missing. Returns the exit status. */
struct Suite;
int proc_main(const char *test_name, struct Suite *s);

int proc_free_port(void);
/* A redis-server on port, a replica of replica_of unless 0, with
 * requirepass unless password is NULL; returns once it answers. */
pid_t proc_start_redis(int port, int replica_of, const char *password);
/* A redis-sentinel on port monitoring 127.0.0.1:master_port as name (quorum 1). */
pid_t proc_start_sentinel(int port, const char *name, int master_port);
/* SIGCONT (a stopped one must see it), SIGTERM, SIGKILL after 5 s; reaped. */
void proc_stop(pid_t pid);

/* One blocking command to 127.0.0.1:port (as redisCommand); NULL when unreachable. */
redisReply *proc_command(int port, const char *fmt, ...);
/* r is a string (or status) containing text; frees r. */
bool proc_reply_has(redisReply *r, const char *text);
/* Polls until fn(port) holds; fails the test after seconds. */
void proc_wait_for(bool (*fn)(int port), int port, int seconds, const char *what);
bool proc_answers_ping(int port);
/* The replica on port is in sync with its master. */
bool proc_replica_in_sync(int port);
/* SENTINEL FAILOVER of PROC_MASTER on the sentinel on port was accepted
 * (NOGOODSLAVE until the sentinel has seen the replica in sync). */
#define PROC_MASTER "edge"
bool proc_failover_accepted(int sentinel_port);

/* Runs base until *count exceeds before, or ms pass (the most an event may
 * take on a loaded machine, never a measure). */
void proc_run_until(struct event_base *base, const unsigned *count, unsigned before, unsigned ms);

#endif
