-- Takes up to ARGV[1] ready jobs from a queue and leases them. An entry
-- names a node or a run of nodes (see project.lua); one that holds more
-- than are wanted is split, its rest left at the head.
-- KEYS[1]: the queue; KEYS[2]: the leases. ARGV[2]: the lease, ms.
-- Returns the entries taken.
local want = tonumber(ARGV[1])
local entries = redis.call('LRANGE', KEYS[1], 0, want - 1)
if #entries == 0 then return {} end
local taken, count, used, split = {}, 0, 0, nil
for _, e in ipairs(entries) do
  used = used + 1
  local id, a, b = string.match(e, '^(.*):(%d+)-(%d+)$')
  local n = 1
  if id then
    a, b = tonumber(a), tonumber(b)
    n = b - a + 1
  end
  if count + n > want then
    local k = want - count
    taken[#taken + 1] = id .. ':' .. a .. (k > 1 and ('-' .. (a + k - 1)) or '')
    split = id .. ':' .. (a + k) .. ((a + k < b) and ('-' .. b) or '')
    break
  end
  taken[#taken + 1] = e
  count = count + n
  if count >= want then break end
end
redis.call('LTRIM', KEYS[1], used, -1)
if split then redis.call('LPUSH', KEYS[1], split) end
local clock = redis.call('TIME')
local expiry = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ARGV[2])
local args = {}
for _, e in ipairs(taken) do
  args[#args + 1] = expiry
  args[#args + 1] = e
end
redis.call('ZADD', KEYS[2], unpack(args))
return taken
