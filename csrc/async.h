/* async.h: Lua functions run on module worker threads, in worker-owned
 * states, for lookups a dialogue script starts now and collects later. */
#ifndef ECW_ASYNC_H
#define ECW_ASYNC_H

#include "worker.h"

typedef struct ecw_lua_job {
  ecw_job job;
  char *module, *func;       /* require(module)[func](payload) -> string */
  char *payload;
  size_t payload_len;
  char *path, *cpath;        /* the starting state's package paths */
  char *result;              /* set by the worker */
  size_t result_len;
  int failed;                /* result is an error message */
} ecw_lua_job;

ECW_LOCAL ecw_lua_job *ecw_lua_job_new (const char *module, const char *func,
                                        const char *payload, size_t len,
                                        const char *path, const char *cpath);

#endif
