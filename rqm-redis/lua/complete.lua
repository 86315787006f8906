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
local stale = {}
local fired = {}
local delayed = {}

local function one(i)
  local n, attempt, kind, data, extra = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if cget(S, n) ~= S_RUNNING or cget(A, n) ~= attempt then
    stale[#stale + 1] = n
    return
  end
  if kind == 'ok' or kind == 'allow' then
    if kind == 'ok' then
      results[ARGV[i]] = data
    else
      results[ARGV[i]] = 'null'
      errors[ARGV[i]] = data
    end
    cset(S, n, S_FINISHED)
    cset(TF, n, REL)
    changes[#changes + 1] = 'finished:' .. ARGV[i]
    fired[#fired + 1] = nvertex(n)
  elseif kind == 'retry' and RUNNING then
    errors[ARGV[i]] = data
    cset(S, n, S_RETRYING)
    delayed[#delayed + 1] = NOW + tonumber(extra)
    delayed[#delayed + 1] = ID .. ':' .. ARGV[i]
    event('retrying', n)
  else
    errors[ARGV[i]] = data
    cset(S, n, S_FAILED)
    cset(TF, n, REL)
    event('failed', n)
    if kind == 'fail' then
      local func = cjson.decode(redis.call('HGET', JB, n)).func
      end_project('failed', {failed_path = extra, failed_function = func, error = data})
    end
  end
end

local i = 3 + K
while i <= #ARGV do
  -- A run of successes of consecutive nodes in one attempt is checked and
  -- written as one substring per field.
  local j = i
  if ARGV[i + 2] == 'ok' then
    local n = tonumber(ARGV[i])
    while j + 5 <= #ARGV and ARGV[j + 7] == 'ok' and ARGV[j + 6] == ARGV[i + 1]
      and tonumber(ARGV[j + 5]) == n + (j + 5 - i) / 5 do
      j = j + 5
    end
  end
  local len = (j - i) / 5 + 1
  local a = tonumber(ARGV[i])
  if len >= 4 and all_are(S, a, a + len - 1, S_RUNNING) and all_are(A, a, a + len - 1, tonumber(ARGV[i + 1])) then
    cfill(S, a, a + len - 1, S_FINISHED)
    cfill(TF, a, a + len - 1, REL)
    for k = i, j, 5 do
      results[ARGV[k]] = ARGV[k + 3]
      changes[#changes + 1] = 'finished:' .. ARGV[k]
      fired[#fired + 1] = nvertex(a + (k - i) / 5)
    end
  else
    for k = i, j, 5 do one(k) end
  end
  i = j + 5
end
if #fired > 0 then keep_backlog(finish_jobs(fired, H)) end
if #delayed > 0 then
  redis.call('ZADD', DELAYED, unpack(delayed))
  redis.call('PUBLISH', DELAYED, ID)
end
local more = flush()
return {stale, more and 1 or 0}
