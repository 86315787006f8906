-- Makes jobs ready again, ARGV[2] says why: `retry`, their backoff has
-- passed; `lost`, their lease expired (a worker died or was cut off), so the
-- attempt counts, and a job lost more than ARGV[3] times fails for good.
-- ARGV[4..]: node ids.
local why, max_lost = ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  local n = tonumber(ARGV[i])
  local rec = node_get(n)
  if why == 'lost' and rec.state == S_READY then
    -- Taken from its queue but never begun: its worker died in between.
    if RUNNING then on_job(n) end
  elseif why == 'retry' and rec.state == S_RETRYING then
    if RUNNING then on_job(n) else set_state(n, S_FAILED) end
  elseif why == 'lost' and rec.state == S_RUNNING then
    local lost = rec.lost + 1
    redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 120), math.min(lost, 255))
    if lost > max_lost then
      local message = 'the job was lost ' .. lost .. ' times (its worker died or lost its lease each time); given up after ' .. max_lost .. ' recoveries'
      redis.call('HSET', ER, n, message)
      redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_FAILED, 'SET', 'u32', nbits(n, 192), REL)
      event('failed', n)
      local payload = cjson.decode(redis.call('HGET', JB, n))
      end_project('failed', {failed_path = payload.path, failed_function = payload.func, error = message})
    elseif RUNNING then
      on_job(n)
      event('lost', n, lost)
    else
      set_state(n, S_FAILED)
    end
  end
end
flush()
return 1
