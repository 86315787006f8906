-- Fails a project whose stored state does not read as rqm wrote it (a key
-- changed by something else), so that it ends with a clear error instead of
-- its jobs going round. KEYS[1]: meta; KEYS[2]: events. ARGV[1]: the error.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 'unrecorded' end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 'ended' end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_ms', now, 'error', ARGV[1],
  'failed_path', '', 'failed_function', '')
redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'c', 'ended:0:failed')
return 'failed'
