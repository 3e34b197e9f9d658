/*
 * http.c: libcurl transfers for the whole process.
 *
 * Why a handle pool and not CURL_LOCK_DATA_CONNECT: libcurl documents that
 * sharing a connection cache between concurrent threads is not supported.
 * An easy handle keeps its own live connections across curl_easy_reset, so a
 * pool of idle handles gives every lua_State (one per phone call, on many
 * threads) warm keep-alive connections while each handle is used by one
 * thread at a time.  DNS and TLS sessions, which curl does support sharing
 * across threads, live in a CURLSH with one mutex per data kind.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "guard.h"
#include "http.h"
#include "stats.h"
#include "worker.h"

#define POOL_MAX 64
#define HEADER_LIMIT (64 * 1024)

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_ok;
static CURLSH *share;
static pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static CURL *pool[POOL_MAX];
static int pool_n;
static int pool_size = 16;

static void share_lock (CURL *h, curl_lock_data d, curl_lock_access a,
                        void *u) {
  (void)h; (void)a; (void)u;
  pthread_mutex_lock(&share_locks[d]);
}

static void share_unlock (CURL *h, curl_lock_data d, void *u) {
  (void)h; (void)u;
  pthread_mutex_unlock(&share_locks[d]);
}

static void init_once_fn (void) {
  int i;
  /* Refcounted in libcurl; FreeSWITCH has usually called it already.  We
   * never call curl_global_cleanup: other states and the host may still use
   * curl, and the host cleans up at shutdown. */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return;
  for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
    pthread_mutex_init(&share_locks[i], NULL);
  if ((share = curl_share_init()) == NULL) return;
  curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
  curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
  curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  init_ok = 1;
}

int ecw_http_init (void) {
  pthread_once(&init_once, init_once_fn);
  return init_ok;
}

void ecw_http_set_pool_size (int n) {
  pthread_mutex_lock(&pool_lock);
  pool_size = n < 1 ? 1 : n > POOL_MAX ? POOL_MAX : n;
  while (pool_n > pool_size) curl_easy_cleanup(pool[--pool_n]);
  pthread_mutex_unlock(&pool_lock);
}

int ecw_http_pool_size (void) {
  int n;
  pthread_mutex_lock(&pool_lock);
  n = pool_size;
  pthread_mutex_unlock(&pool_lock);
  return n;
}

static CURL *pool_get (void) {
  CURL *h = NULL;
  pthread_mutex_lock(&pool_lock);
  if (pool_n > 0) h = pool[--pool_n];
  pthread_mutex_unlock(&pool_lock);
  if (h == NULL) h = curl_easy_init();
  else curl_easy_reset(h);   /* keeps the handle's live connections */
  return h;
}

static void pool_put (CURL *h, int healthy) {
  if (healthy) {
    pthread_mutex_lock(&pool_lock);
    if (pool_n < pool_size) {
      pool[pool_n++] = h;
      h = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
  }
  if (h) curl_easy_cleanup(h);
}

static size_t on_body (char *p, size_t size, size_t n, void *ud) {
  ecw_buf *b = ud;
  size_t len = size * n;
  /* Returning less than len aborts the transfer with CURLE_WRITE_ERROR. */
  return ecw_buf_append(b, p, len) ? len : 0;
}

static size_t on_header (char *p, size_t size, size_t n, void *ud) {
  ecw_buf *b = ud;
  size_t len = size * n;
  /* A new status line (after 1xx) starts a new header block. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) b->len = 0;
  return ecw_buf_append(b, p, len) ? len : 0;
}

/* A worker-thread transfer stops early when its job was cancelled. */
static int on_progress (void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                        curl_off_t un) {
  ecw_job *j = ud;
  (void)dt; (void)dn; (void)ut; (void)un;
  return (j && atomic_load(&j->cancelled)) || atomic_load(&ecw_worker_exiting) ? 1 : 0;
}

static void slist_free_secret (struct curl_slist *l) {
  struct curl_slist *i;
  for (i = l; i; i = i->next) OPENSSL_cleanse(i->data, strlen(i->data));
  curl_slist_free_all(l);
}

static int is_tls_error (CURLcode c) {
  switch (c) {
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED: case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED: case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_SHUTDOWN_FAILED:
      return 1;
    default:
      return 0;
  }
}

static void map_error (CURLcode c, const char *errbuf, ecw_http_resp *rs,
                       ecw_err *err) {
  const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(c);
  if (c == CURLE_ABORTED_BY_CALLBACK) {
    ecw_err_set(err, ECW_E_CANCELLED, 0, "request cancelled");
  } else if (c == CURLE_OPERATION_TIMEDOUT) {
    ecw_err_set(err, ECW_E_TIMEOUT, 0, "timed out: %s", detail);
    err->retryable = 1;
  } else if (is_tls_error(c)) {
    ecw_err_set(err, ECW_E_TLS, 0, "TLS failure: %s", detail);
  } else if (c == CURLE_BAD_CONTENT_ENCODING) {
    /* The body does not decode as its Content-Encoding says: the server's
     * answer is broken, and asking again will not mend it. */
    ecw_err_set(err, ECW_E_BAD_RESPONSE, 0, "response body does not match "
                "its Content-Encoding");
  } else if (c == CURLE_FILESIZE_EXCEEDED ||
             (c == CURLE_WRITE_ERROR && (rs->body.overflow ||
                                         rs->headers.overflow))) {
    ecw_err_set(err, ECW_E_TOO_LARGE, 0, "response exceeds the size limit");
  } else {
    ecw_err_set(err, ECW_E_NETWORK, 0, "network failure: %s", detail);
    err->retryable = 1;
  }
}

struct find_header {
  const char *name;          /* lower case */
  char *value;               /* malloc'd copy of the first match */
};

static void find_header_fn (void *ud, const char *name, size_t nlen,
                            const char *value, size_t vlen) {
  struct find_header *fh = ud;
  if (fh->value == NULL && nlen == strlen(fh->name) &&
      strncasecmp(name, fh->name, nlen) == 0)
    fh->value = ecw_strndup(value, vlen);
}

int ecw_http_perform (const ecw_http_req *rq, ecw_http_resp *rs,
                      ecw_err *err) {
  char errbuf[CURL_ERROR_SIZE];
  struct curl_slist *hdrs = NULL;
  ecw_buf line = {0};
  CURL *h;
  CURLcode rc;
  long nconn = 0;
  int probe = 0;
  int64_t left = rq->deadline_ms - ecw_now_ms();

  memset(rs, 0, sizeof *rs);
  rs->body.limit = rq->max_body;
  rs->headers.limit = HEADER_LIMIT;
  if (left <= 0) {
    ecw_err_set(err, ECW_E_TIMEOUT, 0, "deadline passed before the request");
    err->retryable = 1;
    return 0;
  }
  if (rq->guard && !ecw_guard_before(rq->guard, &probe, err)) return 0;
  if (!ecw_http_init() || (h = pool_get()) == NULL) {
    if (rq->guard) ecw_guard_after(rq->guard, probe, 1, 0, NULL);
    ecw_err_set(err, ECW_E_INTERNAL, 0, "libcurl initialisation failed");
    return 0;
  }

  errbuf[0] = '\0';
  curl_easy_setopt(h, CURLOPT_SHARE, share);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_URL, rq->url);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  if (rq->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, rq->ca_file);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)(rq->connect_timeout_ms < left ?
                          rq->connect_timeout_ms : left));
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)rq->max_body);
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "ecw/" ECW_VERSION);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &rs->body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &rs->headers);
  if (ecw_worker_current()) {   /* process exit aborts any worker transfer */
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA,
                     rq->cancellable ? (void *)ecw_worker_current() : NULL);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  }

  hdrs = curl_slist_append(hdrs, "Expect:");
  if (rq->accept) {
    ecw_buf_puts(&line, "Accept: ");
    ecw_buf_puts(&line, rq->accept);
    hdrs = curl_slist_append(hdrs, line.data);
    line.len = 0;
  }
  if (rq->bearer) {
    ecw_buf_puts(&line, "Authorization: Bearer ");
    ecw_buf_puts(&line, rq->bearer);
    hdrs = curl_slist_append(hdrs, line.data);
  }
  ecw_buf_free_secret(&line);
  if (rq->body) {
    ecw_buf ct = {0};
    ecw_buf_puts(&ct, "Content-Type: ");
    ecw_buf_puts(&ct, rq->content_type);
    hdrs = curl_slist_append(hdrs, ct.data);
    ecw_buf_free(&ct);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body);
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);

  ECW_COUNT(http_requests);
  rc = curl_easy_perform(h);
  if (curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK &&
      nconn > 0)
    atomic_fetch_add(&ecw_counters.connections_opened, nconn);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rs->status);

  /* Drop our header list (it holds the token) before the handle goes back:
   * curl_easy_reset forgets the pointer, but make that explicit. */
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
  slist_free_secret(hdrs);
  pool_put(h, rc == CURLE_OK);

  if (rq->guard) {
    struct find_header fh = { "retry-after", NULL };
    /* A cancelled or oversized transfer says nothing about the server. */
    int transport_ok = rc == CURLE_OK || rc == CURLE_ABORTED_BY_CALLBACK ||
                       rc == CURLE_FILESIZE_EXCEEDED ||
                       (rc == CURLE_WRITE_ERROR && rs->body.overflow);
    if (rc == CURLE_OK && rs->status == 429)
      ecw_headers_each(rs->headers.data, rs->headers.len, find_header_fn, &fh);
    ecw_guard_after(rq->guard, probe, transport_ok,
                    rc == CURLE_OK ? rs->status : 0, fh.value);
    free(fh.value);
  }

  if (rc != CURLE_OK) {
    map_error(rc, errbuf, rs, err);
    ecw_http_resp_free(rs, rq->secret_body);
    return 0;
  }
  return 1;
}

void ecw_http_resp_free (ecw_http_resp *rs, int secret) {
  if (secret) ecw_buf_free_secret(&rs->body);
  else ecw_buf_free(&rs->body);
  ecw_buf_free(&rs->headers);
}

/* RFC 9110 tchar: what a field name may hold. */
static int is_tchar (unsigned char c) {
  return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

void ecw_headers_each (const char *raw, size_t len, ecw_header_fn fn,
                       void *ud) {
  const char *p, *end;
  if (raw == NULL) return;
  p = raw;
  end = raw + len;
  /* Skip the status line. */
  while (p < end && *p != '\n') p++;
  while (p < end) {
    const char *line = ++p, *colon, *eol, *v;
    while (p < end && *p != '\n') p++;
    eol = p;
    if (eol > line && eol[-1] == '\r') eol--;
    if (eol <= line) continue;
    colon = memchr(line, ':', (size_t)(eol - line));
    if (colon == NULL || colon == line) continue;
    /* Not a field name (a folded continuation, stray bytes): skip it. */
    for (v = line; v < colon && is_tchar((unsigned char)*v); v++) {}
    if (v != colon) continue;
    for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {}
    while (eol > v && (eol[-1] == ' ' || eol[-1] == '\t')) eol--;
    {
      /* A value with control bytes (a bare CR, NUL) is not one we pass on. */
      const char *q;
      for (q = v; q < eol; q++)
        if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f) break;
      if (q != eol) continue;
    }
    fn(ud, line, (size_t)(colon - line), v, (size_t)(eol - v));
  }
}
