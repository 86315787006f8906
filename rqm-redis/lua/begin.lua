-- Begins attempts of leased jobs of one project. A job that is no longer
-- ready (its project ended, or the entry is stale) is let go.
-- ARGV[2..]: node ids. Returns {node, attempt, payload, input or false}.
local out = {}
for i = 2, #ARGV do
  local n = tonumber(ARGV[i])
  local rec = node_get(n)
  if not RUNNING or rec.state ~= S_READY then
    redis.call('ZREM', LEASES, ID .. ':' .. n)
  else
    local attempt = rec.attempts + 1
    local started = redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_RUNNING,
      'SET', 'u32', nbits(n, 128), attempt, 'GET', 'u32', nbits(n, 160))[3]
    if started == 0 then redis.call('BITFIELD', ND, 'SET', 'u32', nbits(n, 160), REL) end
    local input = false
    if bit.band(rec.flags, 4) ~= 0 then
      local previous = children(rec.parent)[rec.index]
      input = redis.call('HGET', RS, previous) or 'null'
    end
    out[#out + 1] = {n, attempt, redis.call('HGET', JB, n), input}
    event('started', n, attempt)
  end
end
flush()
return out
