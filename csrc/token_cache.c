/*
 * token_cache.c: one cache for the whole process, shared by every lua_State
 * on every thread, keyed by (fhir_base, token_url, client_id, kid, scope set).
 *
 * Single flight: the first caller to find a key cold or inside its margin
 * becomes the leader and makes the one token request, without holding the
 * lock.  Others wait on the entry's condition variable, each until its own
 * deadline; the leader's result, token or error, wakes them all.
 *
 * Refresh ahead: a token has a soft point (two margins before expiry) and a
 * hard one (one margin before).  The first caller past the soft point hands
 * the refresh to a module worker thread and carries on with the still-valid
 * token, so under steady traffic no caller ever waits on the token endpoint.
 * Only when no valid token exists does anyone wait.
 *
 * Entries are bounded: past the limit the least recently used idle entry is
 * dropped, so scripts that build scope strings on the fly cannot grow memory
 * without end.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "guard.h"
#include "oauth.h"
#include "stats.h"
#include "token_cache.h"
#include "worker.h"

#define REFRESH_RETRY_MS 1000   /* after a failed background refresh */

typedef struct entry {
  char *key;
  char *scopes;              /* normalized, as requested */
  char *token;               /* secret */
  char *granted;
  uint64_t serial;
  int64_t expires_ms, refresh_ms, last_used_ms;
  int64_t soft_ms;           /* refresh ahead from here on */
  int64_t retry_ms;          /* no background refresh before this */
  int fetching;              /* a leader is requesting a token */
  int users;                 /* leader + waiters: pins the entry */
  uint64_t generation;       /* bumped when a request completes */
  ecw_err last_err;          /* the last request's failure, for waiters */
  int last_failed;
  pthread_cond_t cv;
  struct entry *next;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *entries;
static int n_entries;
static int max_entries = 256;
static uint64_t next_serial = 1;

int64_t ecw_token_margin_ms (int64_t lifetime_ms) {
  int64_t m = lifetime_ms / 5;
  return m < 60000 ? m : 60000;
}

static char *make_key (ecw_client *c, const char *scopes) {
  ecw_buf b = {0};
  const char *parts[5];
  int i;
  parts[0] = c->fhir_base;
  parts[1] = c->token_url ? c->token_url : "";   /* "": discovered */
  parts[2] = c->client_id;
  parts[3] = c->kid;
  parts[4] = scopes;
  for (i = 0; i < 5; i++)
    if ((i && !ecw_buf_puts(&b, "\x1f")) || !ecw_buf_puts(&b, parts[i])) {
      ecw_buf_free(&b);
      return NULL;
    }
  return b.data;
}

static void clear_token (entry *e) {
  ecw_free_secret(e->token);
  free(e->granted);
  e->token = e->granted = NULL;
  e->expires_ms = e->refresh_ms = e->soft_ms = 0;
}

static void entry_free (entry *e) {
  clear_token(e);
  free(e->key);
  free(e->scopes);
  pthread_cond_destroy(&e->cv);
  free(e);
}

static entry *entry_new (const char *key, const char *scopes) {
  entry *e = calloc(1, sizeof *e);
  pthread_condattr_t ca;
  if (e == NULL) return NULL;
  e->key = ecw_strdup(key);
  e->scopes = ecw_strdup(scopes);
  if (!e->key || !e->scopes) {
    free(e->key); free(e->scopes); free(e);
    return NULL;
  }
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* deadlines are monotonic */
  pthread_cond_init(&e->cv, &ca);
  pthread_condattr_destroy(&ca);
  return e;
}

/* Unlink idle LRU entries beyond the limit; return them to free unlocked. */
static entry *evict_locked (void) {
  entry *out = NULL;
  while (n_entries > max_entries) {
    entry **pp, **victim = NULL;
    for (pp = &entries; *pp; pp = &(*pp)->next)
      if ((*pp)->users == 0 && !(*pp)->fetching &&
          (victim == NULL || (*pp)->last_used_ms < (*victim)->last_used_ms))
        victim = pp;
    if (victim == NULL) break;      /* everything is in use: stay over */
    {
      entry *e = *victim;
      *victim = e->next;
      e->next = out;
      out = e;
      n_entries--;
      ECW_COUNT(cache_evictions);
    }
  }
  return out;
}

static void free_list (entry *e) {
  while (e) {
    entry *n = e->next;
    entry_free(e);
    e = n;
  }
}

static int copy_out (entry *e, ecw_token *t) {
  t->access_token = ecw_strdup(e->token);
  t->granted_scope = ecw_strdup(e->granted);
  t->serial = e->serial;
  t->expires_ms = e->expires_ms;
  t->refresh_ms = e->refresh_ms;
  return t->access_token && t->granted_scope;
}

/* Worth another try: a transport failure or 408/5xx, not a refusal by
 * the guard (rate_limited, unavailable) nor an OAuth verdict. */
static int fetch_retryable (const ecw_err *e) {
  return ecw_transport_retryable(e) ||
         (ecw_status_retryable(e->status) &&
          (ecw_streq(e->code, ECW_E_HTTP) || ecw_streq(e->code, ECW_E_OAUTH)));
}

/* The leader's request, made without the lock.  Every attempt signs a new
 * assertion, so a retry never reuses a jti. */
static int fetch (ecw_client *c, const char *scopes, int64_t deadline,
                  ecw_grant *g, int64_t *sent_ms, ecw_err *err) {
  int attempt;
  for (attempt = 1;; attempt++) {
    char *url = NULL;
    int ok = ecw_token_url(c, deadline, &url, err);
    if (ok) {
      *sent_ms = ecw_now_ms();
      ok = ecw_oauth_request(c, url, scopes, deadline, g, err);
      free(url);
    }
    if (ok) return 1;
    if (!fetch_retryable(err) || attempt >= 3 || !ecw_backoff(attempt, deadline))
      return 0;
  }
}

/* Store a request's outcome in e and wake everyone waiting on it. */
static void finish_fetch_locked (entry *e, int got, ecw_grant *g,
                                 int64_t sent, const ecw_err *ferr) {
  e->fetching = 0;
  e->generation++;
  e->last_failed = !got;
  if (got) {
    int64_t life = (int64_t)g->expires_in * 1000;
    int64_t margin = ecw_token_margin_ms(life);
    clear_token(e);
    e->token = g->access_token;
    e->granted = g->scope;
    g->access_token = g->scope = NULL;
    /* Count the lifetime from when we sent the request: the server's clock
     * started no earlier. */
    e->expires_ms = sent + life;
    e->refresh_ms = e->expires_ms - margin;
    e->soft_ms = e->refresh_ms - margin;
    e->retry_ms = 0;
    e->serial = next_serial++;
  } else {
    e->last_err = *ferr;
  }
  pthread_cond_broadcast(&e->cv);
}

/* ---- refresh ahead, on a worker thread ----------------------------------- */

typedef struct refresh_job {
  ecw_job job;
  ecw_client *client;
  entry *e;                  /* pinned by users++ until the job is done */
} refresh_job;

static void refresh_run (ecw_job *j) {
  refresh_job *r = (refresh_job *)j;
  ecw_grant g;
  ecw_err ferr;
  int64_t sent = 0;
  int got;
  memset(&ferr, 0, sizeof ferr);
  got = fetch(r->client, r->e->scopes, ecw_now_ms() + r->client->timeout_ms,
              &g, &sent, &ferr);
  pthread_mutex_lock(&lock);
  finish_fetch_locked(r->e, got, &g, sent, &ferr);
  if (!got) r->e->retry_ms = ecw_now_ms() + REFRESH_RETRY_MS;
  r->e->users--;
  pthread_mutex_unlock(&lock);
  if (got) ECW_COUNT(token_refreshes_ahead);
}

static void refresh_drop (ecw_job *j) {
  refresh_job *r = (refresh_job *)j;
  ecw_client_release(r->client);
  free(r);
}

/* Called with the lock held: start a background refresh of e if none is
 * running.  The caller keeps using the current token either way. */
static void refresh_ahead_locked (ecw_client *c, entry *e) {
  refresh_job *r = calloc(1, sizeof *r);
  if (r == NULL) return;
  r->job.run = refresh_run;
  r->job.drop = refresh_drop;
  r->job.refs = 1;
  r->job.urgent = 1;
  r->client = c;
  r->e = e;
  e->fetching = 1;
  e->users++;
  ecw_client_retain(c);
  if (!ecw_worker_submit(&r->job)) {
    /* Queue full: a later caller tries again. */
    e->fetching = 0;
    e->users--;
    e->retry_ms = ecw_now_ms() + REFRESH_RETRY_MS;
    ecw_client_release(c);
    free(r);
  }
}

int ecw_token_get (ecw_client *c, const char *scopes, int64_t deadline,
                   int defer_refresh, ecw_token *t, ecw_err *err) {
  char *key = make_key(c, scopes);
  entry *e, *evicted = NULL;
  int ok = 0;

  memset(t, 0, sizeof *t);
  if (key == NULL) {
    ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
    return 0;
  }
  pthread_mutex_lock(&lock);
  for (e = entries; e; e = e->next)
    if (strcmp(e->key, key) == 0) break;
  if (e == NULL) {
    if ((e = entry_new(key, scopes)) == NULL) {
      pthread_mutex_unlock(&lock);
      free(key);
      ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
      return 0;
    }
    e->next = entries;
    entries = e;
    n_entries++;
  }
  free(key);
  e->users++;

  for (;;) {
    int64_t now = ecw_now_ms();
    e->last_used_ms = now;
    if (e->token && now < e->refresh_ms) {
      if (now >= e->soft_ms && !e->fetching && now >= e->retry_ms) {
        if (defer_refresh) t->refresh_due = 1;
        else refresh_ahead_locked(c, e);
      }
      ok = copy_out(e, t);
      if (!ok) ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
      else if (!t->fetched && !t->waited) ECW_COUNT(token_cache_hits);
      break;
    }
    if (e->fetching) {
      uint64_t gen = e->generation;
      if (!t->waited) {
        t->waited = 1;
        ECW_COUNT(token_waits);
      }
      while (e->fetching && e->generation == gen)
        if (ecw_cond_wait_until(&e->cv, &lock, deadline) == ETIMEDOUT) break;
      if (e->generation == gen) {
        ecw_err_set(err, ECW_E_TIMEOUT, 0,
                    "deadline passed waiting for an access token");
        err->retryable = 1;
        break;
      }
      if (e->last_failed) {
        *err = e->last_err;
        break;
      }
      continue;    /* a token arrived: take it from the top */
    }
    if (t->fetched) {
      /* Our own fresh token is already inside its margin (a lifetime
       * shorter than the round trip): do not loop on the endpoint. */
      ecw_err_set(err, ECW_E_BAD_RESPONSE, 0,
                  "access token expired before it could be used");
      break;
    }
    /* Become the leader. */
    {
      ecw_grant g;
      ecw_err ferr;
      int64_t sent = 0;
      int got;
      e->fetching = 1;
      t->fetched = 1;
      ECW_COUNT(token_blocking_fetches);
      pthread_mutex_unlock(&lock);
      memset(&ferr, 0, sizeof ferr);
      got = fetch(c, e->scopes, deadline, &g, &sent, &ferr);
      pthread_mutex_lock(&lock);
      finish_fetch_locked(e, got, &g, sent, &ferr);
      if (!got) {
        *err = ferr;
        break;
      }
    }
  }
  e->users--;
  evicted = evict_locked();
  pthread_mutex_unlock(&lock);
  free_list(evicted);
  if (!ok) ecw_token_release(t);
  return ok;
}

void ecw_token_refresh (ecw_client *c, const char *scopes) {
  char *key = make_key(c, scopes);
  entry *e;
  int64_t now = ecw_now_ms();
  if (key == NULL) return;
  pthread_mutex_lock(&lock);
  for (e = entries; e; e = e->next)
    if (strcmp(e->key, key) == 0) {
      /* Someone else may have started it meanwhile. */
      if (e->token && now >= e->soft_ms && !e->fetching && now >= e->retry_ms)
        refresh_ahead_locked(c, e);
      break;
    }
  pthread_mutex_unlock(&lock);
  free(key);
}

void ecw_token_release (ecw_token *t) {
  ecw_free_secret(t->access_token);
  free(t->granted_scope);
  t->access_token = t->granted_scope = NULL;
}

int ecw_token_invalidate (ecw_client *c, const char *scopes, uint64_t serial) {
  char *key = make_key(c, scopes);
  entry *e;
  int dropped = 0;
  if (key == NULL) return 0;
  pthread_mutex_lock(&lock);
  for (e = entries; e; e = e->next)
    if (strcmp(e->key, key) == 0) {
      /* Another thread may already have replaced the rejected token. */
      if (e->token && (serial == 0 || e->serial == serial)) {
        clear_token(e);
        dropped = 1;
      }
      break;
    }
  pthread_mutex_unlock(&lock);
  free(key);
  if (dropped) ECW_COUNT(token_invalidations);
  return dropped;
}

void ecw_token_flush (void) {
  entry **pp, *out = NULL;
  pthread_mutex_lock(&lock);
  for (pp = &entries; *pp;) {
    entry *e = *pp;
    if (e->users == 0 && !e->fetching) {
      *pp = e->next;
      e->next = out;
      out = e;
      n_entries--;
    } else {
      clear_token(e);
      pp = &e->next;
    }
  }
  pthread_mutex_unlock(&lock);
  free_list(out);
  ecw_discovery_flush();
}

void ecw_token_set_limit (int n) {
  entry *out;
  pthread_mutex_lock(&lock);
  max_entries = n < 1 ? 1 : n;
  out = evict_locked();
  pthread_mutex_unlock(&lock);
  free_list(out);
}

int ecw_token_count (void) {
  int n;
  pthread_mutex_lock(&lock);
  n = n_entries;
  pthread_mutex_unlock(&lock);
  return n;
}
