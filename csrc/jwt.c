/*
 * jwt.c: key loading and client assertions (RFC 7523 as profiled by SMART
 * Backend Services).  ES384 signatures are JOSE raw R||S (RFC 7518 3.4):
 * OpenSSL emits DER, which servers reject, so it is converted here.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "jwt.h"

#define KEY_FILE_LIMIT (64 * 1024)

static int no_passphrase (char *buf, int size, int rw, void *u) {
  (void)buf; (void)size; (void)rw; (void)u;
  return -1;   /* encrypted keys are refused, never prompted for */
}

static unsigned char *read_key_file (const char *path, size_t *n,
                                     ecw_err *err) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  size_t got;
  if (f == NULL) {
    int e = errno;
    ecw_err_set(err, ECW_E_CONFIG, 0, "private_key: cannot open %s: %s",
                path, e == ENOENT ? "no such file" :
                      e == EACCES ? "permission denied" : strerror(e));
    return NULL;
  }
  buf = malloc(KEY_FILE_LIMIT + 1);
  if (buf == NULL) {
    fclose(f);
    ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
    return NULL;
  }
  setvbuf(f, NULL, _IONBF, 0);    /* no stdio copy of the key to forget */
  got = fread(buf, 1, KEY_FILE_LIMIT + 1, f);
  if (ferror(f) || got > KEY_FILE_LIMIT) {
    ecw_err_set(err, ECW_E_CONFIG, 0, "private_key: %s is %s", path,
                ferror(f) ? "unreadable (is it a directory?)" : "too large");
    OPENSSL_cleanse(buf, KEY_FILE_LIMIT + 1);
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *n = got;
  return buf;
}

EVP_PKEY *ecw_key_load (const char *path, const char *alg,
                        const char **alg_out, ecw_err *err) {
  size_t n = 0;
  unsigned char *pem = read_key_file(path, &n, err);
  EVP_PKEY *k = NULL;
  BIO *bio;
  int id;
  if (pem == NULL) return NULL;
  if ((bio = BIO_new_mem_buf(pem, (int)n)) != NULL) {
    k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
  }
  OPENSSL_cleanse(pem, n);
  free(pem);
  ERR_clear_error();
  if (k == NULL) {
    ecw_err_set(err, ECW_E_CONFIG, 0,
                "private_key: %s holds no usable PEM private key "
                "(not PEM, encrypted, or a public key)", path);
    return NULL;
  }
  id = EVP_PKEY_get_base_id(k);
  if (id == EVP_PKEY_RSA) {
    int bits = EVP_PKEY_get_bits(k);
    if (bits < 2048) {
      ecw_err_set(err, ECW_E_CONFIG, 0,
                  "private_key: RSA key has %d bits, at least 2048 required",
                  bits);
      goto fail;
    }
    if (alg && strcmp(alg, "RS384") != 0) {
      ecw_err_set(err, ECW_E_CONFIG, 0,
                  "alg %s does not match an RSA key (use RS384)", alg);
      goto fail;
    }
    *alg_out = "RS384";
  } else if (id == EVP_PKEY_EC) {
    char group[64] = "";
    size_t glen = 0;
    if (!EVP_PKEY_get_group_name(k, group, sizeof group, &glen) ||
        strcmp(group, "secp384r1") != 0) {
      ecw_err_set(err, ECW_E_CONFIG, 0,
                  "private_key: EC key must be on P-384 for ES384 (found %s)",
                  group[0] ? group : "unknown curve");
      goto fail;
    }
    if (alg && strcmp(alg, "ES384") != 0) {
      ecw_err_set(err, ECW_E_CONFIG, 0,
                  "alg %s does not match a P-384 key (use ES384)", alg);
      goto fail;
    }
    *alg_out = "ES384";
  } else {
    ecw_err_set(err, ECW_E_CONFIG, 0,
                "private_key: unsupported key type (RSA or EC P-384 only)");
    goto fail;
  }
  ERR_clear_error();
  return k;
fail:
  ERR_clear_error();
  EVP_PKEY_free(k);
  return NULL;
}

static char *b64url_json (json_object *o) {
  const char *s = json_object_to_json_string_ext(o,
      JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  return s ? ecw_b64url((const unsigned char *)s, strlen(s)) : NULL;
}

/* DER ECDSA-Sig-Value to fixed-width big-endian R||S. */
static int der_to_raw (const unsigned char *der, size_t n,
                       unsigned char raw[96]) {
  const unsigned char *p = der;
  ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)n);
  const BIGNUM *r, *s;
  int ok;
  if (sig == NULL) return 0;
  ECDSA_SIG_get0(sig, &r, &s);
  ok = BN_bn2binpad(r, raw, 48) == 48 && BN_bn2binpad(s, raw + 48, 48) == 48;
  ECDSA_SIG_free(sig);
  return ok;
}

static char *sign (EVP_PKEY *key, const char *alg, const char *input,
                   ecw_err *err) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned char *sig = NULL, raw[96];
  size_t siglen = 0;
  char *out = NULL;
  if (md == NULL ||
      EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key) != 1 ||
      EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input,
                     strlen(input)) != 1 ||
      (sig = OPENSSL_malloc(siglen)) == NULL ||
      EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input,
                     strlen(input)) != 1) {
    ecw_err_set(err, ECW_E_INTERNAL, 0, "signing the client assertion failed");
    goto done;
  }
  if (strcmp(alg, "ES384") == 0) {
    if (!der_to_raw(sig, siglen, raw)) {
      ecw_err_set(err, ECW_E_INTERNAL, 0, "ECDSA signature conversion failed");
      goto done;
    }
    out = ecw_b64url(raw, sizeof raw);
  } else {
    out = ecw_b64url(sig, siglen);
  }
  if (out == NULL) ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
done:
  ERR_clear_error();
  OPENSSL_free(sig);
  EVP_MD_CTX_free(md);
  return out;
}

char *ecw_jwt_assertion (const ecw_assertion_params *p, ecw_err *err) {
  json_object *hdr = json_object_new_object();
  json_object *clm = json_object_new_object();
  unsigned char rnd[24];
  char *h64 = NULL, *c64 = NULL, *jti = NULL, *sig = NULL, *out = NULL;
  int64_t now = ecw_wall_s();
  int life = p->lifetime_s > 0 && p->lifetime_s < 299 ? p->lifetime_s : 299;
  ecw_buf b = {0};

  if (hdr == NULL || clm == NULL) goto oom;
  /* 192 bits from the CSPRNG: fresh for every request, retries included. */
  if (RAND_bytes(rnd, sizeof rnd) != 1) {
    ecw_err_set(err, ECW_E_INTERNAL, 0, "RAND_bytes failed");
    goto done;
  }
  if ((jti = ecw_b64url(rnd, sizeof rnd)) == NULL) goto oom;

  json_object_object_add(hdr, "alg", json_object_new_string(p->alg));
  json_object_object_add(hdr, "typ", json_object_new_string("JWT"));
  json_object_object_add(hdr, "kid", json_object_new_string(p->kid));
  if (p->jku) json_object_object_add(hdr, "jku", json_object_new_string(p->jku));

  json_object_object_add(clm, "iss", json_object_new_string(p->client_id));
  json_object_object_add(clm, "sub", json_object_new_string(p->client_id));
  json_object_object_add(clm, "aud", json_object_new_string(p->aud));
  json_object_object_add(clm, "exp", json_object_new_int64(now + life));
  json_object_object_add(clm, "jti", json_object_new_string(jti));
  if (p->with_iat) json_object_object_add(clm, "iat", json_object_new_int64(now));

  if ((h64 = b64url_json(hdr)) == NULL || (c64 = b64url_json(clm)) == NULL)
    goto oom;
  if (!ecw_buf_puts(&b, h64) || !ecw_buf_puts(&b, ".") ||
      !ecw_buf_puts(&b, c64))
    goto oom;
  if ((sig = sign(p->key, p->alg, b.data, err)) == NULL) goto done;
  if (!ecw_buf_puts(&b, ".") || !ecw_buf_puts(&b, sig)) goto oom;
  out = ecw_strdup(b.data);
  if (out == NULL) goto oom;
  goto done;
oom:
  ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
done:
  ecw_buf_free_secret(&b);
  OPENSSL_cleanse(rnd, sizeof rnd);
  free(h64); free(c64); free(jti); free(sig);
  json_object_put(hdr);
  json_object_put(clm);
  return out;
}
