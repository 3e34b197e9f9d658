/*
 * SMART discovery documents: ecw_discovery_parse(base, body, len, &out).
 *
 * Input: an optional first line "<digit>\n" choosing the FHIR base from the
 * table below (base 0 without it), then the body of
 * {base}/.well-known/smart-configuration.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "../csrc/oauth.h"
#include "fuzz.h"

/* FHIR bases as the client stores them: no trailing slash. */
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
  "https://user@fhir.example.org/fhir",
};

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  int sel = fuzz_selector(&data, &size);
  const char *base = bases[sel < 0 ? 0 : sel];
  char *body, *out = (char *)"unset", *scheme;
  ecw_err err;
  int ok;
  size_t i;

  body = malloc(size ? size : 1);
  memcpy(body, data, size);
  memset(&err, 0, sizeof err);
  memset(err.message, 'X', sizeof err.message);

  ok = ecw_discovery_parse(base, body, size, &out, &err);
  if (ok == 1) {
    ecw_err terr;
    char *origin, *corigin;
    CHECK("discovery-out", out != NULL && out[0] != '\0',
          "success without a URL");
    for (i = 0; out[i]; i++)
      CHECK("discovery-bytes",
            (unsigned char)out[i] > 0x20 && (unsigned char)out[i] != 0x7f,
            "token URL %s has a control byte or space", fuzz_qs(out));
    memset(&terr, 0, sizeof terr);
    CHECK("discovery-transport",
          ecw_url_check_transport(out, "token_endpoint", &terr),
          "token URL %s fails ecw_url_check_transport", fuzz_qs(out));
    scheme = fuzz_curl_part(out, 1 /* CURLUPART_SCHEME */, 0);
    CHECK("discovery-scheme",
          scheme && (strcmp(scheme, "https") == 0 ||
                     (strcmp(scheme, "http") == 0 &&
                      ecw_url_is_loopback(out))),
          "token URL %s: scheme %s", fuzz_qs(out), fuzz_qs(scheme));
    free(scheme);
    /* What ecw checked is what curl will connect to. */
    origin = ecw_url_origin(out);
    corigin = fuzz_curl_origin(out);
    CHECK("discovery-origin",
          origin && corigin && strcmp(origin, corigin) == 0,
          "token URL %s: ecw origin %s, curl origin %s", fuzz_qs(out),
          fuzz_qs(origin), fuzz_qs(corigin));
    free(origin);
    free(corigin);
    free(out);
  } else {
    CHECK("discovery-result", ok == 0, "returned %d", ok);
    CHECK("discovery-fail-out", out == NULL, "failure left *out set");
    CHECK("discovery-fail-code",
          err.code != NULL && strcmp(err.code, ECW_E_BAD_RESPONSE) == 0,
          "failure with err.code %s", fuzz_qs(err.code));
    CHECK("discovery-fail-message",
          fuzz_terminated(err.message, sizeof err.message),
          "err.message not NUL-terminated");
  }
  free(body);
  return 0;
}
