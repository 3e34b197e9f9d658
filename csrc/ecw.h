/*
 * ecw: shared declarations for the C core.
 *
 * Everything here is process-wide plain C data: no lua_State, no Lua
 * references.  The Lua binding (ecw_core.c) is the only file that includes
 * lua.h, so the core can run on threads that own no Lua state.
 */
#ifndef ECW_H
#define ECW_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define ECW_VERSION "0.1.0"

/* Hide everything but luaopen_*: libfreeswitch exports generic names. */
#define ECW_LOCAL __attribute__((visibility("hidden")))

/* ---- errors ------------------------------------------------------------ */

/* Stable error codes; the Lua layer maps them onto its public set. */
#define ECW_E_CONFIG         "config"
#define ECW_E_INVALID_CLIENT "invalid_client"
#define ECW_E_INVALID_GRANT  "invalid_grant"
#define ECW_E_OAUTH          "oauth_error"
#define ECW_E_TIMEOUT        "timeout"
#define ECW_E_NETWORK        "network"
#define ECW_E_TLS            "tls"
#define ECW_E_HTTP           "http"
#define ECW_E_BAD_RESPONSE   "bad_response"
#define ECW_E_TOO_LARGE      "too_large"
#define ECW_E_ORIGIN         "origin"
#define ECW_E_INTERNAL       "internal"
#define ECW_E_BUSY           "busy"
#define ECW_E_RATE_LIMITED   "rate_limited"
#define ECW_E_UNAVAILABLE    "unavailable"
#define ECW_E_CANCELLED      "cancelled"

typedef struct ecw_err {
  const char *code;          /* one of ECW_E_*, static */
  long status;               /* HTTP status, 0 when none */
  int retryable;
  char message[256];         /* never holds PHI, tokens or keys */
  char oauth_error[64];
  char oauth_description[256];
} ecw_err;

ECW_LOCAL void ecw_err_set (ecw_err *e, const char *code, long status,
                            const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

/* Prefix err->message with where it happened ("token endpoint: ..."). */
ECW_LOCAL void ecw_err_prefix (ecw_err *e, const char *where);

/* ---- time -------------------------------------------------------------- */

ECW_LOCAL int64_t ecw_now_ms (void);      /* CLOCK_MONOTONIC */
ECW_LOCAL int64_t ecw_wall_s (void);      /* CLOCK_REALTIME, seconds */
/* pthread_cond_timedwait until a deadline on the ecw_now_ms() clock (the
 * condition variable must use CLOCK_MONOTONIC); ETIMEDOUT once it passed. */
ECW_LOCAL int ecw_cond_wait_until (pthread_cond_t *cv, pthread_mutex_t *m,
                                   int64_t deadline_ms);

/* ---- byte buffer ------------------------------------------------------- */

typedef struct ecw_buf {
  char *data;
  size_t len, cap;
  size_t limit;              /* 0 = no limit */
  int overflow;              /* set when an append hit the limit */
} ecw_buf;

ECW_LOCAL int ecw_buf_append (ecw_buf *b, const void *p, size_t n);
ECW_LOCAL int ecw_buf_puts (ecw_buf *b, const char *s);
ECW_LOCAL void ecw_buf_free (ecw_buf *b);         /* plain free */
ECW_LOCAL void ecw_buf_free_secret (ecw_buf *b);  /* OPENSSL_cleanse first */

/* ---- small helpers ------------------------------------------------------ */

ECW_LOCAL char *ecw_strdup (const char *s);
ECW_LOCAL char *ecw_strndup (const char *s, size_t n);
ECW_LOCAL void ecw_free_secret (char *s);          /* cleanse + free */
ECW_LOCAL int ecw_streq (const char *a, const char *b);   /* NULL-safe */
ECW_LOCAL char *ecw_b64url (const unsigned char *p, size_t n);

/* Normalized scope set: split on white space, deduplicated, sorted, joined
 * by one space.  Returns NULL on allocation failure or an empty set. */
ECW_LOCAL char *ecw_scopes_normalize (const char *s);

/* ---- URLs --------------------------------------------------------------- */

/* Scheme://host[:port] of url, lower-cased, default port made explicit. */
ECW_LOCAL char *ecw_url_origin (const char *url);
ECW_LOCAL int ecw_url_is_loopback (const char *url);
/* Resolve ref against base (RFC 3986).  NULL when either is invalid. */
ECW_LOCAL char *ecw_url_resolve (const char *base, const char *ref);
/* https, or http to a loopback host.  Fills err and returns 0 otherwise. */
ECW_LOCAL int ecw_url_check_transport (const char *url, const char *what,
                                       ecw_err *err);

/* The URL for a request target: a path relative to base (no dot segments,
 * no raw bytes that need encoding), or an absolute URL on base_origin only,
 * so the token never leaves the FHIR server.  NULL with err set otherwise. */
ECW_LOCAL char *ecw_url_target (const char *base, const char *base_origin,
                                const char *target, ecw_err *err);

#endif
