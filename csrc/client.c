/*
 * client.c: the registry of client configurations.
 *
 * mod_lua runs every call in a new lua_State, so a script calls configure
 * once per call.  Reading and parsing the PEM each time would put file I/O
 * and an RSA parse on every call; instead identical configurations share one
 * process-wide client whose key is loaded once.  A stat() per configure
 * notices a rotated key file.  Unreferenced clients stay cached for the next
 * call and are freed only when the registry is full.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "client.h"
#include "guard.h"
#include "jwt.h"

#define REGISTRY_MAX 64

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static ecw_client *registry;
static int registry_n;

static void client_free (ecw_client *c) {
  if (c == NULL) return;
  EVP_PKEY_free(c->key);   /* OpenSSL clears private key material */
  free(c->identity); free(c->fhir_base); free(c->base_origin);
  free(c->client_id); free(c->kid); free(c->token_url); free(c->jku);
  free(c->ca_file); free(c->key_path);
  free(c);
}

static char *identity_of (const ecw_client_cfg *cfg) {
  ecw_buf b = {0};
  char nums[160];
  const char *fields[8];
  int i;
  fields[0] = cfg->fhir_base; fields[1] = cfg->client_id;
  fields[2] = cfg->private_key; fields[3] = cfg->kid;
  fields[4] = cfg->token_url; fields[5] = cfg->alg;
  fields[6] = cfg->jku; fields[7] = cfg->ca_file;
  for (i = 0; i < 8; i++) {
    /* \x1f cannot appear in a URL, a path we accept or an id we send */
    if (!ecw_buf_puts(&b, fields[i] ? fields[i] : "\x1e") ||
        !ecw_buf_puts(&b, "\x1f")) {
      ecw_buf_free(&b);
      return NULL;
    }
  }
  snprintf(nums, sizeof nums, "%ld\x1f%ld\x1f%ld\x1f%d\x1f%d\x1f%d\x1f%d",
           cfg->timeout_ms, cfg->connect_timeout_ms, cfg->max_body,
           cfg->with_iat, cfg->rate_limit, cfg->breaker_threshold,
           cfg->breaker_cooldown_ms);
  if (!ecw_buf_puts(&b, nums)) {
    ecw_buf_free(&b);
    return NULL;
  }
  return b.data;
}

static int same_file (const ecw_client *c, const struct stat *st) {
  return c->key_dev == st->st_dev && c->key_ino == st->st_ino &&
         c->key_size == st->st_size &&
         c->key_mtime.tv_sec == st->st_mtim.tv_sec &&
         c->key_mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static ecw_client *client_new (const ecw_client_cfg *cfg, char *identity,
                               const struct stat *st, ecw_err *err) {
  ecw_client *c = calloc(1, sizeof *c);
  size_t blen;
  if (c == NULL) {
    free(identity);
    ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
    return NULL;
  }
  c->identity = identity;
  c->refs = 1;
  c->key = ecw_key_load(cfg->private_key, cfg->alg, &c->alg, err);
  if (c->key == NULL) goto fail;
  blen = strlen(cfg->fhir_base);
  while (blen > 0 && cfg->fhir_base[blen - 1] == '/') blen--;
  c->fhir_base = ecw_strndup(cfg->fhir_base, blen);
  c->base_origin = c->fhir_base ? ecw_url_origin(c->fhir_base) : NULL;
  c->client_id = ecw_strdup(cfg->client_id);
  c->kid = ecw_strdup(cfg->kid);
  c->token_url = ecw_strdup(cfg->token_url);
  c->jku = ecw_strdup(cfg->jku);
  c->ca_file = ecw_strdup(cfg->ca_file);
  c->key_path = ecw_strdup(cfg->private_key);
  if (!c->fhir_base || !c->base_origin || !c->client_id || !c->kid ||
      !c->key_path) {
    ecw_err_set(err, ECW_E_CONFIG, 0, "fhir_base is not a valid URL");
    goto fail;
  }
  c->timeout_ms = cfg->timeout_ms;
  c->connect_timeout_ms = cfg->connect_timeout_ms;
  c->max_body = (size_t)cfg->max_body;
  c->with_iat = cfg->with_iat;
  {
    ecw_guard_cfg g;
    g.rate_limit = cfg->rate_limit;
    g.breaker_threshold = cfg->breaker_threshold;
    g.breaker_cooldown_ms = cfg->breaker_cooldown_ms;
    c->guard = ecw_guard_for(c->fhir_base, &g);
  }
  c->key_dev = st->st_dev;
  c->key_ino = st->st_ino;
  c->key_size = st->st_size;
  c->key_mtime = st->st_mtim;
  return c;
fail:
  client_free(c);
  return NULL;
}

static void unlink_client (ecw_client *c) {
  ecw_client **pp;
  for (pp = &registry; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      registry_n--;
      return;
    }
}

/* Drop unreferenced entries while the registry is over its bound.  Returns
 * the detached entries so they are freed outside the lock. */
static ecw_client *trim_locked (void) {
  ecw_client *freed = NULL, *c = registry, *next;
  for (; c && registry_n > REGISTRY_MAX; c = next) {
    next = c->next;
    if (c->refs == 0) {
      unlink_client(c);
      c->next = freed;
      freed = c;
    }
  }
  return freed;
}

ecw_client *ecw_client_acquire (const ecw_client_cfg *cfg, ecw_err *err) {
  struct stat st;
  char *identity;
  ecw_client *c, *stale = NULL, *freed;

  if (!ecw_url_check_transport(cfg->fhir_base, "fhir_base", err)) return NULL;
  if (cfg->token_url &&
      !ecw_url_check_transport(cfg->token_url, "token_url", err))
    return NULL;
  if (cfg->jku && !ecw_url_check_transport(cfg->jku, "jku", err)) return NULL;
  if (stat(cfg->private_key, &st) != 0) {
    /* Let the loader produce the precise message. */
    const char *alg;
    EVP_PKEY *k = ecw_key_load(cfg->private_key, cfg->alg, &alg, err);
    EVP_PKEY_free(k);
    if (k) ecw_err_set(err, ECW_E_CONFIG, 0, "private_key: cannot stat file");
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    ecw_err_set(err, ECW_E_CONFIG, 0, "private_key: %s is not a regular file",
                cfg->private_key);
    return NULL;
  }
  if ((identity = identity_of(cfg)) == NULL) {
    ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
    return NULL;
  }

  pthread_mutex_lock(&reg_lock);
  for (c = registry; c; c = c->next)
    if (strcmp(c->identity, identity) == 0) break;
  if (c && same_file(c, &st)) {
    c->refs++;
    pthread_mutex_unlock(&reg_lock);
    free(identity);
    return c;
  }
  if (c) {
    /* The key file changed: retire the old entry; holders keep it alive. */
    unlink_client(c);
    if (c->refs == 0) stale = c;
    else c->orphan = 1;   /* its last holder frees it */
  }
  pthread_mutex_unlock(&reg_lock);
  client_free(stale);

  /* Load the key without holding the lock: it reads a file. */
  if ((c = client_new(cfg, identity, &st, err)) == NULL) return NULL;

  pthread_mutex_lock(&reg_lock);
  c->next = registry;
  registry = c;
  registry_n++;
  freed = trim_locked();
  pthread_mutex_unlock(&reg_lock);
  while (freed) {
    ecw_client *n = freed->next;
    client_free(freed);
    freed = n;
  }
  return c;
}

void ecw_client_retain (ecw_client *c) {
  pthread_mutex_lock(&reg_lock);
  c->refs++;
  pthread_mutex_unlock(&reg_lock);
}

void ecw_client_release (ecw_client *c) {
  int free_it;
  if (c == NULL) return;
  pthread_mutex_lock(&reg_lock);
  free_it = --c->refs == 0 && c->orphan;
  pthread_mutex_unlock(&reg_lock);
  /* Registered clients stay cached for reuse until trim_locked drops them. */
  if (free_it) client_free(c);
}
