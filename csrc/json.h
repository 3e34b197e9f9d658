/* json.h: strict parsing of network JSON through json-c. */
#ifndef ECW_JSON_H
#define ECW_JSON_H

#include <json-c/json.h>
#include "ecw.h"

/* A JSON object, or NULL when body is not exactly one well-formed object
 * nested at most 32 deep.  Release with json_object_put. */
ECW_LOCAL json_object *ecw_json_object (const char *body, size_t len);
/* The string member key of o, or NULL when absent or not a string. */
ECW_LOCAL const char *ecw_json_string (json_object *o, const char *key);

#endif
