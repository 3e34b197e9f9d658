-- A startup script (ecw-host -S; lua.conf.xml startup-script) that loads
-- ecw and stays: like examples/freeswitch/ecw_warm.lua, whose state is
-- still open -- in freeswitch.msleep -- when FreeSWITCH shuts down.
local core = require "ecw.core"
assert(core._VERSION)
while true do
  freeswitch.msleep(1000)
end
