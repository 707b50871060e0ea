/* module.h - the interface through which request policies plug into the
 * pipeline phases (DESIGN.md "The request pipeline").
 *
 * A module is a static const struct of optional callbacks. The registration
 * list is modules/modules.c; adding a module touches modules/ and that list,
 * nothing in the core.
 *
 * Lifetimes:
 *  - snapshot_init/free: per config snapshot (main thread); the returned state is
 *    immutable and read by all workers (state for the module's own config keys).
 *  - worker_init/free: per worker thread; the state never crosses threads.
 *  - worker_adopt: the worker adopted a new snapshot (a reload): its state may
 *    keep pointers into the new snapshot's state (the worker holds it while
 *    it is current) and must drop those into the old one, which lives on only
 *    while requests that started on it run (they get its snapshot state).
 *  - access/respond/log: per request, on the request's worker.
 * Phase results follow DESIGN.md: the pipeline, not the module, decides what
 * happens next. A module that returns PHASE_SUSPEND must call
 * pipeline_resume(req, result) exactly once later, unless the pipeline first
 * calls its cancel callback (the client went away or the deadline passed).
 *
 * Header fields are fields (fields.h), never text: the access phase may read
 * and change the request's fields (r->headers) before they go upstream, and
 * the respond phase reads and changes the response's fields before they go
 * to the client, whichever protocol carries them.
 *
 * The list is its own translation unit (modules/modules.c) so that a test
 * program can link a list of its own instead (t/unit/check_pipeline.c).
 */
#ifndef SLUICE_MODULE_H
#define SLUICE_MODULE_H

#include "conf.h"
#include "exchange.h"
#include "request.h"

struct conf_section;
struct snapshot;
struct tls_info;
struct worker;

enum phase_result { PHASE_CONTINUE, PHASE_DENY, PHASE_SUSPEND, PHASE_ERROR };

/* Filled by a module that denies: the status and reason the client gets, and
 * extra response fields (e.g. Retry-After). The pipeline hands a deny whose
 * fields are empty and allocate from the request's arena; a module that
 * fills one of its own first calls phase_deny_init(). A body (in the
 * request's arena; content_type NULL: text/plain) replaces the standard
 * "NNN Reason" text: a policy's own answer (r:respond). */
struct phase_deny {
	int status;
	enum reason reason;
	struct fields headers;
	const char *body;
	size_t body_len;
	const char *content_type;
};

static inline void phase_deny_init(struct phase_deny *d, struct request *r, int status, enum reason reason)
{
	d->status = status;
	d->reason = reason;
	fields_init(&d->headers, &r->arena);
	d->body = NULL;
	d->body_len = 0;
	d->content_type = NULL;
}

struct module {
	const char *name;
	int (*snapshot_init)(const struct conf *c, void **snapshot_state, struct conf_errors *errs);
	void (*snapshot_free)(void *snapshot_state);
	int (*worker_init)(struct worker *w, void **worker_state);
	void (*worker_free)(void *worker_state);
	/* SIGUSR1 (main thread): open the module's log files again by path, on the
	 * same descriptors (dup2), so workers writing meanwhile lose nothing */
	void (*reopen)(const struct conf *c, void *snapshot_state);
	void (*worker_adopt)(struct worker *w, void *worker_state, const void *snapshot_state);
	/* access phase: after routing, before balancing */
	enum phase_result (*access)(struct request *r, const void *snapshot_state, void *worker_state,
	                            struct phase_deny *deny);
	void (*access_cancel)(struct request *r, const void *snapshot_state, void *worker_state);
	/* respond phase: read and change the fields of the response head about to
	 * be sent to the client, proxied or local (add with fields_add_copy(),
	 * fields_set(), remove with fields_remove(); copies go to the request arena) */
	void (*response_headers)(struct request *r, const void *snapshot_state, void *worker_state,
	                         struct fields *response);
	/* log phase: after the response is complete (or the request aborted) */
	void (*log)(const struct request *r, const void *snapshot_state, void *worker_state);
	/* the module's own config keys (conf_schema.h); NULL: none */
	const struct conf_section *conf;
};

/* Called by a module that returned PHASE_SUSPEND, on the request's worker, to
 * continue the pipeline (deny may be NULL unless result is PHASE_DENY). The
 * pipeline registered where (exchange.h): modules do not call it by name. */
static inline void pipeline_resume(struct request *r, enum phase_result result, const struct phase_deny *deny)
{
	struct exchange *ex = ex_of(r);
	ex->pipe->resume(ex, (int)result, deny);
}

/* The TLS details of the request's client connection (its protocol asks the
 * transport); false for plaintext. */
static inline bool pipeline_tls_info(const struct request *r, struct tls_info *out)
{
	const struct exchange *ex = (const struct exchange *)r;
	return ex->ops && ex->ops->tls_info(ex, out);
}

/* The pipeline bounds every suspension: past this the module's access_cancel
 * is called and the client gets 503 (reason policy_error). */
#define PIPELINE_SUSPEND_TIMEOUT_MS 5000

extern const struct module *const module_list[];
extern const size_t module_count;

#endif
