#include "tls.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h> /* the TLS filter's write timer: see tls_flush() */
#include <event2/event.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "client.h"
#include "conf_tls.h"
#include "h2.h"
#include "io.h"
#include "log.h"
#include "snapshot.h"
#include "worker.h"

/* ---- process-wide indexes ---- */

static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static int tls_ctx_index = -1;  /* SSL_CTX -> struct tls_server */
static int tls_conn_index = -1; /* SSL -> cached client subject (malloc'd string) */
static BIO_METHOD *tls_bio_method; /* the BIO of accepted connections (see tls_conn) */
/* Fetched once: EVP_aes_256_cbc() would be looked up by name on every ticket. */
static EVP_CIPHER *tls_ticket_cipher;

static void tls_bio_init(void);

/* Runs inside SSL_free() before OpenSSL drops "badly shut down" sessions
 * from the cache: connections are closed by the pipeline without waiting for
 * close_notify (as nginx does with quiet shutdown), and a connection that
 * completed its handshake must stay resumable. */
static void tls_conn_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	SSL *ssl = parent;
	if (ssl && SSL_is_server(ssl) && SSL_is_init_finished(ssl))
		SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

static void tls_init_once(void)
{
	tls_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	tls_conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, tls_conn_data_free);
	tls_bio_init();
	tls_ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	ERR_clear_error();
}

static bool tls_init(void)
{
	return pthread_once(&tls_once, tls_init_once) == 0 && tls_ctx_index >= 0 && tls_conn_index >= 0 &&
	       tls_bio_method;
}

/* ---- the server contexts ---- */

/* Ticket keys. Every worker issues and accepts tickets of the same listener,
 * so the keys are shared. Scheme: key generation N lives in slots[N % 3];
 * a slot is a seqlock (seq odd while written) over atomic words, so readers
 * (handshakes on any worker) never block and never see a torn key. The
 * writer is whichever handshake first notices that the rotation interval has
 * passed; it only try-locks rotate_lock (a handshake that loses the race uses
 * the current key). Tickets are issued with generation N and accepted with N
 * and N-1 (renewed then), so a key lives at most two intervals, and the
 * slot being written (N+1 % 3 == N-2 % 3) is never one a reader accepts. */
#define TICKET_WORDS 10 /* 16-byte name, 32-byte AES key, 32-byte HMAC key */
struct tls_ticket_slot {
	atomic_uint_fast64_t seq;
	atomic_uint_fast64_t words[TICKET_WORDS];
};

struct tls_name {
	char *name;    /* lower-case; for a wildcard the suffix with its dot (".example.com") */
	bool wildcard;
	SSL_CTX *ctx;
};

struct tls_ocsp {
	X509 *cert; /* not owned: the leaf inside the SSL_CTX */
	unsigned char *der;
	size_t len;
};

struct tls_server {
	SSL_CTX **ctxs; /* ctxs[0]: the default */
	size_t num_ctxs;
	char **ctx_names; /* per ctx: its sorted name list joined, to group ECDSA and RSA twins */
	int *ctx_key_types; /* per ctx: bit 0 RSA, bit 1 EC, bit 2 other */
	struct tls_name *names;
	size_t num_names;
	struct tls_ocsp *ocsp;
	size_t num_ocsp;
	unsigned char alpn[16];
	unsigned alpn_len;
	/* tickets */
	uint64_t rotate_ms;
	pthread_mutex_t rotate_lock;
	bool lock_ready;
	atomic_uint_fast64_t generation; /* 0: no key yet */
	unsigned char name_prefix[8];
	struct tls_ticket_slot slots[3];
};

static void err_set(struct tls_error *e, int cert, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_set(struct tls_error *e, int cert, const char *field, const char *fmt, ...)
{
	e->cert_index = cert;
	e->field = field;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
}

/* The last OpenSSL error as text (and the queue cleared). */
static const char *ssl_err_text(char *buf, size_t n)
{
	unsigned long code = ERR_peek_last_error();
	if (code == 0)
		snprintf(buf, n, "unknown error");
	else
		ERR_error_string_n(code, buf, n);
	ERR_clear_error();
	return buf;
}

static void asn1_time_text(const ASN1_TIME *t, char *out, size_t n)
{
	out[0] = '\0';
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return;
	if (ASN1_TIME_print(b, t) == 1) {
		int len = BIO_read(b, out, (int)n - 1);
		out[len > 0 ? len : 0] = '\0';
	}
	BIO_free(b);
}

static int no_password_cb(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1; /* an encrypted key cannot be read unattended: refuse it */
}

/* A private key file must not be readable by anyone but the user starting sluice. */
static bool check_key_file(const char *path, int idx, struct tls_error *e)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		err_set(e, idx, "key", "%s: cannot read: %s", path, strerror(errno));
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		err_set(e, idx, "key", "%s: not a regular file", path);
		return false;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		err_set(e, idx, "key", "%s: private key is accessible by group or others (mode %04o); chmod 600 it", path,
		        (unsigned)(st.st_mode & 07777));
		return false;
	}
	if (st.st_uid != geteuid()) {
		err_set(e, idx, "key", "%s: private key is owned by uid %u, not by the user starting sluice (uid %u)", path,
		        (unsigned)st.st_uid, (unsigned)geteuid());
		return false;
	}
	return true;
}

struct tls_pair {
	X509 *cert;
	STACK_OF(X509) *chain;
	EVP_PKEY *key;
};

static void pair_free(struct tls_pair *p)
{
	X509_free(p->cert);
	if (p->chain)
		sk_X509_pop_free(p->chain, X509_free);
	EVP_PKEY_free(p->key);
	memset(p, 0, sizeof(*p));
}

/* Load cert (leaf + chain) and key; check validity dates and that they match. */
static bool load_pair(const char *cert, const char *key, int idx, bool check_perms, struct tls_pair *p,
                      struct tls_error *e)
{
	char ebuf[256];
	memset(p, 0, sizeof(*p));
	BIO *b = BIO_new_file(cert, "r");
	if (!b) {
		err_set(e, idx, "cert", "%s: cannot read: %s", cert, strerror(errno ? errno : ENOENT));
		ERR_clear_error();
		return false;
	}
	p->cert = PEM_read_bio_X509(b, NULL, no_password_cb, NULL);
	if (!p->cert) {
		BIO_free(b);
		err_set(e, idx, "cert", "%s: no PEM certificate in it (%s)", cert, ssl_err_text(ebuf, sizeof ebuf));
		return false;
	}
	p->chain = sk_X509_new_null();
	if (!p->chain) {
		BIO_free(b);
		pair_free(p);
		err_set(e, idx, "cert", "%s: out of memory", cert);
		return false;
	}
	X509 *x;
	while ((x = PEM_read_bio_X509(b, NULL, no_password_cb, NULL)) != NULL) {
		if (!sk_X509_push(p->chain, x)) {
			X509_free(x);
			BIO_free(b);
			pair_free(p);
			err_set(e, idx, "cert", "%s: out of memory", cert);
			return false;
		}
	}
	ERR_clear_error(); /* the loop ends on "no start line" */
	BIO_free(b);
	char when[64];
	if (X509_cmp_current_time(X509_get0_notAfter(p->cert)) <= 0) {
		asn1_time_text(X509_get0_notAfter(p->cert), when, sizeof when);
		err_set(e, idx, "cert", "%s: certificate expired (not after %s)", cert, when);
		pair_free(p);
		return false;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(p->cert)) >= 0) {
		asn1_time_text(X509_get0_notBefore(p->cert), when, sizeof when);
		err_set(e, idx, "cert", "%s: certificate not valid yet (not before %s)", cert, when);
		pair_free(p);
		return false;
	}
	if (!key)
		return true;
	if (check_perms && !check_key_file(key, idx, e)) {
		pair_free(p);
		return false;
	}
	b = BIO_new_file(key, "r");
	if (!b) {
		err_set(e, idx, "key", "%s: cannot read: %s", key, strerror(errno ? errno : ENOENT));
		ERR_clear_error();
		pair_free(p);
		return false;
	}
	p->key = PEM_read_bio_PrivateKey(b, NULL, no_password_cb, NULL);
	BIO_free(b);
	if (!p->key) {
		err_set(e, idx, "key", "%s: cannot load the private key (PEM, unencrypted): %s", key,
		        ssl_err_text(ebuf, sizeof ebuf));
		pair_free(p);
		return false;
	}
	if (X509_check_private_key(p->cert, p->key) != 1) {
		ERR_clear_error();
		err_set(e, idx, "key", "%s: private key does not match the certificate %s", key, cert);
		pair_free(p);
		return false;
	}
	return true;
}

static char *lower_dup(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (!d)
		return NULL;
	for (size_t i = 0; i < n; i++)
		d[i] = (char)tolower((unsigned char)s[i]);
	d[n] = '\0';
	return d;
}

/* DNS names of a certificate: its subjectAltName DNS entries, else its CN. */
static size_t cert_names(X509 *x, char **out, size_t max)
{
	size_t n = 0;
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	if (gens) {
		for (int i = 0; i < sk_GENERAL_NAME_num(gens) && n < max; i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
			if (g->type != GEN_DNS)
				continue;
			const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
			int len = ASN1_STRING_length(g->d.dNSName);
			if (len <= 0 || memchr(d, '\0', (size_t)len))
				continue;
			char *s = lower_dup((const char *)d, (size_t)len);
			if (s)
				out[n++] = s;
		}
		GENERAL_NAMES_free(gens);
	}
	if (n == 0) {
		char cn[256];
		int len = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
		if (len > 0 && (size_t)len < sizeof cn) {
			char *s = lower_dup(cn, (size_t)len);
			if (s)
				out[n++] = s;
		}
	}
	return n;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* --- callbacks --- */

static struct tls_server *server_of(SSL *ssl)
{
	return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ctx_index);
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
	(void)alert;
	struct tls_server *ts = arg;
	const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!sn || !*sn)
		return SSL_TLSEXT_ERR_OK;
	SSL_CTX *found = NULL;
	for (size_t i = 0; i < ts->num_names && !found; i++)
		if (!ts->names[i].wildcard && strcasecmp(ts->names[i].name, sn) == 0)
			found = ts->names[i].ctx;
	const char *dot = strchr(sn, '.');
	if (!found && dot && dot != sn) {
		for (size_t i = 0; i < ts->num_names && !found; i++)
			if (ts->names[i].wildcard && strcasecmp(ts->names[i].name, dot) == 0)
				found = ts->names[i].ctx;
	}
	/* an unknown name gets the default certificate, as nginx and HAProxy do */
	if (found && found != SSL_get_SSL_CTX(ssl) && !SSL_set_SSL_CTX(ssl, found))
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned inlen, void *arg)
{
	(void)ssl;
	struct tls_server *ts = arg;
	unsigned char *sel = NULL;
	/* our order wins: h2 when both sides speak it */
	if (SSL_select_next_proto(&sel, outlen, ts->alpn, ts->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int ocsp_cb(SSL *ssl, void *arg)
{
	struct tls_server *ts = arg;
	X509 *x = SSL_get_certificate(ssl);
	for (size_t i = 0; i < ts->num_ocsp; i++) {
		if (ts->ocsp[i].cert != x)
			continue;
		/* OpenSSL takes ownership of the copy */
		unsigned char *copy = OPENSSL_memdup(ts->ocsp[i].der, ts->ocsp[i].len);
		if (!copy || SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)ts->ocsp[i].len) != 1) {
			OPENSSL_free(copy);
			return SSL_TLSEXT_ERR_NOACK;
		}
		return SSL_TLSEXT_ERR_OK;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

static void slot_read(struct tls_ticket_slot *s, uint64_t out[TICKET_WORDS])
{
	for (;;) {
		uint64_t a = atomic_load_explicit(&s->seq, memory_order_acquire);
		if (a & 1)
			continue;
		for (int i = 0; i < TICKET_WORDS; i++)
			out[i] = atomic_load_explicit(&s->words[i], memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&s->seq, memory_order_relaxed) == a)
			return;
	}
}

static void slot_write(struct tls_ticket_slot *s, const uint64_t in[TICKET_WORDS])
{
	uint64_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
	atomic_store_explicit(&s->seq, seq + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (int i = 0; i < TICKET_WORDS; i++)
		atomic_store_explicit(&s->words[i], in[i], memory_order_relaxed);
	atomic_store_explicit(&s->seq, seq + 2, memory_order_release);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The generation tickets are issued with now, rotating if due. */
static uint64_t ticket_generation(struct tls_server *ts)
{
	uint64_t want = now_ms() / ts->rotate_ms + 1;
	uint64_t cur = atomic_load_explicit(&ts->generation, memory_order_acquire);
	if (cur >= want || pthread_mutex_trylock(&ts->rotate_lock) != 0)
		return cur;
	cur = atomic_load_explicit(&ts->generation, memory_order_relaxed);
	if (cur < want) {
		uint64_t k[TICKET_WORDS];
		memcpy(k, ts->name_prefix, 8);
		k[1] = want;
		if (RAND_bytes((unsigned char *)&k[2], (int)(sizeof(k) - 16)) == 1) {
			slot_write(&ts->slots[want % 3], k);
			atomic_store_explicit(&ts->generation, want, memory_order_release);
			cur = want;
		}
		OPENSSL_cleanse(k, sizeof k);
	}
	pthread_mutex_unlock(&ts->rotate_lock);
	return cur;
}

static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX *ctx,
                     EVP_MAC_CTX *hctx, int enc)
{
	struct tls_server *ts = server_of(ssl);
	if (!ts)
		return -1;
	uint64_t gen = ticket_generation(ts);
	if (gen == 0)
		return enc ? -1 : 0;
	uint64_t k[TICKET_WORDS];
	int rc;
	if (enc) {
		slot_read(&ts->slots[gen % 3], k);
		if (k[1] != gen || RAND_bytes(iv, 16) != 1) {
			OPENSSL_cleanse(k, sizeof k);
			return -1;
		}
		memcpy(key_name, k, 16);
		rc = 1;
	} else {
		uint64_t name_gen;
		memcpy(&name_gen, key_name + 8, 8);
		if (memcmp(key_name, ts->name_prefix, 8) != 0 || name_gen == 0 || name_gen > gen || gen - name_gen > 1)
			return 0; /* unknown or too old: full handshake */
		slot_read(&ts->slots[name_gen % 3], k);
		if (k[1] != name_gen) {
			OPENSSL_cleanse(k, sizeof k);
			return 0;
		}
		/* 2: valid, but issue a fresh ticket. Always in TLS 1.3: a ticket
		 * should serve once (RFC 8446 C.4), and without a new one after a
		 * resumption a client that keeps only its latest session (wrk
		 * does) can resume only every other connection */
		rc = name_gen == gen && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
	}
	OSSL_PARAM params[3];
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, &k[6], 32);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	const EVP_CIPHER *cipher = tls_ticket_cipher ? tls_ticket_cipher : EVP_aes_256_cbc();
	int ok = EVP_MAC_CTX_set_params(hctx, params) == 1 &&
	         (enc ? EVP_EncryptInit_ex(ctx, cipher, NULL, (unsigned char *)&k[2], iv)
	              : EVP_DecryptInit_ex(ctx, cipher, NULL, (unsigned char *)&k[2], iv)) == 1;
	OPENSSL_cleanse(k, sizeof k);
	return ok ? rc : -1;
}

/* --- building --- */

static SSL_CTX *server_ctx_new(struct tls_server *ts, const struct conf_tls *t, const char *listener_name,
                               struct tls_error *e)
{
	char ebuf[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		err_set(e, -1, NULL, "cannot create a TLS context: %s", ssl_err_text(ebuf, sizeof ebuf));
		return NULL;
	}
	/* a peer closing without close_notify is a normal end, not a fatal error
	 * that would evict its session from the cache */
	uint64_t opts = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF;
	if (!t->session_tickets)
		opts |= SSL_OP_NO_TICKET;
	SSL_CTX_set_options(ctx, opts);
	/* idle keep-alive connections should not pin 2 x 16 KiB of TLS buffers each */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (!SSL_CTX_set_min_proto_version(ctx, t->min_version) || !SSL_CTX_set_max_proto_version(ctx, t->max_version)) {
		err_set(e, -1, "protocols", "unsupported protocol range: %s", ssl_err_text(ebuf, sizeof ebuf));
		goto fail;
	}
	if (SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
		err_set(e, -1, "ciphers", "no usable TLS 1.2 cipher in \"%s\"", t->ciphers);
		goto fail;
	}
	if (SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
		err_set(e, -1, "ciphersuites", "no usable TLS 1.3 cipher suite in \"%s\"", t->ciphersuites);
		goto fail;
	}
	if (SSL_CTX_set1_groups_list(ctx, t->groups) != 1) {
		err_set(e, -1, "groups", "unknown group in \"%s\"", t->groups);
		goto fail;
	}
	SSL_CTX_set_dh_auto(ctx, 1);
	/* resumption must not cross listeners: their contexts share nothing */
	unsigned char sid[SSL_MAX_SID_CTX_LENGTH];
	size_t sid_len = strlen(listener_name);
	if (sid_len > sizeof sid)
		sid_len = sizeof sid;
	memcpy(sid, listener_name, sid_len);
	if (SSL_CTX_set_session_id_context(ctx, sid, (unsigned)sid_len) != 1)
		goto fail_generic;
	if (t->session_cache) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
		SSL_CTX_sess_set_cache_size(ctx, t->session_cache);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	SSL_CTX_set_timeout(ctx, (long)(t->session_timeout / 1000));
	if (t->session_tickets) {
		SSL_CTX_set_num_tickets(ctx, 1);
		if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1)
			goto fail_generic;
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, ts);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, ts);
	SSL_CTX_set_tlsext_status_cb(ctx, ocsp_cb);
	SSL_CTX_set_tlsext_status_arg(ctx, ts);
	if (t->client_ca) {
		if (SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL) != 1) {
			err_set(e, -1, "client_ca", "%s: cannot load CA certificates: %s", t->client_ca,
			        ssl_err_text(ebuf, sizeof ebuf));
			goto fail;
		}
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca);
		if (!names) {
			err_set(e, -1, "client_ca", "%s: no CA certificate in it", t->client_ca);
			ERR_clear_error();
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		int mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
		if (t->client_verify == CONF_TLS_VERIFY_REQUIRE)
			mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
		SSL_CTX_set_verify(ctx, mode, NULL);
		SSL_CTX_set_verify_depth(ctx, 8);
	}
	if (SSL_CTX_set_ex_data(ctx, tls_ctx_index, ts) != 1)
		goto fail_generic;
	return ctx;
fail_generic:
	err_set(e, -1, NULL, "cannot configure the TLS context: %s", ssl_err_text(ebuf, sizeof ebuf));
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static bool load_ocsp(struct tls_server *ts, const char *path, X509 *cert, int idx, struct tls_error *e)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		err_set(e, idx, "ocsp", "%s: cannot read: %s", path, strerror(errno));
		return false;
	}
	unsigned char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			if (cap > (1u << 20)) {
				fclose(f);
				free(buf);
				err_set(e, idx, "ocsp", "%s: larger than 1 MiB, not an OCSP response", path);
				return false;
			}
			unsigned char *nb = realloc(buf, cap);
			if (!nb) {
				fclose(f);
				free(buf);
				err_set(e, idx, "ocsp", "%s: out of memory", path);
				return false;
			}
			buf = nb;
		}
		size_t got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	bool read_error = ferror(f) != 0;
	fclose(f);
	if (read_error) {
		free(buf);
		err_set(e, idx, "ocsp", "%s: read error", path);
		return false;
	}
	const unsigned char *p = buf;
	OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	const char *problem = NULL;
	OCSP_BASICRESP *basic = NULL;
	if (!resp)
		problem = "not a DER OCSP response";
	else if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL)
		problem = "OCSP response status is not successful";
	else if (!(basic = OCSP_response_get1_basic(resp)))
		problem = "OCSP response has no basic response";
	else if (OCSP_resp_count(basic) < 1)
		problem = "OCSP response has no certificate status";
	else {
		ASN1_GENERALIZEDTIME *thisupd = NULL, *nextupd = NULL;
		int reason;
		OCSP_SINGLERESP *single = OCSP_resp_get0(basic, 0);
		int status = OCSP_single_get0_status(single, &reason, NULL, &thisupd, &nextupd);
		if (status == V_OCSP_CERTSTATUS_REVOKED)
			problem = "OCSP response says the certificate is revoked";
		else if (thisupd && OCSP_check_validity(thisupd, nextupd, 300, -1) != 1)
			problem = "OCSP response is outdated (past its next update)";
	}
	OCSP_BASICRESP_free(basic);
	OCSP_RESPONSE_free(resp);
	ERR_clear_error();
	if (problem) {
		free(buf);
		err_set(e, idx, "ocsp", "%s: %s", path, problem);
		return false;
	}
	struct tls_ocsp *o = realloc(ts->ocsp, (ts->num_ocsp + 1) * sizeof(*o));
	if (!o) {
		free(buf);
		err_set(e, idx, "ocsp", "%s: out of memory", path);
		return false;
	}
	ts->ocsp = o;
	o[ts->num_ocsp].cert = cert;
	o[ts->num_ocsp].der = buf;
	o[ts->num_ocsp].len = len;
	ts->num_ocsp++;
	return true;
}

static int key_type_bit(EVP_PKEY *k)
{
	switch (EVP_PKEY_get_base_id(k)) {
	case EVP_PKEY_RSA:
		return 1;
	case EVP_PKEY_EC:
		return 2;
	default:
		return 4;
	}
}

static bool add_cert(struct tls_server *ts, const struct conf_tls *t, const char *listener_name, size_t idx,
                     struct tls_error *e)
{
	const struct conf_tls_cert *cc = &t->certs[idx];
	struct tls_pair pair;
	if (!load_pair(cc->cert, cc->key, (int)idx, true, &pair, e))
		return false;
	char *names[64];
	size_t n = cert_names(pair.cert, names, 64);
	if (n == 0) {
		pair_free(&pair);
		err_set(e, (int)idx, "cert", "%s: certificate has no DNS name (subjectAltName or CN)", cc->cert);
		return false;
	}
	qsort(names, n, sizeof(char *), cmp_str);
	size_t joined_len = 0;
	for (size_t i = 0; i < n; i++)
		joined_len += strlen(names[i]) + 1;
	char *joined = malloc(joined_len + 1);
	bool ok = joined != NULL;
	if (ok) {
		joined[0] = '\0';
		for (size_t i = 0; i < n; i++) {
			strcat(joined, names[i]);
			strcat(joined, " ");
		}
	}
	/* a certificate with the same names but another key type joins its twin's
	 * context: OpenSSL then picks ECDSA or RSA by what the client supports */
	int bit = key_type_bit(pair.key);
	SSL_CTX *ctx = NULL;
	size_t ci = ts->num_ctxs;
	for (size_t i = 0; ok && i < ts->num_ctxs && !ctx; i++)
		if (strcmp(ts->ctx_names[i], joined) == 0 && !(ts->ctx_key_types[i] & bit) && bit != 4) {
			ctx = ts->ctxs[i];
			ci = i;
		}
	bool new_ctx = false;
	if (ok && !ctx) {
		SSL_CTX **nc = realloc(ts->ctxs, (ts->num_ctxs + 1) * sizeof(*nc));
		if (nc)
			ts->ctxs = nc;
		char **nn = realloc(ts->ctx_names, (ts->num_ctxs + 1) * sizeof(*nn));
		if (nn)
			ts->ctx_names = nn;
		int *nk = realloc(ts->ctx_key_types, (ts->num_ctxs + 1) * sizeof(*nk));
		if (nk)
			ts->ctx_key_types = nk;
		ok = nc && nn && nk && (ctx = server_ctx_new(ts, t, listener_name, e)) != NULL;
		if (!ok && e->msg[0] == '\0')
			err_set(e, (int)idx, "cert", "%s: out of memory", cc->cert);
		if (ok) {
			ts->ctxs[ts->num_ctxs] = ctx;
			ts->ctx_names[ts->num_ctxs] = joined;
			ts->ctx_key_types[ts->num_ctxs] = 0;
			joined = NULL;
			ci = ts->num_ctxs++;
			new_ctx = true;
		}
	}
	if (ok && SSL_CTX_use_cert_and_key(ctx, pair.cert, pair.key, pair.chain, 1) != 1) {
		char ebuf[256];
		err_set(e, (int)idx, "cert", "%s: cannot use this certificate: %s", cc->cert, ssl_err_text(ebuf, sizeof ebuf));
		ok = false;
	}
	if (ok)
		ts->ctx_key_types[ci] |= bit;
	/* names of a new context go to the SNI table; the first certificate naming a host wins */
	for (size_t i = 0; i < n; i++) {
		if (ok && new_ctx) {
			struct tls_name *tn = realloc(ts->names, (ts->num_names + 1) * sizeof(*tn));
			if (!tn) {
				err_set(e, (int)idx, "cert", "out of memory");
				ok = false;
			} else {
				ts->names = tn;
				bool wild = names[i][0] == '*' && names[i][1] == '.';
				tn[ts->num_names].wildcard = wild;
				tn[ts->num_names].name = wild ? strdup(names[i] + 1) : names[i];
				tn[ts->num_names].ctx = ctx;
				if (wild)
					free(names[i]);
				names[i] = NULL;
				ts->num_names++;
			}
		}
		free(names[i]);
	}
	free(joined);
	if (ok && cc->ocsp) {
		/* the context keeps this very X509 (up-referenced) and every SSL made
		 * from it shares it, so SSL_get_certificate() returns this pointer */
		ok = load_ocsp(ts, cc->ocsp, pair.cert, (int)idx, e);
	}
	pair_free(&pair);
	return ok;
}

struct tls_server *tls_server_new(const struct conf_tls *t, const char *listener_name, bool http2,
                                  struct tls_error *e)
{
	memset(e, 0, sizeof(*e));
	e->cert_index = -1;
	if (!tls_init()) {
		err_set(e, -1, NULL, "cannot initialise OpenSSL");
		return NULL;
	}
	struct tls_server *ts = calloc(1, sizeof(*ts));
	if (!ts) {
		err_set(e, -1, NULL, "out of memory");
		return NULL;
	}
	if (pthread_mutex_init(&ts->rotate_lock, NULL) != 0) {
		free(ts);
		err_set(e, -1, NULL, "cannot create a lock");
		return NULL;
	}
	ts->lock_ready = true;
	ts->rotate_ms = t->ticket_rotate ? t->ticket_rotate : 3600000;
	unsigned char *a = ts->alpn;
	if (http2) {
		memcpy(a, "\x02h2", 3);
		a += 3;
	}
	memcpy(a, "\x08http/1.1", 9);
	a += 9;
	ts->alpn_len = (unsigned)(a - ts->alpn);
	if (RAND_bytes(ts->name_prefix, sizeof ts->name_prefix) != 1) {
		err_set(e, -1, NULL, "no randomness for ticket keys");
		tls_server_free(ts);
		return NULL;
	}
	for (size_t i = 0; i < t->num_certs; i++) {
		if (!add_cert(ts, t, listener_name, i, e)) {
			tls_server_free(ts);
			return NULL;
		}
	}
	if (ts->num_ctxs == 0) {
		err_set(e, -1, "certificates", "no certificate");
		tls_server_free(ts);
		return NULL;
	}
	return ts;
}

void tls_server_free(struct tls_server *ts)
{
	if (!ts)
		return;
	for (size_t i = 0; i < ts->num_ctxs; i++) {
		SSL_CTX_free(ts->ctxs[i]);
		free(ts->ctx_names[i]);
	}
	free(ts->ctxs);
	free(ts->ctx_names);
	free(ts->ctx_key_types);
	for (size_t i = 0; i < ts->num_names; i++)
		free(ts->names[i].name);
	free(ts->names);
	for (size_t i = 0; i < ts->num_ocsp; i++)
		free(ts->ocsp[i].der);
	free(ts->ocsp);
	if (ts->lock_ready)
		pthread_mutex_destroy(&ts->rotate_lock);
	OPENSSL_cleanse(ts->slots, sizeof ts->slots);
	free(ts);
}

size_t tls_server_num_names(const struct tls_server *ts)
{
	return ts ? ts->num_names : 0;
}

/* ---- upstream (client) contexts ---- */

struct tls_client {
	SSL_CTX *ctx;
	char *sni;
	bool verify;
};

struct tls_client *tls_client_new(const struct conf_upstream_tls *t, struct tls_error *e)
{
	char ebuf[256];
	memset(e, 0, sizeof(*e));
	e->cert_index = -1;
	if (!tls_init()) {
		err_set(e, -1, NULL, "cannot initialise OpenSSL");
		return NULL;
	}
	struct tls_client *tc = calloc(1, sizeof(*tc));
	if (!tc) {
		err_set(e, -1, NULL, "out of memory");
		return NULL;
	}
	tc->verify = t->verify;
	if (t->sni && !(tc->sni = strdup(t->sni))) {
		err_set(e, -1, NULL, "out of memory");
		goto fail;
	}
	tc->ctx = SSL_CTX_new(TLS_client_method());
	if (!tc->ctx) {
		err_set(e, -1, NULL, "cannot create a TLS context: %s", ssl_err_text(ebuf, sizeof ebuf));
		goto fail;
	}
	SSL_CTX_set_min_proto_version(tc->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(tc->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(tc->ctx, SSL_MODE_RELEASE_BUFFERS);
	if (t->ca) {
		if (SSL_CTX_load_verify_locations(tc->ctx, t->ca, NULL) != 1) {
			err_set(e, -1, "ca", "%s: cannot load CA certificates: %s", t->ca, ssl_err_text(ebuf, sizeof ebuf));
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(tc->ctx) != 1) {
		err_set(e, -1, "ca", "cannot load the system CA store: %s", ssl_err_text(ebuf, sizeof ebuf));
		goto fail;
	}
	SSL_CTX_set_verify(tc->ctx, t->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (t->cert) {
		struct tls_pair pair;
		if (!load_pair(t->cert, t->key, -1, true, &pair, e))
			goto fail;
		int ok = SSL_CTX_use_cert_and_key(tc->ctx, pair.cert, pair.key, pair.chain, 1);
		pair_free(&pair);
		if (ok != 1) {
			err_set(e, -1, "cert", "%s: cannot use this certificate: %s", t->cert, ssl_err_text(ebuf, sizeof ebuf));
			goto fail;
		}
	}
	return tc;
fail:
	tls_client_free(tc);
	return NULL;
}

void tls_client_free(struct tls_client *tc)
{
	if (!tc)
		return;
	SSL_CTX_free(tc->ctx);
	free(tc->sni);
	free(tc);
}

struct bufferevent *tls_client_bev(struct tls_client *tc, struct event_base *base)
{
	SSL *ssl = SSL_new(tc->ctx);
	if (!ssl)
		return NULL;
	if (tc->sni) {
		if (SSL_set_tlsext_host_name(ssl, tc->sni) != 1 || (tc->verify && SSL_set1_host(ssl, tc->sni) != 1)) {
			SSL_free(ssl);
			ERR_clear_error();
			return NULL;
		}
	}
	struct bufferevent *bev =
	    bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		SSL_free(ssl);
		return NULL;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* ---- pending connections (handshake, h2c sniffing) ---- */

#define TLS_FAIL_LIST(X)                                                                                               \
	X(TIMEOUT, "timeout")                                                                                          \
	X(CLOSED, "client_closed")                                                                                     \
	X(PROTOCOL_VERSION, "protocol_version")                                                                        \
	X(NO_SHARED_CIPHER, "no_shared_cipher")                                                                        \
	X(NOT_TLS, "not_tls")                                                                                          \
	X(CLIENT_CERTIFICATE, "client_certificate")                                                                    \
	X(CLIENT_ALERT, "client_alert")                                                                                \
	X(OTHER, "other")

enum tls_fail {
#define TLS_FAIL_ENUM(sym, str) TLS_FAIL_##sym,
	TLS_FAIL_LIST(TLS_FAIL_ENUM)
#undef TLS_FAIL_ENUM
	TLS_FAIL__COUNT
};

static const char *const tls_fail_names[] = {
#define TLS_FAIL_STR(sym, str) str,
    TLS_FAIL_LIST(TLS_FAIL_STR)
#undef TLS_FAIL_STR
};

struct tls_pending {
	struct worker *w;
	size_t listener;
	struct bufferevent *bev;
	struct client_origin origin;
	struct tls_pending *prev, *next;
};

struct tls_worker {
	struct tls_pending *pending;
	struct tls_conn *lingering;
	uint64_t handshakes;
	uint64_t failures[TLS_FAIL__COUNT];
};

/* ---- the transport of accepted TLS connections ----
 *
 * libevent's TLS bufferevent over a socket re-arms its events on every
 * WANT_READ and WANT_WRITE (two epoll_ctl per response, about ten per
 * handshake), reads each record with two read(2) (plus one that fails with
 * EAGAIN) and writes each record with its own write(2); over another
 * bufferevent it encrypts every evbuffer_add() into a record of its own and
 * calls SSL_read() whenever reading is enabled again. Instead, the SSL sits in
 * a generic filter bufferevent (the one the rest of sluice gets) over a
 * socket bufferevent, `under`, with a BIO on under's buffers:
 * - reading: under's read event stays armed; libevent reads up to 4 KiB into
 *   under's input, the input filter decrypts it (SSL_read() only when there
 *   is something to read), and the BIO reads whatever else the socket holds
 *   straight into OpenSSL's buffer, up to a bound;
 * - writing: the output filter only schedules under's io_flusher; once the
 *   current callbacks are done, tls_flush() encrypts what the filter's output
 *   holds (a record per piece of up to 16 KiB, pieces smaller than that
 *   gathered into one record while they fit) and writes under's output with
 *   one write(2). The write event is armed only when the socket would block;
 * - events (handshake done, a TLS failure, the client's close_notify) reach
 *   the filter's event callback from tls_flush(), never from inside
 *   libevent's filter code.
 *
 * What users of the filter must not notice, and how it is hidden:
 * - The filter's output empties into under's output, not into the socket.
 *   under takes about TLS_UNDER_HIGH bytes (the filter keeps the rest, so
 *   back-pressure on the filter's output still works); tls_bev_shutdown()
 *   waits for under before the half-close; and a filter freed while under
 *   still holds records (an HTTP/2 session ending on a full socket) leaves
 *   under behind until they are written, the client goes, or the send
 *   timeout passes.
 * - The filter's write timeout is a plain timer that libevent arms whatever
 *   the output holds: it is disarmed whenever the output is empty, and under
 *   has the send timeout for a socket that does not drain.
 * - A TCP close without close_notify is an EOF, not an error (what
 *   bufferevent_openssl_set_allow_dirty_shutdown() gives libevent's).
 * - The handshake timeout is the filter's read timeout: one deadline for the
 *   whole handshake. */

#define TLS_UNDER_HIGH (64 * 1024) /* encrypted bytes waiting in under's output */
#define TLS_READ_MORE (64 * 1024)  /* what one wakeup reads from the socket at most, beyond under's 4 KiB */
#define TLS_RECORD 16384           /* plaintext per record */
#define TLS_WRITE_MAX (64 * 1024)  /* plaintext per SSL_write() (OpenSSL cuts it into records) */

struct tls_conn {
	struct worker *w;
	SSL *ssl;
	struct bufferevent *under;
	struct bufferevent *bev; /* the filter */
	struct io_flusher flusher;
	/* the filter's callbacks on under, wrapped */
	bufferevent_data_cb readcb;
	bufferevent_event_cb eventcb;
	void *cbarg;
	unsigned long error; /* the OpenSSL error of a failure */
	short event;         /* BEV_EVENT_EOF or _ERROR (| _READING/_WRITING) once TLS failed or the client closed */
	bool event_sent;
	bool ready;             /* handshake done */
	bool connected_pending; /* BEV_EVENT_CONNECTED not delivered yet */
	bool notify_flushed;    /* tls_bev_shutdown() waits for under's output to be written */
	bool send_timeout_set;  /* under's write timeout, set the first time the socket is full */
	bool read_through;      /* tls_filter_in() runs under its bound: the BIO may read the socket */
	bool drained;           /* the socket had nothing more at the last look */
	struct tls_conn *prev, *next; /* in the worker's lingering list */
};

static int tls_bio_read(BIO *b, char *out, int len)
{
	struct tls_conn *tc = BIO_get_data(b);
	struct evbuffer *in = bufferevent_get_input(tc->under);
	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (evbuffer_get_length(in) > 0)
		return evbuffer_remove(in, out, (size_t)len);
	/* what under did not read (it reads 4 KiB per wakeup) comes straight into
	 * OpenSSL's buffer: no copy through under's input */
	if (tc->read_through && !tc->drained) {
		ssize_t n = recv(bufferevent_getfd(tc->under), out, (size_t)len, 0);
		if (n > 0) {
			if (n < len)
				tc->drained = true;
			return (int)n;
		}
		if (n == 0)
			return 0; /* EOF: OpenSSL reports it */
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1; /* an error: OpenSSL reports it */
		tc->drained = true;
	}
	BIO_set_retry_read(b);
	return -1;
}

static int tls_bio_write(BIO *b, const char *data, int len)
{
	struct tls_conn *tc = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	/* every record is copied into under and all of them leave in one writev:
	 * writing a large record straight from OpenSSL's buffer saved that copy
	 * but cost a system call per record, and over loopback the receiver's
	 * work too (wrk and h2load ran 7-15% slower against it) */
	if (evbuffer_add(bufferevent_get_output(tc->under), data, (size_t)len) != 0)
		return -1;
	return len;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH || cmd == BIO_CTRL_DUP ? 1 : 0;
}

static int tls_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void tls_bio_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sluice");
	if (m && BIO_meth_set_write(m, tls_bio_write) && BIO_meth_set_read(m, tls_bio_read) &&
	    BIO_meth_set_ctrl(m, tls_bio_ctrl) && BIO_meth_set_create(m, tls_bio_create))
		tls_bio_method = m;
	else
		BIO_meth_free(m);
}

static void under_readcb(struct bufferevent *under, void *arg);

/* The connection behind a filter we made, or NULL (its callbacks on under are
 * ours until the filter is freed). */
static struct tls_conn *tls_conn_of(struct bufferevent *bev)
{
	struct bufferevent *under = bev ? bufferevent_get_underlying(bev) : NULL;
	if (!under)
		return NULL;
	bufferevent_data_cb readcb = NULL;
	void *arg = NULL;
	bufferevent_getcb(under, &readcb, NULL, NULL, &arg);
	struct tls_conn *tc = readcb == under_readcb ? arg : NULL;
	return tc && tc->bev == bev ? tc : NULL;
}

/* False once the filter was freed (it dropped its callbacks on under). */
static bool tls_conn_linked(const struct tls_conn *tc)
{
	bufferevent_data_cb readcb = NULL;
	bufferevent_getcb(tc->under, &readcb, NULL, NULL, NULL);
	return readcb == under_readcb;
}

/* An SSL call returned r <= 0: a fatal error or the client's close_notify
 * becomes the event tls_flush() delivers; WANT_READ is just "wait". */
static void tls_conn_failed(struct tls_conn *tc, int r, short when)
{
	/* the BIO ran dry: only "wait", whatever an unrelated error left in this
	 * thread's queue (SSL_get_error() would report that one first, and the
	 * queue is not cleared before every call: that costs more than the call) */
	if (SSL_want_read(tc->ssl) && BIO_should_read(SSL_get_rbio(tc->ssl)))
		return;
	int e = SSL_get_error(tc->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	unsigned long code = ERR_peek_last_error();
	ERR_clear_error();
	if (tc->event)
		return;
	tc->error = code;
	/* a close_notify, or the socket closed without one, is an end, not an error */
	bool eof = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && code == 0);
	tc->event = (short)(when | (eof ? BEV_EVENT_EOF : BEV_EVENT_ERROR));
	io_flusher_schedule(&tc->flusher);
}

/* under's write event times out after the send timeout without progress. Set
 * only once the socket was full: before that under's write event is off. */
static void tls_conn_send_timeout(struct tls_conn *tc)
{
	if (tc->send_timeout_set)
		return;
	tc->send_timeout_set = true;
	struct timeval tv = worker_timeval(tc->w, tc->w->snap->conf->limits.send_timeout);
	bufferevent_set_timeouts(tc->under, NULL, &tv);
}

/* The filter's input: decrypt what under read. */
static enum bufferevent_filter_result tls_filter_in(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
                                                    enum bufferevent_flush_mode mode, void *ctx)
{
	(void)mode;
	struct tls_conn *tc = ctx;
	if (tc->event)
		return BEV_ERROR;
	bool progress = false;
	if (!tc->ready) {
		int r = SSL_do_handshake(tc->ssl);
		if (r != 1) {
			tls_conn_failed(tc, r, BEV_EVENT_READING);
			return tc->event ? BEV_ERROR : BEV_NEED_MORE;
		}
		tc->ready = true;
		tc->connected_pending = true;
		io_flusher_schedule(&tc->flusher);
		progress = true;
	}
	size_t got = 0;
	size_t bound = limit >= 0 && (size_t)limit < TLS_READ_MORE ? (size_t)limit : TLS_READ_MORE;
	/* Everything under and OpenSSL hold is decrypted, past the filter's read
	 * high-water mark if need be: libevent only comes back to under's input
	 * when the socket has more, and reading from the socket is suspended while
	 * the filter is full or not reading, so ciphertext left behind could wait
	 * forever. The socket itself is read further only while a whole record
	 * still fits under the bound: filling the filter up to its high-water mark
	 * would suspend and resume reading (two epoll_ctl) for every batch. */
	for (;;) {
		tc->read_through = !tc->drained && got + TLS_RECORD < bound;
		if (!tc->read_through && !SSL_has_pending(tc->ssl) && evbuffer_get_length(src) == 0)
			break;
		/* room for the next record's plaintext, as its header announces */
		size_t want = TLS_RECORD;
		struct evbuffer_iovec h;
		if (SSL_pending(tc->ssl) == 0 && evbuffer_peek(src, 5, NULL, &h, 1) >= 1 && h.iov_len >= 5) {
			const unsigned char *hp = h.iov_base;
			size_t rec = ((size_t)hp[3] << 8) | hp[4];
			want = rec < 256 ? 256 : rec < TLS_RECORD ? rec : TLS_RECORD;
		}
		struct evbuffer_iovec v;
		if (evbuffer_reserve_space(dst, (ev_ssize_t)want, &v, 1) < 1)
			return BEV_ERROR;
		int r = SSL_read(tc->ssl, v.iov_base, (int)(v.iov_len < TLS_RECORD ? v.iov_len : TLS_RECORD));
		if (r <= 0) {
			evbuffer_commit_space(dst, &v, 0);
			tls_conn_failed(tc, r, BEV_EVENT_READING);
			break;
		}
		v.iov_len = (size_t)r;
		evbuffer_commit_space(dst, &v, 1);
		got += (size_t)r;
	}
	tc->read_through = false;
	if (got > 0 || progress)
		return BEV_OK;
	return tc->event ? BEV_ERROR : BEV_NEED_MORE;
}

/* The filter's output: encrypted later, by tls_flush(). */
static enum bufferevent_filter_result tls_filter_out(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
                                                     enum bufferevent_flush_mode mode, void *ctx)
{
	(void)src;
	(void)dst;
	(void)limit;
	(void)mode;
	struct tls_conn *tc = ctx;
	io_flusher_schedule(&tc->flusher);
	return BEV_NEED_MORE;
}

/* Encrypt the filter's output into under's output while under has room. */
static void tls_encrypt(struct tls_conn *tc)
{
	struct evbuffer *src = bufferevent_get_output(tc->bev);
	struct evbuffer *dst = bufferevent_get_output(tc->under);
	while (evbuffer_get_length(src) > 0 && evbuffer_get_length(dst) < TLS_UNDER_HIGH && !tc->event) {
		/* one SSL_write() per piece of the output (records of up to 16 KiB),
		 * except that pieces shorter than a record are copied together into
		 * one while they fit: a response head and the first piece of its body
		 * make one record, not two */
		struct evbuffer_iovec v[8];
		int nv = evbuffer_peek(src, -1, NULL, v, 8);
		if (nv > 8)
			nv = 8;
		const unsigned char *p = v[0].iov_base;
		size_t n = v[0].iov_len < TLS_WRITE_MAX ? v[0].iov_len : TLS_WRITE_MAX;
		if (n == 0) { /* an empty piece first: gather whatever follows */
			size_t len = evbuffer_get_length(src);
			n = len < TLS_RECORD ? len : TLS_RECORD;
			p = evbuffer_pullup(src, (ev_ssize_t)n);
		} else if (n < TLS_RECORD) {
			size_t sum = n;
			int k = 1;
			while (k < nv && sum + v[k].iov_len <= TLS_RECORD)
				sum += v[k++].iov_len;
			if (k > 1) {
				n = sum;
				p = evbuffer_pullup(src, (ev_ssize_t)n);
			}
		}
		int r = p ? SSL_write(tc->ssl, p, (int)n) : -1;
		if (r <= 0) {
			tls_conn_failed(tc, r, BEV_EVENT_WRITING);
			if (!tc->event) { /* cannot happen: the BIO takes everything */
				tc->event = BEV_EVENT_WRITING | BEV_EVENT_ERROR;
				io_flusher_schedule(&tc->flusher);
			}
			break;
		}
		evbuffer_drain(src, (size_t)r);
	}
}

/* under's flusher: encrypt, tell the filter's user, write, deliver events. */
static void tls_flush(struct io_flusher *f, void *arg)
{
	struct tls_conn *tc = arg;
	struct bufferevent *bev = tc->bev;
	if (!tls_conn_linked(tc)) {
		if (!io_flusher_write(f)) /* the filter is gone: what is encrypted still goes out */
			tls_conn_send_timeout(tc);
		return;
	}
	if (tc->connected_pending) {
		tc->connected_pending = false;
		bufferevent_trigger_event(bev, BEV_EVENT_CONNECTED, 0);
		if (!tls_conn_linked(tc)) {
			io_flusher_write(f);
			return;
		}
	}
	struct evbuffer *out = bufferevent_get_output(bev);
	size_t low = 0;
	bufferevent_getwatermark(bev, EV_WRITE, &low, NULL);
	for (;;) {
		size_t before = evbuffer_get_length(out);
		if (tc->ready && before > 0)
			tls_encrypt(tc);
		size_t after = evbuffer_get_length(out);
		if (after < before && after <= low) {
			/* the user may write more (encrypted on the next round, into the
			 * same write), or end the connection */
			bufferevent_trigger(bev, EV_WRITE, 0);
			if (!tls_conn_linked(tc)) {
				io_flusher_write(f);
				return;
			}
			if (evbuffer_get_length(out) > after && !tc->event &&
			    evbuffer_get_length(bufferevent_get_output(tc->under)) < TLS_UNDER_HIGH)
				continue;
		}
		bool flushed = io_flusher_write(f);
		if (!flushed) {
			tls_conn_send_timeout(tc);
			break;
		}
		/* under is empty and the filter still holds data: next batch */
		if (evbuffer_get_length(out) == 0 || tc->event || !tc->ready)
			break;
	}
	if (evbuffer_get_length(out) == 0)
		event_del(&bev->ev_write); /* nothing left for the write timeout to time */
	if (tc->notify_flushed && evbuffer_get_length(bufferevent_get_output(tc->under)) == 0) {
		tc->notify_flushed = false;
		bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
		if (!tls_conn_linked(tc))
			return;
	}
	if (tc->event && !tc->event_sent) {
		tc->event_sent = true;
		bufferevent_trigger_event(bev, tc->event, 0);
	}
}

static void under_readcb(struct bufferevent *under, void *arg)
{
	struct tls_conn *tc = arg;
	/* libevent read what the socket held, up to 4 KiB: less means there is no more */
	tc->drained = evbuffer_get_length(bufferevent_get_input(under)) < 4096;
	tc->readcb(under, tc->cbarg);
}

static void under_writecb(struct bufferevent *under, void *arg)
{
	(void)under;
	struct tls_conn *tc = arg;
	/* the socket took what waited: back to direct writes, and encrypt more */
	io_flusher_drained(&tc->flusher);
	io_flusher_schedule(&tc->flusher);
}

static void under_eventcb(struct bufferevent *under, short what, void *arg)
{
	struct tls_conn *tc = arg;
	tc->eventcb(under, what, tc->cbarg);
}

static void linger_end(struct tls_conn *tc)
{
	struct tls_worker *tw = tc->w->tls;
	if (tc->prev)
		tc->prev->next = tc->next;
	else if (tw)
		tw->lingering = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	bufferevent_setcb(tc->under, NULL, NULL, NULL, NULL);
	bufferevent_decref(tc->under); /* the last reference: closes the socket */
	free(tc);
}

static void linger_readcb(struct bufferevent *under, void *arg)
{
	(void)arg;
	struct evbuffer *in = bufferevent_get_input(under);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void linger_writecb(struct bufferevent *under, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(under)) == 0)
		linger_end(arg);
}

static void linger_eventcb(struct bufferevent *under, short what, void *arg)
{
	(void)under;
	if ((what & BEV_EVENT_EOF) && !(what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return; /* the client is done sending; it may still read */
	linger_end(arg);
}

/* The filter is being destroyed (under has lost its callbacks and lives until
 * the filter is gone). */
static void tls_conn_free(void *arg)
{
	struct tls_conn *tc = arg;
	io_flusher_free(&tc->flusher);
	SSL_free(tc->ssl);
	tc->ssl = NULL;
	struct bufferevent *under = tc->under;
	struct tls_worker *tw = tc->w->tls;
	if (!tw || evbuffer_get_length(bufferevent_get_output(under)) == 0) {
		free(tc);
		return;
	}
	/* records still wait (the socket was full): keep under until they are
	 * written, the client goes away, or the send timeout passes */
	bufferevent_incref(under);
	tls_conn_send_timeout(tc);
	bufferevent_setcb(under, linger_readcb, linger_writecb, linger_eventcb, tc);
	bufferevent_enable(under, EV_READ | EV_WRITE);
	tc->prev = NULL;
	tc->next = tw->lingering;
	if (tw->lingering)
		tw->lingering->prev = tc;
	tw->lingering = tc;
}

int tls_bev_shutdown(struct bufferevent *bev, bool half_close)
{
	struct tls_conn *tc = tls_conn_of(bev);
	if (!tc) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		if (ssl && SSL_shutdown(ssl) < 0)
			ERR_clear_error();
		if (!half_close)
			return bufferevent_getfd(bev) >= 0 ? 1 : -1;
		return shutdown(bufferevent_getfd(bev), SHUT_WR) == 0 ? 1 : -1;
	}
	/* a TLS close_notify before the TCP half-close: the client can tell a
	 * complete response from a truncated one, and keep its session */
	if (tc->ready && !tc->event && !(SSL_get_shutdown(tc->ssl) & SSL_SENT_SHUTDOWN) && SSL_shutdown(tc->ssl) < 0)
		ERR_clear_error();
	if (evbuffer_get_length(bufferevent_get_output(tc->under)) > 0) {
		tc->notify_flushed = true;
		io_flusher_schedule(&tc->flusher);
		return 0;
	}
	if (!half_close)
		return 1;
	return shutdown(bufferevent_getfd(tc->under), SHUT_WR) == 0 ? 1 : -1;
}

struct tls_worker *tls_worker_new(void)
{
	return calloc(1, sizeof(struct tls_worker));
}

static void pending_unlink(struct tls_pending *p)
{
	struct tls_worker *tw = p->w->tls;
	if (p->prev)
		p->prev->next = p->next;
	else
		tw->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
}

/* Ends a pending connection that never became a client connection. */
static void pending_close(struct tls_pending *p)
{
	struct worker *w = p->w;
	pending_unlink(p);
	bufferevent_free(p->bev);
	free(p);
	worker_conn_closed(w);
}

/* Hands the connection on: the worker's count moves with it. */
static void pending_handoff(struct tls_pending *p, bool h2)
{
	struct worker *w = p->w;
	struct bufferevent *bev = p->bev;
	struct client_origin o = p->origin;
	size_t listener = p->listener;
	pending_unlink(p);
	free(p);
	w->num_conns--;
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	if (h2) {
		o.protocol = "HTTP/2.0";
		h2_session_start(w, listener, bev, &o);
	} else {
		client_accept_bev(w, listener, bev, &o);
	}
	if (w->draining && w->num_conns == 0)
		event_base_loopexit(w->base, NULL);
}

static enum tls_fail classify(unsigned long first, short what)
{
	if (what & BEV_EVENT_TIMEOUT)
		return TLS_FAIL_TIMEOUT;
	if (!first)
		return (what & BEV_EVENT_EOF) || !(what & BEV_EVENT_ERROR) || EVUTIL_SOCKET_ERROR() != 0 ? TLS_FAIL_CLOSED
		                                                                                           : TLS_FAIL_OTHER;
	if (ERR_GET_LIB(first) != ERR_LIB_SSL)
		return TLS_FAIL_OTHER;
	int r = ERR_GET_REASON(first);
	switch (r) {
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_UNKNOWN_PROTOCOL:
		return TLS_FAIL_PROTOCOL_VERSION;
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SHARED_GROUPS:
	case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
		return TLS_FAIL_NO_SHARED_CIPHER;
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
		return TLS_FAIL_NOT_TLS;
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
		return TLS_FAIL_CLIENT_CERTIFICATE;
	default:
		return r >= SSL_AD_REASON_OFFSET ? TLS_FAIL_CLIENT_ALERT : TLS_FAIL_OTHER;
	}
}

static void handshake_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tls_pending *p = arg;
	struct tls_conn *tc = tls_conn_of(bev);
	if ((what & BEV_EVENT_CONNECTED) && tc) {
		p->w->tls->handshakes++;
		const unsigned char *alpn = NULL;
		unsigned alpn_len = 0;
		SSL_get0_alpn_selected(tc->ssl, &alpn, &alpn_len);
		bool h2 = alpn_len == 2 && memcmp(alpn, "h2", 2) == 0;
		pending_handoff(p, h2);
		return;
	}
	enum tls_fail f = classify(tc ? tc->error : 0, what);
	p->w->tls->failures[f]++;
	if (log_enabled(LOG_DEBUG)) {
		struct log_line l;
		log_begin(&l, LOG_DEBUG, "TLS handshake failed");
		log_str(&l, "reason", tls_fail_names[f]);
		log_str(&l, "client_ip", p->origin.ip);
		log_end(&l);
	}
	ERR_clear_error();
	pending_close(p);
}

static struct tls_pending *pending_new(struct worker *w, size_t listener, const struct sockaddr *sa,
                                       const char *scheme)
{
	struct tls_pending *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->w = w;
	p->listener = listener;
	client_origin_from_sockaddr(&p->origin, sa);
	p->origin.scheme = scheme;
	return p;
}

static void pending_link(struct tls_pending *p)
{
	struct tls_worker *tw = p->w->tls;
	p->next = tw->pending;
	if (tw->pending)
		tw->pending->prev = p;
	tw->pending = p;
	p->w->num_conns++;
}

/* The socket is already non-blocking: evconnlistener accepts with SOCK_NONBLOCK. */
static void prepare_socket(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
		log_msg(LOG_DEBUG, "TCP_NODELAY failed on a client socket");
}

void tls_accept(struct worker *w, size_t listener, int fd, const struct sockaddr *sa)
{
	const struct conf_listener *cl = &w->snap->conf->listeners[listener];
	struct tls_server *ts = cl->tls->server;
	prepare_socket(fd);
	struct tls_pending *p = pending_new(w, listener, sa, "https");
	struct tls_conn *tc = p ? calloc(1, sizeof(*tc)) : NULL;
	SSL *ssl = tc ? SSL_new(ts->ctxs[0]) : NULL;
	BIO *bio = ssl ? BIO_new(tls_bio_method) : NULL;
	/* under gets the socket once everything is set up, so that arming its
	 * read event is the only epoll_ctl */
	struct bufferevent *under = bio ? bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE) : NULL;
	struct bufferevent *bev = NULL;
	if (under) {
		tc->w = w;
		tc->ssl = ssl;
		tc->under = under;
		BIO_set_data(bio, tc);
		SSL_set_bio(ssl, bio, bio);
		bio = NULL; /* the SSL's now */
		SSL_set_accept_state(ssl);
		if (io_flusher_init(&tc->flusher, &w->flush_queue, under) == 0) {
			io_flusher_set_cb(&tc->flusher, tls_flush, tc);
			bev = bufferevent_filter_new(under, tls_filter_in, tls_filter_out, BEV_OPT_CLOSE_ON_FREE,
			                             tls_conn_free, tc);
		}
	}
	if (!bev) {
		ERR_clear_error();
		if (under) {
			io_flusher_free(&tc->flusher);
			bufferevent_free(under);
		}
		BIO_free(bio);
		SSL_free(ssl);
		free(tc);
		free(p);
		close(fd);
		return;
	}
	/* from here on the filter owns tc, ssl and under */
	tc->bev = bev;
	p->bev = bev;
	bufferevent_data_cb writecb = NULL;
	bufferevent_getcb(under, &tc->readcb, &writecb, &tc->eventcb, &tc->cbarg);
	bufferevent_setcb(under, under_readcb, under_writecb, under_eventcb, tc);
	/* the filter turned writing on: records go out through the flusher instead */
	bufferevent_disable(under, EV_WRITE);
	bufferevent_setfd(under, fd); /* under owns the socket now */
	pending_link(p);
	struct timeval tv = worker_timeval(w, cl->tls->handshake_timeout);
	bufferevent_setcb(bev, NULL, NULL, handshake_event_cb, p);
	/* reading on first: a filter arms its read timeout only while it reads */
	if (bufferevent_enable(bev, EV_READ) != 0 || bufferevent_set_timeouts(bev, &tv, NULL) != 0)
		pending_close(p);
}

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void sniff_read_cb(struct bufferevent *bev, void *arg)
{
	struct tls_pending *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t have = evbuffer_get_length(in);
	size_t n = have < sizeof(h2_preface) - 1 ? have : sizeof(h2_preface) - 1;
	unsigned char buf[sizeof(h2_preface)];
	if (evbuffer_copyout(in, buf, n) != (ev_ssize_t)n) {
		pending_close(p);
		return;
	}
	if (memcmp(buf, h2_preface, n) != 0) {
		pending_handoff(p, false);
		return;
	}
	if (n == sizeof(h2_preface) - 1)
		pending_handoff(p, true);
	/* else: a prefix of the preface, wait for more */
}

static void sniff_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	pending_close(arg);
}

void tls_accept_h2c(struct worker *w, size_t listener, int fd, const struct sockaddr *sa)
{
	prepare_socket(fd);
	struct tls_pending *p = pending_new(w, listener, sa, "http");
	if (!p) {
		close(fd);
		return;
	}
	p->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!p->bev) {
		free(p);
		close(fd);
		return;
	}
	p->origin.plain_socket = true; /* HTTP/1 on it gets direct writes (io.h) */
	pending_link(p);
	struct timeval tv = worker_timeval(w, w->snap->conf->limits.client_header_timeout);
	bufferevent_setcb(p->bev, sniff_read_cb, NULL, sniff_event_cb, p);
	if (bufferevent_set_timeouts(p->bev, &tv, NULL) != 0 || bufferevent_enable(p->bev, EV_READ) != 0)
		pending_close(p);
}

void tls_worker_close_pending(struct worker *w)
{
	if (!w->tls)
		return;
	while (w->tls->pending)
		pending_close(w->tls->pending);
}

void tls_worker_free(struct worker *w)
{
	struct tls_worker *tw = w->tls;
	if (!tw)
		return;
	while (tw->pending) {
		struct tls_pending *p = tw->pending;
		pending_unlink(p);
		bufferevent_free(p->bev);
		free(p);
	}
	while (tw->lingering)
		linger_end(tw->lingering);
	uint64_t total = 0;
	for (int i = 0; i < TLS_FAIL__COUNT; i++)
		total += tw->failures[i];
	if (tw->handshakes || total) {
		struct log_line l;
		log_begin(&l, LOG_INFO, "TLS handshakes");
		log_int(&l, "worker", w->id);
		log_int(&l, "completed", (long long)tw->handshakes);
		log_int(&l, "failed", (long long)total);
		for (int i = 0; i < TLS_FAIL__COUNT; i++)
			if (tw->failures[i])
				log_int(&l, tls_fail_names[i], (long long)tw->failures[i]);
		log_end(&l);
	}
	free(tw);
	w->tls = NULL;
}

/* ---- per-request facts ---- */

bool tls_bev_info(struct bufferevent *bev, struct tls_info *out)
{
	struct tls_conn *tc = tls_conn_of(bev);
	SSL *ssl = tc ? tc->ssl : bev ? bufferevent_openssl_get_ssl(bev) : NULL;
	if (!ssl)
		return false;
	out->version = SSL_get_version(ssl);
	out->cipher = SSL_get_cipher_name(ssl);
	const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	out->sni = sn ? sn : "";
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
	out->alpn = alpn_len == 2 && memcmp(alpn, "h2", 2) == 0 ? "h2" : alpn_len ? "http/1.1" : "";
	out->resumed = SSL_session_reused(ssl) == 1;
	out->client_subject = "";
	char *subject = SSL_get_ex_data(ssl, tls_conn_index);
	if (!subject) {
		X509 *peer = SSL_get0_peer_certificate(ssl);
		if (peer && SSL_get_verify_result(ssl) == X509_V_OK) {
			BIO *b = BIO_new(BIO_s_mem());
			if (b && X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
				char *data = NULL;
				long len = BIO_get_mem_data(b, &data);
				if (len >= 0 && (subject = malloc((size_t)len + 1)) != NULL) {
					memcpy(subject, data, (size_t)len);
					subject[len] = '\0';
					if (SSL_set_ex_data(ssl, tls_conn_index, subject) != 1) {
						free(subject);
						subject = NULL;
					}
				}
			}
			BIO_free(b);
			ERR_clear_error();
		}
	}
	if (subject)
		out->client_subject = subject;
	return true;
}

bool tls_request_info(const struct request *r, struct tls_info *out)
{
	if (!r->scheme || strcmp(r->scheme, "https") != 0)
		return false;
	if (!r->client_bev)
		return false;
	/* an HTTP/2 stream's client_bev is its session's transport */
	return tls_bev_info(r->client_bev, out);
}

/* ---- privileges ---- */

int tls_drop_privileges(const struct conf *c)
{
	if (!c->user)
		return 0;
	struct passwd pw, *res = NULL;
	char buf[4096];
	int rc = getpwnam_r(c->user, &pw, buf, sizeof buf, &res);
	if (rc != 0 || !res) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "cannot drop privileges: unknown user");
		log_str(&l, "user", c->user);
		log_end(&l);
		return -1;
	}
	if (geteuid() != 0) {
		if (geteuid() == pw.pw_uid)
			return 0;
		struct log_line l;
		log_begin(&l, LOG_ERROR, "cannot switch user: not started as root");
		log_str(&l, "user", c->user);
		log_end(&l);
		return -1;
	}
	if (setgroups(1, &pw.pw_gid) != 0 || setgid(pw.pw_gid) != 0 || setuid(pw.pw_uid) != 0) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "cannot drop privileges");
		log_str(&l, "user", c->user);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
		return -1;
	}
	if (pw.pw_uid != 0 && setuid(0) == 0) {
		log_msg(LOG_ERROR, "privileges could be regained after dropping them; refusing to run");
		return -1;
	}
	struct log_line l;
	log_begin(&l, LOG_INFO, "privileges dropped");
	log_str(&l, "user", c->user);
	log_int(&l, "uid", (long long)pw.pw_uid);
	log_int(&l, "gid", (long long)pw.pw_gid);
	log_end(&l);
	return 0;
}
