-- Completes one attempt whose job appended nodes (SPEC 5), atomically with
-- its completion: the nodes were compiled by rqm-core against the list's
-- tail as the worker read it; if anything changed since, nothing is
-- applied and `conflict` is returned, to compile again.
-- ARGV[2]: node; [3]: attempt; [4]: the result; [5]: a JSON plan:
--   {parent, tail (as read), next_node, next_vertex, edges: [from, to, ...],
--    children: {group: [ids]}, tails: {group: tail}, jobs: {id: payload},
--    queues: [every queue of the project, in order]}
-- [6]: the new vertex records; [7]: the new node records.
local n, attempt = tonumber(ARGV[2]), tonumber(ARGV[3])
local rec = node_get(n)
if rec.state ~= S_RUNNING or rec.attempts ~= attempt then return 'stale' end
local plan = cjson.decode(ARGV[5])
local ids = redis.call('HMGET', META, 'next_node', 'next_vertex')
if tonumber(ids[1]) ~= plan.next_node or tonumber(ids[2]) ~= plan.next_vertex
  or redis.call('HGET', TL, plan.parent) ~= plan.tail then
  return 'conflict'
end
redis.call('APPEND', VX, ARGV[6])
redis.call('APPEND', ND, ARGV[7])
local added_vertices = #ARGV[6] / 24
local added_nodes = #ARGV[7] / 32
redis.call('HSET', META, 'next_node', plan.next_node + added_nodes,
  'next_vertex', plan.next_vertex + added_vertices, 'queues', table.concat(plan.queues, ','))
for id, payload in pairs(plan.jobs) do redis.call('HSET', JB, id, payload) end
for g, kids in pairs(plan.children) do
  local packed = {}
  for _, c in ipairs(kids) do packed[#packed + 1] = struct.pack('>I4', c) end
  local batch = redis.call('HINCRBY', CH, g .. '#', 1) - 1
  redis.call('HSET', CH, g .. ':' .. batch, table.concat(packed))
end
for g, tail in pairs(plan.tails) do redis.call('HSET', TL, g, tail) end
local edges = plan.edges
for i = 1, #edges, 2 do add_edge(edges[i], edges[i + 1]) end
redis.call('ZREM', LEASES, ID .. ':' .. n)
redis.call('HSET', RS, n, ARGV[4])
redis.call('BITFIELD', ND, 'SET', 'u8', nbits(n, 104), S_FINISHED, 'SET', 'u32', nbits(n, 192), REL)
event('finished', n)
event('added', n, added_nodes)
if added_vertices > 0 then
  settle(plan.next_vertex, plan.next_vertex + added_vertices - 1, on_job, on_group)
end
finish_jobs({rec.vertex}, on_job, on_group)
flush()
return 'ok'
