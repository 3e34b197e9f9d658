/*
 * async.c: run a Lua function on a module worker thread.
 *
 * Lua states are single-threaded, so a lookup started by one state cannot
 * run in it on another thread.  Each worker thread owns a state of its own,
 * kept for the thread's life so that `require "ecw"` and the client
 * registry are paid once.  Arguments and results cross as strings (the Lua
 * layer uses JSON), so no Lua value is ever shared between two states.  The
 * starting state may close, or collect its request, at any time: the job is
 * reference counted and the last holder frees it.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "async.h"

static _Thread_local lua_State *worker_L;

static int traceback (lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

static int call_job (lua_State *L) {
  ecw_lua_job *j = lua_touserdata(L, 1);
  lua_getglobal(L, "package");
  lua_pushstring(L, j->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, j->cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, j->module);
  lua_call(L, 1, 1);
  lua_getfield(L, -1, j->func);
  lua_pushlstring(L, j->payload, j->payload_len);
  lua_call(L, 1, 1);
  if (lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "%s.%s must return a string", j->module, j->func);
  return 1;
}

static void set_result (ecw_lua_job *j, const char *s, size_t n, int failed) {
  if ((j->result = malloc(n + 1)) != NULL) {
    memcpy(j->result, s, n);
    j->result[n] = '\0';
    j->result_len = n;
  }
  j->failed = failed || j->result == NULL;
}

static void run (ecw_job *job) {
  ecw_lua_job *j = (ecw_lua_job *)job;
  lua_State *L = worker_L;
  size_t n;
  const char *s;
  int rc;
  if (atomic_load(&job->cancelled)) {
    set_result(j, "cancelled", 9, 1);
    return;
  }
  if (L == NULL) {
    if ((L = worker_L = luaL_newstate()) == NULL) {
      set_result(j, "cannot create a Lua state", 25, 1);
      return;
    }
    luaL_openlibs(L);
  }
  lua_settop(L, 0);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, call_job);
  lua_pushlightuserdata(L, j);
  rc = lua_pcall(L, 1, 1, 1);
  s = lua_tolstring(L, -1, &n);
  if (s == NULL) s = "error object is not a string", n = strlen(s);
  set_result(j, s, n, rc != LUA_OK);
  lua_settop(L, 0);
  /* Keep the worker's state small between jobs. */
  lua_gc(L, LUA_GCSTEP, 0);
}

static void drop (ecw_job *job) {
  ecw_lua_job *j = (ecw_lua_job *)job;
  free(j->module); free(j->func); free(j->payload);
  free(j->path); free(j->cpath); free(j->result);
  free(j);
}

ecw_lua_job *ecw_lua_job_new (const char *module, const char *func,
                              const char *payload, size_t len,
                              const char *path, const char *cpath) {
  ecw_lua_job *j = calloc(1, sizeof *j);
  if (j == NULL) return NULL;
  j->job.run = run;
  j->job.drop = drop;
  j->module = ecw_strdup(module);
  j->func = ecw_strdup(func);
  j->payload = ecw_strndup(payload, len);
  j->payload_len = len;
  j->path = ecw_strdup(path);
  j->cpath = ecw_strdup(cpath);
  if (!j->module || !j->func || !j->payload || !j->path || !j->cpath) {
    drop(&j->job);
    return NULL;
  }
  return j;
}
