/* support.c: what the harnesses need besides csrc/ and libFuzzer. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "../csrc/stats.h"
#include "fuzz.h"

/* csrc/ecw_core.c (the Lua binding, not linked here) owns the counters. */
ecw_stats ecw_counters;

static const char *allow;
static int hardening = -1;

static void settings (void) {
  if (hardening < 0) {
    const char *h = getenv("FUZZ_HARDENING");
    allow = getenv("FUZZ_ALLOW");
    if (allow == NULL) allow = "";
    hardening = h != NULL && h[0] != '\0' && strcmp(h, "0") != 0;
  }
}

int fuzz_allowed (const char *id) {
  settings();
  if (strncmp(id, "hardening-", 10) == 0 && !hardening) return 1;
  if (strcmp(allow, "*") == 0) return 1;
  return fuzz_skip(id);
}

int fuzz_skip (const char *id) {
  const char *p;
  size_t n = strlen(id);
  settings();
  for (p = allow; *p;) {
    size_t l = strcspn(p, ", ");
    if (l == n && strncmp(p, id, n) == 0) return 1;
    p += l;
    while (*p == ',' || *p == ' ') p++;
  }
  return 0;
}

void fuzz_fail (const char *id, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "ecw-fuzz: invariant %s violated: ", id);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(FUZZ_ALLOW=%s tolerates this check while a fix is "
          "pending)\n", id);
  fflush(stderr);
  abort();
}

const char *fuzz_q (const char *s, size_t n) {
  char *out, *o;
  size_t i;
  if (s == NULL) return "NULL";
  if (n > 512) n = 512;
  if ((out = malloc(4 * n + 3)) == NULL) return "?";
  o = out;
  *o++ = '"';
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') { *o++ = '\\'; *o++ = (char)c; }
    else if (c >= 0x20 && c < 0x7f) *o++ = (char)c;
    else o += sprintf(o, "\\x%02x", c);
  }
  *o++ = '"';
  *o = '\0';
  return out;
}

const char *fuzz_qs (const char *s) {
  return s ? fuzz_q(s, strlen(s)) : "NULL";
}

char *fuzz_take (const uint8_t **d, size_t *n) {
  const uint8_t *nul = memchr(*d, 0, *n);
  size_t l = nul ? (size_t)(nul - *d) : *n;
  char *s = malloc(l + 1);
  if (s == NULL) abort();
  memcpy(s, *d, l);
  s[l] = '\0';
  if (nul) l++;
  *d += l;
  *n -= l;
  return s;
}

int fuzz_selector (const uint8_t **d, size_t *n) {
  int v;
  if (*n < 2 || !isdigit((*d)[0]) || (*d)[1] != '\n') return -1;
  v = (*d)[0] - '0';
  *d += 2;
  *n -= 2;
  return v;
}

int fuzz_terminated (const char *buf, size_t size) {
  return memchr(buf, 0, size) != NULL;
}

#define CURL_FLAGS (CURLU_NON_SUPPORT_SCHEME | CURLU_GUESS_SCHEME)

char *fuzz_curl_part (const char *url, int part, unsigned flags) {
  CURLU *u = curl_url();
  char *v = NULL, *out = NULL;
  if (u == NULL) abort();
  if (curl_url_set(u, CURLUPART_URL, url, CURL_FLAGS) == CURLUE_OK &&
      curl_url_get(u, (CURLUPart)part, &v, flags) == CURLUE_OK) {
    out = strdup(v);
    curl_free(v);
  }
  curl_url_cleanup(u);
  return out;
}

char *fuzz_curl_path (const char *url) {
  return fuzz_curl_part(url, CURLUPART_PATH, 0);
}

char *fuzz_curl_origin (const char *url) {
  char *s = fuzz_curl_part(url, CURLUPART_SCHEME, 0);
  char *h = fuzz_curl_part(url, CURLUPART_HOST, 0);
  char *p = fuzz_curl_part(url, CURLUPART_PORT, CURLU_DEFAULT_PORT);
  char *out = NULL;
  if (s && h && p) {
    size_t n = strlen(s) + strlen(h) + strlen(p) + 5, i;
    if ((out = malloc(n)) == NULL) abort();
    snprintf(out, n, "%s://%s:%s", s, h, p);
    for (i = 0; out[i]; i++) out[i] = (char)tolower((unsigned char)out[i]);
  }
  free(s); free(h); free(p);
  return out;
}
