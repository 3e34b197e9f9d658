/* token_cache.h: the process-wide, scope-keyed access token cache. */
#ifndef ECW_TOKEN_CACHE_H
#define ECW_TOKEN_CACHE_H

#include "client.h"

typedef struct ecw_token {
  char *access_token;      /* secret copy: ecw_token_release wipes it */
  char *granted_scope;
  uint64_t serial;         /* identifies this grant for invalidation */
  int64_t expires_ms;      /* absolute, ecw_now_ms() clock */
  int64_t refresh_ms;      /* start of the margin: never sent after this */
  int fetched;             /* this caller made the token request */
  int waited;              /* this caller waited on another's request */
  int refresh_due;         /* past the soft point: call ecw_token_refresh */
} ecw_token;

/* A valid token for (client, scopes) by deadline: from the cache, by waiting
 * on a request in flight, or by making the one request for this key.
 * Past the token's soft point the background refresh starts at once, or,
 * with defer_refresh, only when the caller says so (ecw_token_refresh)
 * after its own request: the refresh's signing and round trip then never
 * compete with the request that noticed it. */
ECW_LOCAL int ecw_token_get (ecw_client *c, const char *scopes,
                             int64_t deadline, int defer_refresh,
                             ecw_token *t, ecw_err *err);
ECW_LOCAL void ecw_token_refresh (ecw_client *c, const char *scopes);
ECW_LOCAL void ecw_token_release (ecw_token *t);

/* Drop the cached token for (client, scopes) if it is still grant serial
 * (0: whatever is cached).  Returns 1 when a token was dropped. */
ECW_LOCAL int ecw_token_invalidate (ecw_client *c, const char *scopes,
                                    uint64_t serial);
ECW_LOCAL void ecw_token_flush (void);
ECW_LOCAL void ecw_token_set_limit (int n);
ECW_LOCAL int ecw_token_count (void);

/* The refresh margin for a lifetime: min(60 s, lifetime / 5). */
ECW_LOCAL int64_t ecw_token_margin_ms (int64_t lifetime_ms);

#endif
