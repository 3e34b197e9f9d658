/* guard.h: per-practice request budget, 429 blocks and circuit breaker. */
#ifndef ECW_GUARD_H
#define ECW_GUARD_H

#include "ecw.h"

typedef struct ecw_guard ecw_guard;

typedef struct ecw_guard_cfg {
  int rate_limit;            /* requests per wall-clock minute; 0: none */
  int breaker_threshold;     /* consecutive failures that open it; 0: off */
  int breaker_cooldown_ms;
} ecw_guard_cfg;

/* The process-wide guard for a practice (one FHIR base); settings from the
 * most recent configuration win.  Never freed.  NULL only when out of
 * memory or past the practice limit: requests then go unguarded. */
ECW_LOCAL ecw_guard *ecw_guard_for (const char *fhir_base,
                                    const ecw_guard_cfg *cfg);

/* Before a request: 0 with err set (rate_limited / unavailable) when the
 * request must not be sent.  *probe is set when this request is the
 * breaker's half-open probe. */
ECW_LOCAL int ecw_guard_before (ecw_guard *g, int *probe, ecw_err *err);

/* After it: ok is 0 for a transport failure; status the HTTP status;
 * retry_after the Retry-After header value or NULL. */
ECW_LOCAL void ecw_guard_after (ecw_guard *g, int probe, int ok, long status,
                                const char *retry_after);

/* Sleep a jittered, exponential backoff before retry number attempt (1..)
 * when the deadline leaves room for it and a request; 0 when it does not. */
ECW_LOCAL int ecw_backoff (int attempt, int64_t deadline_ms);

/* A transport failure worth another try (network, timeout): not TLS, not a
 * local refusal by this guard. */
ECW_LOCAL int ecw_transport_retryable (const ecw_err *e);

/* 408, 500, 502, 503, 504: worth another try. */
ECW_LOCAL int ecw_status_retryable (long status);

ECW_LOCAL void ecw_guard_reset_all (void);

#endif
