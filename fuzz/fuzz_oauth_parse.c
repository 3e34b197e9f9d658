/*
 * Token endpoint responses: ecw_oauth_parse(status, body, len, requested).
 *
 * Input: an optional first line "<status>[ <requested scopes>]\n" (status
 * 0..999), then the body.  Without that line the status is 200 and the
 * requested scopes are "system/Patient.read".  Requested scopes go through
 * ecw_scopes_normalize as the caller's do (never empty).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../csrc/json.h"
#include "../csrc/oauth.h"
#include "fuzz.h"

static int known_code (const char *c) {
  static const char *const codes[] = {
    ECW_E_CONFIG, ECW_E_INVALID_CLIENT, ECW_E_INVALID_GRANT, ECW_E_OAUTH,
    ECW_E_HTTP, ECW_E_BAD_RESPONSE, ECW_E_INTERNAL
  };
  size_t i;
  for (i = 0; i < sizeof codes / sizeof *codes; i++)
    if (strcmp(c, codes[i]) == 0) return 1;
  return 0;
}

static int expires_out_of_range (const char *body, size_t len) {
  json_object *doc = ecw_json_object(body, len), *v;
  int out = 0;
  if (doc && json_object_object_get_ex(doc, "expires_in", &v) &&
      json_object_is_type(v, json_type_double)) {
    double d = json_object_get_double(v);
    out = !(d > -9.2e18 && d < 9.2e18);
  }
  json_object_put(doc);
  return out;
}

/* Split off "<status>[ <scopes>]\n" when the input starts with one. */
static int header (const uint8_t **d, size_t *n, long *status, char **req) {
  const uint8_t *nl = memchr(*d, '\n', *n < 256 ? *n : 256);
  size_t i = 0, l;
  long st = 0;
  if (nl == NULL) return 0;
  l = (size_t)(nl - *d);
  while (i < l && i < 3 && (*d)[i] >= '0' && (*d)[i] <= '9')
    st = st * 10 + ((*d)[i++] - '0');
  if (i == 0 || (i < l && (*d)[i] != ' ')) return 0;
  *status = st;
  if (i < l) {
    if (memchr(*d + i + 1, 0, l - i - 1)) return 0;
    *req = strndup((const char *)*d + i + 1, l - i - 1);
  }
  *d += l + 1;
  *n -= l + 1;
  return 1;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  long status = 200;
  char *req_raw = NULL, *requested, *body;
  ecw_grant g;
  ecw_err err;
  int ok;

  header(&data, &size, &status, &req_raw);
  requested = ecw_scopes_normalize(req_raw ? req_raw : "");
  if (requested == NULL) requested = strdup("system/Patient.read");
  free(req_raw);

  /* An exactly sized copy: ASan sees any read past len. */
  body = malloc(size ? size : 1);
  memcpy(body, data, size);

  memset(&err, 0, sizeof err);
  memset(err.message, 'X', sizeof err.message);
  memset(err.oauth_error, 'X', sizeof err.oauth_error);
  memset(err.oauth_description, 'X', sizeof err.oauth_description);
  memset(&g, 0xA5, sizeof g);

  /* FUZZ_ALLOW=oauth-expires-cast skips bodies whose expires_in double
   * is out of int64_t range (NaN, Infinity, 1e300), which oauth.c casts
   * without a range check (undefined behaviour, see fuzz/README.md). */
  if (fuzz_skip("oauth-expires-cast") && expires_out_of_range(body, size)) {
    free(body);
    free(requested);
    return 0;
  }
  ok = ecw_oauth_parse(status, body, size, requested, &g, &err);
  CHECK("oauth-result", ok == 0 || ok == 1, "returned %d", ok);

  if (ok) {
    json_object *doc = ecw_json_object(body, size);
    const char *tok = doc ? ecw_json_string(doc, "access_token") : NULL;
    const char *type = doc ? ecw_json_string(doc, "token_type") : NULL;
    char *renorm;
    size_t i, tl;
    CHECK("oauth-status", status == 200, "success with HTTP %ld", status);
    CHECK("oauth-err-untouched", err.code == NULL,
          "success but err.code = %s", fuzz_qs(err.code));
    CHECK("oauth-token", g.access_token != NULL && g.access_token[0] != '\0',
          "success without an access token");
    tl = strlen(g.access_token);
    for (i = 0; i < tl; i++)
      CHECK("oauth-token-chars",
            (unsigned char)g.access_token[i] >= 0x21 &&
            (unsigned char)g.access_token[i] <= 0x7e,
            "access token %s has a byte outside visible ASCII",
            fuzz_q(g.access_token, tl));
    CHECK("oauth-token-json", doc && tok && strcmp(tok, g.access_token) == 0,
          "access token %s is not the body's access_token",
          fuzz_qs(g.access_token));
    CHECK("oauth-bearer", type && strcasecmp(type, "bearer") == 0,
          "success with token_type %s", fuzz_qs(type));
    CHECK("oauth-expires", g.expires_in >= 1 && g.expires_in <= 86400,
          "expires_in %ld", g.expires_in);
    CHECK("oauth-scope", g.scope != NULL, "success with scope NULL");
    renorm = ecw_scopes_normalize(g.scope);
    CHECK("oauth-scope-normalized", renorm && strcmp(renorm, g.scope) == 0,
          "granted scope %s is not normalized", fuzz_qs(g.scope));
    free(renorm);
    json_object_put(doc);
  } else {
    CHECK("oauth-fail-grant", g.access_token == NULL && g.scope == NULL,
          "failure left access_token %p scope %p", (void *)g.access_token,
          (void *)g.scope);
    CHECK("oauth-fail-code", err.code != NULL, "failure without err.code");
    CHECK("oauth-fail-known-code", known_code(err.code),
          "unexpected err.code %s", fuzz_qs(err.code));
    CHECK("oauth-fail-message",
          fuzz_terminated(err.message, sizeof err.message) &&
          err.message[0] != '\0',
          "err.message not a NUL-terminated, non-empty string");
    CHECK("oauth-fail-fields",
          fuzz_terminated(err.oauth_error, sizeof err.oauth_error) &&
          fuzz_terminated(err.oauth_description,
                          sizeof err.oauth_description),
          "oauth_error/oauth_description not NUL-terminated");
    /* A server's bytes are never an "out of memory". */
    CHECK("oauth-no-internal", strcmp(err.code, ECW_E_INTERNAL) != 0,
          "HTTP %ld body %s failed with internal: %s", status,
          fuzz_q(body, size), err.message);
    if (strcmp(err.code, ECW_E_INTERNAL) != 0)
      CHECK("oauth-fail-status", err.status == status,
            "err.status %ld for HTTP %ld", err.status, status);
  }
  ecw_grant_free(&g);
  CHECK("oauth-free", g.access_token == NULL && g.scope == NULL,
        "ecw_grant_free left pointers behind");
  free(body);
  free(requested);
  return 0;
}
