rockspec_format = "3.0"
package = "ecw"
version = "scm-1"
source = {
  url = "git+https://example.invalid/ecw.git",
}
description = {
  summary = "eClinicalWorks / SMART-on-FHIR lookups for FreeSWITCH mod_lua voice agents",
  detailed = [[
    A C core (SMART Backend Services tokens with a process-wide, scope-keyed
    cache; pooled libcurl) and a small Lua layer for patient lookups in the
    middle of a phone call.
  ]],
  license = "MIT",
}
-- lua-cjson is needed by the Lua layer; Debian ships it as lua-cjson, and
-- luarocks here cannot see Debian's copy, so it is not listed.
dependencies = {
  "lua >= 5.3, < 5.5",
}
external_dependencies = {
  -- Debian keeps curl.h in the multiarch include directory, where the
  -- compiler finds it but luarocks' header probe does not: probe the library.
  CURL    = { library = "curl" },
  OPENSSL = { header = "openssl/evp.h",  library = "crypto" },
  JSONC   = { header = "json-c/json.h",  library = "json-c" },
}
build = {
  type = "builtin",
  modules = {
    ["ecw.core"] = {
      sources = {
        "csrc/async.c", "csrc/client.c", "csrc/ecw_core.c", "csrc/guard.c", "csrc/http.c", "csrc/json.c",
        "csrc/jwk.c", "csrc/jwt.c", "csrc/oauth.c", "csrc/token_cache.c",
        "csrc/url.c", "csrc/util.c", "csrc/worker.c",
      },
      incdirs   = { "$(CURL_INCDIR)", "$(OPENSSL_INCDIR)", "$(JSONC_INCDIR)" },
      libdirs   = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)", "$(JSONC_LIBDIR)" },
      libraries = { "curl", "crypto", "json-c", "pthread", "dl" },
    },
    ecw = "lua/ecw.lua",
    ["ecw.async"]   = "lua/ecw/async.lua",
    ["ecw.client"]  = "lua/ecw/client.lua",
    ["ecw.errors"]  = "lua/ecw/errors.lua",
    ["ecw.fhir"]    = "lua/ecw/fhir.lua",
    ["ecw.log"]     = "lua/ecw/log.lua",
    ["ecw.patient"] = "lua/ecw/patient.lua",
    ["ecw.phone"]   = "lua/ecw/phone.lua",
    ["ecw.query"]   = "lua/ecw/query.lua",
    ["ecw.records"] = "lua/ecw/records.lua",
    ["ecw.say"]     = "lua/ecw/say.lua",
    ["ecw.scopes"]  = "lua/ecw/scopes.lua",
  },
  install = {
    bin = { ["ecw-keygen"] = "bin/ecw-keygen" },
  },
  copy_directories = { "examples" },
}
test = {
  type = "busted",
}
