/* baseline.h: the C baseline of bench item 1 -- one libcurl easy handle,
 * reused (keep-alive), a fixed Authorization header, nothing else. */
#ifndef ECW_BENCH_BASELINE_H
#define ECW_BENCH_BASELINE_H

#include <stddef.h>

typedef struct bench_baseline bench_baseline;

/* url: the FHIR read URL; token: the bearer token (copied); ca_file: the
 * PEM bundle to trust (NULL: system store); accept: the Accept header value
 * (NULL: "application/fhir+json").  NULL on failure. */
bench_baseline *bench_baseline_new (const char *url, const char *token,
                                    const char *ca_file, const char *accept);

/* One GET on the reused handle.  Returns 0 on success (CURLE_OK), else the
 * CURLcode; *status is the HTTP status, *bytes the body length. */
int bench_baseline_get (bench_baseline *b, long *status, size_t *bytes);

/* The body of the last response (valid until the next get). */
const char *bench_baseline_body (const bench_baseline *b, size_t *len);

/* Connections the handle has opened so far (sum of CURLINFO_NUM_CONNECTS). */
long bench_baseline_connects (const bench_baseline *b);

void bench_baseline_free (bench_baseline *b);

/* Microseconds on CLOCK_MONOTONIC, with nanosecond resolution. */
double bench_now_us (void);

#endif
