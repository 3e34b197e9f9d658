/*
 * Request targets with the FHIR base fuzzed: the base goes through what
 * client_new does (ecw_url_check_transport, trailing slashes dropped,
 * ecw_url_origin), then ecw_url_target runs with a fixed target.
 *
 * Input: an optional first line "<digit>\n" choosing the target below
 * (target 0 without it), then the configured fhir_base (up to a NUL).
 * A base that passes has no byte <= 0x20 or >= 0x7f (base-bytes); the
 * other invariants are in target_oracle.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "target_oracle.h"

/* "@" stands for the base's own origin (an absolute same-origin URL). */
static const char *const targets[] = {
  "Patient/123",
  "Patient?phone=%2B15551234567&_count=10",
  "metadata",
  "",
  "/Patient/%2e%2e/x",
  "@/fhir/Patient?page=2",
  "https://evil.example.com/Patient",
  "Patient/123/_history/1",
  "Bundle?_getpages=abc&_getpagesoffset=10",
  "//evil.example.com/x",
};

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  int sel = fuzz_selector(&data, &size);
  char *raw, *base, *origin, *target;
  size_t bl;
  ecw_err err;

  if (sel < 0) sel = 0;
  raw = fuzz_take(&data, &size);
  memset(&err, 0, sizeof err);
  if (!ecw_url_check_transport(raw, "fhir_base", &err)) {
    free(raw);
    return 0;
  }
  bl = strlen(raw);
  while (bl > 0 && raw[bl - 1] == '/') bl--;
  base = strndup(raw, bl);
  free(raw);
  if ((origin = ecw_url_origin(base)) == NULL) {
    free(base);
    return 0;
  }
  /* A base that passed check_transport is what every request URL starts
   * with: it must already be free of bytes that need encoding. */
  {
    size_t i;
    int bad = 0;
    for (i = 0; base[i]; i++)
      if ((unsigned char)base[i] <= 0x20 || (unsigned char)base[i] >= 0x7f)
        bad = 1;
    CHECK("base-bytes", !bad,
          "fhir_base %s passes ecw_url_check_transport with a byte <= 0x20 "
          "or >= 0x7f", fuzz_qs(base));
    if (bad) {   /* tolerated through FUZZ_ALLOW: nothing more to learn */
      free(origin);
      free(base);
      return 0;
    }
  }
  if (targets[sel][0] == '@') {
    size_t n = strlen(origin) + strlen(targets[sel]);
    target = malloc(n);
    snprintf(target, n, "%s%s", origin, targets[sel] + 1);
  } else {
    target = strdup(targets[sel]);
  }
  target_check(base, origin, target);
  free(target);
  free(origin);
  free(base);
  return 0;
}
