/*
 * fuzz.h: shared helpers for the ecw libFuzzer harnesses.
 *
 * Each harness checks invariants with CHECK(id, cond, fmt, ...).  A failed
 * check prints "ecw-fuzz: invariant <id> violated: ..." and aborts, which
 * libFuzzer reports as a crash and saves as an artifact.  FUZZ_ALLOW (a
 * comma-separated list of ids) tolerates known findings while their fix is
 * pending, so a long run can keep exploring past them; CI leaves it empty.
 * FUZZ_ALLOW=* reports nothing (make fuzz-coverage replays corpora so).
 * FUZZ_HARDENING=1 enables the extra server-interpretation checks (ids
 * starting with "hardening-"), which are off by default.
 */
#ifndef ECW_FUZZ_H
#define ECW_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* 1 when the check id is listed in FUZZ_ALLOW, FUZZ_ALLOW is "*", or id
 * is a hardening check and FUZZ_HARDENING is off. */
int fuzz_allowed (const char *id);
/* 1 when id is listed in FUZZ_ALLOW by name ("*" does not count): for the
 * few inputs a harness must skip because they hit known undefined
 * behaviour that a sanitizer, not a CHECK, would report. */
int fuzz_skip (const char *id);
void fuzz_fail (const char *id, const char *fmt, ...)
  __attribute__((noreturn, format(printf, 2, 3)));

#define CHECK(id, cond, ...)                                  \
  do {                                                        \
    if (!(cond) && !fuzz_allowed(id)) fuzz_fail(id, __VA_ARGS__); \
  } while (0)

/* Printable, quoted rendering of s[0..n) for messages (never freed: the
 * process is about to abort). */
const char *fuzz_q (const char *s, size_t n);
const char *fuzz_qs (const char *s);   /* NULL-safe, strlen */

/* Next string of the input: bytes up to the next NUL (or the end), as a
 * fresh NUL-terminated heap copy; *d and *n advance past the NUL. */
char *fuzz_take (const uint8_t **d, size_t *n);

/* An optional selector line "<digit>\n" at the start of the input: returns
 * the digit (0..9) and advances past it, or -1 and leaves the input alone. */
int fuzz_selector (const uint8_t **d, size_t *n);

/* 1 when s[0..n) is a NUL-terminated string inside buf[0..size). */
int fuzz_terminated (const char *buf, size_t size);

/* Curl's view of a URL, parsed with the flags CURLOPT_URL uses.  Each
 * returns a heap string or NULL.  fuzz_curl_origin is lower-cased
 * scheme://host:port with the default port explicit, like ecw_url_origin. */
char *fuzz_curl_part (const char *url, int part, unsigned flags);
char *fuzz_curl_path (const char *url);
char *fuzz_curl_origin (const char *url);

#endif
