-- Applies attempts' outcomes for one project, each fenced by its attempt:
-- a report for any other attempt changes nothing and is returned.
-- ARGV[2..4]: the hand-off (see project.lua): how many jobs made ready the
-- caller begins now, their lease in ms, and the caller's queues
-- (comma-separated). ARGV[5]: K, then K lease entries' nodes (`n` or
-- `first-last`) whose attempts have all been reported, then five per
-- outcome: node, attempt, kind, data, extra, where kind is `ok` (data: the
-- result), `allow` (an allowed failure; data: the error), `retry` (data:
-- the error; extra: when, ms) or `fail` (data: the error; extra: the job's
-- path).
-- Returns {stale nodes, 1 if a release is left for later calls else 0,
-- the jobs handed off as begin.lua returns them, their payloads}.
handoff(tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
local K = tonumber(ARGV[5])
for i = 6, 5 + K do unleased[#unleased + 1] = ID .. ':' .. ARGV[i] end
local FIRST = 6 + K
local stale, fired, delayed = {}, {}, {}

-- The reported nodes are mostly neighbours: their live and node records
-- are read as one substring each.
local lo, hi
for i = FIRST, #ARGV, 5 do
  local n = tonumber(ARGV[i])
  if not lo or n < lo then lo = n end
  if not hi or n > hi then hi = n end
end
-- (For a few outcomes, the cached blocks do with fewer reads.)
local window = lo ~= nil and hi - lo < 4096 and #ARGV - FIRST + 1 >= 5 * 8
local lraw, ndraw
if window then
  lraw = lrun(lo, hi)
  ndraw = sread(ND, lo, hi)
end
local finished_runs = {}
-- The byte of lraw where node n's live record starts.
local function at_of(n) return LIVE_BYTES * (n - lo) + 1 end
local function state_of(n)
  if window then return string.byte(lraw, at_of(n)) end
  return lget(S, n)
end
local function attempts_of(n)
  if window then return (struct.unpack('>I4', lraw, at_of(n) + 1)) end
  return lget(A, n)
end
local function vertex_of(n)
  if window then return (struct.unpack('>I4', ndraw, 20 * (n - lo) + 9)) end
  return nvertex(n)
end
-- Sets field f of node n's record, from the window when there is one.
local function set(f, n, v)
  if window then lseed(n, lraw, at_of(n))[f] = v else lset(f, n, v) end
end

-- A run of successes of consecutive nodes whose live records are alike
-- (begun together), all running the attempt the report names, is checked
-- and written as one substring.
local function run_from(i)
  if not window or ARGV[i + 2] ~= 'ok' then return i end
  local a = tonumber(ARGV[i])
  local j = i
  while j + 5 <= #ARGV and ARGV[j + 7] == 'ok' and ARGV[j + 6] == ARGV[i + 1]
    and tonumber(ARGV[j + 5]) == a + (j + 5 - i) / 5 do
    j = j + 5
  end
  local len = alike(lraw, at_of(a), (j - i) / 5 + 1)
  if len < 4 or state_of(a) ~= S_RUNNING or attempts_of(a) ~= tonumber(ARGV[i + 1]) then
    return i
  end
  j = i + 5 * (len - 1)
  local b = a + len - 1
  for k = i, j, 5 do
    results[ARGV[k]] = ARGV[k + 3]
    fired[#fired + 1] = vertex_of(a + (k - i) / 5)
  end
  local rec = unpack_live(lraw, at_of(a))
  rec[S], rec[TF] = S_FINISHED, REL
  finished_runs[#finished_runs + 1] = {a, b, rec}
  changes[#changes + 1] = 'finished:' .. a .. '-' .. b
  return j + 5
end

-- One outcome on its own.
local function one(i)
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
    set(S, n, S_FINISHED)
    set(TF, n, REL)
    changes[#changes + 1] = 'finished:' .. ARGV[i]
    fired[#fired + 1] = vertex_of(n)
  elseif kind == 'retry' and RUNNING then
    errors[ARGV[i]] = data
    set(S, n, S_RETRYING)
    delayed[#delayed + 1] = NOW + tonumber(ARGV[i + 4])
    delayed[#delayed + 1] = ID .. ':' .. ARGV[i]
    event('retrying', n)
  else
    errors[ARGV[i]] = data
    set(S, n, S_FAILED)
    set(TF, n, REL)
    event('failed', n)
    if kind == 'fail' then
      local _, func = job_of(n)
      end_project('failed', {failed_path = ARGV[i + 4], failed_function = func, error = data})
    end
  end
end

local i = FIRST
while i <= #ARGV do
  local after = run_from(i)
  if after > i then
    i = after
  else
    one(i)
    i = i + 5
  end
end
-- The new records, before the cascade reads any: single outcomes' in the
-- overlay, then the runs' (which write the overlay first).
for _, r in ipairs(finished_runs) do lfill(r[1], r[2], r[3]) end
if #fired > 0 then keep_backlog(finish_jobs(fired, H)) end
if #delayed > 0 then
  redis.call('ZADD', DELAYED, unpack(delayed))
  redis.call('PUBLISH', DELAYED, ID)
end
local rows, payloads = handed_rows()
local more = flush()
return {stale, more and 1 or 0, rows, payloads}
