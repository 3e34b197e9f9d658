/* http.h: blocking HTTP(S) over a process-wide pool of libcurl handles. */
#ifndef ECW_HTTP_H
#define ECW_HTTP_H

#include "ecw.h"

typedef struct ecw_http_req {
  const char *method;          /* "GET" or "POST" */
  const char *url;
  const char *bearer;          /* access token, or NULL */
  const char *body;            /* POST body, or NULL */
  size_t body_len;
  const char *content_type;    /* of the POST body */
  const char *accept;          /* Accept header, or NULL */
  const char *ca_file;         /* NULL: the system store */
  int64_t deadline_ms;         /* absolute, ecw_now_ms() clock */
  long connect_timeout_ms;
  size_t max_body;             /* decoded body cap, bytes */
  int secret_body;             /* wipe body buffers when freed */
  struct ecw_guard *guard;     /* the practice's budget and breaker, or NULL */
  int cancellable;             /* on a worker: stop when its job is cancelled.
                                * Never for shared work (discovery, tokens)
                                * that other callers are waiting on. */
} ecw_http_req;

typedef struct ecw_http_resp {
  long status;
  ecw_buf body;
  ecw_buf headers;             /* raw header block of the final response */
} ecw_http_resp;

ECW_LOCAL int ecw_http_init (void);
ECW_LOCAL int ecw_http_perform (const ecw_http_req *rq, ecw_http_resp *rs,
                                ecw_err *err);
ECW_LOCAL void ecw_http_resp_free (ecw_http_resp *rs, int secret);

/* Walk a raw response header block: one call per "Name: value" line, the
 * status line and malformed lines skipped, value trimmed.  Pure, so it can
 * be fuzzed. */
typedef void (*ecw_header_fn) (void *ud, const char *name, size_t nlen,
                               const char *value, size_t vlen);
ECW_LOCAL void ecw_headers_each (const char *raw, size_t len, ecw_header_fn fn,
                                 void *ud);

/* Pool management and counters. */
ECW_LOCAL void ecw_http_set_pool_size (int n);
ECW_LOCAL int ecw_http_pool_size (void);

#endif
