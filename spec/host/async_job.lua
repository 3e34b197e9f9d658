-- A lookup run by ecw.core.spawn on a module worker thread, in the
-- worker's own Lua state (used by spec/host/abandon.lua).
-- payload: "fhir_base\tclient_id\tprivate_key\tkid\tca_file\tscopes"
local core = require "ecw.core"
local M = {}

function M.token(payload)
  local base, id, key, kid, ca, scopes = payload:match(
    "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
  local h = assert(core.client{ fhir_base = base, client_id = id,
                                private_key = key, kid = kid, ca_file = ca })
  local info, err = h:token(scopes, { timeout_ms = 10000 })
  return info and "ok" or ("error:" .. err.code)
end

return M
