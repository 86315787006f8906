-- Opens an uploaded project: fires the vertices that wait for nothing, so
-- that its first jobs reach their queues, and lists it. Until now no worker
-- could see it. ARGV[2..]: the vertices with nothing pending.
-- Returns 1 if a release is left for later calls (release.lua), else 0.
for k = 1, OWN_KEYS do redis.call('PERSIST', KEYS[k]) end
for _, k in ipairs(all_shards()) do redis.call('PERSIST', k) end
-- The project's clock starts now, once it is stored: its node times do not
-- count the upload (as the embedded engine's count from its start).
SUBMITTED, REL = NOW, 1
redis.call('HSET', META, 'submitted_ms', NOW)
local zero = {}
for i = 2, #ARGV do zero[#zero + 1] = tonumber(ARGV[i]) end
keep_backlog(release(zero, H))
redis.call('ZADD', PROJECTS, SUBMITTED, ID)
event('submitted', 0)
return flush() and 1 or 0
