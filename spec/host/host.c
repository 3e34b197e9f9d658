/*
 * ecw-host: embeds Lua the way FreeSWITCH mod_lua does, so the tests can
 * prove what a real telephony host will do with ecw.
 *
 * For every simulated call: luaL_newstate, luaL_openlibs, a `freeswitch`
 * table and a `session` object, run the script, lua_gc(LUA_GCCOLLECT),
 * lua_close -- all on one thread.  T threads do this at once, either as
 * long-lived session threads (the dialplan `lua` app) or as one detached
 * thread per call (`luarun`).  Like FreeSWITCH it ignores SIGPIPE, calls
 * curl_global_init first and curl_global_cleanup after every state is
 * closed, and sets LUA_CPATH/LUA_PATH the way lua.conf.xml does.
 *
 *   ecw-host [-t THREADS] [-n CALLS] [-d] [-b] [-m CPATH] [-s LPATH]
 *            [-v NAME=VALUE]... script.lua
 *
 *   -d  detached style: a new detached thread per call, THREADS at once
 *   -b  barrier: the first call on every thread starts at the same moment
 *   -m  module-directory pattern (prepended to LUA_CPATH)
 *   -s  script-directory pattern (prepended to LUA_PATH)
 *   -v  a channel variable for session:getVariable
 *   -w  warm-up: record RSS once this many calls have finished, and again
 *       at the end (rss_warm_kb, rss_end_kb in the summary)
 *
 * The script sees globals `argv`, `call_index` (1-based) and `thread_index`;
 * it fails the call by raising an error or returning false.  The host prints
 * one summary line: calls=N ok=N failed=N, and exits non-zero on a failure.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#define MAX_VARS 32

static const char *script;
static int n_threads = 1, n_calls = 1, detached, use_barrier, warm_calls;
static atomic_long rss_warm_kb;
static const char *var_name[MAX_VARS], *var_value[MAX_VARS];
static int n_vars;

static atomic_int next_call;
static atomic_int ok_calls, failed_calls, finished_calls;
static pthread_barrier_t barrier;
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
static int printed_errors;

/* ---- the freeswitch API surface that dialogue scripts use ---------------- */

static int fs_consoleLog (lua_State *L) {
  const char *level = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  if (getenv("ECW_HOST_LOG")) {
    pthread_mutex_lock(&print_lock);
    fprintf(stderr, "[%s] %s%s", level, msg,
            msg[0] && msg[strlen(msg) - 1] == '\n' ? "" : "\n");
    pthread_mutex_unlock(&print_lock);
  }
  return 0;
}

static int api_execute (lua_State *L) {
  lua_pushliteral(L, "");
  return 1;
}

static int fs_API (lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, api_execute);
  lua_setfield(L, -2, "execute");
  lua_pushcfunction(L, api_execute);
  lua_setfield(L, -2, "executeString");
  return 1;
}

static int sess_getVariable (lua_State *L) {
  const char *name = luaL_checkstring(L, 2);
  int i;
  for (i = 0; i < n_vars; i++)
    if (strcmp(var_name[i], name) == 0) {
      lua_pushstring(L, var_value[i]);
      return 1;
    }
  lua_pushnil(L);
  return 1;
}

static int sess_true (lua_State *L) {
  lua_pushboolean(L, 1);
  return 1;
}

static int sess_noop (lua_State *L) {
  (void)L;
  return 0;
}

static int sess_speak (lua_State *L) {
  /* Keep what the agent said so a script can check its own dialogue. */
  luaL_checkstring(L, 2);
  lua_pushvalue(L, 2);
  lua_setfield(L, 1, "last_spoken");
  return 0;
}

static void open_freeswitch (lua_State *L) {
  static const luaL_Reg fs[] = {
    {"consoleLog", fs_consoleLog}, {"API", fs_API}, {NULL, NULL}
  };
  static const luaL_Reg sess[] = {
    {"getVariable", sess_getVariable}, {"ready", sess_true},
    {"answered", sess_true}, {"answer", sess_noop}, {"hangup", sess_noop},
    {"speak", sess_speak}, {"streamFile", sess_noop}, {"sleep", sess_noop},
    {"setVariable", sess_noop}, {NULL, NULL}
  };
  luaL_newlib(L, fs);
  lua_setglobal(L, "freeswitch");
  luaL_newlib(L, sess);
  lua_setglobal(L, "session");
}

static long rss_kb (void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return -1;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int traceback (lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

static void one_call (int call, int thread, int first) {
  lua_State *L = luaL_newstate();
  int ok;
  luaL_openlibs(L);
  open_freeswitch(L);
  lua_createtable(L, 1, 0);
  lua_pushstring(L, script);
  lua_rawseti(L, -2, 0);
  lua_setglobal(L, "argv");
  lua_pushinteger(L, call);
  lua_setglobal(L, "call_index");
  lua_pushinteger(L, thread);
  lua_setglobal(L, "thread_index");

  if (first && use_barrier) pthread_barrier_wait(&barrier);

  lua_pushcfunction(L, traceback);
  ok = luaL_loadfile(L, script) == LUA_OK && lua_pcall(L, 0, 1, -2) == LUA_OK;
  if (ok && lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
    lua_pushliteral(L, "script returned false");
    ok = 0;
  }
  if (ok) {
    atomic_fetch_add(&ok_calls, 1);
  } else {
    atomic_fetch_add(&failed_calls, 1);
    pthread_mutex_lock(&print_lock);
    if (printed_errors++ < 5)
      fprintf(stderr, "call %d failed: %s\n", call, lua_tostring(L, -1));
    pthread_mutex_unlock(&print_lock);
  }
  lua_gc(L, LUA_GCCOLLECT, 0);
  lua_close(L);
  if (atomic_fetch_add(&finished_calls, 1) + 1 == warm_calls)
    atomic_store(&rss_warm_kb, rss_kb());
}

static void *session_thread (void *arg) {
  int thread = (int)(intptr_t)arg, first = 1, call;
  while ((call = atomic_fetch_add(&next_call, 1)) < n_calls) {
    one_call(call + 1, thread, first);
    first = 0;
  }
  return NULL;
}

static void *detached_thread (void *arg) {
  int call = (int)(intptr_t)arg;
  one_call(call + 1, call % n_threads + 1, 0);
  return NULL;
}

static void prepend_env (const char *name, const char *value) {
  const char *old = getenv(name);
  char *buf;
  if (asprintf(&buf, "%s;%s", value, old ? old : ";") < 0) exit(2);
  setenv(name, buf, 1);
  free(buf);
}

int main (int argc, char **argv) {
  int opt, i;
  while ((opt = getopt(argc, argv, "t:n:dbm:s:v:w:")) != -1) {
    switch (opt) {
      case 't': n_threads = atoi(optarg); break;
      case 'n': n_calls = atoi(optarg); break;
      case 'd': detached = 1; break;
      case 'b': use_barrier = 1; break;
      case 'w': warm_calls = atoi(optarg); break;
      case 'm': prepend_env("LUA_CPATH", optarg); break;
      case 's': prepend_env("LUA_PATH", optarg); break;
      case 'v': {
        char *eq = strchr(optarg, '=');
        if (eq == NULL || n_vars == MAX_VARS) goto usage;
        *eq = '\0';
        var_name[n_vars] = optarg;
        var_value[n_vars++] = eq + 1;
        break;
      }
      default: goto usage;
    }
  }
  if (optind != argc - 1 || n_threads < 1 || n_calls < 1) goto usage;
  script = argv[optind];

  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_ALL);

  if (!detached) {
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    if (use_barrier)
      pthread_barrier_init(&barrier, NULL,
                           (unsigned)(n_threads < n_calls ? n_threads : n_calls));
    for (i = 0; i < n_threads; i++)
      pthread_create(&th[i], NULL, session_thread, (void *)(intptr_t)(i + 1));
    for (i = 0; i < n_threads; i++) pthread_join(th[i], NULL);
    free(th);
  } else {
    /* luarun: detached threads nobody joins, at most n_threads alive. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (i = 0; i < n_calls; i++) {
      pthread_t t;
      while (i - atomic_load(&finished_calls) >= n_threads) usleep(200);
      if (pthread_create(&t, &attr, detached_thread, (void *)(intptr_t)i) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 2;
      }
    }
    while (atomic_load(&finished_calls) < n_calls) usleep(1000);
    pthread_attr_destroy(&attr);
  }

  /* As FreeSWITCH does at shutdown, after every state is closed. */
  curl_global_cleanup();
  printf("calls=%d ok=%d failed=%d", n_calls, atomic_load(&ok_calls),
         atomic_load(&failed_calls));
  if (warm_calls > 0)
    printf(" rss_warm_kb=%ld rss_end_kb=%ld", atomic_load(&rss_warm_kb), rss_kb());
  printf("\n");
  return atomic_load(&failed_calls) ? 1 : 0;
usage:
  fprintf(stderr, "usage: ecw-host [-t THREADS] [-n CALLS] [-d] [-b] "
                  "[-m CPATH] [-s LPATH] [-v NAME=VALUE]... [-w WARM] "
                  "script.lua\n");
  return 2;
}
