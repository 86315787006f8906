-- Opens an uploaded project: settles its graph, so its first jobs reach
-- their queues, and lists it. Until now no worker could see it.
-- ARGV[2]: the last vertex id.
for k = 1, 10 do redis.call('PERSIST', KEYS[k]) end
settle(0, tonumber(ARGV[2]), on_job, on_group)
redis.call('ZADD', PROJECTS, SUBMITTED, ID)
event('submitted', 0)
flush()
return 1
