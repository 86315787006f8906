
-- A project's keys and records, shared by every project script.
-- KEYS: 1 vx, 2 ed, 3 nd, 4 jb, 5 rs, 6 ch, 7 tl, 8 meta, 9 ev, 10 er,
--       11 leases, 12 delayed, 13 projects, 14.. the project's queues.
-- ARGV[1]: the project id. Time is the server's, so that every worker's
-- leases and retries share one clock.
-- Node record n is 32 bytes at byte 32*n: parent u32, index u32, vertex u32,
-- flags u8 (1 group, 2 blocking, 4 previous), state u8, queue u8, lost u8,
-- attempts u32, started u32, finished u32 (ms since submit + 1; 0 never),
-- extra u32 (a group's end vertex; a job's previous sibling, whose result
-- it takes).
local ND, JB, RS, CH, TL, META, EV, ER = KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local LEASES, DELAYED, PROJECTS = KEYS[11], KEYS[12], KEYS[13]
local ID = ARGV[1]
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local S_PENDING, S_READY, S_RUNNING, S_RETRYING, S_FINISHED, S_FAILED = 0, 1, 2, 3, 4, 5
local F_GROUP = 1

local function nbits(n, offset) return n * 256 + offset end
local function node_get(n)
  local r = redis.call('BITFIELD', ND, 'GET', 'u32', nbits(n, 0), 'GET', 'u32', nbits(n, 32),
    'GET', 'u32', nbits(n, 64), 'GET', 'u8', nbits(n, 96), 'GET', 'u8', nbits(n, 104),
    'GET', 'u8', nbits(n, 112), 'GET', 'u8', nbits(n, 120), 'GET', 'u32', nbits(n, 128))
  return {parent = r[1], index = r[2], vertex = r[3], flags = r[4], state = r[5], queue = r[6], lost = r[7], attempts = r[8]}
end
local function set_state(n, state) redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), state) end

local meta = redis.call('HMGET', META, 'status', 'submitted_ms', 'retention_s', 'queues')
local STATUS, SUBMITTED, RETENTION = meta[1], tonumber(meta[2]) or NOW, tonumber(meta[3]) or 604800
-- The caller names the project's queues from a cache; if the project has
-- come to use more (an append added one), refuse before writing anything.
if meta[4] and meta[4] ~= '' then
  local _, commas = string.gsub(meta[4], ',', '')
  if #KEYS - 13 < commas + 1 then
    return redis.error_reply('RQM_QUEUES the project uses more queues than the call named')
  end
end
local REL = NOW - SUBMITTED + 1
if REL < 1 then REL = 1 end
local RUNNING = STATUS == 'running'

local changes = {}
local function event(kind, n, extra)
  changes[#changes + 1] = kind .. ':' .. n .. (extra and (':' .. extra) or '')
end

local pushes = {}
local function on_job(n)
  if not RUNNING then return end
  local q = redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_READY, 'GET', 'u8', nbits(n, 112))[2]
  local list = pushes[q]
  if not list then list = {}; pushes[q] = list end
  list[#list + 1] = ID .. ':' .. n
end

-- A group's list, stored in batches so that appending one is O(batch):
-- field `<g>#` counts them, `<g>:<k>` holds batch k's node ids, packed.
local function children(g)
  local out = {}
  local batches = tonumber(redis.call('HGET', CH, g .. '#') or 0)
  for b = 0, batches - 1 do
    local raw = redis.call('HGET', CH, g .. ':' .. b) or ''
    for k = 0, #raw / 4 - 1 do out[#out + 1] = struct.unpack('>I4', raw, 4 * k + 1) end
  end
  return out
end

local function list_finished(g)
  for _, c in ipairs(children(g)) do
    if redis.call('BITFIELD', ND, 'GET', 'u8', nbits(c, 104))[1] ~= S_FINISHED then return false end
  end
  return true
end

local function expire_all()
  for k = 1, 10 do redis.call('EXPIRE', KEYS[k], RETENTION) end
end

local function end_project(status, fields)
  if not RUNNING then return end
  RUNNING = false
  local args = {'status', status, 'ended_ms', NOW}
  for k, v in pairs(fields or {}) do args[#args + 1] = k; args[#args + 1] = v end
  redis.call('HSET', META, unpack(args))
  event('ended', 0, status)
  redis.call('PUBLISH', PROJECTS .. ':ended', ID)
  expire_all()
end

local function group_result(g)
  local kids = children(g)
  local parts = {}
  local i = 1
  while i <= #kids do
    local batch = {}
    for j = i, math.min(i + 999, #kids) do batch[#batch + 1] = kids[j] end
    local values = redis.call('HMGET', RS, unpack(batch))
    for _, v in ipairs(values) do parts[#parts + 1] = v or 'null' end
    i = i + 1000
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function on_group(role, n)
  if role == ROLE_START then
    if not RUNNING then return end
    redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_RUNNING, 'SET', 'u32', nbits(n, 160), REL)
  else
    if redis.call('BITFIELD', ND, 'GET', 'u8', nbits(n, 104))[1] ~= S_RUNNING then return end
    if not RUNNING and not list_finished(n) then return end
    redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_FINISHED, 'SET', 'u32', nbits(n, 192), REL)
    redis.call('HSET', RS, n, group_result(n))
    if n == 0 then end_project('finished') end
  end
end

-- Pushes released jobs to their queues and publishes what changed.
local function flush()
  for q, list in pairs(pushes) do
    local key = KEYS[14 + q]
    local i = 1
    while i <= #list do
      local batch = {}
      for j = i, math.min(i + 999, #list) do batch[#batch + 1] = list[j] end
      redis.call('RPUSH', key, unpack(batch))
      i = i + 1000
    end
    redis.call('PUBLISH', key, #list)
  end
  pushes = {}
  if #changes > 0 then
    redis.call('XADD', EV, 'MAXLEN', '~', 10000, '*', 'c', table.concat(changes, ' '))
    changes = {}
  end
end
