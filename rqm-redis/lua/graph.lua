-- The counter graph in Redis: generic vertex and edge operations, no tree
-- semantics (rqm-core's compiler decides every vertex and edge).
--
-- KEYS[1]: the vertex string. Vertex v is 24 bytes at byte 24*v, big-endian:
--   pending i32 (>= 0 waiting; -1 a released job; -2 fired)
--   meta    u32 (role << 30 | owner node id)
--   e1, e2  u32 (first two out-edges, target + 1; 0 for none)
--   head    u32 (byte offset + 1 of the first overflow block; 0 for none)
--   tail    u32 (byte offset + 1 of the last overflow block)
-- KEYS[2]: the edge string of overflow blocks: count u32, next u32
--   (offset + 1, or 0), then count targets u32.
local VX = KEYS[1]
local ED = KEYS[2]
local ROLE_JOB, ROLE_START, ROLE_END = 0, 1, 2
local CHUNK = 1000

local function bits(v, field) return v * 192 + field * 32 end

-- BITFIELD over `ops` ({op, type, offset[, value]}), in chunks that stay
-- far from Lua's unpack limit; returns every reply in order.
local function bitfield(key, ops)
  local out = {}
  local i = 1
  while i <= #ops do
    local args = {}
    local last = math.min(i + CHUNK - 1, #ops)
    for j = i, last do
      local op = ops[j]
      args[#args + 1] = op[1]
      args[#args + 1] = op[2]
      args[#args + 1] = op[3]
      if op[4] ~= nil then args[#args + 1] = op[4] end
    end
    local replies = redis.call('BITFIELD', key, unpack(args))
    for _, r in ipairs(replies) do out[#out + 1] = r end
    i = last + 1
  end
  return out
end

-- The out-edges of every vertex in `vs`, in order, duplicates kept.
local function out_edges(vs)
  local ops = {}
  for _, v in ipairs(vs) do
    ops[#ops + 1] = {'GET', 'u32', bits(v, 2)}
    ops[#ops + 1] = {'GET', 'u32', bits(v, 3)}
    ops[#ops + 1] = {'GET', 'u32', bits(v, 4)}
  end
  local r = bitfield(VX, ops)
  local targets = {}
  for i = 1, #vs do
    local e1, e2, block = r[3 * i - 2], r[3 * i - 1], r[3 * i]
    if e1 > 0 then targets[#targets + 1] = e1 - 1 end
    if e2 > 0 then targets[#targets + 1] = e2 - 1 end
    while block > 0 do
      local at = block - 1
      local count, next = struct.unpack('>I4>I4', redis.call('GETRANGE', ED, at, at + 7))
      if count > 0 then
        local raw = redis.call('GETRANGE', ED, at + 8, at + 8 + 4 * count - 1)
        for k = 0, count - 1 do
          targets[#targets + 1] = struct.unpack('>I4', raw, 4 * k + 1)
        end
      end
      block = next
    end
  end
  return targets
end

-- Fires the vertices in `frontier` (already marked fired) and everything
-- that cascades; calls on_job(node) for each job made ready, and
-- on_group(role, node) for each group started or ended.
local function cascade(frontier, on_job, on_group)
  while #frontier > 0 do
    local targets = out_edges(frontier)
    local dec = {}
    for _, t in ipairs(targets) do dec[#dec + 1] = {'INCRBY', 'i32', bits(t, 0), -1} end
    local after = bitfield(VX, dec)
    local zero = {}
    for i, t in ipairs(targets) do
      if after[i] == 0 then zero[#zero + 1] = t end
    end
    local metas = {}
    for _, t in ipairs(zero) do metas[#metas + 1] = {'GET', 'u32', bits(t, 1)} end
    metas = bitfield(VX, metas)
    local marks = {}
    local next_frontier = {}
    for i, t in ipairs(zero) do
      local role = math.floor(metas[i] / 1073741824)
      local owner = metas[i] % 1073741824
      if role == ROLE_JOB then
        marks[#marks + 1] = {'SET', 'i32', bits(t, 0), -1}
        on_job(owner)
      else
        marks[#marks + 1] = {'SET', 'i32', bits(t, 0), -2}
        next_frontier[#next_frontier + 1] = t
        if role == ROLE_START or role == ROLE_END then on_group(role, owner) end
      end
    end
    bitfield(VX, marks)
    frontier = next_frontier
  end
end

-- Settles vertices first..last: fires the virtual ones and releases the
-- jobs that have nothing pending, in order, as rqm-core's graph does.
local function settle(first, last, on_job, on_group)
  local ops = {}
  for v = first, last do
    ops[#ops + 1] = {'GET', 'i32', bits(v, 0)}
    ops[#ops + 1] = {'GET', 'u32', bits(v, 1)}
  end
  local r = bitfield(VX, ops)
  local cascaded = false
  for v = first, last do
    local i = 2 * (v - first)
    local pending = r[i + 1]
    -- Once a cascade ran, a later vertex may have changed: read it again.
    if pending == 0 and cascaded then
      pending = redis.call('BITFIELD', VX, 'GET', 'i32', bits(v, 0))[1]
    end
    if pending == 0 then
      local role = math.floor(r[i + 2] / 1073741824)
      local owner = r[i + 2] % 1073741824
      if role == ROLE_JOB then
        redis.call('BITFIELD', VX, 'SET', 'i32', bits(v, 0), -1)
        on_job(owner)
      else
        redis.call('BITFIELD', VX, 'SET', 'i32', bits(v, 0), -2)
        if role == ROLE_START or role == ROLE_END then on_group(role, owner) end
        cascade({v}, on_job, on_group)
        cascaded = true
      end
    end
  end
end

-- Marks finished job vertices fired and cascades.
local function finish_jobs(vs, on_job, on_group)
  local marks = {}
  for _, v in ipairs(vs) do marks[#marks + 1] = {'SET', 'i32', bits(v, 0), -2} end
  bitfield(VX, marks)
  cascade(vs, on_job, on_group)
end

-- Makes `to` wait for `from`, unless `from` has fired: an edge added to a
-- running graph (an append).
local function add_edge(from, to)
  local r = redis.call('BITFIELD', VX, 'GET', 'i32', bits(from, 0), 'GET', 'u32', bits(from, 2),
    'GET', 'u32', bits(from, 3), 'GET', 'u32', bits(from, 5))
  if r[1] == -2 then return end
  if r[2] == 0 then
    redis.call('BITFIELD', VX, 'SET', 'u32', bits(from, 2), to + 1)
  elseif r[3] == 0 then
    redis.call('BITFIELD', VX, 'SET', 'u32', bits(from, 3), to + 1)
  else
    local len = redis.call('APPEND', ED, struct.pack('>I4>I4>I4', 1, 0, to))
    local block = len - 12 + 1
    if r[4] == 0 then
      redis.call('BITFIELD', VX, 'SET', 'u32', bits(from, 4), block, 'SET', 'u32', bits(from, 5), block)
    else
      redis.call('SETRANGE', ED, r[4] - 1 + 4, struct.pack('>I4', block))
      redis.call('BITFIELD', VX, 'SET', 'u32', bits(from, 5), block)
    end
  end
  redis.call('BITFIELD', VX, 'INCRBY', 'i32', bits(to, 0), 1)
end
