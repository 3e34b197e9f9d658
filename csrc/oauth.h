/* oauth.h: SMART discovery and the client_credentials token request. */
#ifndef ECW_OAUTH_H
#define ECW_OAUTH_H

#include "client.h"

typedef struct ecw_grant {
  char *access_token;         /* secret: free with ecw_grant_free */
  char *scope;                /* granted scopes, normalized */
  long expires_in;            /* seconds */
} ecw_grant;

/* The token URL for c: explicit, or from {fhir_base}/.well-known/
 * smart-configuration (cached per base).  Caller frees *out. */
ECW_LOCAL int ecw_token_url (ecw_client *c, int64_t deadline, char **out,
                             ecw_err *err);
ECW_LOCAL void ecw_discovery_flush (void);

ECW_LOCAL int ecw_oauth_request (ecw_client *c, const char *token_url,
                                 const char *scopes, int64_t deadline,
                                 ecw_grant *g, ecw_err *err);
ECW_LOCAL void ecw_grant_free (ecw_grant *g);

/* Parse a SMART discovery document; *out is the resolved token URL. */
ECW_LOCAL int ecw_discovery_parse (const char *base, const char *body,
                                   size_t len, char **out, ecw_err *err);

/* Parse a token endpoint response (exposed for fuzzing). */
ECW_LOCAL int ecw_oauth_parse (long status, const char *body, size_t len,
                               const char *requested, ecw_grant *g,
                               ecw_err *err);

#endif
