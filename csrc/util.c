/* util.c: errors, clocks, buffers and strings shared by the core. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "ecw.h"

void ecw_err_set (ecw_err *e, const char *code, long status,
                  const char *fmt, ...) {
  va_list ap;
  if (e == NULL) return;
  memset(e, 0, sizeof *e);
  e->code = code;
  e->status = status;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
}

void ecw_err_prefix (ecw_err *e, const char *where) {
  char tmp[sizeof e->message];
  size_t n = strlen(where);
  if (n + 2 >= sizeof tmp) return;
  memcpy(tmp, where, n);
  tmp[n] = ':';
  tmp[n + 1] = ' ';
  /* Truncation is fine: the message is for people, the code is for code. */
  memcpy(tmp + n + 2, e->message, sizeof tmp - n - 2);
  tmp[sizeof tmp - 1] = '\0';
  memcpy(e->message, tmp, sizeof tmp);
}

int64_t ecw_now_ms (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ecw_wall_s (void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec;
}

int ecw_cond_wait_until (pthread_cond_t *cv, pthread_mutex_t *m,
                         int64_t deadline_ms) {
  struct timespec ts;
  int64_t left = deadline_ms - ecw_now_ms();
  if (left <= 0) return ETIMEDOUT;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += left / 1000;
  ts.tv_nsec += (left % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  return pthread_cond_timedwait(cv, m, &ts);
}

int ecw_buf_append (ecw_buf *b, const void *p, size_t n) {
  if (b->limit && (n > b->limit || b->len > b->limit - n)) {
    b->overflow = 1;
    return 0;
  }
  if (b->len + n + 1 > b->cap) {
    size_t ncap = b->cap ? b->cap : 256;
    char *nd;
    while (ncap < b->len + n + 1) ncap *= 2;
    nd = malloc(ncap);
    if (nd == NULL) return 0;
    if (b->data) {
      memcpy(nd, b->data, b->len);
      /* The old block may hold a token or an assertion: wipe it. */
      OPENSSL_cleanse(b->data, b->cap);
      free(b->data);
    }
    b->data = nd;
    b->cap = ncap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 1;
}

int ecw_buf_puts (ecw_buf *b, const char *s) {
  return ecw_buf_append(b, s, strlen(s));
}

void ecw_buf_free (ecw_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

void ecw_buf_free_secret (ecw_buf *b) {
  if (b->data) OPENSSL_cleanse(b->data, b->cap);
  ecw_buf_free(b);
}

char *ecw_strndup (const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *ecw_strdup (const char *s) {
  return s ? ecw_strndup(s, strlen(s)) : NULL;
}

void ecw_free_secret (char *s) {
  if (s == NULL) return;
  OPENSSL_cleanse(s, strlen(s));
  free(s);
}

int ecw_streq (const char *a, const char *b) {
  if (a == NULL || b == NULL) return a == b;
  return strcmp(a, b) == 0;
}

char *ecw_b64url (const unsigned char *p, size_t n) {
  size_t cap = 4 * ((n + 2) / 3) + 1, i, j;
  char *out = malloc(cap);
  int len;
  if (out == NULL) return NULL;
  len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
  for (i = 0, j = 0; i < (size_t)len; i++) {
    char c = out[i];
    if (c == '=') break;
    out[j++] = c == '+' ? '-' : c == '/' ? '_' : c;
  }
  out[j] = '\0';
  return out;
}

static int cmp_str (const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

char *ecw_scopes_normalize (const char *s) {
  char **parts = NULL, *out = NULL;
  size_t n = 0, cap = 0, total = 0, i, k;
  const char *p = s;
  if (s == NULL) return NULL;
  for (;;) {
    const char *start;
    while (*p && isspace((unsigned char)*p)) p++;
    if (*p == '\0') break;
    start = p;
    while (*p && !isspace((unsigned char)*p)) p++;
    if (n == cap) {
      char **np;
      cap = cap ? cap * 2 : 8;
      np = realloc(parts, cap * sizeof *parts);
      if (np == NULL) goto done;
      parts = np;
    }
    if ((parts[n] = ecw_strndup(start, (size_t)(p - start))) == NULL) goto done;
    total += (size_t)(p - start) + 1;
    n++;
  }
  if (n == 0) goto done;
  qsort(parts, n, sizeof *parts, cmp_str);
  if ((out = malloc(total)) == NULL) goto done;
  for (i = 0, k = 0; i < n; i++) {
    size_t l;
    if (i > 0 && strcmp(parts[i], parts[i - 1]) == 0) continue;
    if (k) out[k++] = ' ';
    l = strlen(parts[i]);
    memcpy(out + k, parts[i], l);
    k += l;
  }
  out[k] = '\0';
done:
  for (i = 0; i < n; i++) free(parts[i]);
  free(parts);
  return out;
}
