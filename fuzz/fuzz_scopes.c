/*
 * Scope sets: ecw_scopes_normalize(s).  Input: the scope string (up to the
 * first NUL).
 *
 *  - NULL exactly when s has no token (only white space).
 *  - Otherwise single spaces between tokens, none leading or trailing, no
 *    other white space; tokens strictly ascending (sorted, no duplicates).
 *  - Same token set as the input; idempotent; order-insensitive (the
 *    tokens reversed give the same set).
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "../csrc/ecw.h"
#include "fuzz.h"

static int cmp (const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The reference: split on isspace, sort, drop duplicates, join by ' '. */
static char *reference (const char *s) {
  size_t n = 0, cap = 0, len = strlen(s), i, k = 0;
  char **tok = NULL, *out;
  const char *p = s;
  for (;;) {
    const char *st;
    while (*p && isspace((unsigned char)*p)) p++;
    if (!*p) break;
    st = p;
    while (*p && !isspace((unsigned char)*p)) p++;
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      tok = realloc(tok, cap * sizeof *tok);
    }
    tok[n++] = strndup(st, (size_t)(p - st));
  }
  if (n == 0) return NULL;
  qsort(tok, n, sizeof *tok, cmp);
  out = malloc(len + 1);
  for (i = 0; i < n; i++) {
    if (i == 0 || strcmp(tok[i], tok[i - 1]) != 0) {
      size_t l = strlen(tok[i]);
      if (k) out[k++] = ' ';
      memcpy(out + k, tok[i], l);
      k += l;
    }
  }
  out[k] = '\0';
  for (i = 0; i < n; i++) free(tok[i]);
  free(tok);
  return out;
}

/* The tokens of s in reverse order, separated by tabs. */
static char *reversed (const char *s) {
  size_t n = strlen(s), k = 0;
  char *out = malloc(n + 2);
  const char *end = s + n;
  while (end > s) {
    const char *st;
    while (end > s && isspace((unsigned char)end[-1])) end--;
    if (end == s) break;
    st = end;
    while (st > s && !isspace((unsigned char)st[-1])) st--;
    if (k) out[k++] = '\t';
    memcpy(out + k, st, (size_t)(end - st));
    k += (size_t)(end - st);
    end = st;
  }
  out[k] = '\0';
  return out;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  char *s = fuzz_take(&data, &size);
  char *n = ecw_scopes_normalize(s), *again, *rev, *nrev, *ref;
  const char *p;
  int any = 0;

  for (p = s; *p; p++) if (!isspace((unsigned char)*p)) any = 1;
  CHECK("scopes-null", (n == NULL) == !any, "normalize(%s) = %s",
        fuzz_qs(s), fuzz_qs(n));
  CHECK("scopes-null-input", ecw_scopes_normalize(NULL) == NULL,
        "normalize(NULL) is not NULL");
  if (n == NULL) {
    free(s);
    return 0;
  }
  CHECK("scopes-ends", n[0] != ' ' && n[0] != '\0' && n[strlen(n) - 1] != ' ',
        "normalize(%s) = %s", fuzz_qs(s), fuzz_qs(n));
  for (p = n; *p; p++) {
    CHECK("scopes-space", *p == ' ' || !isspace((unsigned char)*p),
          "normalize(%s) = %s has white space other than ' '", fuzz_qs(s),
          fuzz_qs(n));
    CHECK("scopes-single-space", !(p[0] == ' ' && p[1] == ' '),
          "normalize(%s) = %s has a double space", fuzz_qs(s), fuzz_qs(n));
  }
  /* Tokens strictly ascending (sorted, no duplicates). */
  {
    const char *prev = NULL, *tok = n;
    size_t prevlen = 0;
    for (;;) {
      size_t len = strcspn(tok, " ");
      if (prev) {
        size_t m = prevlen < len ? prevlen : len;
        int c = memcmp(prev, tok, m);
        CHECK("scopes-sorted", c < 0 || (c == 0 && prevlen < len),
              "normalize(%s) = %s: %s not after %s", fuzz_qs(s), fuzz_qs(n),
              fuzz_q(tok, len), fuzz_q(prev, prevlen));
      }
      prev = tok;
      prevlen = len;
      if (tok[len] == '\0') break;
      tok += len + 1;
    }
  }
  /* The same token set as the input: nothing lost, nothing invented. */
  ref = reference(s);
  CHECK("scopes-tokens", ref && strcmp(ref, n) == 0,
        "normalize(%s) = %s, expected %s", fuzz_qs(s), fuzz_qs(n),
        fuzz_qs(ref));
  free(ref);
  again = ecw_scopes_normalize(n);
  CHECK("scopes-idempotent", again && strcmp(again, n) == 0,
        "normalize(%s) = %s, normalized again %s", fuzz_qs(s), fuzz_qs(n),
        fuzz_qs(again));
  rev = reversed(s);
  nrev = ecw_scopes_normalize(rev);
  CHECK("scopes-order", nrev && strcmp(nrev, n) == 0,
        "normalize(%s) = %s but reversed %s", fuzz_qs(s), fuzz_qs(n),
        fuzz_qs(nrev));
  free(again); free(rev); free(nrev);
  free(n);
  free(s);
  return 0;
}
