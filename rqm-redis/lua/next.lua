-- When the next entry of each set in KEYS (retries, lease expiries,
-- releases left by a client that stopped) is due, in ms from now by the
-- server's clock; -1 for none.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local out = {}
for k = 1, #KEYS do
  local first = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
  if first[2] then out[k] = math.max(0, tonumber(first[2]) - now) else out[k] = -1 end
end
return out
