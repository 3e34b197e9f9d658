/*
 * guard.c: what keeps one practice's trouble from becoming every call's.
 *
 * Budget.  eCW allows 250 requests per minute per practice, token calls
 * included, and answers a 429 by blocking the app for the rest of that
 * wall-clock minute.  Tripping that block costs every call on the box a
 * minute of failures, so the module counts requests per practice in
 * wall-clock minutes itself and refuses locally (rate_limited, retryable)
 * before the server would.  After a 429 it refuses until the next minute
 * boundary, or until Retry-After when the server sends one.
 *
 * Breaker.  After N consecutive failures (transport errors, timeouts, 5xx)
 * the practice's breaker opens: calls fail fast (unavailable) for a
 * cool-down instead of each holding a call thread for its full timeout.
 * Then one probe goes through; its success closes the breaker.
 *
 * All of it is process-wide (every state, every thread), under one mutex
 * that is never held across I/O.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/rand.h>

#include "guard.h"
#include "stats.h"

#define MAX_PRACTICES 1024

enum { CLOSED, OPEN, HALF_OPEN };

struct ecw_guard {
  char *base;
  int rate_limit, threshold, cooldown_ms;
  int64_t minute;            /* wall-clock minute the count belongs to */
  int used;
  int64_t blocked_until_ms;  /* wall clock, after a 429 */
  int failures;              /* consecutive */
  int state;
  int64_t open_until_ms;     /* monotonic */
  int probing;
  struct ecw_guard *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ecw_guard *guards;
static int n_guards;

static int64_t wall_ms (void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

ecw_guard *ecw_guard_for (const char *base, const ecw_guard_cfg *cfg) {
  ecw_guard *g;
  pthread_mutex_lock(&lock);
  for (g = guards; g; g = g->next)
    if (strcmp(g->base, base) == 0) break;
  if (g == NULL && n_guards < MAX_PRACTICES &&
      (g = calloc(1, sizeof *g)) != NULL) {
    if ((g->base = ecw_strdup(base)) == NULL) {
      free(g);
      g = NULL;
    } else {
      g->next = guards;
      guards = g;
      n_guards++;
    }
  }
  if (g) {
    g->rate_limit = cfg->rate_limit;
    g->threshold = cfg->breaker_threshold;
    g->cooldown_ms = cfg->breaker_cooldown_ms;
  }
  pthread_mutex_unlock(&lock);
  return g;
}

int ecw_guard_before (ecw_guard *g, int *probe, ecw_err *err) {
  int64_t wms = wall_ms(), now = ecw_now_ms();
  int64_t minute = wms / 60000;
  int ok = 1;
  *probe = 0;
  pthread_mutex_lock(&lock);
  if (g->state == OPEN && now >= g->open_until_ms) g->state = HALF_OPEN;
  if (g->state == OPEN || (g->state == HALF_OPEN && g->probing)) {
    ecw_err_set(err, ECW_E_UNAVAILABLE, 0,
                "the EHR is failing; calls fail fast for %d s after %d "
                "failures in a row", (int)((g->open_until_ms - now + 999) / 1000),
                g->threshold);
    err->retryable = 1;
    ok = 0;
    ECW_COUNT(breaker_rejections);
  } else if (wms < g->blocked_until_ms) {
    ecw_err_set(err, ECW_E_RATE_LIMITED, 429,
                "the EHR rate-limited this app; blocked for %d s more",
                (int)((g->blocked_until_ms - wms + 999) / 1000));
    err->retryable = 1;
    ok = 0;
    ECW_COUNT(rate_limit_rejections);
  } else {
    if (g->minute != minute) {
      g->minute = minute;
      g->used = 0;
    }
    if (g->rate_limit > 0 && g->used >= g->rate_limit) {
      ecw_err_set(err, ECW_E_RATE_LIMITED, 0,
                  "request budget of %d per minute for this practice is "
                  "spent; retry after the minute boundary", g->rate_limit);
      err->retryable = 1;
      ok = 0;
      ECW_COUNT(rate_limit_rejections);
    } else {
      g->used++;
      if (g->state == HALF_OPEN) {
        g->probing = 1;
        *probe = 1;
      }
    }
  }
  pthread_mutex_unlock(&lock);
  return ok;
}

/* Retry-After: delta-seconds or an HTTP-date; -1 when neither. */
static int64_t retry_after_ms (const char *v, int64_t wms) {
  char *end;
  long secs;
  time_t when;
  while (*v == ' ') v++;
  if (isdigit((unsigned char)*v)) {
    secs = strtol(v, &end, 10);
    if (secs >= 0 && secs <= 86400) return wms + (int64_t)secs * 1000;
    return -1;
  }
  when = curl_getdate(v, NULL);
  if (when <= 0) return -1;
  /* A date years ahead would block the practice until a restart. */
  if (when > wms / 1000 + 86400) return wms + 86400LL * 1000;
  return (int64_t)when * 1000;
}

void ecw_guard_after (ecw_guard *g, int probe, int ok, long status,
                      const char *retry_after) {
  int failed = !ok || status >= 500 || status == 408;
  int64_t wms = wall_ms();
  pthread_mutex_lock(&lock);
  if (probe) g->probing = 0;
  if (status == 429) {
    int64_t until = retry_after ? retry_after_ms(retry_after, wms) : -1;
    /* eCW: blocked for the rest of the wall-clock minute, no Retry-After. */
    if (until < 0) until = (wms / 60000 + 1) * 60000;
    if (until > g->blocked_until_ms) g->blocked_until_ms = until;
  } else if (failed) {
    g->failures++;
    if (g->threshold > 0 &&
        (g->state == HALF_OPEN || g->failures >= g->threshold)) {
      if (g->state != OPEN) ECW_COUNT(breaker_trips);
      g->state = OPEN;
      g->open_until_ms = ecw_now_ms() + g->cooldown_ms;
    }
  } else {
    g->failures = 0;
    g->state = CLOSED;
  }
  pthread_mutex_unlock(&lock);
}

int ecw_transport_retryable (const ecw_err *e) {
  return ecw_streq(e->code, ECW_E_NETWORK) || ecw_streq(e->code, ECW_E_TIMEOUT);
}

int ecw_status_retryable (long status) {
  return status == 408 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

int ecw_backoff (int attempt, int64_t deadline_ms) {
  int64_t base = 50LL << (attempt > 5 ? 5 : attempt - 1);   /* 50, 100, ... */
  unsigned char r[2];
  int64_t wait;
  struct timespec ts;
  if (RAND_bytes(r, sizeof r) != 1) r[0] = r[1] = 0;
  /* Full jitter on half the step: spreads a herd of retrying calls. */
  wait = base / 2 + (int64_t)(((unsigned)r[0] << 8 | r[1]) % (unsigned)(base / 2 + 1));
  /* Worth it only if a request still fits after the pause. */
  if (ecw_now_ms() + wait + 50 >= deadline_ms) return 0;
  ts.tv_sec = wait / 1000;
  ts.tv_nsec = (long)(wait % 1000) * 1000000;
  nanosleep(&ts, NULL);
  ECW_COUNT(retries);
  return 1;
}

void ecw_guard_reset_all (void) {
  ecw_guard *g;
  pthread_mutex_lock(&lock);
  for (g = guards; g; g = g->next) {
    g->used = 0;
    g->blocked_until_ms = 0;
    g->failures = 0;
    g->state = CLOSED;
    g->probing = 0;
  }
  pthread_mutex_unlock(&lock);
}
