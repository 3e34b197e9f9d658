/*
 * Retry-After on a 429 (csrc/guard.c): the header value goes through
 * ecw_guard_after(g, 0, 1, 429, value); ecw_guard_before then reports the
 * block.  Input: the header value (up to the first NUL).
 *
 *  - Right after a 429 the practice is blocked (rate_limited, retryable)
 *    unless Retry-After names a moment already past;
 *  - the block lasts at most a day (delta-seconds are capped at 86400; an
 *    HTTP-date must not get around that) and is never negative.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "../csrc/guard.h"
#include "fuzz.h"

#define MAX_BLOCK_S (86400 + 61)

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  static ecw_guard *g;
  char *value = fuzz_take(&data, &size);
  ecw_err err;
  int probe = 0, ok;

  /* FUZZ_ALLOW=retry-after-overflow skips HTTP-dates whose time_t times
   * 1000 overflows int64_t in guard.c (undefined behaviour, see
   * fuzz/README.md). */
  if (fuzz_skip("retry-after-overflow")) {
    const char *v = value;
    while (*v == ' ') v++;
    if (!isdigit((unsigned char)*v) &&
        curl_getdate(v, NULL) > (time_t)(INT64_MAX / 1000)) {
      free(value);
      return 0;
    }
  }
  if (g == NULL) {
    ecw_guard_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    if ((g = ecw_guard_for("https://fuzz.example.org/fhir", &cfg)) == NULL)
      abort();
  }
  ecw_guard_reset_all();
  ecw_guard_after(g, 0, 1, 429, value);
  memset(&err, 0, sizeof err);
  memset(err.message, 'X', sizeof err.message);
  ok = ecw_guard_before(g, &probe, &err);
  if (!ok) {
    int secs;
    const char *p;
    CHECK("retry-after-code",
          err.code && strcmp(err.code, ECW_E_RATE_LIMITED) == 0 &&
          err.retryable && fuzz_terminated(err.message, sizeof err.message),
          "after a 429: err.code %s retryable %d", fuzz_qs(err.code),
          err.retryable);
    /* "... blocked for N s more": skip the check if the wording changes. */
    if ((p = strstr(err.message, "blocked for ")) != NULL &&
        sscanf(p, "blocked for %d s", &secs) == 1)
      CHECK("retry-after-bounded", secs >= 0 && secs <= MAX_BLOCK_S,
            "Retry-After %s blocks the practice for %d s (%s)",
            fuzz_qs(value), secs, err.message);
  }
  ecw_guard_reset_all();
  free(value);
  return 0;
}
