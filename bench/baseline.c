/*
 * baseline.c: the C baseline for bench item 1.
 *
 * What a C programmer would write to fetch the same resource as ecw.read,
 * with none of ecw's work: one easy handle created once and reused, so the
 * connection stays alive between requests; the URL, the Authorization and
 * Accept headers and the CA file set once; the body appended to a buffer.
 * No reset, no per-request option setting, no JSON, no Lua.
 *
 * Linked into ecw-bench (the item 1 driver times it from Lua with the same
 * clock as ecw.read), and built on its own as build/bench/baseline with
 * -DBENCH_BASELINE_MAIN:
 *
 *   baseline URL TOKEN CA_FILE [N]   prints n= median_us= p99_us= connects=
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "baseline.h"

struct bench_baseline {
  CURL *h;
  struct curl_slist *hdrs;
  char *body;
  size_t len, cap;
  long connects;
};

double bench_now_us (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static size_t on_body (char *p, size_t size, size_t n, void *ud) {
  bench_baseline *b = ud;
  size_t len = size * n;
  if (b->len + len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    char *nb;
    while (cap < b->len + len + 1) cap *= 2;
    if ((nb = realloc(b->body, cap)) == NULL) return 0;
    b->body = nb;
    b->cap = cap;
  }
  memcpy(b->body + b->len, p, len);
  b->len += len;
  b->body[b->len] = '\0';
  return len;
}

bench_baseline *bench_baseline_new (const char *url, const char *token,
                                    const char *ca_file, const char *accept) {
  bench_baseline *b = calloc(1, sizeof *b);
  char *line;
  size_t n;
  if (b == NULL) return NULL;
  if ((b->h = curl_easy_init()) == NULL) {
    free(b);
    return NULL;
  }
  n = strlen(token) + sizeof "Authorization: Bearer ";
  if ((line = malloc(n)) == NULL) {
    bench_baseline_free(b);
    return NULL;
  }
  snprintf(line, n, "Authorization: Bearer %s", token);
  b->hdrs = curl_slist_append(b->hdrs, line);
  free(line);
  n = strlen(accept ? accept : "application/fhir+json") + sizeof "Accept: ";
  if ((line = malloc(n)) == NULL) {
    bench_baseline_free(b);
    return NULL;
  }
  snprintf(line, n, "Accept: %s", accept ? accept : "application/fhir+json");
  b->hdrs = curl_slist_append(b->hdrs, line);
  free(line);
  curl_easy_setopt(b->h, CURLOPT_URL, url);
  curl_easy_setopt(b->h, CURLOPT_HTTPHEADER, b->hdrs);
  curl_easy_setopt(b->h, CURLOPT_NOSIGNAL, 1L);
  if (ca_file) curl_easy_setopt(b->h, CURLOPT_CAINFO, ca_file);
  curl_easy_setopt(b->h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(b->h, CURLOPT_WRITEDATA, b);
  return b;
}

int bench_baseline_get (bench_baseline *b, long *status, size_t *bytes) {
  CURLcode rc;
  long nconn = 0;
  b->len = 0;
  rc = curl_easy_perform(b->h);
  *status = 0;
  curl_easy_getinfo(b->h, CURLINFO_RESPONSE_CODE, status);
  if (curl_easy_getinfo(b->h, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK)
    b->connects += nconn;
  *bytes = b->len;
  return (int)rc;
}

const char *bench_baseline_body (const bench_baseline *b, size_t *len) {
  *len = b->len;
  return b->body ? b->body : "";
}

long bench_baseline_connects (const bench_baseline *b) {
  return b->connects;
}

void bench_baseline_free (bench_baseline *b) {
  if (b == NULL) return;
  if (b->h) curl_easy_cleanup(b->h);
  curl_slist_free_all(b->hdrs);
  free(b->body);
  free(b);
}

#ifdef BENCH_BASELINE_MAIN
static int cmp_double (const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main (int argc, char **argv) {
  bench_baseline *b;
  double *t;
  int i, n = argc > 4 ? atoi(argv[4]) : 2000, failed = 0;
  if (argc < 4 || n < 1) {
    fprintf(stderr, "usage: baseline URL TOKEN CA_FILE [N]\n");
    return 2;
  }
  curl_global_init(CURL_GLOBAL_ALL);
  if ((b = bench_baseline_new(argv[1], argv[2], argv[3], NULL)) == NULL ||
      (t = malloc(sizeof *t * (size_t)n)) == NULL)
    return 1;
  for (i = 0; i < n / 10 + 1; i++) {     /* warm-up: connect, TLS, caches */
    long st;
    size_t len;
    bench_baseline_get(b, &st, &len);
  }
  for (i = 0; i < n; i++) {
    long st;
    size_t len;
    double t0 = bench_now_us();
    int rc = bench_baseline_get(b, &st, &len);
    t[i] = bench_now_us() - t0;
    if (rc != 0 || st != 200) failed++;
  }
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  printf("n=%d failed=%d median_us=%.1f p99_us=%.1f connects=%ld\n", n, failed,
         t[n / 2], t[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1],
         bench_baseline_connects(b));
  bench_baseline_free(b);
  free(t);
  curl_global_cleanup();
  return failed ? 1 : 0;
}
#endif
