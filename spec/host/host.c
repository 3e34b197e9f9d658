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
 *   ecw-host [-t THREADS] [-n CALLS] [-T SECONDS] [-d] [-b] [-m CPATH]
 *            [-s LPATH] [-v NAME=VALUE]... [-g NAME=VALUE]... [-w WARM]
 *            [-p DIALPLAN.lua] [-c CHECK.lua] [-S STARTUP.lua] [-L MS]
 *            script.lua
 *
 *   -d  detached style: a new detached thread per call, THREADS at once
 *   -b  barrier: the first call on every thread starts at the same moment
 *   -T  stop starting calls after SECONDS (-n is then an upper bound)
 *   -m  module-directory pattern (prepended to LUA_CPATH)
 *   -s  script-directory pattern (prepended to LUA_PATH)
 *   -v  a channel variable for session:getVariable
 *   -g  a global variable for freeswitch.getGlobalVariable (vars.xml)
 *   -w  warm-up: record RSS once this many calls have finished, and again
 *       at the end (rss_warm_kb, rss_end_kb in the summary)
 *   -p  a dialplan stage run in the call's state before the script, the
 *       way <action application="set"/> lines run before `lua`: it may
 *       session:setVariable(...) and queue the caller's key presses in
 *       host.dtmf (an array of strings, one per playAndGetDigits)
 *   -c  a check run in the call's state after the script returns: it sees
 *       what the caller heard and what happened (the `host` table below)
 *       and fails the call by raising or returning false
 *   -S  a startup script (lua.conf.xml startup-script): run once, in its
 *       own state on a detached thread, when the host starts; like mod_lua
 *       the host never waits for it -- it may still be running (and its
 *       state open) at shutdown.  It is not counted as a call.
 *   -L  linger MS milliseconds after curl_global_cleanup before exiting,
 *       as the rest of FreeSWITCH's shutdown does (module threads that
 *       still use curl then do so after the cleanup)
 *
 * Every state gets the globals mod_lua gives a dialplan script (`session`,
 * `freeswitch`, `argv`) plus `call_index` (1-based), `thread_index` and a
 * `host` table that the session and freeswitch stand-ins write to:
 *   host.spoken   texts passed to session:speak, in order
 *   host.prompts  prompts passed to session:playAndGetDigits
 *   host.logs     "LEVEL message" from freeswitch.consoleLog
 *   host.events   fired freeswitch.Event objects {subclass=, headers={}}
 *   host.answered, host.hungup, host.transfer (destination) and host.vars
 *   (channel variables set by session:setVariable).
 * A stage that sets host.stop_run = true ends the run: no new call starts
 * after this one (the operator's "shutdown"; calls in progress finish).
 * session:ready() is false after hangup or transfer, as in FreeSWITCH.
 *
 * A call fails when a stage raises or returns false.  The host prints one
 * summary line: calls=N ok=N failed=N max_live=N [rss_warm_kb= rss_end_kb=]
 * (max_live: the most states that were open at the same moment) and exits
 * non-zero on a failure.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#define MAX_VARS 64
#define CALL_KEY "ecw-host.call"
#define EVENT_MT "ecw-host.event"

static const char *script, *pre_script, *check_script, *startup_script;
static int n_threads = 1, n_calls = 1, detached, use_barrier, warm_calls;
static int linger_ms;
static double duration_s;
static struct timespec t_start;
static atomic_long rss_warm_kb;
static const char *var_name[MAX_VARS], *var_value[MAX_VARS];
static int n_vars;
static const char *gvar_name[MAX_VARS], *gvar_value[MAX_VARS];
static int n_gvars;

static atomic_int next_call;
static atomic_int ok_calls, failed_calls, finished_calls, started_calls;
static atomic_int live_states, max_live, stop_run;
static pthread_barrier_t barrier;
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
static int printed_errors;

/* ---- the per-call record (the `host` table) ------------------------------ */

static void push_call (lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, CALL_KEY);
}

static void append_to (lua_State *L, const char *list, int value) {
  value = lua_absindex(L, value);
  push_call(L);
  lua_getfield(L, -1, list);
  lua_pushvalue(L, value);
  lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
  lua_pop(L, 2);
}

static void set_flag (lua_State *L, const char *name, int value) {
  value = lua_absindex(L, value);
  push_call(L);
  lua_pushvalue(L, value);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

static int call_flag (lua_State *L, const char *name) {
  int v;
  push_call(L);
  lua_getfield(L, -1, name);
  v = lua_toboolean(L, -1);
  lua_pop(L, 2);
  return v;
}

/* ---- the freeswitch API surface that dialogue scripts use ---------------- */

static int fs_consoleLog (lua_State *L) {
  const char *level = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  lua_pushfstring(L, "%s %s", level, msg);
  append_to(L, "logs", -1);
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

static int fs_getGlobalVariable (lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  int i;
  for (i = 0; i < n_gvars; i++)
    if (strcmp(gvar_name[i], name) == 0) {
      lua_pushstring(L, gvar_value[i]);
      return 1;
    }
  lua_pushnil(L);
  return 1;
}

static int fs_msleep (lua_State *L) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  struct timespec ts;
  if (ms > 0) {
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
  }
  return 0;
}

static int ev_addHeader (lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  lua_getfield(L, 1, "headers");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_settable(L, -3);
  lua_pushboolean(L, 1);
  return 1;
}

static int ev_fire (lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  append_to(L, "events", 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int fs_Event (lua_State *L) {
  const char *type = luaL_checkstring(L, 1);
  const char *subclass = luaL_optstring(L, 2, NULL);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  if (subclass) {
    lua_pushstring(L, subclass);
    lua_setfield(L, -2, "subclass");
  }
  lua_newtable(L);
  lua_setfield(L, -2, "headers");
  luaL_setmetatable(L, EVENT_MT);
  return 1;
}

static int sess_getVariable (lua_State *L) {
  const char *name = luaL_checkstring(L, 2);
  int i;
  push_call(L);
  lua_getfield(L, -1, "vars");
  if (lua_getfield(L, -1, name) != LUA_TNIL) return 1;
  lua_pop(L, 3);
  for (i = 0; i < n_vars; i++)
    if (strcmp(var_name[i], name) == 0) {
      lua_pushstring(L, var_value[i]);
      return 1;
    }
  lua_pushnil(L);
  return 1;
}

static int sess_setVariable (lua_State *L) {
  luaL_checkstring(L, 2);
  push_call(L);
  lua_getfield(L, -1, "vars");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_settable(L, -3);
  return 0;
}

static int sess_ready (lua_State *L) {
  int gone = call_flag(L, "hungup");
  push_call(L);
  gone = gone || lua_getfield(L, -1, "transfer") != LUA_TNIL;
  lua_pushboolean(L, !gone);
  return 1;
}

static int sess_answered (lua_State *L) {
  lua_pushboolean(L, call_flag(L, "answered"));
  return 1;
}

static int sess_answer (lua_State *L) {
  lua_pushboolean(L, 1);
  set_flag(L, "answered", -1);
  return 0;
}

static int sess_hangup (lua_State *L) {
  lua_pushboolean(L, 1);
  set_flag(L, "hungup", -1);
  return 0;
}

static int sess_transfer (lua_State *L) {
  luaL_checkstring(L, 2);
  set_flag(L, "transfer", 2);
  return 0;
}

static int sess_noop (lua_State *L) {
  (void)L;
  return 0;
}

static int sess_speak (lua_State *L) {
  /* Keep what the agent said so a check can follow the dialogue. */
  luaL_checkstring(L, 2);
  lua_pushvalue(L, 2);
  lua_setfield(L, 1, "last_spoken");
  append_to(L, "spoken", 2);
  return 0;
}

/* playAndGetDigits(min, max, tries, timeout, terminators, prompt, invalid,
 * regex, ...) -> the caller's next queued key presses, or "". */
static int sess_playAndGetDigits (lua_State *L) {
  if (lua_type(L, 7) == LUA_TSTRING) append_to(L, "prompts", 7);
  push_call(L);
  lua_getfield(L, -1, "dtmf");
  if (lua_type(L, -1) == LUA_TTABLE && luaL_len(L, -1) > 0) {
    lua_Integer i, n = luaL_len(L, -1);
    int t = lua_gettop(L);
    lua_rawgeti(L, t, 1);
    for (i = 1; i < n; i++) {
      lua_rawgeti(L, t, i + 1);
      lua_rawseti(L, t, i);
    }
    lua_pushnil(L);
    lua_rawseti(L, t, n);
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "");
    }
    return 1;
  }
  lua_pushliteral(L, "");
  return 1;
}

static int os_exit_stub (lua_State *L) {
  /* mod_lua: "Surely you jest! Exiting is not allowed." */
  lua_pushliteral(L, "ERR Surely you jest! Exiting is not allowed.\n");
  append_to(L, "logs", -1);
  return 0;
}

static int panic (lua_State *L) {
  fprintf(stderr, "ecw-host: Lua panic: %s\n", lua_tostring(L, -1));
  abort();
  return 0;
}

static void open_freeswitch (lua_State *L) {
  static const luaL_Reg fs[] = {
    {"consoleLog", fs_consoleLog}, {"consoleCleanLog", fs_consoleLog},
    {"API", fs_API}, {"getGlobalVariable", fs_getGlobalVariable},
    {"msleep", fs_msleep}, {"Event", fs_Event}, {NULL, NULL}
  };
  static const luaL_Reg sess[] = {
    {"getVariable", sess_getVariable}, {"setVariable", sess_setVariable},
    {"ready", sess_ready}, {"answered", sess_answered},
    {"mediaReady", sess_ready}, {"answer", sess_answer},
    {"preAnswer", sess_noop}, {"hangup", sess_hangup},
    {"transfer", sess_transfer}, {"speak", sess_speak},
    {"playAndGetDigits", sess_playAndGetDigits},
    {"streamFile", sess_noop}, {"sleep", sess_noop},
    {"execute", sess_noop}, {"consoleLog", sess_noop},
    {"setHangupHook", sess_noop}, {"setInputCallback", sess_noop},
    {NULL, NULL}
  };
  static const char *const lists[] = {
    "spoken", "prompts", "logs", "events", "vars", "dtmf"
  };
  size_t i;

  /* The per-call record, shared by the stand-ins and the check stage. */
  lua_createtable(L, 0, 10);
  for (i = 0; i < sizeof lists / sizeof lists[0]; i++) {
    lua_newtable(L);
    lua_setfield(L, -2, lists[i]);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, CALL_KEY);
  lua_setglobal(L, "host");

  luaL_newmetatable(L, EVENT_MT);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, ev_addHeader);
  lua_setfield(L, -2, "addHeader");
  lua_pushcfunction(L, ev_fire);
  lua_setfield(L, -2, "fire");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  luaL_newlib(L, fs);
  lua_setglobal(L, "freeswitch");
  luaL_newlib(L, sess);
  lua_setglobal(L, "session");

  lua_getglobal(L, "os");
  lua_pushcfunction(L, os_exit_stub);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
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

/* Runs one stage with mod_lua's traceback handler; leaves an error message
 * on the stack and returns 0 when it fails. */
static int run_stage (lua_State *L, const char *file) {
  int base = lua_gettop(L), ok;
  lua_pushcfunction(L, traceback);
  ok = luaL_loadfile(L, file) == LUA_OK && lua_pcall(L, 0, 1, base + 1) == LUA_OK;
  if (ok && lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
    lua_pushfstring(L, "%s returned false", file);
    ok = 0;
  }
  if (ok) {
    lua_settop(L, base);
    return 1;
  }
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  return 0;
}

static void one_call (int call, int thread, int first) {
  lua_State *L = luaL_newstate();
  int ok, live;
  if (L == NULL) {
    atomic_fetch_add(&failed_calls, 1);
    atomic_fetch_add(&finished_calls, 1);
    return;
  }
  live = atomic_fetch_add(&live_states, 1) + 1;
  for (int m = atomic_load(&max_live);
       live > m && !atomic_compare_exchange_weak(&max_live, &m, live);) {}
  lua_atpanic(L, panic);
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

  ok = (pre_script == NULL || run_stage(L, pre_script)) &&
       run_stage(L, script) &&
       (check_script == NULL || run_stage(L, check_script));
  if (call_flag(L, "stop_run")) atomic_store(&stop_run, 1);
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
  atomic_fetch_sub(&live_states, 1);
  if (atomic_fetch_add(&finished_calls, 1) + 1 == warm_calls)
    atomic_store(&rss_warm_kb, rss_kb());
}

static int time_is_up (void) {
  struct timespec now;
  if (atomic_load(&stop_run)) return 1;
  if (duration_s <= 0) return 0;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t_start.tv_sec) +
         (double)(now.tv_nsec - t_start.tv_nsec) / 1e9 >= duration_s;
}

static void *session_thread (void *arg) {
  int thread = (int)(intptr_t)arg, first = 1, call;
  while (!(!first && time_is_up()) &&
         (call = atomic_fetch_add(&next_call, 1)) < n_calls) {
    atomic_fetch_add(&started_calls, 1);
    one_call(call + 1, thread, first);
    first = 0;
  }
  return NULL;
}

/* lua.conf.xml's startup-script: mod_lua's lua_thread() on a detached
 * thread, nobody waits for it.  Its outcome is reported on stderr only. */
static void *startup_thread (void *arg) {
  lua_State *L = luaL_newstate();
  (void)arg;
  if (L == NULL) return NULL;
  lua_atpanic(L, panic);
  luaL_openlibs(L);
  open_freeswitch(L);
  lua_createtable(L, 1, 0);
  lua_pushstring(L, startup_script);
  lua_rawseti(L, -2, 0);
  lua_setglobal(L, "argv");
  if (!run_stage(L, startup_script)) {
    pthread_mutex_lock(&print_lock);
    fprintf(stderr, "startup script failed: %s\n", lua_tostring(L, -1));
    pthread_mutex_unlock(&print_lock);
  }
  lua_gc(L, LUA_GCCOLLECT, 0);
  lua_close(L);
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

static int add_var (const char **names, const char **values, int *n,
                    char *arg) {
  char *eq = strchr(arg, '=');
  if (eq == NULL || *n == MAX_VARS) return 0;
  *eq = '\0';
  names[*n] = arg;
  values[(*n)++] = eq + 1;
  return 1;
}

int main (int argc, char **argv) {
  int opt, i;
  while ((opt = getopt(argc, argv, "t:n:T:dbm:s:v:g:w:p:c:L:S:")) != -1) {
    switch (opt) {
      case 't': n_threads = atoi(optarg); break;
      case 'n': n_calls = atoi(optarg); break;
      case 'T': duration_s = atof(optarg); break;
      case 'd': detached = 1; break;
      case 'b': use_barrier = 1; break;
      case 'w': warm_calls = atoi(optarg); break;
      case 'm': prepend_env("LUA_CPATH", optarg); break;
      case 's': prepend_env("LUA_PATH", optarg); break;
      case 'p': pre_script = optarg; break;
      case 'c': check_script = optarg; break;
      case 'L': linger_ms = atoi(optarg); break;
      case 'S': startup_script = optarg; break;
      case 'v':
        if (!add_var(var_name, var_value, &n_vars, optarg)) goto usage;
        break;
      case 'g':
        if (!add_var(gvar_name, gvar_value, &n_gvars, optarg)) goto usage;
        break;
      default: goto usage;
    }
  }
  if (optind != argc - 1 || n_threads < 1 || n_calls < 1) goto usage;
  script = argv[optind];

  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_ALL);
  clock_gettime(CLOCK_MONOTONIC, &t_start);
  if (startup_script) {
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, startup_thread, NULL) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 2;
    }
    pthread_attr_destroy(&attr);
  }

  if (!detached) {
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    if (use_barrier)
      pthread_barrier_init(&barrier, NULL,
                           (unsigned)(n_threads < n_calls ? n_threads : n_calls));
    for (i = 0; i < n_threads; i++)
      pthread_create(&th[i], NULL, session_thread, (void *)(intptr_t)(i + 1));
    for (i = 0; i < n_threads; i++) pthread_join(th[i], NULL);
    free(th);
    if (use_barrier) pthread_barrier_destroy(&barrier);
  } else {
    /* luarun: detached threads nobody joins, at most n_threads alive. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (i = 0; i < n_calls && !(i > 0 && time_is_up()); i++) {
      pthread_t t;
      while (i - atomic_load(&finished_calls) >= n_threads) usleep(200);
      atomic_fetch_add(&started_calls, 1);
      if (pthread_create(&t, &attr, detached_thread, (void *)(intptr_t)i) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 2;
      }
    }
    while (atomic_load(&finished_calls) < atomic_load(&started_calls))
      usleep(1000);
    pthread_attr_destroy(&attr);
  }

  /* As FreeSWITCH does at shutdown, after every state is closed. */
  curl_global_cleanup();
  printf("calls=%d ok=%d failed=%d max_live=%d", atomic_load(&started_calls),
         atomic_load(&ok_calls), atomic_load(&failed_calls),
         atomic_load(&max_live));
  if (warm_calls > 0)
    printf(" rss_warm_kb=%ld rss_end_kb=%ld", atomic_load(&rss_warm_kb), rss_kb());
  printf("\n");
  fflush(stdout);
  if (linger_ms > 0) usleep((useconds_t)linger_ms * 1000);
  return atomic_load(&failed_calls) ? 1 : 0;
usage:
  fprintf(stderr, "usage: ecw-host [-t THREADS] [-n CALLS] [-T SECONDS] [-d] "
                  "[-b] [-m CPATH] [-s LPATH] [-v NAME=VALUE]... "
                  "[-g NAME=VALUE]... [-w WARM] [-p DIALPLAN.lua] "
                  "[-c CHECK.lua] [-S STARTUP.lua] [-L MS] script.lua\n");
  return 2;
}
