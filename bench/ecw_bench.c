/*
 * ecw-bench: a Lua 5.4 host for the benchmark drivers (the .lua files in bench/items/).
 *
 *   ecw-bench DRIVER.lua [ARGS...]
 *
 * It is the stock `lua` interpreter's job (run a script with `arg`) plus a
 * preloaded module `bench` that gives the drivers what plain Lua lacks:
 *
 *   bench.now_us()        CLOCK_MONOTONIC in microseconds, ns resolution
 *                         (core.now_ms and os.clock are too coarse or measure
 *                         CPU, not wall time)
 *   bench.cpu_us(["children"])
 *                         CPU time (user + system) of this process so far, or
 *                         of its waited-for child processes
 *   bench.rss_kb()        resident set size of this process
 *   bench.heap()          bytes malloc has handed out (mallinfo2: uordblks +
 *                         hblkhd), for memory per cached token
 *   bench.trim()          malloc_trim(0)
 *   bench.baseline{url=, token=, ca_file=, accept=}
 *                         the C baseline (baseline.c): b:get() -> status,
 *                         bytes; b:body(); b:connects(); b:close()
 *   bench.calls{script=, threads=, calls=, rate=, duration=, barrier=, arg=}
 *                         the mod_lua pattern, measured: see run_calls below
 *
 * Both sides of every comparison run in this one process and are timed by
 * the same clock from Lua, so the Lua call overhead (tens of nanoseconds) is
 * the same on both sides and the ratio compares only what ecw adds.
 *
 * Like FreeSWITCH (and ecw-host) it ignores SIGPIPE and calls
 * curl_global_init before any state exists.  It links liblua with -Wl,-E so
 * that ecw/core.so, which never links liblua, finds the Lua API here.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "baseline.h"

#define BASELINE_MT "bench.baseline"
#define MAX_ERRORS 5

/* ---- clocks and memory ---------------------------------------------------- */

static int l_now_us (lua_State *L) {
  lua_pushnumber(L, bench_now_us());
  return 1;
}

static int l_cpu_us (lua_State *L) {
  struct rusage ru;
  const char *who = luaL_optstring(L, 1, "self");
  getrusage(strcmp(who, "children") == 0 ? RUSAGE_CHILDREN : RUSAGE_SELF, &ru);
  lua_pushnumber(L, (lua_Number)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
                    (lua_Number)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec));
  return 1;
}

static long rss_kb (void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return -1;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int l_rss_kb (lua_State *L) {
  lua_pushinteger(L, rss_kb());
  return 1;
}

static int l_heap (lua_State *L) {
  struct mallinfo2 mi = mallinfo2();
  lua_pushinteger(L, (lua_Integer)(mi.uordblks + mi.hblkhd));
  return 1;
}

static int l_trim (lua_State *L) {
  (void)L;
  malloc_trim(0);
  return 0;
}

static int l_sleep_us (lua_State *L) {
  lua_Number us = luaL_checknumber(L, 1);
  struct timespec ts;
  if (us > 0) {
    ts.tv_sec = (time_t)(us / 1e6);
    ts.tv_nsec = (long)((us - (lua_Number)ts.tv_sec * 1e6) * 1e3);
    nanosleep(&ts, NULL);
  }
  return 0;
}

/* ---- the C baseline --------------------------------------------------------- */

typedef struct lbaseline {
  bench_baseline *b;
} lbaseline;

static const char *field (lua_State *L, int t, const char *k, int req) {
  const char *s;
  lua_getfield(L, t, k);
  s = lua_tostring(L, -1);
  if (s == NULL && req) luaL_error(L, "bench: option '%s' is required", k);
  lua_pop(L, 1);                 /* the options table keeps the string */
  return s;
}

static int l_baseline (lua_State *L) {
  lbaseline *lb;
  luaL_checktype(L, 1, LUA_TTABLE);
  lb = lua_newuserdatauv(L, sizeof *lb, 0);
  lb->b = NULL;
  luaL_setmetatable(L, BASELINE_MT);
  lb->b = bench_baseline_new(field(L, 1, "url", 1), field(L, 1, "token", 1),
                             field(L, 1, "ca_file", 0), field(L, 1, "accept", 0));
  if (lb->b == NULL) return luaL_error(L, "bench.baseline: out of memory");
  return 1;
}

static bench_baseline *check_baseline (lua_State *L) {
  lbaseline *lb = luaL_checkudata(L, 1, BASELINE_MT);
  if (lb->b == NULL) luaL_argerror(L, 1, "closed");
  return lb->b;
}

static int baseline_get (lua_State *L) {
  bench_baseline *b = check_baseline(L);
  long status;
  size_t bytes;
  int rc = bench_baseline_get(b, &status, &bytes);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, curl_easy_strerror((CURLcode)rc));
    return 2;
  }
  lua_pushinteger(L, status);
  lua_pushinteger(L, (lua_Integer)bytes);
  return 2;
}

static int baseline_body (lua_State *L) {
  size_t len;
  const char *s = bench_baseline_body(check_baseline(L), &len);
  lua_pushlstring(L, s, len);
  return 1;
}

static int baseline_connects (lua_State *L) {
  lua_pushinteger(L, bench_baseline_connects(check_baseline(L)));
  return 1;
}

static int baseline_close (lua_State *L) {
  lbaseline *lb = luaL_checkudata(L, 1, BASELINE_MT);
  bench_baseline_free(lb->b);
  lb->b = NULL;
  return 0;
}

/* ---- the mod_lua pattern, measured ---------------------------------------- */

/*
 * bench.calls{script=, threads=1, calls=N, rate=0, duration=0, barrier=false,
 *             arg=""}
 *
 * Runs `calls` calls on `threads` threads.  Each call does what mod_lua does
 * for one phone call: luaL_newstate, luaL_openlibs, globals, load and run the
 * script file, lua_gc(COLLECT), lua_close -- all on the calling thread.  The
 * state sees globals call_index (1-based), thread_index and ARG (the `arg`
 * string), and can `require "bench"`.
 *
 *   rate > 0      call i is started no earlier than start + i / rate seconds
 *                 (a steady arrival rate, shared by all threads);
 *   duration > 0  with rate: calls = rate * duration;
 *   barrier       the first call on every thread starts its script at the
 *                 same moment (after its state is built), for cold starts.
 *
 * Returns { ok=, failed=, errors={...}, elapsed_us=, t0_us=,
 *           wall={...}, value={...}, value2={...}, start={...}, finish={...}, lag={...} }:
 * per call (index = call_index) the whole state's life in us (newstate to
 * close), the script's first and second return values when they are numbers
 * (value, value2: drivers return the lookup's own time and the time spent
 * in require + configure), start/finish relative to the run's start,
 * and how late a paced call started.  elapsed_us runs from the start (or
 * the barrier's release) to the last call's end.
 */
typedef struct run {
  const char *script, *arg;
  int threads, calls, barrier;
  double rate;
  double t0;                   /* run start, bench_now_us */
  _Atomic double t_release;    /* barrier release */
  atomic_int next;
  atomic_int ok, failed;
  double *wall, *value, *value2, *start, *finish, *lag;
  pthread_barrier_t bar;
  pthread_mutex_t err_lock;
  char *errors[MAX_ERRORS];
  int n_errors;
} run;

typedef struct worker_arg {
  run *r;
  int thread;
} worker_arg;

static int luaopen_bench (lua_State *L);

static int traceback (lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

static void record_error (run *r, int call, const char *msg) {
  pthread_mutex_lock(&r->err_lock);
  if (r->n_errors < MAX_ERRORS) {
    size_t n = strlen(msg) + 32;
    char *s = malloc(n);
    if (s) {
      snprintf(s, n, "call %d: %s", call, msg);
      r->errors[r->n_errors++] = s;
    }
  }
  pthread_mutex_unlock(&r->err_lock);
}

static void sleep_until_us (double t) {
  double now = bench_now_us();
  if (t > now) {
    struct timespec ts;
    double d = t - now;
    ts.tv_sec = (time_t)(d / 1e6);
    ts.tv_nsec = (long)((d - (double)ts.tv_sec * 1e6) * 1e3);
    nanosleep(&ts, NULL);
  }
}

static void one_call (run *r, int call, int thread, int first) {
  double t_start = bench_now_us(), t_end;
  lua_State *L = luaL_newstate();
  int ok = 0, base;
  int i = call - 1;
  r->start[i] = t_start - r->t0;
  if (L == NULL) {
    atomic_fetch_add(&r->failed, 1);
    record_error(r, call, "luaL_newstate failed");
    return;
  }
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_bench);
  lua_setfield(L, -2, "bench");
  lua_pop(L, 1);
  lua_pushinteger(L, call);
  lua_setglobal(L, "call_index");
  lua_pushinteger(L, thread);
  lua_setglobal(L, "thread_index");
  lua_pushstring(L, r->arg);
  lua_setglobal(L, "ARG");

  if (first && r->barrier) {
    if (pthread_barrier_wait(&r->bar) == PTHREAD_BARRIER_SERIAL_THREAD)
      atomic_store(&r->t_release, bench_now_us());
  }

  base = lua_gettop(L);
  lua_pushcfunction(L, traceback);
  if (luaL_loadfile(L, r->script) == LUA_OK &&
      lua_pcall(L, 0, 2, base + 1) == LUA_OK) {
    ok = !(lua_isboolean(L, -2) && !lua_toboolean(L, -2));
    if (lua_type(L, -2) == LUA_TNUMBER) r->value[i] = lua_tonumber(L, -2);
    if (lua_type(L, -1) == LUA_TNUMBER) r->value2[i] = lua_tonumber(L, -1);
    if (!ok) record_error(r, call, "script returned false");
  } else {
    record_error(r, call, lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
  }
  lua_settop(L, base);
  lua_gc(L, LUA_GCCOLLECT, 0);
  lua_close(L);
  t_end = bench_now_us();
  r->wall[i] = t_end - t_start;
  r->finish[i] = t_end - r->t0;
  atomic_fetch_add(ok ? &r->ok : &r->failed, 1);
}

static void *worker (void *p) {
  worker_arg *a = p;
  run *r = a->r;
  int first = 1, call;
  while ((call = atomic_fetch_add(&r->next, 1)) < r->calls) {
    if (r->rate > 0) {
      double due = r->t0 + (double)call * 1e6 / r->rate;
      sleep_until_us(due);
      r->lag[call] = bench_now_us() - due;
    }
    one_call(r, call + 1, a->thread, first);
    first = 0;
  }
  return NULL;
}

static void push_array (lua_State *L, const double *v, int n, const char *k) {
  int i;
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_pushnumber(L, v[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, k);
}

static int opt_int (lua_State *L, int t, const char *k, int def) {
  int v = def;
  if (lua_getfield(L, t, k) != LUA_TNIL) v = (int)luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return v;
}

static double opt_num (lua_State *L, int t, const char *k, double def) {
  double v = def;
  if (lua_getfield(L, t, k) != LUA_TNIL) v = (double)luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static int l_calls (lua_State *L) {
  run r;
  pthread_t *th;
  worker_arg *args;
  double duration, t_last = 0, from;
  int i;
  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&r, 0, sizeof r);
  r.script = field(L, 1, "script", 1);
  r.arg = field(L, 1, "arg", 0);
  if (r.arg == NULL) r.arg = "";
  r.threads = opt_int(L, 1, "threads", 1);
  r.calls = opt_int(L, 1, "calls", 1);
  r.rate = opt_num(L, 1, "rate", 0);
  duration = opt_num(L, 1, "duration", 0);
  lua_getfield(L, 1, "barrier");
  r.barrier = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (r.rate > 0 && duration > 0) r.calls = (int)(r.rate * duration);
  luaL_argcheck(L, r.threads >= 1 && r.threads <= 1024, 1, "threads: 1..1024");
  luaL_argcheck(L, r.calls >= 1, 1, "calls must be positive");

  r.wall = calloc((size_t)r.calls, sizeof(double));
  r.value = calloc((size_t)r.calls, sizeof(double));
  r.value2 = calloc((size_t)r.calls, sizeof(double));
  r.start = calloc((size_t)r.calls, sizeof(double));
  r.finish = calloc((size_t)r.calls, sizeof(double));
  r.lag = calloc((size_t)r.calls, sizeof(double));
  th = calloc((size_t)r.threads, sizeof *th);
  args = calloc((size_t)r.threads, sizeof *args);
  if (!r.wall || !r.value || !r.value2 || !r.start || !r.finish || !r.lag || !th || !args)
    return luaL_error(L, "bench.calls: out of memory");
  for (i = 0; i < r.calls; i++) r.value[i] = r.value2[i] = -1;
  pthread_mutex_init(&r.err_lock, NULL);
  if (r.barrier)
    pthread_barrier_init(&r.bar, NULL,
                         (unsigned)(r.threads < r.calls ? r.threads : r.calls));

  r.t0 = bench_now_us();
  for (i = 0; i < r.threads; i++) {
    args[i].r = &r;
    args[i].thread = i + 1;
    if (pthread_create(&th[i], NULL, worker, &args[i]) != 0)
      return luaL_error(L, "bench.calls: pthread_create failed");
  }
  for (i = 0; i < r.threads; i++) pthread_join(th[i], NULL);
  if (r.barrier) pthread_barrier_destroy(&r.bar);
  pthread_mutex_destroy(&r.err_lock);

  for (i = 0; i < r.calls; i++)
    if (r.finish[i] > t_last) t_last = r.finish[i];
  from = r.barrier ? atomic_load(&r.t_release) - r.t0 : 0;

  lua_createtable(L, 0, 12);
  lua_pushinteger(L, atomic_load(&r.ok));
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, atomic_load(&r.failed));
  lua_setfield(L, -2, "failed");
  lua_pushinteger(L, r.calls);
  lua_setfield(L, -2, "calls");
  lua_pushnumber(L, t_last - from);
  lua_setfield(L, -2, "elapsed_us");
  lua_pushnumber(L, from);
  lua_setfield(L, -2, "release_us");
  lua_pushnumber(L, r.t0);
  lua_setfield(L, -2, "t0_us");
  push_array(L, r.wall, r.calls, "wall");
  push_array(L, r.value, r.calls, "value");
  push_array(L, r.value2, r.calls, "value2");
  push_array(L, r.start, r.calls, "start");
  push_array(L, r.finish, r.calls, "finish");
  push_array(L, r.lag, r.calls, "lag");
  lua_createtable(L, r.n_errors, 0);
  for (i = 0; i < r.n_errors; i++) {
    lua_pushstring(L, r.errors[i]);
    lua_rawseti(L, -2, i + 1);
    free(r.errors[i]);
  }
  lua_setfield(L, -2, "errors");
  free(r.wall); free(r.value); free(r.value2); free(r.start); free(r.finish); free(r.lag);
  free(th); free(args);
  return 1;
}

/* ---- module and main ------------------------------------------------------- */

static int luaopen_bench (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"now_us", l_now_us}, {"cpu_us", l_cpu_us}, {"rss_kb", l_rss_kb}, {"heap", l_heap},
    {"trim", l_trim}, {"sleep_us", l_sleep_us}, {"baseline", l_baseline},
    {"calls", l_calls}, {NULL, NULL}
  };
  static const luaL_Reg bmeth[] = {
    {"get", baseline_get}, {"body", baseline_body},
    {"connects", baseline_connects}, {"close", baseline_close}, {NULL, NULL}
  };
  if (luaL_newmetatable(L, BASELINE_MT)) {
    luaL_newlib(L, bmeth);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, baseline_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}

int main (int argc, char **argv) {
  lua_State *L;
  int i, status;
  if (argc < 2) {
    fprintf(stderr, "usage: ecw-bench DRIVER.lua [ARGS...]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_ALL);
  L = luaL_newstate();
  if (L == NULL) return 1;
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_bench);
  lua_setfield(L, -2, "bench");
  lua_pop(L, 1);
  lua_createtable(L, argc, 0);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);     /* arg[0] = the driver, as lua(1) does */
  }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, traceback);
  status = luaL_loadfile(L, argv[1]);
  if (status == LUA_OK) status = lua_pcall(L, 0, 0, 1);
  if (status != LUA_OK) {
    fprintf(stderr, "ecw-bench: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  lua_close(L);
  fflush(stdout);
  /* No curl_global_cleanup: ecw's worker threads may still hold handles
   * (refresh-ahead jobs); the process exits here anyway. */
  return 0;
}
