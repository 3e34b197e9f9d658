/*
 * Request targets: ecw_url_target(base, base_origin, target) with the
 * target fuzzed and the base from a table of realistic FHIR bases.
 *
 * Input: an optional first line "<digit>\n" choosing the base (base 0
 * without it), then the target (up to the first NUL).  The invariants are
 * in target_oracle.c.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "target_oracle.h"

static const char *const bases[] = {
  "https://fhir4.eclinicalworks.com/fhir/r4/JAFJCD",
  "https://fhir.example.org",
  "http://127.0.0.1:8080/fhir",
  "https://fhir.example.org:8443/a/b/c",
  "http://localhost/fhir/r4",
  "https://[2001:db8::1]/fhir",
  "https://Fhir.Example.ORG/R4",
  "http://[::1]:9999/base",
  "https://fhir.example.org/fhir%20r4/x",
  "https://fhir.example.org:443/fhir/r4",
};
static char *origins[sizeof bases / sizeof *bases];

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  int sel = fuzz_selector(&data, &size);
  char *target;
  if (sel < 0) sel = 0;
  if (origins[sel] == NULL &&
      (origins[sel] = ecw_url_origin(bases[sel])) == NULL)
    abort();   /* the table itself is wrong */
  target = fuzz_take(&data, &size);
  target_check(bases[sel], origins[sel], target);
  free(target);
  return 0;
}
