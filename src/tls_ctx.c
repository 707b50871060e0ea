#include "tls_ctx.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "conf_tls.h"
#include "tls_io.h"

/* ---- process-wide, set once ---- */

static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static int tls_ctx_index = -1; /* SSL_CTX -> struct tls_server */
/* Fetched once: EVP_aes_256_cbc() would be looked up by name on every ticket. */
static EVP_CIPHER *tls_ticket_cipher;

static void tls_init_once(void)
{
	tls_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	tls_ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	ERR_clear_error();
}

/* The transport's process-wide parts are set up here too, so that they exist
 * before the first connection of a listener whose contexts exist. */
static bool tls_init(void)
{
	return pthread_once(&tls_once, tls_init_once) == 0 && tls_ctx_index >= 0 && tls_io_init();
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

/* rotation is a duration: monotonic, so a clock step neither rotates early nor stalls it */
static uint64_t now_ms(void)
{
	return clock_mono_us() / 1000u;
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

bool tls_server_cert_expiry(const struct tls_server *ts, size_t i, int64_t *not_after, const char **names)
{
	if (!ts || i >= ts->num_ctxs)
		return false;
	/* the context's current certificate: an ECDSA/RSA twin shares its names and, in practice, its renewal */
	X509 *x = SSL_CTX_get0_certificate(ts->ctxs[i]);
	struct tm tm;
	if (!x || ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
		return false;
	*not_after = (int64_t)timegm(&tm);
	*names = ts->ctx_names[i];
	return true;
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

SSL_CTX *tls_client_ctx(const struct tls_client *tc)
{
	return tc->ctx;
}

SSL *tls_server_ssl_new(struct tls_server *ts)
{
	return SSL_new(ts->ctxs[0]);
}
