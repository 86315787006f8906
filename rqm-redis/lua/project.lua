
-- A project's keys and records, shared by every project script.
-- KEYS: 1 vx, 2 ed, 3 vp (the graph, see graph.lua), 4 nd, 5 nl, 6 jb,
--       7 rs, 8 ch, 9 tl, 10 meta, 11 ev, 12 er, 13 bl (release backlog),
--       14 pf (profiles: a job's function and options, shared), 15 leases,
--       16 delayed, 17 projects, 18 releases, 19.. the project's queues.
-- ARGV[1]: the project id. Time is the server's, so that every worker's
-- leases and retries share one clock.
-- Node n: its record in nd is 20 bytes at byte 20*n: parent u32, index u32,
-- vertex u32, flags u8 (1 group, 2 blocking, 4 previous), queue u8, lost
-- u8, a spare byte, extra u32 (a group's end vertex; a job's previous
-- sibling, whose result it takes). What changes as it runs is its live
-- record in nl, 13 bytes at byte 13*n: state u8, attempts u32, started
-- u32, finished u32 (ms since the project opened + 1; 0 never). A hop of a
-- chain reads and writes its two nodes' records as one substring each; a
-- run of like records (a fan-out) is compared and filled with string.rep.
-- Queue and lease entries name a project and a node or a run of nodes:
-- `<id>:<n>` or `<id>:<first>-<last>`.
-- Per call, set by `project_setup`: the keys, the project id, the clock,
-- the records' caches, the project's meta, and what the call notes until
-- `flush` writes it.
local JB, RS, CH, TL, META, EV, ER, BL, PF
local LEASES, DELAYED, PROJECTS, RELEASES
local ID, NOW
local ND, L
local meta, STATUS, SUBMITTED, RETENTION, REL, RUNNING
-- Nodes and vertices stored (an append adds to them).
local NODES, VERTICES
local changes, results, errors, unleased, pushes, ended, backlog, STATUS_NOW
-- Hand-off: a caller that reports outcomes may begin, there and then, up
-- to HANDOFF of the jobs they make ready on its queues (a chain's next
-- job), instead of their going through a queue: `handoff` sets it up.
local HANDOFF, HANDOFF_QUEUES, LEASE_MS
local handed, handed_previous, handed_payloads, new_leases

local FIRST_QUEUE = 19
local OWN_KEYS = 14
local S_PENDING, S_READY, S_RUNNING, S_RETRYING, S_FINISHED, S_FAILED = 0, 1, 2, 3, 4, 5
-- Work per call (see graph.lua).
local PROJECT_BUDGET = 2000
-- How long the caller that left a backlog has to go on with it before any
-- worker's keeper does.
local CLAIM_MS = 2000
local MANY = 1000

-- Live records: read in cached blocks, changed in an overlay (a whole
-- record per node changed) and written back by `lflush`, one SETRANGE per
-- run of neighbours.
local LIVE, LIVE_BYTES = '>BI4I4I4', 13
-- The fields, as indices into a record's values.
local S, A, TS, TF = 1, 2, 3, 4
local FIELD_AT, FIELD_FMT = {0, 1, 5, 9}, {'B', '>I4', '>I4', '>I4'}

-- Record n's values, {state, attempts, started, finished}, from the bytes
-- at `at` of raw.
local function unpack_live(raw, at)
  local s, a, ts, tf = struct.unpack(LIVE, raw, at)
  return {s, a, ts, tf}
end
local function lget(f, n)
  local rec = L.over[n]
  if rec then return rec[f] end
  local raw, at = raw_of(L, n)
  return (struct.unpack(FIELD_FMT[f], raw, at + FIELD_AT[f]))
end
-- Puts record n in the overlay: its values as read from `raw` at `at`
-- (a substring the caller holds), else from the cached blocks.
local function lseed(n, raw, at)
  local rec = L.over[n]
  if rec then return rec end
  if raw then rec = unpack_live(raw, at) else rec = unpack_live(raw_of(L, n)) end
  L.over[n] = rec
  L.dirty = L.dirty + 1
  return rec
end
local function lset(f, n, v)
  lseed(n)[f] = v
end
local function pack_live(r)
  return struct.pack(LIVE, r[1], r[2], r[3], r[4])
end
local function lflush()
  if L.dirty > 0 then flush_overlay(L, pack_live) end
end
-- The bytes of records first..last, as they stand.
local function lrun(first, last)
  lflush()
  return sread(L, first, last)
end
-- How many records from `at` (1-based) of raw, at most `len`, are alike
-- the first.
local function alike(raw, at, len)
  local one = string.sub(raw, at, at + LIVE_BYTES - 1)
  if string.sub(raw, at, at + len * LIVE_BYTES - 1) == string.rep(one, len) then return len end
  local k = 1
  while k < len and string.sub(raw, at + k * LIVE_BYTES, at + (k + 1) * LIVE_BYTES - 1) == one do k = k + 1 end
  return k
end
-- The values records first..last share when they are all alike (a run
-- released or begun together), else nil; and their bytes.
local function lcommon(first, last)
  local raw = lrun(first, last)
  if alike(raw, 1, last - first + 1) == last - first + 1 then return unpack_live(raw, 1), raw end
  return nil, raw
end
-- Sets records first..last to the values `rec`.
local function lfill(first, last, rec)
  lflush()
  swrite(L, first, string.rep(pack_live(rec), last - first + 1))
  invalidate(L, first, last)
end
-- Sets field f of records first..last to v: one substring when they are
-- alike, else record by record.
local function lfill_field(f, first, last, v)
  local rec, raw = lcommon(first, last)
  if rec then
    rec[f] = v
    lfill(first, last, rec)
  else
    for k = 0, last - first do lseed(first + k, raw, LIVE_BYTES * k + 1)[f] = v end
  end
end

local function nflags(n)
  local raw, at = raw_of(ND, n)
  return string.byte(raw, at + 12)
end
local function nqueue(n)
  local raw, at = raw_of(ND, n)
  return string.byte(raw, at + 13)
end
local function nlost(n)
  local raw, at = raw_of(ND, n)
  return string.byte(raw, at + 14)
end
local function nvertex(n)
  local raw, at = raw_of(ND, n)
  return (struct.unpack('>I4', raw, at + 8))
end
local function nextra(n)
  local raw, at = raw_of(ND, n)
  return (struct.unpack('>I4', raw, at + 16))
end
local function set_lost(n, lost)
  local key, at = place_of(ND, n)
  redis.call('SETRANGE', key, at + 14, string.char(lost))
  invalidate(ND, n, n)
end

-- The shards after the first of the graph's strings (vx, vp) and of the
-- node strings (nd, nl).
local function graph_shards()
  return more_shards({}, VERTICES, {KEYS[1], KEYS[3]})
end
local function node_shards()
  return more_shards({}, NODES, {KEYS[4], KEYS[5]})
end
local function all_shards()
  return more_shards(graph_shards(), NODES, {KEYS[4], KEYS[5]})
end
local function event(kind, n, extra)
  changes[#changes + 1] = kind .. ':' .. n .. (extra and (':' .. extra) or '')
end

local function push(q, item)
  local list = pushes[q]
  if not list then list = {}; pushes[q] = list end
  list[#list + 1] = item
end

local H = {}

local function handoff(want, lease_ms, queue_names)
  HANDOFF, LEASE_MS = want, lease_ms
  if want <= 0 or not meta[4] then return end
  local accepted = {}
  for name in string.gmatch(queue_names, '[^,]+') do accepted[name] = true end
  local i = 0
  for name in string.gmatch(meta[4], '[^,]+') do
    if accepted[name] then HANDOFF_QUEUES[i] = true end
    i = i + 1
  end
end

-- An attempt begun, as begin.lua returns it: node, attempt, and an input
-- slot, false until `fill_inputs`; a job that takes the previous node's
-- result is noted in `previous`.
local function row(rows, previous, n, attempt)
  rows[#rows + 1] = n
  rows[#rows + 1] = attempt
  rows[#rows + 1] = false
  if bit.band(nflags(n), 4) ~= 0 then previous[#previous + 1] = {#rows, nextra(n)} end
end

-- Begins ready job n's next attempt and notes its row.
local function start_attempt(n, rows, previous)
  local attempt = lget(A, n) + 1
  lset(S, n, S_RUNNING)
  lset(A, n, attempt)
  -- A first attempt has no start time yet: no need to read it.
  if attempt == 1 or lget(TS, n) == 0 then lset(TS, n, REL) end
  row(rows, previous, n, attempt)
  event('started', n, attempt)
end

local function begin_now(n, payload)
  handed_payloads[#handed_payloads + 1] = payload
  start_attempt(n, handed, handed_previous)
  new_leases[#new_leases + 1] = NOW + LEASE_MS
  new_leases[#new_leases + 1] = ID .. ':' .. n
end

function H.job(n)
  if not RUNNING then return end
  local q = nqueue(n)
  if HANDOFF > 0 and HANDOFF_QUEUES[q] then
    -- A payload that does not read (a tampered key) leaves the job to the
    -- queue, whose taker reports the project corrupt.
    local payload = redis.pcall('HGET', JB, n)
    if type(payload) == 'string' then
      HANDOFF = HANDOFF - 1
      begin_now(n, payload)
      return
    end
  end
  lset(S, n, S_READY)
  push(q, n)
end
function H.run(first, last, queue)
  if not RUNNING then return end
  lfill_field(S, first, last, S_READY)
  push(queue, {first, last})
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
    if lget(S, c) ~= S_FINISHED then return false end
  end
  return true
end

-- A job's path and function, from its payload and profile.
local function job_of(n)
  local payload = cjson.decode(redis.call('HGET', JB, n))
  local profile = cjson.decode(redis.call('HGET', PF, payload.f))
  return payload.p, profile.func
end

local function end_project(status, fields)
  if not RUNNING then return end
  RUNNING = false
  STATUS_NOW = status
  local args = {'status', status, 'ended_ms', NOW}
  for k, v in pairs(fields or {}) do args[#args + 1] = k; args[#args + 1] = v end
  redis.call('HSET', META, unpack(args))
  event('ended', 0, status)
  ended = true
end

-- A group's result is not stored: readers assemble it from its list's
-- results (a group of 100,000 would make one long call otherwise).
function H.group(role, n)
  if role == ROLE_START then
    if not RUNNING then return end
    lset(S, n, S_RUNNING)
    lset(TS, n, REL)
  else
    if lget(S, n) ~= S_RUNNING then return end
    if not RUNNING and not list_finished(n) then return end
    lset(S, n, S_FINISHED)
    lset(TF, n, REL)
    if n == 0 then end_project('finished') end
  end
end

-- Values of many fields of a hash, `nil` where missing, in calls of MANY.
local function hmget(key, fields)
  local out = {}
  local i = 1
  while i <= #fields do
    local batch = {}
    for j = i, math.min(i + MANY - 1, #fields) do batch[#batch + 1] = fields[j] end
    local values = redis.call('HMGET', key, unpack(batch))
    for k = 1, #batch do out[i + k - 1] = values[k] end
    i = i + MANY
  end
  return out
end

-- Keeps what a cascade left for later calls (see release.lua).
local function keep_backlog(rest)
  for _, c in ipairs(rest) do
    backlog = backlog or {}
    backlog[#backlog + 1] = c
  end
end

local function hset_many(key, map)
  local args = {}
  for k, v in pairs(map) do
    args[#args + 1] = k
    args[#args + 1] = v
    if #args >= 2 * MANY then
      redis.call('HSET', key, unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

local function in_calls(command, key, list)
  local i = 1
  while i <= #list do
    local batch = {}
    for j = i, math.min(i + MANY - 1, #list) do batch[#batch + 1] = list[j] end
    redis.call(command, key, unpack(batch))
    i = i + MANY
  end
end

-- Queue entries for the nodes and runs pushed, neighbours joined.
local function entries(list)
  local out = {}
  local a, b = nil, nil
  local function emit()
    if a then out[#out + 1] = ID .. ':' .. a .. (b > a and ('-' .. b) or '') end
  end
  for _, item in ipairs(list) do
    local f, l
    if type(item) == 'table' then f, l = item[1], item[2] else f, l = item, item end
    if a and f == b + 1 then
      b = l
    else
      emit()
      a, b = f, l
    end
  end
  emit()
  return out
end

-- Fills the input slots of rows (see `row`): the previous node's result,
-- noted in this call or stored, or `g:<node>` for a group's, which the
-- caller assembles.
local function fill_inputs(rows, previous)
  local fields, at = {}, {}
  for _, p in ipairs(previous) do
    local node = p[2]
    if bit.band(nflags(node), 1) ~= 0 then
      rows[p[1]] = 'g:' .. node
    else
      local pending = results[tostring(node)] or results[node]
      if pending then
        rows[p[1]] = pending
      else
        fields[#fields + 1] = node
        at[#at + 1] = p[1]
      end
    end
  end
  local values = hmget(RS, fields)
  for k, pos in ipairs(at) do rows[pos] = values[k] or 'null' end
end

-- The jobs handed off, as begin.lua returns them, and their payloads.
local function handed_rows()
  fill_inputs(handed, handed_previous)
  return handed, handed_payloads
end

-- Writes everything noted: records, results, errors, leases let go, jobs
-- pushed to their queues (and a publish per queue), the events, the
-- backlog; at the end of the project, the expiry of its keys. Returns
-- whether a backlog is left for later calls.
local function flush()
  cflush(P)
  lflush()
  hset_many(RS, results)
  hset_many(ER, errors)
  in_calls('ZREM', LEASES, unleased)
  if #new_leases > 0 then
    redis.call('ZADD', LEASES, unpack(new_leases))
    new_leases = {}
  end
  for q, list in pairs(pushes) do
    local key = KEYS[FIRST_QUEUE + q]
    in_calls('RPUSH', key, entries(list))
    redis.call('PUBLISH', key, #list)
  end
  if #changes > 0 then
    redis.call('XADD', EV, 'MAXLEN', '~', 10000, '*', 'c', table.concat(changes, ' '))
  end
  local more = false
  if ended then
    redis.call('DEL', BL)
    redis.call('ZREM', RELEASES, ID)
  elseif backlog then
    in_calls('RPUSH', BL, cursors_text(backlog))
    redis.call('ZADD', RELEASES, NOW + CLAIM_MS, ID)
    more = true
  end
  if ended then
    redis.call('PUBLISH', PROJECTS .. ':ended', ID)
    if STATUS_NOW == 'finished' then
      -- Every job has finished: no step reads the graph again, and the
      -- status reads the node records, results and payloads only.
      redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], CH, TL)
      for _, k in ipairs(graph_shards()) do redis.call('DEL', k) end
    else
      for _, k in ipairs(graph_shards()) do redis.call('EXPIRE', k, RETENTION) end
    end
    for k = 1, OWN_KEYS do redis.call('EXPIRE', KEYS[k], RETENTION) end
    for _, k in ipairs(node_shards()) do redis.call('EXPIRE', k, RETENTION) end
  end
  changes, results, errors, unleased, pushes, backlog = {}, {}, {}, {}, {}, nil
  return more
end

-- Starts a call on project ARGV[1] (KEYS as above). Returns an error reply
-- when the call must be refused before it writes anything.
local function project_setup(keys, args)
  graph_setup(keys, args)
  JB, RS, CH, TL, META, EV, ER, BL = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]
  PF = KEYS[14]
  LEASES, DELAYED, PROJECTS, RELEASES = KEYS[15], KEYS[16], KEYS[17], KEYS[18]
  ID = ARGV[1]
  local clock = redis.call('TIME')
  NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  BUDGET = PROJECT_BUDGET
  ND = static(KEYS[4], 20, 'node')
  L = static(KEYS[5], LIVE_BYTES, 'node')
  L.over, L.dirty = {}, 0
  meta = redis.call('HMGET', META, 'status', 'submitted_ms', 'retention_s', 'queues',
    'shard', 'next_node', 'next_vertex')
  STATUS, SUBMITTED, RETENTION = meta[1], tonumber(meta[2]) or NOW, tonumber(meta[3]) or 604800
  local shard = tonumber(meta[5])
  if shard and shard >= BLOCK and shard % BLOCK == 0 then SHARD = shard end
  NODES, VERTICES = tonumber(meta[6]) or 0, tonumber(meta[7]) or 0
  -- The caller names the project's queues from a cache; if the project has
  -- come to use more (an append added one), refuse before writing anything.
  if meta[4] and meta[4] ~= '' then
    local _, commas = string.gsub(meta[4], ',', '')
    if #KEYS - FIRST_QUEUE + 1 < commas + 1 then
      return redis.error_reply('RQM_QUEUES the project uses more queues than the call named')
    end
  end
  REL = NOW - SUBMITTED + 1
  if REL < 1 then REL = 1 end
  RUNNING = STATUS == 'running'
  changes, results, errors, unleased, pushes = {}, {}, {}, {}, {}
  ended, backlog, STATUS_NOW = false, nil, STATUS
  HANDOFF, HANDOFF_QUEUES, LEASE_MS = 0, {}, 0
  handed, handed_previous, handed_payloads, new_leases = {}, {}, {}, {}
  return nil
end
