-- Takes up to ARGV[1] entries of a delay or lease set (KEYS[1]) whose time
-- has come by the server's clock.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #entries > 0 then redis.call('ZREM', KEYS[1], unpack(entries)) end
return entries
