/*
 * oauth.c: SMART discovery and the client_credentials grant with a
 * private_key_jwt client assertion.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "http.h"
#include "json.h"
#include "jwt.h"
#include "oauth.h"
#include "stats.h"

#define DISCOVERY_TTL_MS (3600 * 1000)
#define DISCOVERY_MAX 64
#define DISCOVERY_BODY_LIMIT (1024 * 1024)
#define TOKEN_BODY_LIMIT (64 * 1024)

/* ---- discovery ---------------------------------------------------------- */

typedef struct disc_entry {
  char *base;
  char *token_url;
  int64_t fetched_ms;
  struct disc_entry *next;
} disc_entry;

static pthread_mutex_t disc_lock = PTHREAD_MUTEX_INITIALIZER;
static disc_entry *disc_list;

static void disc_free (disc_entry *d) {
  free(d->base);
  free(d->token_url);
  free(d);
}

void ecw_discovery_flush (void) {
  disc_entry *d;
  pthread_mutex_lock(&disc_lock);
  d = disc_list;
  disc_list = NULL;
  pthread_mutex_unlock(&disc_lock);
  while (d) {
    disc_entry *n = d->next;
    disc_free(d);
    d = n;
  }
}

static char *disc_lookup (const char *base) {
  disc_entry *d;
  char *out = NULL;
  int64_t now = ecw_now_ms();
  pthread_mutex_lock(&disc_lock);
  for (d = disc_list; d; d = d->next)
    if (strcmp(d->base, base) == 0 && now - d->fetched_ms < DISCOVERY_TTL_MS) {
      out = ecw_strdup(d->token_url);
      break;
    }
  pthread_mutex_unlock(&disc_lock);
  return out;
}

static void disc_store (const char *base, const char *token_url) {
  disc_entry *d = calloc(1, sizeof *d), **pp, *drop = NULL;
  int n = 0;
  if (d == NULL) return;
  d->base = ecw_strdup(base);
  d->token_url = ecw_strdup(token_url);
  d->fetched_ms = ecw_now_ms();
  if (!d->base || !d->token_url) {
    disc_free(d);
    return;
  }
  pthread_mutex_lock(&disc_lock);
  /* Replace any entry for this base; keep the newest DISCOVERY_MAX. */
  for (pp = &disc_list; *pp;) {
    disc_entry *e = *pp;
    if (strcmp(e->base, base) == 0 || ++n >= DISCOVERY_MAX) {
      *pp = e->next;
      e->next = drop;
      drop = e;
    } else {
      pp = &e->next;
    }
  }
  d->next = disc_list;
  disc_list = d;
  pthread_mutex_unlock(&disc_lock);
  while (drop) {
    disc_entry *nx = drop->next;
    disc_free(drop);
    drop = nx;
  }
}

int ecw_discovery_parse (const char *base, const char *body, size_t len,
                         char **out, ecw_err *err) {
  json_object *doc = ecw_json_object(body, len);
  const char *te;
  char *dir, *resolved;
  *out = NULL;
  if (doc == NULL) {
    ecw_err_set(err, ECW_E_BAD_RESPONSE, 200,
                "SMART discovery document is not a JSON object");
    return 0;
  }
  /* Only token_endpoint is reliable across vendors (eCW omits the signing
   * algorithms); everything else is a hint we do not need. */
  te = ecw_json_string(doc, "token_endpoint");
  if (te == NULL || te[0] == '\0') {
    json_object_put(doc);
    ecw_err_set(err, ECW_E_BAD_RESPONSE, 200,
                "SMART discovery document has no token_endpoint");
    return 0;
  }
  /* Relative endpoints resolve against the base as a directory. */
  if ((dir = malloc(strlen(base) + 2)) != NULL) {
    strcpy(dir, base);
    strcat(dir, "/");
  }
  resolved = dir ? ecw_url_resolve(dir, te) : NULL;
  free(dir);
  json_object_put(doc);
  if (resolved == NULL) {
    ecw_err_set(err, ECW_E_BAD_RESPONSE, 200,
                "SMART discovery token_endpoint is not a valid URL");
    return 0;
  }
  if (!ecw_url_check_transport(resolved, "discovered token_endpoint", err)) {
    err->code = ECW_E_BAD_RESPONSE;
    free(resolved);
    return 0;
  }
  *out = resolved;
  return 1;
}

int ecw_token_url (ecw_client *c, int64_t deadline, char **out,
                   ecw_err *err) {
  ecw_http_req rq;
  ecw_http_resp rs;
  ecw_buf url = {0};
  char *resolved = NULL;
  int ok;

  if (c->token_url) {
    *out = ecw_strdup(c->token_url);
    return *out != NULL;
  }
  if ((*out = disc_lookup(c->fhir_base)) != NULL) return 1;

  ecw_buf_puts(&url, c->fhir_base);
  ecw_buf_puts(&url, "/.well-known/smart-configuration");
  memset(&rq, 0, sizeof rq);
  rq.method = "GET";
  rq.url = url.data;
  rq.accept = "application/json";
  rq.ca_file = c->ca_file;
  rq.deadline_ms = deadline;
  rq.connect_timeout_ms = c->connect_timeout_ms;
  rq.guard = c->guard;
  rq.max_body = DISCOVERY_BODY_LIMIT;
  ECW_COUNT(discovery_requests);
  if (!ecw_http_perform(&rq, &rs, err)) {
    ecw_err_prefix(err, "SMART discovery");
    ecw_buf_free(&url);
    return 0;
  }
  ecw_buf_free(&url);
  if (rs.status != 200) {
    ecw_err_set(err, ECW_E_HTTP, rs.status,
                "SMART discovery failed: HTTP %ld", rs.status);
    err->retryable = rs.status == 429 || rs.status >= 500;
    ecw_http_resp_free(&rs, 0);
    return 0;
  }
  ok = ecw_discovery_parse(c->fhir_base, rs.body.data, rs.body.len,
                           &resolved, err);
  ecw_http_resp_free(&rs, 0);
  if (!ok) return 0;
  disc_store(c->fhir_base, resolved);
  *out = resolved;
  return 1;
}

/* ---- token request ------------------------------------------------------ */

static int form_escape (ecw_buf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    char enc[3];
    if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
        (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
        ch == '~') {
      if (!ecw_buf_append(b, s, 1)) return 0;
      continue;
    }
    enc[0] = '%'; enc[1] = hex[ch >> 4]; enc[2] = hex[ch & 15];
    if (!ecw_buf_append(b, enc, 3)) return 0;
  }
  return 1;
}

static int valid_token_chars (const char *t) {
  /* RFC 6750 b64token, loosely: visible ASCII only.  Anything else could
   * split the Authorization header. */
  for (; *t; t++)
    if ((unsigned char)*t < 0x21 || (unsigned char)*t > 0x7e) return 0;
  return 1;
}

static void oauth_error (long status, json_object *doc, ecw_err *err) {
  const char *code = doc ? ecw_json_string(doc, "error") : NULL;
  const char *desc = doc ? ecw_json_string(doc, "error_description") : NULL;
  if (code == NULL) {
    ecw_err_set(err, ECW_E_HTTP, status, "token endpoint answered HTTP %ld",
                status);
    err->retryable = status == 408 || status == 429 || status >= 500;
    return;
  }
  if (strcmp(code, "invalid_client") == 0)
    ecw_err_set(err, ECW_E_INVALID_CLIENT, status,
                "token request rejected: invalid_client (check client_id, "
                "kid, key and JWKS registration)");
  else if (strcmp(code, "invalid_grant") == 0 ||
           strcmp(code, "invalid_scope") == 0)
    ecw_err_set(err, ECW_E_INVALID_GRANT, status,
                "token request rejected: %s (check the scopes registered and "
                "the assertion claims)", code);
  else
    ecw_err_set(err, ECW_E_OAUTH, status, "token request rejected: %.64s",
                code);
  snprintf(err->oauth_error, sizeof err->oauth_error, "%s", code);
  if (desc)
    snprintf(err->oauth_description, sizeof err->oauth_description, "%s",
             desc);
  err->retryable = status >= 500;
}

int ecw_oauth_parse (long status, const char *body, size_t len,
                     const char *requested, ecw_grant *g, ecw_err *err) {
  json_object *doc = ecw_json_object(body, len), *v;
  const char *tok, *type, *scope;
  int64_t expires = 300;

  memset(g, 0, sizeof *g);
  if (status != 200) {
    oauth_error(status, doc, err);
    json_object_put(doc);
    return 0;
  }
  if (doc == NULL) {
    ecw_err_set(err, ECW_E_BAD_RESPONSE, status,
                "token response is not a JSON object");
    return 0;
  }
  if (ecw_json_string(doc, "error")) {
    oauth_error(status, doc, err);
    json_object_put(doc);
    return 0;
  }
  tok = ecw_json_string(doc, "access_token");
  type = ecw_json_string(doc, "token_type");
  scope = ecw_json_string(doc, "scope");
  if (tok == NULL || tok[0] == '\0') {
    ecw_err_set(err, ECW_E_BAD_RESPONSE, status,
                "token response has no access_token");
    goto fail;
  }
  if (!valid_token_chars(tok)) {
    ecw_err_set(err, ECW_E_BAD_RESPONSE, status,
                "token response access_token has invalid characters");
    goto fail;
  }
  if (type == NULL || strcasecmp(type, "bearer") != 0) {
    ecw_err_set(err, ECW_E_BAD_RESPONSE, status,
                "token response token_type is not bearer");
    goto fail;
  }
  if (json_object_object_get_ex(doc, "expires_in", &v)) {
    if (json_object_is_type(v, json_type_int))
      expires = json_object_get_int64(v);
    else if (json_object_is_type(v, json_type_double)) {
      /* Cast only a finite, in-range value: 1e400, NaN and Infinity parse. */
      double d = json_object_get_double(v);
      expires = !(d >= 1) ? 0 : d > 86400 ? 86400 : (int64_t)d;
    }
    else if (!json_object_is_type(v, json_type_null)) {
      ecw_err_set(err, ECW_E_BAD_RESPONSE, status,
                  "token response expires_in is not a number");
      goto fail;
    }
    if (expires <= 0) {
      ecw_err_set(err, ECW_E_BAD_RESPONSE, status,
                  "token response expires_in is not positive");
      goto fail;
    }
  }
  if (expires > 86400) expires = 86400;   /* we refresh at least daily */
  g->expires_in = (long)expires;
  g->access_token = ecw_strdup(tok);
  /* A granted scope of only white space says nothing: keep the request. */
  g->scope = scope ? ecw_scopes_normalize(scope) : NULL;
  if (g->scope == NULL) g->scope = ecw_scopes_normalize(requested);
  if (g->access_token == NULL || g->scope == NULL) {
    ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
    goto fail;
  }
  OPENSSL_cleanse((char *)(uintptr_t)tok, strlen(tok));
  json_object_put(doc);
  return 1;
fail:
  if (tok) OPENSSL_cleanse((char *)(uintptr_t)tok, strlen(tok));
  json_object_put(doc);
  ecw_grant_free(g);
  return 0;
}

int ecw_oauth_request (ecw_client *c, const char *token_url,
                       const char *scopes, int64_t deadline, ecw_grant *g,
                       ecw_err *err) {
  ecw_assertion_params ap;
  ecw_http_req rq;
  ecw_http_resp rs;
  ecw_buf form = {0};
  char *assertion;
  int ok;

  memset(&ap, 0, sizeof ap);
  ap.key = c->key;
  ap.alg = c->alg;
  ap.kid = c->kid;
  ap.jku = c->jku;
  ap.client_id = c->client_id;
  ap.aud = token_url;
  ap.with_iat = c->with_iat;
  ap.lifetime_s = 299;
  if ((assertion = ecw_jwt_assertion(&ap, err)) == NULL) return 0;

  ok = ecw_buf_puts(&form, "grant_type=client_credentials&scope=") &&
       form_escape(&form, scopes) &&
       ecw_buf_puts(&form, "&client_assertion_type=urn%3Aietf%3Aparams%3A"
                           "oauth%3Aclient-assertion-type%3Ajwt-bearer"
                           "&client_assertion=") &&
       ecw_buf_puts(&form, assertion);
  ecw_free_secret(assertion);
  if (!ok) {
    ecw_buf_free_secret(&form);
    ecw_err_set(err, ECW_E_INTERNAL, 0, "out of memory");
    return 0;
  }

  memset(&rq, 0, sizeof rq);
  rq.method = "POST";
  rq.url = token_url;
  rq.body = form.data;
  rq.body_len = form.len;
  rq.content_type = "application/x-www-form-urlencoded";
  rq.accept = "application/json";
  rq.ca_file = c->ca_file;
  rq.deadline_ms = deadline;
  rq.connect_timeout_ms = c->connect_timeout_ms;
  rq.guard = c->guard;
  rq.max_body = TOKEN_BODY_LIMIT;
  rq.secret_body = 1;
  ECW_COUNT(token_requests);
  ok = ecw_http_perform(&rq, &rs, err);
  ecw_buf_free_secret(&form);
  if (!ok) {
    if (ecw_streq(err->code, ECW_E_TOO_LARGE)) err->code = ECW_E_BAD_RESPONSE;
    ecw_err_prefix(err, "token endpoint");
    ECW_COUNT(token_failures);
    return 0;
  }
  ok = ecw_oauth_parse(rs.status, rs.body.data, rs.body.len, scopes, g, err);
  ecw_http_resp_free(&rs, 1);
  if (!ok) ECW_COUNT(token_failures);
  return ok;
}

void ecw_grant_free (ecw_grant *g) {
  ecw_free_secret(g->access_token);
  free(g->scope);
  g->access_token = g->scope = NULL;
}
