-- Each wrk connection heartbeats its own fixed set of 50 sessions (joined on first use),
-- so after the first round every request is a heartbeat of an online user.
local counter = 0
local thread_id = 0
setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
request = function()
  counter = counter + 1
  local n = counter % 50
  local body = string.format('{"roomId":"bench","userId":"t%d-u%d","sessionId":"t%d-s%d","interval":300000}', tid, n, tid, n)
  return wrk.format("POST", "/api/heartbeat", {["Content-Type"] = "application/json"}, body)
end
