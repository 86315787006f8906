-- Applies attempts' outcomes for one project, each fenced by its attempt:
-- a report for any other attempt changes nothing and is returned.
-- ARGV[2..], five per outcome: node, attempt, kind, data, extra, where kind
-- is `ok` (data: the result), `allow` (an allowed failure; data: the
-- error), `retry` (data: the error; extra: when, ms) or `fail` (data: the
-- error; extra: the job's path).
local stale = {}
local fired = {}
for i = 2, #ARGV, 5 do
  local n, attempt, kind, data, extra = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local rec = node_get(n)
  if rec.state ~= S_RUNNING or rec.attempts ~= attempt then
    stale[#stale + 1] = n
  else
    redis.call('ZREM', LEASES, ID .. ':' .. n)
    if kind == 'ok' or kind == 'allow' then
      if kind == 'ok' then
        redis.call('HSET', RS, n, data)
      else
        redis.call('HSET', RS, n, 'null')
        redis.call('HSET', ER, n, data)
      end
      redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_FINISHED, 'SET', 'u32', nbits(n, 192), REL)
      event('finished', n)
      fired[#fired + 1] = rec.vertex
    elseif kind == 'retry' and RUNNING then
      redis.call('HSET', ER, n, data)
      set_state(n, S_RETRYING)
      redis.call('ZADD', DELAYED, NOW + tonumber(extra), ID .. ':' .. n)
      redis.call('PUBLISH', DELAYED, ID)
      event('retrying', n)
    else
      redis.call('HSET', ER, n, data)
      redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_FAILED, 'SET', 'u32', nbits(n, 192), REL)
      event('failed', n)
      if kind == 'fail' then
        local func = cjson.decode(redis.call('HGET', JB, n)).func
        end_project('failed', {failed_path = extra, failed_function = func, error = data})
      end
    end
  end
end
if #fired > 0 then finish_jobs(fired, on_job, on_group) end
flush()
return stale
