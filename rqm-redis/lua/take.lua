-- Takes up to ARGV[1] ready jobs from a queue and leases them.
-- KEYS[1]: the queue; KEYS[2]: the leases. ARGV[2]: the lease, ms.
local entries = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
if not entries then return {} end
local clock = redis.call('TIME')
local expiry = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ARGV[2])
local args = {}
for _, e in ipairs(entries) do
  args[#args + 1] = expiry
  args[#args + 1] = e
end
redis.call('ZADD', KEYS[2], unpack(args))
return entries
