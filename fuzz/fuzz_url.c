/*
 * URL helpers: ecw_url_origin, ecw_url_is_loopback, ecw_url_check_transport
 * on one string, ecw_url_resolve on two.
 *
 * Input: "<url>\0<reference>" (the reference may be absent).
 *
 *  - loopback only for localhost, [::1] and 127.0.0.0/8 written as a
 *    dotted quad that inet_pton accepts ("127.evil.com" is a name).
 *  - check_transport passes exactly for https, and http to loopback; a
 *    refusal sets err.code "config" and a terminated message.
 *  - origin: lower case "scheme://host:port", the same as curl's view.
 *  - resolve: a parseable URL with no control bytes or spaces; a reference
 *    with no ':' and no "//" (a path, query or fragment) keeps the base's
 *    origin.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "../csrc/ecw.h"
#include "fuzz.h"

static int true_loopback (const char *host) {
  struct in_addr a;
  if (strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0) return 1;
  if (inet_pton(AF_INET, host, &a) != 1) return 0;
  return ((const unsigned char *)&a)[0] == 127;
}

/* check_transport refuses URLs with bytes that need percent-encoding. */
static int clean_bytes (const char *u) {
  for (; *u; u++)
    if ((unsigned char)*u <= 0x20 || (unsigned char)*u >= 0x7f) return 0;
  return 1;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  char *url = fuzz_take(&data, &size);
  char *ref = fuzz_take(&data, &size);
  char *host = NULL, *scheme = NULL, *origin, *resolved;
  int loop, ok;
  ecw_err err;
  size_t i;

  /* ecw_url_* parse without curl's scheme guessing. */
  {
    CURLU *u = curl_url();
    char *h = NULL, *s = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
      if (curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK) host = strdup(h);
      if (curl_url_get(u, CURLUPART_SCHEME, &s, 0) == CURLUE_OK)
        scheme = strdup(s);
      curl_free(h); curl_free(s);
    }
    curl_url_cleanup(u);
  }

  loop = ecw_url_is_loopback(url);
  CHECK("url-loopback", !loop || (host && true_loopback(host)),
        "%s counts as loopback (host %s)", fuzz_qs(url), fuzz_qs(host));
  if (host && (strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 ||
               strcmp(host, "127.0.0.1") == 0))
    CHECK("url-loopback-missed", loop, "%s is not loopback", fuzz_qs(url));

  memset(&err, 0, sizeof err);
  memset(err.message, 'X', sizeof err.message);
  ok = ecw_url_check_transport(url, "url", &err);
  CHECK("url-transport",
        ok == (scheme && host && clean_bytes(url) &&
               (strcmp(scheme, "https") == 0 ||
                (strcmp(scheme, "http") == 0 && loop))),
        "check_transport(%s) = %d (scheme %s, host %s, loopback %d)",
        fuzz_qs(url), ok, fuzz_qs(scheme), fuzz_qs(host), loop);
  if (!ok)
    CHECK("url-transport-err",
          err.code && strcmp(err.code, ECW_E_CONFIG) == 0 &&
          fuzz_terminated(err.message, sizeof err.message),
          "refusal with err.code %s", fuzz_qs(err.code));

  origin = ecw_url_origin(url);
  if (origin) {
    char *co = fuzz_curl_origin(url);
    for (i = 0; origin[i]; i++)
      CHECK("url-origin-lower", !isupper((unsigned char)origin[i]),
            "origin %s not lower case", fuzz_qs(origin));
    CHECK("url-origin-form",
          strstr(origin, "://") && strrchr(origin, ':') > strstr(origin, "://"),
          "origin %s", fuzz_qs(origin));
    /* For http(s), what ecw compares is what curl connects to. */
    if (scheme && (strcmp(scheme, "https") == 0 || strcmp(scheme, "http") == 0))
      CHECK("url-origin-curl", co && strcmp(co, origin) == 0,
            "%s: ecw origin %s, curl origin %s", fuzz_qs(url),
            fuzz_qs(origin), fuzz_qs(co));
    free(co);
  }

  resolved = ecw_url_resolve(url, ref);
  if (resolved) {
    char *ro;
    for (i = 0; resolved[i]; i++)
      CHECK("url-resolve-bytes",
            (unsigned char)resolved[i] > 0x20 &&
            (unsigned char)resolved[i] != 0x7f,
            "resolve(%s, %s) = %s", fuzz_qs(url), fuzz_qs(ref),
            fuzz_qs(resolved));
    ro = ecw_url_origin(resolved);
    if (origin && !strchr(ref, ':') && !strstr(ref, "//")) {
      /* Compare with the base as curl writes it back: curl decodes a
       * %-encoded host on the first parse and normalises it as an IPv4
       * number only on the next ("12%2e7.17" -> "12.7.17" -> "12.7.0.17"),
       * which changes the spelling, not the host. */
      char *canon = ecw_url_resolve(url, "");
      char *co = canon ? ecw_url_origin(canon) : NULL;
      CHECK("url-resolve-origin", ro && co && strcmp(ro, co) == 0,
            "resolve(%s, %s) = %s left origin %s for %s", fuzz_qs(url),
            fuzz_qs(ref), fuzz_qs(resolved), fuzz_qs(co), fuzz_qs(ro));
      free(canon);
      free(co);
    }
    free(ro);
    free(resolved);
  }
  free(origin);
  free(host); free(scheme);
  free(url); free(ref);
  return 0;
}
