/* conf.h - the configuration as plain data.
 *
 * conf_load() evaluates a Lua config file (which returns a table) in an empty
 * sandbox that offers only env("NAME") and file("PATH"), checks it against the
 * schema and fills a struct conf. Every problem is collected into a
 * conf_errors, each message naming the file and the path in the table, e.g.
 *   conf/sluice.lua: routes[2].service: unknown service "api"
 * A struct conf is immutable once loaded; everything it points to is owned by
 * it and released by conf_free(). It is the raw material of a snapshot
 * (snapshot.h), which adds compiled routes and pools.
 */
#ifndef SLUICE_CONF_H
#define SLUICE_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

typedef uint64_t conf_msec; /* a duration in milliseconds */

/* A duration as libevent's timers take it. Inside a worker, worker_timeval()
 * gives the same value from libevent's common-timeout queues. */
static inline struct timeval conf_msec_timeval(conf_msec ms)
{
	return (struct timeval){.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

struct conf_errors {
	char **msgs;
	size_t count;
	size_t cap;
};

void conf_errors_init(struct conf_errors *e);
/* Append a formatted message. Never fails silently: on OOM it aborts. */
void conf_errors_add(struct conf_errors *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conf_errors_free(struct conf_errors *e);

/* "1500ms", "2s", "1m", "1h" -> milliseconds. Returns false if malformed. */
bool conf_parse_duration(const char *s, conf_msec *out);
/* "16384", "16k", "10m", "1g" (case-insensitive, powers of 1024) -> bytes. */
bool conf_parse_size(const char *s, uint64_t *out);
/* "127.0.0.1:8080", "[::1]:8080", "localhost:80" (resolved once, first address) -> sockaddr. */
bool conf_parse_address(const char *s, struct sockaddr_storage *ss, socklen_t *len);
/* The same; on failure writes what is wrong (e.g. "port out of range (1 to 65535)") into why. */
bool conf_parse_address_why(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *why,
                            size_t why_size);

enum conf_balance { CONF_BALANCE_ROUND_ROBIN, CONF_BALANCE_LEAST_CONN, CONF_BALANCE_HASH };

enum conf_key_kind {
	CONF_KEY_CLIENT_IP,
	CONF_KEY_HEADER,
	CONF_KEY_COOKIE,
	CONF_KEY_PATH,
	CONF_KEY_HOST,
	CONF_KEY_QUERY,       /* "query:NAME" */
	CONF_KEY_TLS_SUBJECT, /* "tls_subject": a verified client certificate's subject */
};

struct conf_key {
	enum conf_key_kind kind;
	char *name; /* header name (lower-cased), cookie or query argument name (as written: case-sensitive), else NULL */
};

struct conf_server {
	char *address; /* as written, "host:port"; the server's stable name inside its pool */
	struct sockaddr_storage addr;
	socklen_t addr_len;
	unsigned weight; /* default 1, 0..1000 (0: takes no new requests) */
};

enum conf_health_type { CONF_HEALTH_NONE, CONF_HEALTH_HTTP, CONF_HEALTH_TCP };

struct conf_health_check {
	enum conf_health_type type; /* NONE: no active checks */
	char *path;                 /* http: default "/healthz" */
	char *host;                 /* http: Host header; default the server address */
	int expect_lo, expect_hi;   /* http: status range that passes; default 200-399 */
	conf_msec interval;         /* default 2s (jittered by up to 10%) */
	conf_msec timeout;          /* default 1s */
	unsigned rise, fall;        /* default 2 and 3 */
};

struct conf_breaker {
	bool enabled;                  /* the `breaker` key is present */
	unsigned consecutive_failures; /* default 5; 0: this trigger off */
	double error_rate;             /* default 0.5; 0: off */
	conf_msec slow_call;           /* default 0: no slow-call trigger */
	double slow_rate;              /* default 0.8 */
	conf_msec window;              /* default 10s */
	unsigned min_requests;         /* default 20 */
	conf_msec open_for;            /* default 5s */
	conf_msec max_open_for;        /* default 60s */
	unsigned half_open_probes;     /* default 3 */
};

struct conf_pool_limits {
	unsigned max_connections; /* upstream connections of the pool, all workers; 0: no limit */
	unsigned max_pending;     /* requests waiting for a new connection to open; 0: no limit */
	unsigned max_requests;    /* requests in flight to the pool; 0: no limit */
	unsigned max_retries;     /* retries in flight in the pool; 0: no limit */
};

enum conf_retry_on {
	CONF_RETRY_CONNECT_FAILURE = 1u << 0,
	CONF_RETRY_RESET = 1u << 1,
	CONF_RETRY_TIMEOUT = 1u << 2,
	CONF_RETRY_5XX = 1u << 3, /* any of 500..599 */
};

struct conf_retry {
	unsigned attempts;   /* total tries including the first; default 1 (no retry) */
	unsigned on;         /* enum conf_retry_on bits; default connect-failure */
	int statuses[16];    /* extra statuses to retry on ("503") */
	size_t num_statuses;
	double budget;       /* retries in flight <= budget * active requests; default 0.2 */
	unsigned min_retries; /* retries in flight always allowed, whatever the budget; default 3 */
};

struct conf_pool {
	char *name;
	size_t implicit_service; /* 1 + index into conf.services of its "pool:NAME" service; 0: none */
	struct conf_server *servers;
	size_t num_servers;
	enum conf_balance balance; /* default round_robin */
	struct conf_key hash_key;  /* for CONF_BALANCE_HASH; default client_ip */
	unsigned keepalive_idle;   /* idle upstream connections kept per worker per server; default 32 */
	conf_msec keepalive_idle_timeout; /* default 60s */
	conf_msec connect_timeout;        /* default 5s */
	conf_msec response_timeout;       /* request sent -> response head, and between body reads; default 30s */
	struct conf_upstream_tls *tls;    /* TLS to the servers (conf_tls.h); NULL: plaintext */
	/* resilience (conf_resilience.h); all zero when the keys are absent: off / unlimited */
	struct conf_health_check health_check;
	struct conf_breaker breaker;
	struct conf_pool_limits pool_limits; /* the pool's `limits` key */
	struct conf_retry retry;
	int failure_statuses[16]; /* statuses that count as breaker failures; default 502, 503, 504 */
	size_t num_failure_statuses;
	bool failure_statuses_set;
};

struct conf_service_pool {
	size_t pool; /* index into conf.pools */
	unsigned weight;
	uint64_t sticky_seed; /* the pool name's hash: its rendezvous seed for sticky splits (balance.h) */
};

/* `overrides` entry: requests whose key (header, cookie or query argument)
 * equals value go to pool, before the split. */
struct conf_service_override {
	struct conf_key key;
	char *value;
	size_t pool; /* index into conf.pools */
};

struct conf_service {
	char *name;
	struct conf_service_pool *pools;
	size_t num_pools;
	bool sticky_set;         /* `sticky` given: the split is by a hash of this key */
	struct conf_key sticky;
	struct conf_service_override *overrides;
	size_t num_overrides;
	bool implicit; /* made for a route's `pool = "x"` shorthand; named "pool:x" */
};

/* A loaded conf keeps conf.pools sorted by name, and conf.services as the
 * services of the file sorted by name followed by the implicit ones, so that
 * lookups by name are binary searches (configs with tens of thousands of
 * pools and routes load in linear-logarithmic time). */

struct conf_header_match {
	char *name; /* lower-cased */
	char *value; /* exact, case-sensitive */
};

struct conf_policies;
struct conf_waf;
struct conf_tracing;
struct conf_control;

enum conf_route_action { CONF_ROUTE_PROXY, CONF_ROUTE_RESPOND };

/* routes[N].request_buffering: at most this much request body is held per request */
#define CONF_REQUEST_BUFFERING_MAX (16u << 20)

struct conf_route {
	char *name;          /* `name` key or "routes[N]" (1-based, as written in Lua) */
	/* match: every present criterion must hold */
	char *host;          /* NULL: any; "*.example.com": any subdomain; else exact (lower-cased, no port) */
	char *path;          /* exact path */
	char *path_prefix;
	char *path_regex;    /* PCRE2, matched against the path (no query) */
	char **methods;      /* upper-case method names; NULL/0: any */
	size_t num_methods;
	struct conf_header_match *headers;
	size_t num_headers;
	char *client_cert_subject; /* exact RFC 2253 subject of a verified client certificate; NULL: any */
	/* action */
	enum conf_route_action action;
	size_t service;          /* index into conf.services, for CONF_ROUTE_PROXY */
	int respond_status;      /* for CONF_ROUTE_RESPOND */
	char *respond_body;      /* may be NULL (empty) */
	size_t respond_body_len;
	char *respond_content_type; /* default "text/plain" */
	size_t *rate_limits;     /* indexes into conf.rate_limits, in order */
	size_t num_rate_limits;
	size_t *policies;        /* indexes into conf.policies->v, in order (modules/conf_policy.h) */
	size_t num_policies;
	uint64_t request_buffering; /* bytes of request body read before the access phase; 0: stream */
};

/* Rate limits (src/conf_ratelimit.h, docs/rate-limiting.md). */
enum conf_rl_key_kind {
	CONF_RL_KEY_CLIENT_IP,
	CONF_RL_KEY_HEADER,
	CONF_RL_KEY_COOKIE,
	CONF_RL_KEY_PATH,
	CONF_RL_KEY_ROUTE,
	CONF_RL_KEY_HOST,
	CONF_RL_KEY_POLICY, /* "policy:NAME": set by a Lua policy (r:set_limit_key) */
};

struct conf_rl_key {
	enum conf_rl_key_kind kind;
	char *name; /* header name (lower-cased), cookie name or policy key name (lower-cased), else NULL */
};

struct conf_rate_limit {
	char *name;
	struct conf_rl_key *keys; /* the bucket key is these parts joined; any part absent: limit skipped */
	size_t num_keys;
	uint64_t rate;     /* tokens per `per` */
	conf_msec per;
	uint64_t burst;    /* bucket size */
	bool shared;       /* bucket in Redis, shared by every instance */
	bool headers;      /* RateLimit-* headers on allowed responses too */
	unsigned batch;    /* most tokens leased from Redis at once (shared); default 100 */
	unsigned max_keys; /* keys kept locally before evicting; default 65536 */
};

enum conf_redis_on_failure { CONF_REDIS_FAIL_LOCAL, CONF_REDIS_FAIL_ALLOW, CONF_REDIS_FAIL_DENY };

/* One `redis.sentinels` entry. */
struct conf_redis_sentinel {
	char *address; /* as written */
	char *host;    /* numeric, for hiredis */
	int port;
};

struct conf_redis {
	bool enabled;      /* the `redis` section is present */
	char *address;     /* as written; with sentinels: a description ("sentinel master edge via ...") */
	char *host;        /* resolved numeric address for hiredis; NULL with sentinels */
	int port;
	/* Redis Sentinel (redis_sentinel.h): the master is asked of these; `address` and `sentinels` exclude each other */
	struct conf_redis_sentinel *sentinels;
	size_t num_sentinels;
	char *master;            /* the master's name at the sentinels */
	char *sentinel_password; /* from sentinel_password_file; NULL: no AUTH to the sentinels. Never logged. */
	char *password;    /* from password_file; NULL: no AUTH. Never logged. */
	unsigned db;
	conf_msec timeout;         /* most a request waits on Redis; default 20ms */
	conf_msec connect_timeout; /* default 500ms */
	enum conf_redis_on_failure on_failure; /* default local */
};

struct conf_listener {
	char *name;
	char *address;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	/* TLS and HTTP/2 (conf_tls.h) */
	struct conf_tls *tls;       /* NULL: plaintext */
	bool h2c;                   /* plaintext: HTTP/2 with prior knowledge too */
	struct conf_http2 *http2;   /* always set: limits for h2 and h2c sessions */
	/* connections a client may hold open at once, counted over the whole
	 * process and every listener, checked when one arrives here: the
	 * listener's own key, else limits.max_connections_per_client; 0: no cap */
	unsigned max_connections_per_client;
	bool max_connections_per_client_set; /* the listener's own key (while loading) */
	/* The running process's number for this listener: connections carry it
	 * instead of an index. conf_load gives the index; a reload keeps the
	 * running number while name, address, tls on/off and h2c stay, and
	 * gives a new one otherwise (server.c), so a number never names two
	 * different listeners. */
	unsigned id;
};

struct conf_limits {
	size_t header_bytes;          /* request line + headers; default 16k */
	size_t request_line_bytes;    /* default 8k, capped at header_bytes */
	size_t max_headers;           /* default 100 */
	uint64_t body_bytes;          /* default 10m; 0 = unlimited */
	conf_msec client_header_timeout; /* default 10s */
	conf_msec client_body_timeout;   /* between body reads; default 60s */
	uint64_t client_body_min_rate;   /* bytes/s a request body must average; default 1k; 0: none */
	conf_msec client_body_deadline;  /* a whole request body; default 5m; 0: none */
	conf_msec send_timeout;          /* client not reading the response; default 60s */
	conf_msec keepalive_timeout;     /* idle keep-alive client; default 75s */
	unsigned max_connections;        /* per process; default derived from RLIMIT_NOFILE */
	unsigned max_connections_per_client; /* per client address (IPv6: /64), per process; default 0: no cap */
	uint32_t regex_match_limit;      /* PCRE2 match limit for a route's path_regex; default 1000000 */
};

enum { CONF_REGEX_MATCH_LIMIT_DEFAULT = 1000000, CONF_MAX_CONNECTIONS_PER_CLIENT_MAX = 1000000 };

struct conf_access_log {
	bool enabled;  /* false when the key is absent or path = "off" */
	char *path;    /* "stdout", "stderr" or a file path (appended); NULL: syslog only */
	char *syslog;  /* "udp://…", "tcp://…" or "unix:///…" (log_syslog.h); NULL: none */
	int syslog_facility; /* default 16 (local0) */
	char *syslog_app;    /* APP-NAME; default "sluice" */
	uint64_t queue;      /* bytes of lines each worker may queue for path (log_queue.h); 0: the default */
};

/* error_log: sluice's own messages (log.h) */
struct conf_error_log {
	bool off;      /* path = "off": not to stderr (syslog only) */
	char *path;    /* "stdout" or a file path (appended); NULL: stderr as the process started with */
	char *syslog;  /* as access_log.syslog; NULL: none */
	int syslog_facility; /* default 16 (local0) */
	char *syslog_app;    /* APP-NAME; default "sluice" */
};

enum { CONF_ADMIN_MAX_CONNECTIONS_DEFAULT = 32, CONF_ADMIN_MAX_CONNECTIONS_MAX = 1024 };

struct conf_admin {
	char *socket; /* Unix socket path; NULL: no admin socket */
	unsigned mode; /* permission bits; default 0600 */
	unsigned max_connections; /* admin connections served at once; default 32, 1 to 1024 */
	/* the admin HTTP listener (admin_http.h): NULL when not configured */
	char *http; /* "host:port" as written */
	struct sockaddr_storage http_addr;
	socklen_t http_addr_len;
	char *http_token_file; /* NULL: no token asked (loopback only) */
	char *http_token;      /* the file's first line (a secret: never logged) */
	size_t http_token_len;
};

/* `metrics` (conf_metrics.h) */
enum { CONF_METRICS_MAX_BUCKETS = 24 };
struct conf_metrics {
	uint64_t buckets_us[CONF_METRICS_MAX_BUCKETS]; /* histogram upper bounds, increasing; default 5 ms .. 10 s */
	unsigned num_buckets;
};

struct conf {
	char *source;         /* the file it was loaded from */
	unsigned workers;     /* default: number of CPUs */
	conf_msec drain_timeout; /* graceful shutdown bound; default 30s */
	uint64_t heap_keep_free; /* freed heap a worker keeps for reuse (malloc's trim threshold); default 64m */
	struct conf_listener *listeners;
	size_t num_listeners;
	struct conf_pool *pools;
	size_t num_pools;
	struct conf_service *services;
	size_t num_services;
	struct conf_route *routes;
	size_t num_routes;
	struct conf_limits limits;
	struct conf_access_log access_log;
	struct conf_error_log error_log;
	struct conf_admin admin;
	struct conf_metrics metrics;
	char *state_file; /* deployer changes, re-applied at start; NULL: not kept */
	char *user;       /* drop privileges to this user after binding (conf_tls.h); NULL: stay */
	struct conf_rate_limit *rate_limits;
	size_t num_rate_limits;
	struct conf_redis redis;
	struct conf_policies *policies; /* Lua policies (modules/conf_policy.h); NULL: none */
	struct conf_waf *waf;           /* the WAF (modules/conf_waf.h); NULL: none */
	struct conf_tracing *tracing;   /* trace context and OTLP export (modules/conf_tracing.h); NULL: off */
	struct conf_control *control;   /* fleet control (conf_control.h); NULL: none */
};

/* The listener numbered id in c and its index (when index is not NULL), or
 * NULL: c has no such listener (a reload removed or changed it). */
const struct conf_listener *conf_listener_by_id(const struct conf *c, unsigned id, size_t *index);

/* What the schema walk visits, reported to a conf_trace as it goes: tools
 * that explore the schema (the schema sweep test) learn every record's keys
 * from the code that checks them instead of from a list kept by hand.
 * path is the Lua path ("" for the root table); keys (RECORD only) is the
 * record's NULL-terminated key list, the same pointer for every record of one
 * kind (every pool, every route). */
enum conf_trace_kind {
	CONF_TRACE_RECORD, /* a table with named keys */
	CONF_TRACE_MAP,    /* a table of named entries (pools, services, headers) */
	CONF_TRACE_LIST,   /* a list (routes, servers, methods) */
	CONF_TRACE_VALUE,  /* a value that is present: a record field, map entry or list item */
};

struct conf_trace {
	void (*visit)(void *ud, enum conf_trace_kind kind, const char *path, const char *const *keys);
	void *ud;
};

/* The config file's text (NUL-terminated, *len bytes; caller frees): only a
 * regular file of at most 16 MiB (a FIFO or a device such as /dev/zero is
 * refused at once, never waited on). NULL with a message in errs otherwise. */
char *conf_read_file(const char *path, size_t *len, struct conf_errors *errs);

/* Load and validate. Returns NULL and fills errs (>= 1 message) on failure. */
struct conf *conf_load(const char *path, struct conf_errors *errs);
/* Same from a string (chunkname used in messages); for tests. */
struct conf *conf_load_string(const char *chunkname, const char *lua_source, struct conf_errors *errs);
/* conf_load_string that reports the walk to trace (may be NULL). */
struct conf *conf_load_string_traced(const char *chunkname, const char *lua_source, struct conf_errors *errs,
                                     const struct conf_trace *trace);
void conf_free(struct conf *c);

/* Index of the pool named name, or -1 (binary search: pools are sorted). */
int conf_find_pool(const struct conf *c, const char *name);
/* Index of the service named name (implicit ones are "pool:NAME"), or -1. */
int conf_find_service(const struct conf *c, const char *name);
/* The same among the first n services (those from the file: sorted by name). */
int conf_find_service_in(const struct conf *c, size_t n, const char *name);

#endif
