/* jwk.c: keys for registration with eCW or Epic: generate, write 0600, and
 * describe the public half as a JWK with an RFC 7638 thumbprint kid. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "jwk.h"

static char *bn_b64url (EVP_PKEY *k, const char *param, int width) {
  BIGNUM *bn = NULL;
  unsigned char buf[1024];
  int n;
  char *out = NULL;
  if (!EVP_PKEY_get_bn_param(k, param, &bn)) return NULL;
  n = width ? width : BN_num_bytes(bn);
  if (n > 0 && n <= (int)sizeof buf && BN_bn2binpad(bn, buf, n) == n)
    out = ecw_b64url(buf, (size_t)n);
  BN_free(bn);
  return out;
}

int ecw_jwk_of (EVP_PKEY *k, const char *alg, ecw_jwk *j, ecw_err *err) {
  char canon[2048];
  unsigned char dig[SHA256_DIGEST_LENGTH];
  memset(j, 0, sizeof *j);
  j->alg = alg;
  if (strcmp(alg, "RS384") == 0) {
    j->kty = "RSA";
    j->n = bn_b64url(k, OSSL_PKEY_PARAM_RSA_N, 0);
    j->e = bn_b64url(k, OSSL_PKEY_PARAM_RSA_E, 0);
    if (!j->n || !j->e) goto fail;
    /* RFC 7638: required members only, lexical order, no white space. */
    snprintf(canon, sizeof canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}",
             j->e, j->n);
  } else {
    j->kty = "EC";
    j->crv = "P-384";
    j->x = bn_b64url(k, OSSL_PKEY_PARAM_EC_PUB_X, 48);
    j->y = bn_b64url(k, OSSL_PKEY_PARAM_EC_PUB_Y, 48);
    if (!j->x || !j->y) goto fail;
    snprintf(canon, sizeof canon,
             "{\"crv\":\"P-384\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
             j->x, j->y);
  }
  SHA256((const unsigned char *)canon, strlen(canon), dig);
  if ((j->kid = ecw_b64url(dig, sizeof dig)) == NULL) goto fail;
  ERR_clear_error();
  return 1;
fail:
  ERR_clear_error();
  ecw_jwk_free(j);
  ecw_err_set(err, ECW_E_INTERNAL, 0, "could not read the public key");
  return 0;
}

void ecw_jwk_free (ecw_jwk *j) {
  free(j->n); free(j->e); free(j->x); free(j->y); free(j->kid);
  memset(j, 0, sizeof *j);
}

EVP_PKEY *ecw_keygen (const char *alg, int bits, const char *path,
                      int overwrite, ecw_err *err) {
  EVP_PKEY *k;
  int fd, ok;
  FILE *f;
  if (strcmp(alg, "RS384") == 0)
    k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
  else
    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  if (k == NULL) {
    ERR_clear_error();
    ecw_err_set(err, ECW_E_INTERNAL, 0, "key generation failed");
    return NULL;
  }
  /* Created 0600 from the start: never a moment when others can read it. */
  fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW |
                  (overwrite ? O_TRUNC : O_EXCL), 0600);
  if (fd < 0) {
    int e = errno;
    ecw_err_set(err, ECW_E_CONFIG, 0, "cannot create %s: %s", path,
                e == EEXIST ? "file exists (pass overwrite to replace it)"
                            : strerror(e));
    EVP_PKEY_free(k);
    return NULL;
  }
  if (fchmod(fd, 0600) != 0 || (f = fdopen(fd, "w")) == NULL) {
    close(fd);
    ecw_err_set(err, ECW_E_CONFIG, 0, "cannot write %s", path);
    EVP_PKEY_free(k);
    return NULL;
  }
  setvbuf(f, NULL, _IONBF, 0);
  ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
  ok = fclose(f) == 0 && ok;
  ERR_clear_error();
  if (!ok) {
    ecw_err_set(err, ECW_E_CONFIG, 0, "writing %s failed", path);
    EVP_PKEY_free(k);
    return NULL;
  }
  return k;
}
