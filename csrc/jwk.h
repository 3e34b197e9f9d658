/* jwk.h: key generation and the public JWK that a JWKS publishes. */
#ifndef ECW_JWK_H
#define ECW_JWK_H

#include <openssl/evp.h>
#include "ecw.h"

typedef struct ecw_jwk {
  const char *kty;           /* "RSA" or "EC" */
  const char *alg;           /* "RS384" or "ES384" */
  char *n, *e;               /* RSA, base64url */
  const char *crv;           /* "P-384" */
  char *x, *y;               /* EC, base64url */
  char *kid;                 /* RFC 7638 SHA-256 thumbprint */
} ecw_jwk;

ECW_LOCAL int ecw_jwk_of (EVP_PKEY *k, const char *alg, ecw_jwk *j,
                          ecw_err *err);
ECW_LOCAL void ecw_jwk_free (ecw_jwk *j);

/* Generate a key and write it as PKCS#8 PEM with mode 0600.  An existing
 * file is never replaced unless overwrite is set. */
ECW_LOCAL EVP_PKEY *ecw_keygen (const char *alg, int bits, const char *path,
                                int overwrite, ecw_err *err);

#endif
