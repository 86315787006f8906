-- Begins attempts of leased jobs of one project. A job that is no longer
-- ready (its project ended, or the entry is stale) is let go. Everything is
-- read before anything is written, so a key that does not read (tampered
-- with) fails the call without changing a thing.
-- ARGV[2..]: node ids. Returns {node, attempt, payload, input or false}.
local todo = {}
for i = 2, #ARGV do
  local n = tonumber(ARGV[i])
  local rec = node_get(n)
  if RUNNING and rec.state == S_READY then
    local input = false
    if bit.band(rec.flags, 4) ~= 0 then
      local previous = redis.call('BITFIELD', ND, 'GET', 'u32', nbits(n, 224))[1]
      input = redis.call('HGET', RS, previous) or 'null'
    end
    todo[#todo + 1] = {n, rec.attempts + 1, redis.call('HGET', JB, n), input}
  else
    todo[#todo + 1] = {n, false}
  end
end
local out = {}
for _, t in ipairs(todo) do
  local n, attempt = t[1], t[2]
  if not attempt then
    redis.call('ZREM', LEASES, ID .. ':' .. n)
  else
    local started = redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_RUNNING,
      'SET', 'u32', nbits(n, 128), attempt, 'GET', 'u32', nbits(n, 160))[3]
    if started == 0 then redis.call('BITFIELD', ND, 'SET', 'u32', nbits(n, 160), REL) end
    out[#out + 1] = t
    event('started', n, attempt)
  end
end
flush()
return out
