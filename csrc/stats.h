/* stats.h: process-wide counters, lock-free so the hot path stays short. */
#ifndef ECW_STATS_H
#define ECW_STATS_H

#include <stdatomic.h>

typedef struct ecw_stats {
  atomic_llong token_requests;      /* token POSTs sent */
  atomic_llong token_failures;      /* token POSTs that produced no token */
  atomic_llong token_cache_hits;
  atomic_llong token_waits;         /* callers that waited on another's fetch */
  atomic_llong token_blocking_fetches; /* fetches a caller made and waited on */
  atomic_llong token_refreshes_ahead;  /* background refreshes that succeeded */
  atomic_llong token_invalidations;
  atomic_llong discovery_requests;
  atomic_llong http_requests;       /* every request, token calls included */
  atomic_llong connections_opened;
  atomic_llong cache_evictions;
  atomic_llong retries_401;
  atomic_llong retries;             /* backoff retries after 408/5xx/transport */
  atomic_llong rate_limit_rejections;
  atomic_llong breaker_rejections;
  atomic_llong breaker_trips;
} ecw_stats;

extern ecw_stats ecw_counters __attribute__((visibility("hidden")));

#define ECW_COUNT(field) atomic_fetch_add(&ecw_counters.field, 1)

#endif
