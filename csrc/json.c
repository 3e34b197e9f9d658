/* json.c: json-c, with a depth limit and no trailing garbage accepted. */
#include <ctype.h>
#include <string.h>

#include "json.h"

json_object *ecw_json_object (const char *body, size_t len) {
  json_tokener *tok;
  json_object *o;
  size_t end;
  if (body == NULL || len == 0 || len > 0x7fffffff) return NULL;
  if ((tok = json_tokener_new_ex(32)) == NULL) return NULL;
  /* No comments, single quotes, NaN or trailing commas: JSON as RFC 8259. */
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
  o = json_tokener_parse_ex(tok, body, (int)len);
  if (json_tokener_get_error(tok) != json_tokener_success) {
    json_object_put(o);
    json_tokener_free(tok);
    return NULL;
  }
  end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  for (; end < len; end++)
    if (!isspace((unsigned char)body[end])) {
      json_object_put(o);
      return NULL;
    }
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    return NULL;
  }
  return o;
}

const char *ecw_json_string (json_object *o, const char *key) {
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) ||
      !json_object_is_type(v, json_type_string))
    return NULL;
  return json_object_get_string(v);
}
