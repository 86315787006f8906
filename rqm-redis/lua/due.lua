-- Takes up to ARGV[1] entries of a delay, lease or release set (KEYS[1])
-- whose time has come by the server's clock. With ARGV[2], the entries are
-- claimed rather than removed: due again ARGV[2] ms from now, so that one
-- whose taker dies is taken again.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #entries > 0 then
  if ARGV[2] then
    local args = {}
    for _, e in ipairs(entries) do
      args[#args + 1] = now + tonumber(ARGV[2])
      args[#args + 1] = e
    end
    redis.call('ZADD', KEYS[1], 'XX', unpack(args))
  else
    redis.call('ZREM', KEYS[1], unpack(entries))
  end
end
return entries
