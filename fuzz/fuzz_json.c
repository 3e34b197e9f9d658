/*
 * Network JSON: ecw_json_object(body, len).  Input: the body.
 *
 *  - NULL, or an object (never an array, string or number at the top);
 *  - an object is nested at most 32 deep;
 *  - hardening-json-framing, hardening-json-strict (FUZZ_HARDENING=1): the
 *    object ends the body (only white space after its '}') and the body is
 *    strict JSON;
 *  - json-c's serialisation of the object parses again.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "../csrc/json.h"
#include "fuzz.h"

static int depth_of (json_object *o) {
  int d = 0;
  if (json_object_is_type(o, json_type_object)) {
    json_object_object_foreach(o, k, v) {
      int c = depth_of(v);
      (void)k;
      if (c > d) d = c;
    }
    return d + 1;
  }
  if (json_object_is_type(o, json_type_array)) {
    size_t i, n = json_object_array_length(o);
    for (i = 0; i < n; i++) {
      int c = depth_of(json_object_array_get_idx(o, i));
      if (c > d) d = c;
    }
    return d + 1;
  }
  return 0;
}

static int strict_ok (const char *body, size_t len) {
  json_tokener *tok = json_tokener_new_ex(32);
  json_object *o;
  int ok;
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
  o = json_tokener_parse_ex(tok, body, (int)len);
  ok = json_tokener_get_error(tok) == json_tokener_success;
  json_object_put(o);
  json_tokener_free(tok);
  return ok;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  char *body = malloc(size ? size : 1);
  json_object *o;
  memcpy(body, data, size);
  o = ecw_json_object(body, size);
  if (o) {
    size_t a = 0, b = size;
    const char *text;
    json_object *again;
    int d;
    CHECK("json-object", json_object_is_type(o, json_type_object),
          "not an object: %s", fuzz_q(body, size));
    d = depth_of(o);
    CHECK("json-depth", d >= 1 && d <= 32, "nested %d deep", d);
    while (a < size && isspace((unsigned char)body[a])) a++;
    while (b > a && isspace((unsigned char)body[b - 1])) b--;
    /* json-c's default mode also takes comments (even after the object),
     * 'single quotes', NaN and trailing commas; FUZZ_HARDENING=1 asks for
     * the object to end the body and for strict JSON. */
    CHECK("hardening-json-framing", b - a >= 2 && body[b - 1] == '}',
          "accepted %s", fuzz_q(body, size));
    CHECK("hardening-json-strict", strict_ok(body, size),
          "accepted non-strict JSON %s", fuzz_q(body, size));
    text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    again = text ? ecw_json_object(text, strlen(text)) : NULL;
    CHECK("json-roundtrip", again != NULL, "%s serialised as %s",
          fuzz_q(body, size), fuzz_qs(text));
    json_object_put(again);
    json_object_put(o);
  }
  CHECK("json-null", ecw_json_object(NULL, 5) == NULL &&
                     ecw_json_object(body, 0) == NULL,
        "NULL or empty body accepted");
  free(body);
  return 0;
}
