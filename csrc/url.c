/* url.c: origins, loopback detection and reference resolution, all through
 * libcurl's URL parser so that what we check is what curl will connect to. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <curl/curl.h>

#include "ecw.h"

static CURLU *parse (const char *url) {
  CURLU *u = curl_url();
  if (u == NULL) return NULL;
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
    curl_url_cleanup(u);
    return NULL;
  }
  return u;
}

static char *part (CURLU *u, CURLUPart what, unsigned flags) {
  char *v = NULL, *copy;
  if (curl_url_get(u, what, &v, flags) != CURLUE_OK) return NULL;
  copy = ecw_strdup(v);
  curl_free(v);
  return copy;
}

char *ecw_url_origin (const char *url) {
  CURLU *u = parse(url);
  char *scheme, *host, *port, *out = NULL;
  if (u == NULL) return NULL;
  scheme = part(u, CURLUPART_SCHEME, 0);
  host = part(u, CURLUPART_HOST, 0);
  port = part(u, CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (scheme && host && port) {
    size_t n = strlen(scheme) + strlen(host) + strlen(port) + 5, i;
    if ((out = malloc(n)) != NULL) {
      snprintf(out, n, "%s://%s:%s", scheme, host, port);
      for (i = 0; out[i]; i++) out[i] = (char)tolower((unsigned char)out[i]);
    }
  }
  free(scheme); free(host); free(port);
  curl_url_cleanup(u);
  return out;
}

static int host_is_loopback (const char *h) {
  struct in_addr a;
  if (strcmp(h, "localhost") == 0 || strcmp(h, "[::1]") == 0) return 1;
  /* 127.0.0.0/8 as a strict dotted quad: "127.0.0.999", "127.08.0.1" or
   * "127.evil.com" are names that curl would look up, not loopback. */
  return inet_pton(AF_INET, h, &a) == 1 &&
         (ntohl(a.s_addr) >> 24) == 127;
}

int ecw_url_is_loopback (const char *url) {
  CURLU *u = parse(url);
  char *host;
  int r = 0;
  if (u == NULL) return 0;
  if ((host = part(u, CURLUPART_HOST, 0)) != NULL) {
    r = host_is_loopback(host);
    free(host);
  }
  curl_url_cleanup(u);
  return r;
}

char *ecw_url_resolve (const char *base, const char *ref) {
  CURLU *u = parse(base);
  char *out = NULL;
  if (u == NULL) return NULL;
  /* curl resolves a relative reference against the URL already set. */
  if (curl_url_set(u, CURLUPART_URL, ref, 0) == CURLUE_OK)
    out = part(u, CURLUPART_URL, 0);
  curl_url_cleanup(u);
  return out;
}

static int bad_url_chars (const char *p);

int ecw_url_check_transport (const char *url, const char *what, ecw_err *err) {
  CURLU *u;
  if (bad_url_chars(url)) {
    ecw_err_set(err, ECW_E_CONFIG, 0,
                "%s has spaces, control characters or raw non-ASCII bytes "
                "(percent-encode them)", what);
    return 0;
  }
  u = parse(url);
  char *scheme = NULL, *host = NULL;
  int ok = 0;
  if (u == NULL) {
    ecw_err_set(err, ECW_E_CONFIG, 0, "%s is not a valid URL", what);
    return 0;
  }
  scheme = part(u, CURLUPART_SCHEME, 0);
  host = part(u, CURLUPART_HOST, 0);
  if (scheme && host) {
    if (strcmp(scheme, "https") == 0) ok = 1;
    else if (strcmp(scheme, "http") == 0 && host_is_loopback(host)) ok = 1;
  }
  if (!ok)
    ecw_err_set(err, ECW_E_CONFIG, 0,
                "%s must use https (plain http is allowed only to loopback)",
                what);
  free(scheme); free(host);
  curl_url_cleanup(u);
  return ok;
}

/* "." or "..", where a dot may also be spelled %2e: servers decode it. */
static int is_dot_segment (const char *s, size_t n) {
  size_t dots = 0, i = 0;
  while (i < n) {
    if (s[i] == '.') i++;
    else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' &&
             (s[i + 2] == 'e' || s[i + 2] == 'E')) i += 3;
    else return 0;
    dots++;
  }
  return dots == 1 || dots == 2;
}

/* The path of a request target (up to '?' or '#') may hold only what FHIR
 * paths need: resource types, ids, "$operation", "/".  No '%' (no encoded
 * slash or dot, no double encoding), no ';' path parameters, no '\':
 * lenient servers read those as a way out of the base. */
static int bad_path_chars (const char *p) {
  for (; *p && *p != '?' && *p != '#'; p++) {
    unsigned char c = (unsigned char)*p;
    if (!(isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
          c == '$' || c == '/'))
      return 1;
  }
  return 0;
}

/* A relative target may not climb out of the base with dot segments. */
static int has_dot_segment (const char *p) {
  const char *seg = p;
  for (;; p++) {
    if (*p == '/' || *p == '?' || *p == '#' || *p == '\0') {
      if (is_dot_segment(seg, (size_t)(p - seg))) return 1;
      if (*p != '/') return 0;
      seg = p + 1;
    }
  }
}

static int bad_url_chars (const char *p) {
  for (; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) return 1;
  return 0;
}

char *ecw_url_target (const char *base, const char *base_origin,
                      const char *target, ecw_err *err) {
  char *url;
  if (bad_url_chars(target)) {
    ecw_err_set(err, ECW_E_CONFIG, 0,
                "request URL has characters that must be percent-encoded");
    return NULL;
  }
  if (strstr(target, "://")) {
    char *origin = ecw_url_origin(target);
    size_t blen = strlen(base);
    int same = origin && strcmp(origin, base_origin) == 0;
    free(origin);
    if (!same) {
      /* The bearer token only ever goes to the FHIR server's origin. */
      ecw_err_set(err, ECW_E_ORIGIN, 0,
                  "refusing to send the token to another origin");
      return NULL;
    }
    /* ... and on that origin only under the base: not another practice's
     * base, not the token endpoint, not a climb out with dot segments. */
    if (strncmp(target, base, blen) != 0 || target[blen] != '/' ||
        has_dot_segment(target + blen + 1) ||
        bad_path_chars(target + blen + 1)) {
      ecw_err_set(err, ECW_E_ORIGIN, 0,
                  "refusing to send the token outside the FHIR base");
      return NULL;
    }
    return ecw_strdup(target);
  }
  while (*target == '/') target++;
  if (has_dot_segment(target)) {
    ecw_err_set(err, ECW_E_CONFIG, 0, "request path has dot segments");
    return NULL;
  }
  if (bad_path_chars(target)) {
    ecw_err_set(err, ECW_E_CONFIG, 0,
                "request path has characters a FHIR path does not use");
    return NULL;
  }
  if ((url = malloc(strlen(base) + strlen(target) + 2)) != NULL) {
    strcpy(url, base);
    strcat(url, "/");
    strcat(url, target);
  }
  return url;
}
