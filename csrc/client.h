/* client.h: process-wide client configurations, each with its loaded key. */
#ifndef ECW_CLIENT_H
#define ECW_CLIENT_H

#include <sys/types.h>
#include <time.h>
#include <openssl/evp.h>

#include "ecw.h"

typedef struct ecw_client_cfg {
  const char *fhir_base;
  const char *client_id;
  const char *private_key;     /* PEM file path */
  const char *kid;
  const char *token_url;       /* NULL: discovered */
  const char *alg;             /* NULL: from the key */
  const char *jku;
  const char *ca_file;
  long timeout_ms;
  long connect_timeout_ms;
  long max_body;
  int with_iat;
  int rate_limit;              /* per practice per minute; 0: none */
  int breaker_threshold;       /* 0: no breaker */
  int breaker_cooldown_ms;
} ecw_client_cfg;

typedef struct ecw_client {
  int refs;                    /* guarded by the registry lock */
  int orphan;                  /* unlinked after its key file changed */
  char *identity;              /* every field above, for registry lookups */
  char *fhir_base;             /* without a trailing slash */
  char *base_origin;
  char *client_id, *kid, *token_url, *jku, *ca_file, *key_path;
  const char *alg;
  EVP_PKEY *key;
  long timeout_ms, connect_timeout_ms;
  size_t max_body;
  int with_iat;
  struct ecw_guard *guard;     /* the practice's budget and breaker */
  /* key file identity: a rotated key on disk is loaded anew */
  dev_t key_dev;
  ino_t key_ino;
  off_t key_size;
  struct timespec key_mtime;
  struct ecw_client *next;
} ecw_client;

/* Find or create the client for cfg; the caller owns one reference. */
ECW_LOCAL ecw_client *ecw_client_acquire (const ecw_client_cfg *cfg,
                                          ecw_err *err);
ECW_LOCAL void ecw_client_retain (ecw_client *c);
ECW_LOCAL void ecw_client_release (ecw_client *c);

#endif
