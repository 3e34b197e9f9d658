-- GET /fhir/r4/{practice}/.well-known/smart-configuration
--
-- Shaped like eCW's document. In particular it has NO
-- token_endpoint_auth_signing_alg_values_supported: eCW omits it, so a
-- client must not require it to pick RS384/ES384.
local scopes = require "sandbox.scopes"
local response = require "sandbox.response"

local M = {}

-- With config relative_token_endpoint=true the endpoint is published as the
-- absolute-path reference "/oauth/oauth2/token". Resolved (RFC 3986 5.2)
-- against the FHIR base or the discovery URL it gives the same URL as the
-- absolute form, whatever the base path and trailing slash are -- unlike a
-- "../.." reference, whose meaning depends on both.
M.RELATIVE_TOKEN_PATH = "/oauth/oauth2/token"

local SUPPORTED_SCOPES = scopes.supported()

function M.handle(ctx, req)
  if req.method ~= "GET" then
    return response.json(405, { error = "method not allowed" }, { Allow = "GET" })
  end
  local token_endpoint = ctx.urls.token_url
  if ctx.config:get("relative_token_endpoint") then
    token_endpoint = M.RELATIVE_TOKEN_PATH
  end
  if ctx.config:get("omit_token_endpoint") then
    token_endpoint = nil
  end
  return response.json(200, {
    issuer = ctx.urls.base_url .. "/oauth/oauth2",
    authorization_endpoint = ctx.urls.base_url .. "/oauth/oauth2/authorize",
    token_endpoint = token_endpoint,
    token_endpoint_auth_methods_supported = { "private_key_jwt", "client_secret_basic" },
    grant_types_supported = { "authorization_code", "client_credentials" },
    response_types_supported = { "code" },
    code_challenge_methods_supported = { "S256" },
    scopes_supported = SUPPORTED_SCOPES,
    capabilities = {
      "launch-standalone", "client-public", "client-confidential-symmetric",
      "client-confidential-asymmetric", "context-standalone-patient",
      "permission-offline", "permission-patient", "permission-user",
      "permission-v1", "permission-v2",
    },
  })
end

return M
