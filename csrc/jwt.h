/* jwt.h: private keys and SMART Backend Services client assertions. */
#ifndef ECW_JWT_H
#define ECW_JWT_H

#include <openssl/evp.h>
#include "ecw.h"

/* Load a PEM private key (PKCS#8 or traditional).  alg may be NULL (taken
 * from the key type), "RS384" or "ES384".  On success *alg_out points to a
 * static string. */
ECW_LOCAL EVP_PKEY *ecw_key_load (const char *path, const char *alg,
                                  const char **alg_out, ecw_err *err);

typedef struct ecw_assertion_params {
  EVP_PKEY *key;
  const char *alg;
  const char *kid;
  const char *jku;          /* NULL: header has no jku */
  const char *client_id;
  const char *aud;          /* the exact token URL */
  int with_iat;
  int lifetime_s;           /* exp = now + lifetime_s, at most 299 */
} ecw_assertion_params;

/* A signed compact JWS.  Free with ecw_free_secret. */
ECW_LOCAL char *ecw_jwt_assertion (const ecw_assertion_params *p,
                                   ecw_err *err);

#endif
