-- Applies attempts' outcomes for one project, each fenced by its attempt:
-- a report for any other attempt changes nothing and is returned.
-- ARGV[2]: K, then K lease entries' nodes (`n` or `first-last`) whose
-- attempts have all been reported, then five per outcome: node, attempt,
-- kind, data, extra, where kind is `ok` (data: the result), `allow` (an
-- allowed failure; data: the error), `retry` (data: the error; extra: when,
-- ms) or `fail` (data: the error; extra: the job's path).
-- Returns {stale nodes, 1 if a release is left for later calls else 0}.
local K = tonumber(ARGV[2])
for i = 3, 2 + K do unleased[#unleased + 1] = ID .. ':' .. ARGV[i] end
local FIRST = 3 + K
local stale, fired, delayed = {}, {}, {}

-- The reported nodes are mostly neighbours: their states, attempts and
-- records are read as one substring each.
local lo, hi
for i = FIRST, #ARGV, 5 do
  local n = tonumber(ARGV[i])
  if not lo or n < lo then lo = n end
  if not hi or n > hi then hi = n end
end
local window = lo ~= nil and hi - lo < 4096
local sraw, araw, ndraw
if window then
  sraw = crange(S, lo, hi)
  araw = crange(A, lo, hi)
  ndraw = redis.call('GETRANGE', ND.key, 20 * lo, 20 * (hi + 1) - 1)
  if #ndraw ~= 20 * (hi - lo + 1) then corrupt('node', hi, ND.key) end
end
local states = {}
local function state_of(n)
  if window then return string.byte(sraw, n - lo + 1) end
  return cget(S, n)
end
local function attempts_of(n)
  if window then return (struct.unpack('>I4', araw, 4 * (n - lo) + 1)) end
  return cget(A, n)
end
local function vertex_of(n)
  if window then return (struct.unpack('>I4', ndraw, 20 * (n - lo) + 9)) end
  return nvertex(n)
end

for i = FIRST, #ARGV, 5 do
  local n, kind, data = tonumber(ARGV[i]), ARGV[i + 2], ARGV[i + 3]
  if state_of(n) ~= S_RUNNING or attempts_of(n) ~= tonumber(ARGV[i + 1]) then
    stale[#stale + 1] = n
  elseif kind == 'ok' or kind == 'allow' then
    if kind == 'ok' then
      results[ARGV[i]] = data
    else
      results[ARGV[i]] = 'null'
      errors[ARGV[i]] = data
    end
    states[n] = S_FINISHED
    cset(TF, n, REL)
    changes[#changes + 1] = 'finished:' .. ARGV[i]
    fired[#fired + 1] = vertex_of(n)
  elseif kind == 'retry' and RUNNING then
    errors[ARGV[i]] = data
    states[n] = S_RETRYING
    delayed[#delayed + 1] = NOW + tonumber(ARGV[i + 4])
    delayed[#delayed + 1] = ID .. ':' .. ARGV[i]
    event('retrying', n)
  else
    errors[ARGV[i]] = data
    states[n] = S_FAILED
    cset(TF, n, REL)
    event('failed', n)
    if kind == 'fail' then
      local func = cjson.decode(redis.call('HGET', JB, n)).func
      end_project('failed', {failed_path = ARGV[i + 4], failed_function = func, error = data})
    end
  end
end
-- The new states, before the cascade reads any.
if window then
  local bytes = {string.byte(sraw, 1, -1)}
  local any = false
  for n, st in pairs(states) do
    bytes[n - lo + 1] = st
    any = true
  end
  if any then
    redis.call('SETRANGE', S.key, lo, string.char(unpack(bytes)))
    invalidate(S, lo, hi)
  end
else
  for n, st in pairs(states) do cset(S, n, st) end
end
if #fired > 0 then keep_backlog(finish_jobs(fired, H)) end
if #delayed > 0 then
  redis.call('ZADD', DELAYED, unpack(delayed))
  redis.call('PUBLISH', DELAYED, ID)
end
local more = flush()
return {stale, more and 1 or 0}
