-- The one place the Lua layer reports events.  Silent until a sink is set
-- (ecw.set_logger, planned).  Callers pass only non-PHI facts: an event
-- name, a resource type, counts, error codes; never values from a request
-- or a response.
local pcall = pcall

local _M = { sink = nil }

function _M.emit(level, event, fields)
  local sink = _M.sink
  if sink then
    -- A broken logger must not break the call it reports on.
    pcall(sink, level, event, fields)
  end
end

return _M
