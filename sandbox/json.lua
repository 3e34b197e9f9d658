-- JSON helpers shared by the sandbox handlers.
--
-- lua-cjson (2.1.0 as packaged by Debian) escapes every "/" as "\/". That is
-- valid JSON, but URLs in discovery documents and Bundle links then look
-- nothing like what eCW sends, so we undo it. The substitution is safe:
-- cjson escapes *every* slash, so each "/" in its output is the second half
-- of a "\/" escape and a "\" directly before "/" can only belong to it.
local cjson = require "cjson"

local M = {}

M.null = cjson.null

function M.encode(value)
  return (cjson.encode(value):gsub("\\/", "/"))
end

-- Returns the decoded value, or nil and a short message. Never throws:
-- request bodies come from the network.
function M.decode(text)
  if type(text) ~= "string" or text == "" then
    return nil, "empty JSON document"
  end
  local ok, value = pcall(cjson.decode, text)
  if not ok then
    return nil, "malformed JSON"
  end
  return value
end

return M
