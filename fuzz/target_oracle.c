/*
 * target_oracle.c: what ecw_url_target promises.
 *
 *  - NULL comes with err.code "config" or "origin" and a terminated message.
 *  - A URL never holds a byte <= 0x20 or >= 0x7f.
 *  - curl (parsing as CURLOPT_URL does) connects to base's origin.
 *  - A relative target becomes base + "/" + target (leading slashes
 *    dropped), with no "." or ".." segment, %2e spellings included, and
 *    curl's normalised path stays under the base path.
 *  - Plain relative targets (letters, digits, "/?=&_-~,") are accepted.
 *  - hardening-target-climb (FUZZ_HARDENING=1): no segment climbs once a
 *    server decodes %XX (repeatedly), treats '\' as '/' and drops ";params"
 *    (IIS, nginx, Tomcat do one or the other).
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "target_oracle.h"

static int hexval (int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* "." or ".." with dots spelled "." or "%2e"/"%2E" only. */
static int dot_segment (const char *s, size_t n) {
  size_t i = 0, dots = 0;
  while (i < n) {
    if (s[i] == '.') i++;
    else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' &&
             tolower((unsigned char)s[i + 2]) == 'e') i += 3;
    else return 0;
    dots++;
  }
  return dots == 1 || dots == 2;
}

/* The path part of a relative target: up to '?' or '#'. */
static size_t path_len (const char *p) {
  return strcspn(p, "?#");
}

static int literal_climb (const char *p, size_t n) {
  size_t start = 0, i;
  for (i = 0; i <= n; i++)
    if (i == n || p[i] == '/') {
      if (dot_segment(p + start, i - start)) return 1;
      start = i + 1;
    }
  return 0;
}

/* A server's reading: %XX decoded up to three times, '\' as '/', ";..."
 * parameters dropped from each segment. */
static int lenient_climb (const char *p, size_t n) {
  char *s = malloc(n + 1), *t;
  size_t len = n, i, j, start;
  int round, climb = 0;
  memcpy(s, p, n);
  s[n] = '\0';
  for (round = 0; round < 3; round++) {
    for (i = 0, j = 0; i < len; i++) {
      int h, l;
      if (s[i] == '%' && i + 2 < len &&
          (h = hexval((unsigned char)s[i + 1])) >= 0 &&
          (l = hexval((unsigned char)s[i + 2])) >= 0) {
        s[j++] = (char)(h * 16 + l);
        i += 2;
      } else {
        s[j++] = s[i];
      }
    }
    len = j;
    s[len] = '\0';
  }
  for (i = 0; i < len; i++) if (s[i] == '\\') s[i] = '/';
  for (start = 0, i = 0; i <= len && !climb; i++)
    if (i == len || s[i] == '/') {
      size_t seg = i - start;
      t = memchr(s + start, ';', seg);
      if (t) seg = (size_t)(t - (s + start));
      if ((seg == 1 && s[start] == '.') ||
          (seg == 2 && s[start] == '.' && s[start + 1] == '.'))
        climb = 1;
      start = i + 1;
    }
  free(s);
  return climb;
}

/* A target every base must accept: a FHIR-shaped path ([A-Za-z0-9/_~-],
 * what ecw_url_target allows in a path, minus dots), then optionally a
 * query of plain characters. */
static int plain_target (const char *t) {
  int in_query = 0;
  for (; *t; t++) {
    if (*t == '?' && !in_query) { in_query = 1; continue; }
    if (isalnum((unsigned char)*t) || strchr("/_-~", *t)) continue;
    if (in_query && strchr("?=&,", *t)) continue;
    return 0;
  }
  return 1;
}

void target_check (const char *base, const char *origin, const char *target) {
  ecw_err err;
  char *url;
  size_t i, bl = strlen(base);

  memset(&err, 0, sizeof err);
  memset(err.message, 'X', sizeof err.message);
  url = ecw_url_target(base, origin, target, &err);

  if (url == NULL) {
    CHECK("target-fail-code",
          err.code && (strcmp(err.code, ECW_E_CONFIG) == 0 ||
                       strcmp(err.code, ECW_E_ORIGIN) == 0),
          "refused %s with err.code %s", fuzz_qs(target),
          fuzz_qs(err.code));
    CHECK("target-fail-message",
          fuzz_terminated(err.message, sizeof err.message),
          "err.message not NUL-terminated");
    CHECK("target-accepts-plain", !plain_target(target),
          "base %s refused plain target %s: %s", fuzz_qs(base),
          fuzz_qs(target), err.message);
    return;
  }

  for (i = 0; url[i]; i++)
    CHECK("target-bytes",
          (unsigned char)url[i] > 0x20 && (unsigned char)url[i] < 0x7f,
          "base %s target %s gave %s: byte 0x%02x", fuzz_qs(base),
          fuzz_qs(target), fuzz_qs(url), (unsigned char)url[i]);

  {
    char *co = fuzz_curl_origin(url);
    CHECK("target-origin", co && strcmp(co, origin) == 0,
          "base %s target %s gave %s: curl connects to %s, not %s",
          fuzz_qs(base), fuzz_qs(target), fuzz_qs(url), fuzz_qs(co),
          fuzz_qs(origin));
    free(co);
  }

  if (strstr(target, "://") == NULL) {
    const char *t = target, *rel;
    char *bdir, *bpath, *upath;
    while (*t == '/') t++;
    CHECK("target-relative-form",
          strncmp(url, base, bl) == 0 && url[bl] == '/' &&
          strcmp(url + bl + 1, t) == 0,
          "base %s target %s gave %s", fuzz_qs(base), fuzz_qs(target),
          fuzz_qs(url));
    rel = url + bl + 1;
    CHECK("target-dot-segment", !literal_climb(rel, path_len(rel)),
          "base %s target %s gave %s with a dot segment", fuzz_qs(base),
          fuzz_qs(target), fuzz_qs(url));
    CHECK("hardening-target-climb", !lenient_climb(rel, path_len(rel)),
          "base %s target %s gave %s: a server decoding %%XX, '\\' or "
          "';' would climb", fuzz_qs(base), fuzz_qs(target), fuzz_qs(url));
    bdir = malloc(bl + 2);
    memcpy(bdir, base, bl);
    memcpy(bdir + bl, "/", 2);
    bpath = fuzz_curl_path(bdir);
    upath = fuzz_curl_path(url);
    CHECK("target-under-base",
          bpath && upath && strncmp(upath, bpath, strlen(bpath)) == 0,
          "base %s target %s gave %s: curl's path %s is not under %s",
          fuzz_qs(base), fuzz_qs(target), fuzz_qs(url), fuzz_qs(upath),
          fuzz_qs(bpath));
    free(bdir); free(bpath); free(upath);
  }
  free(url);
}
