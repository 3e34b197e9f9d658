/*
 * ecw_core.c: the Lua binding, module "ecw.core".
 *
 * The only file that talks to Lua.  No lock is ever held while a Lua API
 * function runs: the core does its work on plain C data, releases its locks
 * and secrets, and only then pushes results.  Buffers that must survive a
 * Lua error (out of memory while pushing) live in a scratch userdata whose
 * __gc frees them.
 */
#define _GNU_SOURCE            /* dladdr */
#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua.h"
#include "lauxlib.h"

#include "async.h"
#include "client.h"
#include "guard.h"
#include "http.h"
#include "jwk.h"
#include "jwt.h"
#include "stats.h"
#include "token_cache.h"

#if LUA_VERSION_NUM < 503
#error "ecw needs Lua 5.3 or 5.4"
#endif
#if LUA_VERSION_NUM < 504
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata(L, sz)
#endif

#define CLIENT_MT  "ecw.core.client"
#define SCRATCH_MT "ecw.core.scratch"
#define ERROR_MT   "ecw.error"
#define JOB_MT     "ecw.core.job"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_MAX_BODY (8L * 1024 * 1024)

ecw_stats ecw_counters;

typedef struct lclient {
  ecw_client *c;               /* NULL once closed */
} lclient;

typedef struct scratch {
  ecw_http_resp resp;
  ecw_token tok;
  char *url;
  char *scopes;
} scratch;

/* ---- process-wide setup --------------------------------------------------- */

static pthread_once_t pin_once = PTHREAD_ONCE_INIT;
static atomic_int live_states;
static const char state_key = 0;   /* registry key of a state's sentinel */
#define DRAIN_MS 15000
static const char pin_anchor = 0;   /* any object inside this .so */

/*
 * Pin this .so for the life of the process.  lua_close dlcloses every C
 * module its state loaded; mod_lua opens and closes a state per call, so
 * without a pin the token cache, the handle pool and the counters would be
 * unmapped between calls (and a curl or pthread object freed with them).
 * Same approach as luaossl's dl_anchor.
 */
static void pin_self (void) {
  Dl_info info;
  if (dladdr(&pin_anchor, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
}

/*
 * Live states.  Background work (token refreshes, started lookups) runs on
 * module threads.  When the last host state closes, its close waits for that
 * work to finish, so that once every state is closed no module thread is
 * inside libcurl: FreeSWITCH calls curl_global_cleanup right after its last
 * state closes at shutdown.  The wait is bounded by the work's own
 * deadlines.  Worker-owned states are not counted: they are ours.
 */
static int state_gone (lua_State *L) {
  (void)L;
  if (atomic_fetch_sub(&live_states, 1) == 1)
    ecw_worker_drain(ecw_now_ms() + DRAIN_MS);
  return 0;
}

static void count_state (lua_State *L) {
  if (ecw_worker_current() != NULL) return;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key) != LUA_TNIL) {
    lua_pop(L, 1);            /* required again in the same state */
    return;
  }
  lua_pop(L, 1);
  lua_newuserdatauv(L, 1, 0);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gone);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
  atomic_fetch_add(&live_states, 1);
}

/* ---- errors -------------------------------------------------------------- */

static int push_err (lua_State *L, const ecw_err *e) {
  lua_pushnil(L);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, e->code ? e->code : ECW_E_INTERNAL);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, e->message[0] ? e->message : "unknown error");
  lua_setfield(L, -2, "message");
  if (e->status) {
    lua_pushinteger(L, e->status);
    lua_setfield(L, -2, "status");
  }
  lua_pushboolean(L, e->retryable);
  lua_setfield(L, -2, "retryable");
  if (e->oauth_error[0]) {
    lua_pushstring(L, e->oauth_error);
    lua_setfield(L, -2, "oauth_error");
  }
  if (e->oauth_description[0]) {
    lua_pushstring(L, e->oauth_description);
    lua_setfield(L, -2, "oauth_error_description");
  }
  luaL_setmetatable(L, ERROR_MT);
  return 2;
}

static int err_tostring (lua_State *L) {
  if (lua_type(L, 1) == LUA_TTABLE) {
    lua_getfield(L, 1, "message");
    if (lua_type(L, -1) == LUA_TSTRING) return 1;
  }
  lua_pushstring(L, "ecw error");
  return 1;
}

static int err_concat (lua_State *L) {
  /* err .. "x" and "x" .. err both read as the message. */
  luaL_tolstring(L, 1, NULL);
  luaL_tolstring(L, 2, NULL);
  lua_concat(L, 2);
  return 1;
}

/* ---- argument helpers ------------------------------------------------------ */

static const char *opt_string (lua_State *L, int t, const char *k, int req) {
  const char *s = NULL;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING) s = lua_tostring(L, -1);
  else if (ty != LUA_TNIL || req)
    luaL_error(L, "option '%s' must be a string%s", k,
               req ? " (required)" : "");
  if (s && s[0] == '\0') luaL_error(L, "option '%s' must not be empty", k);
  lua_pop(L, 1);   /* the string stays alive: the options table holds it */
  return s;
}

static long opt_ms (lua_State *L, int t, const char *k, long def, long max) {
  long v = def;
  int ty = lua_getfield(L, t, k);
  if (ty != LUA_TNIL) {
    int isnum = 0;
    lua_Integer i = lua_tointegerx(L, -1, &isnum);
    if (!isnum || i <= 0 || i > max)
      luaL_error(L, "option '%s' must be an integer between 1 and %d", k, (int)max);
    v = (long)i;
  }
  lua_pop(L, 1);
  return v;
}

/* Like opt_ms, but 0 is allowed (it turns the feature off). */
static long opt_int (lua_State *L, int t, const char *k, long def, long max) {
  long v = def;
  int ty = lua_getfield(L, t, k);
  if (ty != LUA_TNIL) {
    int isnum = 0;
    lua_Integer i = lua_tointegerx(L, -1, &isnum);
    if (!isnum || i < 0 || i > max)
      luaL_error(L, "option '%s' must be an integer between 0 and %d", k, (int)max);
    v = (long)i;
  }
  lua_pop(L, 1);
  return v;
}

static int opt_bool (lua_State *L, int t, const char *k, int def) {
  int v = def, ty = lua_getfield(L, t, k);
  if (ty == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL) luaL_error(L, "option '%s' must be a boolean", k);
  lua_pop(L, 1);
  return v;
}

/* Scopes as a string or an array of strings; normalized, never empty. */
static char *check_scopes (lua_State *L, int idx) {
  char *norm;
  if (lua_type(L, idx) == LUA_TTABLE) {
    luaL_Buffer b;
    lua_Integer i, n = luaL_len(L, idx);
    luaL_buffinit(L, &b);
    for (i = 1; i <= n; i++) {
      lua_geti(L, idx, i);
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "bad argument #%d (scopes[%d] must be a string)", idx,
                   (int)i);
      luaL_addchar(&b, ' ');
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    lua_pushvalue(L, idx);
  } else {
    luaL_argerror(L, idx, "scopes must be a string or an array of strings");
  }
  norm = ecw_scopes_normalize(lua_tostring(L, -1));
  lua_pop(L, 1);
  if (norm == NULL) luaL_argerror(L, idx, "scopes must not be empty");
  return norm;
}

/* ---- scratch space -------------------------------------------------------- */

static int scratch_gc (lua_State *L) {
  scratch *s = luaL_checkudata(L, 1, SCRATCH_MT);
  ecw_http_resp_free(&s->resp, 0);
  ecw_token_release(&s->tok);
  free(s->url);
  free(s->scopes);
  memset(s, 0, sizeof *s);
  return 0;
}

static scratch *new_scratch (lua_State *L) {
  scratch *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, SCRATCH_MT);
  return s;
}

/* ---- client ---------------------------------------------------------------- */

static ecw_client *check_client (lua_State *L, int idx) {
  lclient *lc = luaL_checkudata(L, idx, CLIENT_MT);
  if (lc->c == NULL) luaL_argerror(L, idx, "client is closed");
  return lc->c;
}

static int l_client (lua_State *L) {
  ecw_client_cfg cfg;
  ecw_err err;
  lclient *lc;
  ecw_client *c;

  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&cfg, 0, sizeof cfg);
  cfg.fhir_base = opt_string(L, 1, "fhir_base", 1);
  cfg.client_id = opt_string(L, 1, "client_id", 1);
  cfg.private_key = opt_string(L, 1, "private_key", 1);
  cfg.kid = opt_string(L, 1, "kid", 1);
  cfg.token_url = opt_string(L, 1, "token_url", 0);
  cfg.alg = opt_string(L, 1, "alg", 0);
  cfg.jku = opt_string(L, 1, "jku", 0);
  cfg.ca_file = opt_string(L, 1, "ca_file", 0);
  cfg.timeout_ms = opt_ms(L, 1, "timeout_ms", DEFAULT_TIMEOUT_MS, 600000);
  cfg.connect_timeout_ms = opt_ms(L, 1, "connect_timeout_ms",
                                  DEFAULT_CONNECT_TIMEOUT_MS, 600000);
  cfg.max_body = opt_ms(L, 1, "max_body", DEFAULT_MAX_BODY, 1L << 30);
  cfg.with_iat = opt_bool(L, 1, "iat", 0);
  cfg.rate_limit = (int)opt_int(L, 1, "rate_limit", 0, 100000);
  cfg.breaker_threshold = (int)opt_int(L, 1, "breaker_threshold", 5, 1000);
  cfg.breaker_cooldown_ms = (int)opt_ms(L, 1, "breaker_cooldown_ms", 10000,
                                        3600000);
  if (cfg.alg && strcmp(cfg.alg, "RS384") != 0 && strcmp(cfg.alg, "ES384") != 0)
    luaL_error(L, "option 'alg' must be \"RS384\" or \"ES384\"");

  /* Allocate the handle first so a Lua error cannot leak the reference. */
  lc = lua_newuserdatauv(L, sizeof *lc, 0);
  lc->c = NULL;
  luaL_setmetatable(L, CLIENT_MT);
  memset(&err, 0, sizeof err);
  if ((c = ecw_client_acquire(&cfg, &err)) == NULL) return push_err(L, &err);
  lc->c = c;
  return 1;
}

static int client_close (lua_State *L) {
  lclient *lc = luaL_checkudata(L, 1, CLIENT_MT);
  /* Drops this state's reference only: the client, its key and the token
   * cache are process-wide and outlive every state. */
  if (lc->c) {
    ecw_client_release(lc->c);
    lc->c = NULL;
  }
  return 0;
}

static int client_tostring (lua_State *L) {
  lclient *lc = luaL_checkudata(L, 1, CLIENT_MT);
  if (lc->c) lua_pushfstring(L, "ecw.core.client (%s, %s)", lc->c->fhir_base,
                             lc->c->alg);
  else lua_pushliteral(L, "ecw.core.client (closed)");
  return 1;
}

static int client_info (lua_State *L) {
  ecw_client *c = check_client(L, 1);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, c->fhir_base); lua_setfield(L, -2, "fhir_base");
  lua_pushstring(L, c->client_id); lua_setfield(L, -2, "client_id");
  lua_pushstring(L, c->kid); lua_setfield(L, -2, "kid");
  lua_pushstring(L, c->alg); lua_setfield(L, -2, "alg");
  if (c->token_url) {
    lua_pushstring(L, c->token_url);
    lua_setfield(L, -2, "token_url");
  }
  lua_pushinteger(L, c->timeout_ms); lua_setfield(L, -2, "timeout_ms");
  lua_pushinteger(L, c->connect_timeout_ms);
  lua_setfield(L, -2, "connect_timeout_ms");
  lua_pushinteger(L, (lua_Integer)c->max_body); lua_setfield(L, -2, "max_body");
  return 1;
}

/* Absolute deadline for one call: opts.deadline (from now_ms) and
 * opts.timeout_ms, whichever ends first; the client's timeout by default. */
static int64_t call_deadline (lua_State *L, int opts, ecw_client *c) {
  int64_t now = ecw_now_ms();
  int64_t dl = now + (opts ? opt_ms(L, opts, "timeout_ms", c->timeout_ms,
                                    600000) : c->timeout_ms);
  if (opts && lua_getfield(L, opts, "deadline") != LUA_TNIL) {
    int isnum = 0;
    lua_Integer d = lua_tointegerx(L, -1, &isnum);
    if (!isnum) luaL_error(L, "option 'deadline' must be an integer (now_ms)");
    if (d < dl) dl = d;
  }
  if (opts) lua_pop(L, 1);
  return dl;
}

static int client_token (lua_State *L) {
  ecw_client *c = check_client(L, 1);
  int opts = lua_isnoneornil(L, 3) ? 0 : (luaL_checktype(L, 3, LUA_TTABLE), 3);
  int64_t deadline = call_deadline(L, opts, c);
  scratch *s = new_scratch(L);
  ecw_err err;
  memset(&err, 0, sizeof err);
  s->scopes = check_scopes(L, 2);
  if (!ecw_token_get(c, s->scopes, deadline, 0, &s->tok, &err))
    return push_err(L, &err);
  /* Never the token itself: callers get what they need to reason about it. */
  ecw_free_secret(s->tok.access_token);
  s->tok.access_token = NULL;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, s->tok.granted_scope);
  lua_setfield(L, -2, "scope");
  lua_pushinteger(L, (s->tok.expires_ms - ecw_now_ms()) / 1000);
  lua_setfield(L, -2, "expires_in");
  lua_pushboolean(L, s->tok.fetched);
  lua_setfield(L, -2, "fetched");
  lua_pushboolean(L, s->tok.waited);
  lua_setfield(L, -2, "waited");
  return 1;
}

static int client_invalidate (lua_State *L) {
  ecw_client *c = check_client(L, 1);
  scratch *s = new_scratch(L);
  s->scopes = check_scopes(L, 2);
  lua_pushboolean(L, ecw_token_invalidate(c, s->scopes, 0));
  return 1;
}

static void push_header (void *ud, const char *name, size_t nlen,
                         const char *value, size_t vlen) {
  lua_State *L = ud;
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i < nlen; i++)
    luaL_addchar(&b, (char)tolower((unsigned char)name[i]));
  luaL_pushresult(&b);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) == LUA_TSTRING) {   /* repeated: join with ", " */
    lua_pushliteral(L, ", ");
    lua_pushlstring(L, value, vlen);
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
    lua_pushlstring(L, value, vlen);
  }
  lua_rawset(L, -3);
}

static void push_headers (lua_State *L, const ecw_buf *raw) {
  lua_newtable(L);
  ecw_headers_each(raw->data, raw->len, push_header, L);
}

#define MAX_ATTEMPTS 4

static int client_get (lua_State *L) {
  ecw_client *c = check_client(L, 1);
  const char *target = luaL_checkstring(L, 2);
  int opts = lua_isnoneornil(L, 4) ? 0 : (luaL_checktype(L, 4, LUA_TTABLE), 4);
  int64_t deadline = call_deadline(L, opts, c);
  const char *accept = opts ? opt_string(L, opts, "accept", 0) : NULL;
  int retry_401 = opts ? opt_bool(L, opts, "retry_401", 1) : 1;
  int attempt, retried = 0, refresh_due = 0;
  scratch *s = new_scratch(L);
  ecw_http_req rq;
  ecw_err err;

  memset(&err, 0, sizeof err);
  s->scopes = check_scopes(L, 3);
  if ((s->url = ecw_url_target(c->fhir_base, c->base_origin, target, &err)) == NULL) {
    if (err.code == NULL) ecw_err_set(&err, ECW_E_INTERNAL, 0, "out of memory");
    return push_err(L, &err);
  }
  /* At most one 401 retry (a fresh token) and a few backoff retries after
   * 408/5xx or a transport failure, all inside the one deadline. */
  for (attempt = 1;; attempt++) {
    int again = 0;
    if (!ecw_token_get(c, s->scopes, deadline, 1, &s->tok, &err))
      return push_err(L, &err);
    if (s->tok.refresh_due) refresh_due = 1;
    memset(&rq, 0, sizeof rq);
    rq.method = "GET";
    rq.url = s->url;
    rq.bearer = s->tok.access_token;
    rq.accept = accept ? accept : "application/fhir+json";
    rq.ca_file = c->ca_file;
    rq.deadline_ms = deadline;
    rq.connect_timeout_ms = c->connect_timeout_ms;
    rq.guard = c->guard;
    rq.max_body = c->max_body;
    rq.cancellable = 1;
    if (!ecw_http_perform(&rq, &s->resp, &err)) {
      if (ecw_streq(err.code, ECW_E_TOO_LARGE)) err.code = ECW_E_BAD_RESPONSE;
      if (!ecw_transport_retryable(&err) || attempt >= MAX_ATTEMPTS ||
          !ecw_backoff(attempt, deadline)) {
        if (refresh_due) ecw_token_refresh(c, s->scopes);
        return push_err(L, &err);
      }
      ecw_token_release(&s->tok);
      continue;
    }
    if (s->resp.status == 401 && retry_401 && !retried) {
      /* The server no longer honours this token (revoked, or its clock
       * runs ahead of ours): drop exactly that grant and retry once. */
      ecw_token_invalidate(c, s->scopes, s->tok.serial);
      ECW_COUNT(retries_401);
      retried = 1;
      again = 1;
    } else if (ecw_status_retryable(s->resp.status) && attempt < MAX_ATTEMPTS &&
               ecw_backoff(attempt, deadline)) {
      again = 1;
    }
    if (!again) break;
    ecw_token_release(&s->tok);
    ecw_http_resp_free(&s->resp, 0);
  }
  ecw_token_release(&s->tok);   /* wipe our copy before anything can raise */
  if (refresh_due) ecw_token_refresh(c, s->scopes);

  lua_createtable(L, 0, 5);
  lua_pushinteger(L, s->resp.status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, s->resp.body.data ? s->resp.body.data : "",
                  s->resp.body.len);
  lua_setfield(L, -2, "body");
  push_headers(L, &s->resp.headers);
  lua_setfield(L, -2, "headers");
  lua_pushstring(L, s->url);
  lua_setfield(L, -2, "url");
  lua_pushboolean(L, retried);
  lua_setfield(L, -2, "retried");
  return 1;
}

/* client:connect([opts]) -> status | nil, err
 * Opens (or re-uses) a connection to the FHIR server without a token, by
 * fetching the public SMART discovery document: warm-up and health checks. */
static int client_connect (lua_State *L) {
  ecw_client *c = check_client(L, 1);
  int opts = lua_isnoneornil(L, 2) ? 0 : (luaL_checktype(L, 2, LUA_TTABLE), 2);
  int64_t deadline = call_deadline(L, opts, c);
  scratch *s = new_scratch(L);
  ecw_http_req rq;
  ecw_err err;
  memset(&err, 0, sizeof err);
  s->url = malloc(strlen(c->fhir_base) + sizeof "/.well-known/smart-configuration");
  if (s->url == NULL) return luaL_error(L, "out of memory");
  strcpy(s->url, c->fhir_base);
  strcat(s->url, "/.well-known/smart-configuration");
  memset(&rq, 0, sizeof rq);
  rq.method = "GET";
  rq.url = s->url;
  rq.accept = "application/json";
  rq.ca_file = c->ca_file;
  rq.deadline_ms = deadline;
  rq.connect_timeout_ms = c->connect_timeout_ms;
  rq.guard = c->guard;
  rq.max_body = 1024 * 1024;
  if (!ecw_http_perform(&rq, &s->resp, &err)) {
    if (ecw_streq(err.code, ECW_E_TOO_LARGE)) err.code = ECW_E_BAD_RESPONSE;
    return push_err(L, &err);
  }
  lua_pushinteger(L, s->resp.status);
  return 1;
}

/* ---- module functions ------------------------------------------------------ */

static int l_stats (lua_State *L) {
  lua_createtable(L, 0, 14);
#define F(name) \
  lua_pushinteger(L, (lua_Integer)atomic_load(&ecw_counters.name)); \
  lua_setfield(L, -2, #name)
  F(token_requests); F(token_failures); F(token_cache_hits); F(token_waits);
  F(token_blocking_fetches); F(token_refreshes_ahead);
  F(token_invalidations); F(discovery_requests); F(http_requests);
  F(connections_opened); F(cache_evictions); F(retries_401); F(retries);
  F(rate_limit_rejections); F(breaker_rejections); F(breaker_trips);
#undef F
  lua_pushinteger(L, ecw_token_count());
  lua_setfield(L, -2, "cache_entries");
  lua_pushinteger(L, atomic_load(&live_states));
  lua_setfield(L, -2, "live_states");
  lua_pushinteger(L, ecw_http_pool_size());
  lua_setfield(L, -2, "pool_size");
  {
    int th, q, r;
    ecw_worker_counts(&th, &q, &r);
    lua_pushinteger(L, th);
    lua_setfield(L, -2, "worker_threads");
    lua_pushinteger(L, q);
    lua_setfield(L, -2, "jobs_queued");
    lua_pushinteger(L, r);
    lua_setfield(L, -2, "jobs_running");
  }
  return 1;
}

static int l_flush (lua_State *L) {
  (void)L;
  ecw_token_flush();
  ecw_guard_reset_all();
  return 0;
}

/* file_mode(path) -> permission bits (e.g. 384 for 0600) | nil, err */
static int l_file_mode (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) {
    ecw_err err;
    ecw_err_set(&err, ECW_E_CONFIG, 0, "cannot stat %s", path);
    return push_err(L, &err);
  }
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  return 1;
}

static int l_set_cache_limit (lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 100000, 1, "must be between 1 and 100000");
  ecw_token_set_limit((int)n);
  return 0;
}

static int l_set_pool_size (lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 64, 1, "must be between 1 and 64");
  ecw_http_set_pool_size((int)n);
  return 0;
}

static int l_now_ms (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ecw_now_ms());
  return 1;
}

static int l_normalize_scopes (lua_State *L) {
  scratch *s = new_scratch(L);
  s->scopes = check_scopes(L, 1);
  lua_pushstring(L, s->scopes);
  return 1;
}

static int l_margin_ms (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ecw_token_margin_ms(luaL_checkinteger(L, 1)));
  return 1;
}

static void push_jwk (lua_State *L, const ecw_jwk *j) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, j->kty); lua_setfield(L, -2, "kty");
  lua_pushstring(L, j->alg); lua_setfield(L, -2, "alg");
  lua_pushliteral(L, "sig"); lua_setfield(L, -2, "use");
  lua_pushstring(L, j->kid); lua_setfield(L, -2, "kid");
  if (j->n) {
    lua_pushstring(L, j->n); lua_setfield(L, -2, "n");
    lua_pushstring(L, j->e); lua_setfield(L, -2, "e");
  } else {
    lua_pushstring(L, j->crv); lua_setfield(L, -2, "crv");
    lua_pushstring(L, j->x); lua_setfield(L, -2, "x");
    lua_pushstring(L, j->y); lua_setfield(L, -2, "y");
  }
}

/* keygen{alg=, path=, bits=, overwrite=} -> public jwk | nil, err */
static int l_keygen (lua_State *L) {
  const char *alg, *path;
  int bits, overwrite;
  ecw_jwk j;
  ecw_err err;
  EVP_PKEY *k;
  luaL_checktype(L, 1, LUA_TTABLE);
  alg = opt_string(L, 1, "alg", 0);
  path = opt_string(L, 1, "path", 1);
  bits = (int)opt_ms(L, 1, "bits", 2048, 16384);
  overwrite = opt_bool(L, 1, "overwrite", 0);
  if (alg == NULL) alg = "RS384";
  if (strcmp(alg, "RS384") != 0 && strcmp(alg, "ES384") != 0)
    luaL_error(L, "option 'alg' must be \"RS384\" or \"ES384\"");
  if (bits < 2048) luaL_error(L, "option 'bits' must be at least 2048");
  memset(&err, 0, sizeof err);
  if ((k = ecw_keygen(alg, bits, path, overwrite, &err)) == NULL)
    return push_err(L, &err);
  if (!ecw_jwk_of(k, alg, &j, &err)) {
    EVP_PKEY_free(k);
    return push_err(L, &err);
  }
  EVP_PKEY_free(k);
  push_jwk(L, &j);    /* may raise on OOM: j's strings would leak, once */
  ecw_jwk_free(&j);
  return 1;
}

/* jwk(path [, alg]) -> the public JWK of an existing private key file */
static int l_jwk (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *alg = luaL_optstring(L, 2, NULL), *kalg;
  ecw_jwk j;
  ecw_err err;
  EVP_PKEY *k;
  memset(&err, 0, sizeof err);
  if ((k = ecw_key_load(path, alg, &kalg, &err)) == NULL)
    return push_err(L, &err);
  if (!ecw_jwk_of(k, kalg, &j, &err)) {
    EVP_PKEY_free(k);
    return push_err(L, &err);
  }
  EVP_PKEY_free(k);
  push_jwk(L, &j);
  ecw_jwk_free(&j);
  return 1;
}

/* ---- jobs on worker threads ------------------------------------------------ */

typedef struct ljob {
  ecw_lua_job *j;            /* NULL once released */
} ljob;

static const char *package_path (lua_State *L, const char *field) {
  const char *s;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, field);
  s = lua_tostring(L, -1);
  lua_pop(L, 2);              /* package.path stays referenced by package */
  return s ? s : "";
}

/* spawn{module=, func=, payload=} -> job | nil, err
 * The worker requires module with this state's package.path/cpath and calls
 * module[func](payload), which must return a string. */
static int l_spawn (lua_State *L) {
  const char *module, *func, *payload;
  size_t len = 0;
  ljob *lj;
  ecw_lua_job *j;
  ecw_err err;
  luaL_checktype(L, 1, LUA_TTABLE);
  module = opt_string(L, 1, "module", 1);
  func = opt_string(L, 1, "func", 1);
  lua_getfield(L, 1, "payload");
  payload = luaL_optlstring(L, -1, "", &len);
  lua_pop(L, 1);
  lj = lua_newuserdatauv(L, sizeof *lj, 0);
  lj->j = NULL;
  luaL_setmetatable(L, JOB_MT);
  j = ecw_lua_job_new(module, func, payload, len, package_path(L, "path"),
                      package_path(L, "cpath"));
  if (j == NULL) return luaL_error(L, "out of memory");
  j->job.refs = 2;            /* this handle and the worker */
  if (!ecw_worker_submit(&j->job)) {
    j->job.refs = 1;
    ecw_job_unref(&j->job);
    memset(&err, 0, sizeof err);
    ecw_err_set(&err, ECW_E_BUSY, 0,
                "too many lookups in flight: the worker queue is full");
    err.retryable = 1;
    return push_err(L, &err);
  }
  lj->j = j;
  return 1;
}

static ljob *check_job (lua_State *L) {
  return luaL_checkudata(L, 1, JOB_MT);
}

/* job:wait([ms]) -> true, result, failed | false (still running) */
static int job_wait (lua_State *L) {
  ljob *lj = check_job(L);
  lua_Integer ms = luaL_optinteger(L, 2, -1);
  int64_t deadline = ms < 0 ? INT64_MAX : ecw_now_ms() + ms;
  if (lj->j == NULL) luaL_argerror(L, 1, "request was released");
  if (!ecw_job_wait(&lj->j->job, deadline)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  /* Done: the worker no longer touches result. */
  lua_pushboolean(L, 1);
  lua_pushlstring(L, lj->j->result ? lj->j->result : "", lj->j->result_len);
  lua_pushboolean(L, lj->j->failed);
  return 3;
}

static int job_cancel (lua_State *L) {
  ljob *lj = check_job(L);
  if (lj->j) atomic_store(&lj->j->job.cancelled, 1);
  return 0;
}

static int job_status (lua_State *L) {
  ljob *lj = check_job(L);
  if (lj->j == NULL) lua_pushliteral(L, "released");
  else if (ecw_job_is_done(&lj->j->job))
    lua_pushstring(L, atomic_load(&lj->j->job.cancelled) ? "cancelled" : "done");
  else lua_pushliteral(L, "running");
  return 1;
}

/* __gc and __close: an abandoned request is cancelled, and freed by
 * whichever of this state and the worker lets go last. */
static int job_release (lua_State *L) {
  ljob *lj = check_job(L);
  if (lj->j) {
    if (!ecw_job_is_done(&lj->j->job)) atomic_store(&lj->j->job.cancelled, 1);
    ecw_job_unref(&lj->j->job);
    lj->j = NULL;
  }
  return 0;
}

static int l_set_workers (lua_State *L) {
  lua_Integer t = luaL_checkinteger(L, 1), q = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, t >= 1 && t <= 32, 1, "must be between 1 and 32");
  luaL_argcheck(L, q >= 0 && q <= 100000, 2, "must be between 0 and 100000");
  ecw_worker_configure((int)t, (int)q);
  return 0;
}

static const luaL_Reg job_meth[] = {
  {"wait", job_wait},
  {"cancel", job_cancel},
  {"status", job_status},
  {"release", job_release},
  {NULL, NULL}
};

static const luaL_Reg job_metameth[] = {
  {"__index", NULL},
  {"__gc", job_release},
  {"__close", job_release},
  {NULL, NULL}
};

static const luaL_Reg client_meth[] = {
  {"get", client_get},
  {"token", client_token},
  {"invalidate", client_invalidate},
  {"connect", client_connect},
  {"info", client_info},
  {"close", client_close},
  {NULL, NULL}
};

static const luaL_Reg client_metameth[] = {
  {"__index", NULL},
  {"__gc", client_close},
  {"__close", client_close},
  {"__tostring", client_tostring},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"client", l_client},
  {"stats", l_stats},
  {"flush", l_flush},
  {"set_cache_limit", l_set_cache_limit},
  {"set_pool_size", l_set_pool_size},
  {"now_ms", l_now_ms},
  {"file_mode", l_file_mode},
  {"normalize_scopes", l_normalize_scopes},
  {"margin_ms", l_margin_ms},
  {"keygen", l_keygen},
  {"spawn", l_spawn},
  {"set_workers", l_set_workers},
  {"jwk", l_jwk},
  {NULL, NULL}
};

static void create_metatables (lua_State *L) {
  if (luaL_newmetatable(L, CLIENT_MT)) {
    luaL_setfuncs(L, client_metameth, 0);
    luaL_newlib(L, client_meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, JOB_MT)) {
    luaL_setfuncs(L, job_metameth, 0);
    luaL_newlib(L, job_meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SCRATCH_MT)) {
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, ERROR_MT)) {
    lua_pushcfunction(L, err_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, err_concat);
    lua_setfield(L, -2, "__concat");
  }
  lua_pop(L, 1);
}

int luaopen_ecw_core (lua_State *L);

__attribute__((visibility("default")))
int luaopen_ecw_core (lua_State *L) {
  pthread_once(&pin_once, pin_self);
  if (!ecw_http_init()) return luaL_error(L, "ecw.core: libcurl init failed");
  create_metatables(L);
  count_state(L);
  luaL_newlib(L, funcs);
  lua_pushliteral(L, ECW_VERSION);
  lua_setfield(L, -2, "_VERSION");
  luaL_getmetatable(L, ERROR_MT);
  lua_setfield(L, -2, "error_mt");
  return 1;
}
