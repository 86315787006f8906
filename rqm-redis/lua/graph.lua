-- The counter graph in Redis: generic vertex and edge operations, no tree
-- semantics (rqm-core's compiler decides every vertex and edge).
--
-- KEYS[1] vx: vertex v's record, 20 bytes at byte 20*v, big-endian:
--   meta u32 (role << 30 | owner node id), e1, e2 u32 (first two out-edges,
--   target + 1; 0 for none), head, tail u32 (byte offset + 1 of the first
--   and last overflow block; 0 for none).
-- KEYS[2] ed: overflow blocks: count u32, next u32 (offset + 1, or 0), then
--   count targets u32; or, with the count's top bit set, a range: first u32,
--   owner u32, queue u32, for targets first..first+count-1 that are jobs of
--   nodes owner.. on one queue (owner u32 max: not such a run).
-- KEYS[3] vp: vertex v's pending count, i32 at byte 4*v: >= 0 waiting;
--   -1 a released job; -2 fired.
--
-- Each string of records is cut into shards of SHARD records (the
-- project's meta says how many; none for graphs without one): shard 0 is
-- the key itself, shard k > 0 the key with `:k` after it, so that no call
-- creates, grows or copies a string of more than a shard.
-- Records are read in blocks, many per GETRANGE, and their fields unpacked
-- where they are needed; changes to a field are kept in an overlay and
-- written back in runs by `cflush`. A run of like records (a wide fan-out)
-- is read and written as one substring, compared and filled with
-- string.rep, so a release costs Lua work per run, not per job.
-- Loaded once as a function library: what differs from call to call is
-- set by `graph_setup` (and project.lua's `project_setup`) as each call
-- starts, never kept from one to the next.
local KEYS, ARGV
local VX, ED, VP
-- Work one call does (a target decremented on its own costs 1, one in a
-- run of like ones 1/16) before it leaves the rest for the next call; the
-- project scripts lower it. Records per shard, a multiple of BLOCK; the
-- project scripts set it.
local BUDGET, spent, SHARD
-- The vertex records and their pending counts (see `static`, `column`).
local VS, P
local ROLE_JOB, ROLE_START, ROLE_END = 0, 1, 2
local ROLE_SHIFT = 1073741824
local RANGE_BLOCK = 2147483648
local NO_OWNER = 4294967295
-- Records per cached block. Small: a GETRANGE costs about 1.5 us per KB
-- read (8 us for 5 KB, 1 us for 20 bytes), and a call that touches a few
-- nodes (a chain's hop) should read little; runs are read as substrings.
local BLOCK = 16
-- Targets of a range handled in one step.
local VECTOR = 4096

local function corrupt(what, id, key)
  error({err = 'RQM_CORRUPT ' .. what .. ' ' .. id .. ' is missing from ' .. key})
end

-- A string of fixed-size records, read in cached blocks.
local function static(key, size, what)
  return {key = key, size = size, what = what, blocks = {}}
end

local function shard_key(key, k)
  if k == 0 then return key end
  return key .. ':' .. k
end

-- The keys of the shards after the first of strings `keys` of `count`
-- records each, appended to `out`.
local function more_shards(out, count, keys)
  for _, key in ipairs(keys) do
    for k = 1, math.ceil(count / SHARD) - 1 do out[#out + 1] = shard_key(key, k) end
  end
  return out
end

-- Where record `id` of s is: its shard's key and its byte offset there.
local function place_of(s, id)
  local k = math.floor(id / SHARD)
  return shard_key(s.key, k), (id - k * SHARD) * s.size
end

-- Calls each(key, byte offset, a, b) for the piece a..b of records
-- first..last of s in each shard they span, in order.
local function pieces(s, first, last, each)
  local a = first
  while a <= last do
    local k = math.floor(a / SHARD)
    local b = math.min(last, (k + 1) * SHARD - 1)
    each(shard_key(s.key, k), (a - k * SHARD) * s.size, a, b)
    a = b + 1
  end
end

-- The bytes of records first..last of s, read shard by shard.
local function sread(s, first, last)
  local parts = {}
  pieces(s, first, last, function(key, at, a, b)
    parts[#parts + 1] = redis.call('GETRANGE', key, at, at + (b - a + 1) * s.size - 1)
  end)
  local raw = table.concat(parts)
  if #raw ~= (last - first + 1) * s.size then corrupt(s.what, last, s.key) end
  return raw
end

-- Writes `bytes`, whole records, from record `first` of s on, shard by
-- shard.
local function swrite(s, first, bytes)
  local last = first + #bytes / s.size - 1
  pieces(s, first, last, function(key, at, a, b)
    local part = bytes
    if a ~= first or b ~= last then part = string.sub(bytes, (a - first) * s.size + 1, (b - first + 1) * s.size) end
    redis.call('SETRANGE', key, at, part)
  end)
end

-- The block holding record `id`, and the record's 1-based offset in it.
-- (A block never spans two shards: SHARD is a multiple of BLOCK.)
local function raw_of(s, id)
  local b = math.floor(id / BLOCK)
  local raw = s.blocks[b]
  if raw == nil then
    local key, at = place_of(s, b * BLOCK)
    raw = redis.call('GETRANGE', key, at, at + BLOCK * s.size - 1)
    s.blocks[b] = raw
  end
  local at = (id - b * BLOCK) * s.size
  if at + s.size > #raw then corrupt(s.what, id, s.key) end
  return raw, at + 1
end

local function invalidate(s, first, last)
  for b = math.floor(first / BLOCK), math.floor(last / BLOCK) do s.blocks[b] = nil end
end

-- One numeric field per record (struct format `fmt`), with an overlay of
-- changes not yet written.
local function column(key, size, fmt, what)
  local c = static(key, size, what)
  c.fmt, c.over, c.dirty = fmt, {}, 0
  return c
end

local function cget(c, id)
  local v = c.over[id]
  if v ~= nil then return v end
  local raw, at = raw_of(c, id)
  return (struct.unpack(c.fmt, raw, at))
end

local function cset(c, id, v)
  if c.over[id] == nil then c.dirty = c.dirty + 1 end
  c.over[id] = v
end

-- Writes the overlay of s (`over`: changed values by id, `dirty`: how
-- many), one SETRANGE per run of neighbours; `pack` makes a value's bytes.
local function flush_overlay(s, pack)
  local ids = {}
  for id in pairs(s.over) do ids[#ids + 1] = id end
  table.sort(ids)
  local i = 1
  while i <= #ids do
    local j = i
    while j < #ids and ids[j + 1] == ids[j] + 1 and j - i < VECTOR do j = j + 1 end
    local parts = {}
    for k = i, j do parts[#parts + 1] = pack(s.over[ids[k]]) end
    swrite(s, ids[i], table.concat(parts))
    invalidate(s, ids[i], ids[j])
    i = j + 1
  end
  s.over, s.dirty = {}, 0
end

-- Writes a column's overlay; values repeat, so each is packed once.
local function cflush(c)
  if c.dirty == 0 then return end
  local memo = {}
  flush_overlay(c, function(v)
    local packed = memo[v]
    if packed == nil then
      packed = struct.pack(c.fmt, v)
      memo[v] = packed
    end
    return packed
  end)
end

-- The bytes of records first..last, as they stand.
local function crange(c, first, last)
  cflush(c)
  return sread(c, first, last)
end

-- Sets records first..last to `value`.
local function cfill(c, first, last, value)
  cflush(c)
  swrite(c, first, string.rep(struct.pack(c.fmt, value), last - first + 1))
  invalidate(c, first, last)
end

-- Starts a call on the graph whose keys are KEYS[1..3].
local function graph_setup(keys, args)
  KEYS, ARGV = keys, args
  VX, ED, VP = KEYS[1], KEYS[2], KEYS[3]
  BUDGET, spent, SHARD = math.huge, 0, 2 ^ 40
  VS = static(VX, 20, 'vertex')
  P = column(VP, 4, '>i4', 'vertex')
end

-- A pending count of 1 and of 0, packed (written out: the library loads
-- without the struct module).
local ONE = '\0\0\0\1'
local ZERO = '\0\0\0\0'

local function vmeta(v)
  local raw, at = raw_of(VS, v)
  return (struct.unpack('>I4', raw, at))
end

-- Fires vertex t, whose count reached 0: a job's is released, a virtual
-- one's out-edges join `frontier`. `owner`: t's job node when known.
-- `h`: {job = fn(node), run = fn(first, last, queue), group = fn(role, node)}.
local function fire_one(t, owner, h, frontier)
  if owner then
    cset(P, t, -1)
    h.job(owner)
    return
  end
  local meta = vmeta(t)
  local role = math.floor(meta / ROLE_SHIFT)
  if role == ROLE_JOB then
    cset(P, t, -1)
    h.job(meta % ROLE_SHIFT)
  else
    cset(P, t, -2)
    frontier[#frontier + 1] = t
    if role == ROLE_START or role == ROLE_END then h.group(role, meta % ROLE_SHIFT) end
  end
end

-- Decrements targets first..last of a range block; `owner`: the job node
-- of `first` when they are a run of jobs on `queue`.
local function range_targets(first, last, owner, queue, h, frontier)
  local len = last - first + 1
  local raw = crange(P, first, last)
  if owner and raw == string.rep(ONE, len) then
    cfill(P, first, last, -1)
    h.run(owner, owner + len - 1, queue)
    spent = spent + math.ceil(len / 16)
    return
  end
  for i = 0, len - 1 do
    local t = first + i
    local p = struct.unpack('>i4', raw, 4 * i + 1) - 1
    if p == 0 then
      fire_one(t, owner and owner + i, h, frontier)
    else
      cset(P, t, p)
    end
  end
  spent = spent + len
end

-- Follows the out-edges of c, a vertex (from its first edge) or a cursor
-- {vertex, block, index}:
-- block 0 is the two inline edges (index 0 or 1), else the byte offset + 1
-- of an overflow block. Single targets are appended to `singles`, runs are
-- handled at once. Returns the cursor where the budget ran out, or nil.
local function walk(c, singles, h, frontier)
  local v, block, k
  if type(c) == 'number' then v, block, k = c, 0, 0 else v, block, k = c[1], c[2], c[3] end
  if block == 0 then
    local raw, at = raw_of(VS, v)
    local _, e1, e2, head = struct.unpack('>I4I4I4I4', raw, at)
    if k == 0 and e1 > 0 then
      if spent >= BUDGET then return {v, 0, 0} end
      singles[#singles + 1] = e1 - 1
      spent = spent + 1
    end
    if k <= 1 and e2 > 0 then
      if spent >= BUDGET then return {v, 0, 1} end
      singles[#singles + 1] = e2 - 1
      spent = spent + 1
    end
    block, k = head, 0
  end
  while block > 0 do
    if spent >= BUDGET then return {v, block, k} end
    local at = block - 1
    local count, next = struct.unpack('>I4I4', redis.call('GETRANGE', ED, at, at + 7))
    if count >= RANGE_BLOCK then
      count = count - RANGE_BLOCK
      local first, owner, queue = struct.unpack('>I4I4I4', redis.call('GETRANGE', ED, at + 8, at + 19))
      while k < count do
        if spent >= BUDGET then return {v, block, k} end
        local len = math.min(count - k, VECTOR)
        local run_owner = nil
        if owner ~= NO_OWNER then run_owner = owner + k end
        range_targets(first + k, first + k + len - 1, run_owner, queue, h, frontier)
        k = k + len
      end
    else
      while k < count do
        if spent >= BUDGET then return {v, block, k} end
        local take = math.min(count - k, BUDGET - spent)
        local raw = redis.call('GETRANGE', ED, at + 8 + 4 * k, at + 8 + 4 * (k + take) - 1)
        for i = 0, take - 1 do singles[#singles + 1] = struct.unpack('>I4', raw, 4 * i + 1) end
        spent = spent + take
        k = k + take
      end
    end
    block, k = next, 0
  end
  return nil
end

-- Follows the out-edges of the fired vertices at `frontier` (cursors, see
-- walk) and everything that cascades, calling h's hooks for each job made
-- ready, run of jobs made ready, and group started or ended. Stops when the
-- budget is spent; returns the cursors of what is left (empty when
-- everything cascaded), for a later call.
local function cascade(frontier, h)
  while #frontier > 0 do
    local singles, rest, next_frontier = {}, {}, {}
    for _, c in ipairs(frontier) do
      local left = walk(c, singles, h, next_frontier)
      if left then rest[#rest + 1] = left end
    end
    -- Many edges may reach one target (a group's end): it is counted
    -- down by all of them at once, in the order targets were first seen.
    local count, order = {}, {}
    for _, t in ipairs(singles) do
      local c = count[t]
      if c == nil then
        order[#order + 1] = t
        count[t] = 1
      else
        count[t] = c + 1
      end
    end
    for _, t in ipairs(order) do
      local p = cget(P, t) - count[t]
      if p == 0 then fire_one(t, nil, h, next_frontier) else cset(P, t, p) end
    end
    if #rest > 0 then
      for _, c in ipairs(next_frontier) do rest[#rest + 1] = c end
      return rest
    end
    frontier = next_frontier
  end
  return {}
end

-- Fires the vertices of `vs` that have nothing pending, in order, and
-- cascades. Returns what is left.
local function release(vs, h)
  local frontier = {}
  for _, v in ipairs(vs) do
    if cget(P, v) == 0 then fire_one(v, nil, h, frontier) end
  end
  return cascade(frontier, h)
end

-- Settles vertices first..last: fires those with nothing pending, as
-- rqm-core's graph does. Returns what is left.
-- `runs` ({first vertex, last vertex, first node, queue}, ...): runs of
-- job vertices of consecutive nodes on one queue among them; one that
-- waits on nothing is released as one substring.
local function settle(first, last, h, runs)
  local raw = crange(P, first, last)
  local zero, whole = {}, {}
  for _, r in ipairs(runs or {}) do
    local a, b = r[1], r[2]
    if a >= first and b <= last
      and string.sub(raw, 4 * (a - first) + 1, 4 * (b - first + 1)) == string.rep(ZERO, b - a + 1) then
      whole[#whole + 1] = r
      zero[a] = b
    end
  end
  local fire = {}
  local i = 0
  while i <= last - first do
    local v = first + i
    if zero[v] then
      i = zero[v] - first + 1
    else
      if struct.unpack('>i4', raw, 4 * i + 1) == 0 then fire[#fire + 1] = v end
      i = i + 1
    end
  end
  for _, r in ipairs(whole) do
    cfill(P, r[1], r[2], -1)
    h.run(r[3], r[3] + r[2] - r[1], r[4])
    spent = spent + math.ceil((r[2] - r[1] + 1) / 16)
  end
  return release(fire, h)
end

-- Marks finished job vertices fired and cascades. Returns what is left.
local function finish_jobs(vs, h)
  for _, v in ipairs(vs) do cset(P, v, -2) end
  return cascade(vs, h)
end

-- Makes `to` wait for `from`, unless `from` has fired: an edge added to a
-- running graph (an append).
-- `from`'s record and its edges: unpacked, and written back with a chain of
-- overflow blocks already in ED (offsets + 1 of its first and last, or nil)
-- linked on at the end of its own.
local function vertex_edges(from)
  local raw, at = raw_of(VS, from)
  return struct.unpack('>I4I4I4I4I4', raw, at)
end
local function write_vertex(from, meta, e1, e2, head, tail, first, last)
  if first then
    if head == 0 then
      head = first
    else
      redis.call('SETRANGE', ED, tail - 1 + 4, struct.pack('>I4', first))
    end
    tail = last
  end
  swrite(VS, from, struct.pack('>I4I4I4I4I4', meta, e1, e2, head, tail))
  invalidate(VS, from, from)
end

local function add_edge(from, to)
  if cget(P, from) == -2 then return end
  local meta, e1, e2, head, tail = vertex_edges(from)
  local block = nil
  if e1 == 0 then
    e1 = to + 1
  elseif e2 == 0 then
    e2 = to + 1
  else
    block = redis.call('APPEND', ED, struct.pack('>I4I4I4', 1, 0, to)) - 12 + 1
  end
  write_vertex(from, meta, e1, e2, head, tail, block, block)
  cset(P, to, cget(P, to) + 1)
end

-- Links a chain of overflow blocks already in ED (offsets + 1 of its
-- first and last) onto `from`'s edges, unless `from` has fired; each
-- target of `runs` ({first, last}, ...) then waits for one more.
local function add_chain(from, chain_first, chain_last, runs)
  if cget(P, from) == -2 then return end
  local meta, e1, e2, head, tail = vertex_edges(from)
  write_vertex(from, meta, e1, e2, head, tail, chain_first, chain_last)
  for _, r in ipairs(runs) do
    local first, last = r[1], r[2]
    local len = last - first + 1
    if len > 1 and crange(P, first, last) == string.rep(ZERO, len) then
      cfill(P, first, last, 1)
    else
      for t = first, last do cset(P, t, cget(P, t) + 1) end
    end
  end
end

-- The cursors left by a cascade, as text, and back.
local function cursors_text(cs)
  local out = {}
  for _, c in ipairs(cs) do
    if type(c) == 'number' then
      out[#out + 1] = c .. ',0,0'
    else
      out[#out + 1] = c[1] .. ',' .. c[2] .. ',' .. c[3]
    end
  end
  return out
end
local function cursors_parse(texts)
  local out = {}
  for _, t in ipairs(texts) do
    local v, b, k = string.match(t, '^(%d+),(%d+),(%d+)$')
    if v then out[#out + 1] = {tonumber(v), tonumber(b), tonumber(k)} end
  end
  return out
end

-- A node range as an entry writes it: `a` or `a-b`.
local function parse_range(text)
  local a, b = string.match(text, '^(%d+)-(%d+)$')
  if a then return tonumber(a), tonumber(b) end
  local n = tonumber(text)
  return n, n
end
