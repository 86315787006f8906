-- Completes one attempt whose job appended nodes (SPEC 5), atomically with
-- its completion: the nodes were compiled by rqm-core against the list's
-- tail as the worker read it; if anything changed since, nothing is
-- applied and `conflict` is returned, to compile again.
-- ARGV[2]: node; [3]: attempt; [4]: the result; [5]: a JSON plan:
--   {parent, tail (as read), next_node, next_vertex, edges: [from, to, ...],
--    children: {group: [ids]}, tails: {group: tail},
--    queues: [every queue of the project, in order], unlease: [entries],
--    profiles: {id: profile}}
-- [6]: the new vertex records (vx), with their out-edges; [7]: what they
-- wait for among themselves (vp); [8]: the new node records (nd); [9]: the
-- new overflow edge blocks, from byte plan.edge_len of ed on; [10..]: the
-- new jobs' payloads, node and payload in turn. Edges from older vertices
-- (added unless their vertex fired) are plan.edges, `from, to` pairs, and
-- plan.chains, {from, first block, last block, target runs}: chains of
-- blocks in [9] to link on; plan.older_targets, one per edge from a new
-- vertex to an older one.
-- Returns {`ok`, `stale` or `conflict`, 1 if a release is left for later
-- calls else 0}.
local n, attempt = tonumber(ARGV[2]), tonumber(ARGV[3])
if lget(S, n) ~= S_RUNNING or lget(A, n) ~= attempt then return {'stale', 0} end
local plan = cjson.decode(ARGV[5])
local ids = redis.call('HMGET', META, 'next_node', 'next_vertex')
if tonumber(ids[1]) ~= plan.next_node or tonumber(ids[2]) ~= plan.next_vertex
  or redis.call('HGET', TL, plan.parent) ~= plan.tail
  or redis.call('STRLEN', KEYS[2]) ~= plan.edge_len then
  return {'conflict', 0}
end
-- Profiles first: a clash of ids refuses the append before it changes
-- anything.
for id, profile in pairs(plan.profiles or {}) do
  if redis.call('HSETNX', PF, id, profile) == 0 and redis.call('HGET', PF, id) ~= profile then
    return redis.error_reply('RQM_PROFILE two job profiles of the project share the id ' .. id)
  end
end
local vertex_of = nvertex(n)
local added_vertices = #ARGV[6] / 20
local added_nodes = #ARGV[8] / 20
-- New records go at the ends of the strings; cached blocks there are stale.
cflush(P)
lflush()
swrite(VS, VERTICES, ARGV[6])
redis.call('APPEND', KEYS[2], ARGV[9])
swrite(P, VERTICES, ARGV[7])
swrite(ND, NODES, ARGV[8])
swrite(L, NODES, string.rep('\0', LIVE_BYTES * added_nodes))
for _, s in ipairs({VS, P, ND, L}) do s.blocks = {} end
-- New shards live as long as the project's other keys (open: for ever).
local before = #all_shards()
NODES, VERTICES = NODES + added_nodes, VERTICES + added_vertices
local shards = all_shards()
if #shards > before then
  local ttl = redis.call('PTTL', META)
  if ttl > 0 then
    for _, k in ipairs(shards) do redis.call('PEXPIRE', k, ttl) end
  end
end
redis.call('HSET', META, 'next_node', NODES, 'next_vertex', VERTICES,
  'queues', table.concat(plan.queues, ','))
-- The payloads, as they came: ARGV[10..], node and payload in turn.
local i = 10
while i <= #ARGV do
  local last = math.min(i + 2 * MANY - 1, #ARGV)
  redis.call('HSET', JB, unpack(ARGV, i, last))
  i = last + 1
end
for g, kids in pairs(plan.children) do
  local packed = {}
  for _, c in ipairs(kids) do packed[#packed + 1] = struct.pack('>I4', c) end
  local batch = redis.call('HINCRBY', CH, g .. '#', 1) - 1
  redis.call('HSET', CH, g .. ':' .. batch, table.concat(packed))
end
for g, tail in pairs(plan.tails) do redis.call('HSET', TL, g, tail) end
local edges = plan.edges
for i = 1, #edges, 2 do add_edge(edges[i], edges[i + 1]) end
for _, c in ipairs(plan.chains or {}) do add_chain(c[1], c[2], c[3], c[4]) end
for _, t in ipairs(plan.older_targets or {}) do cset(P, t, cget(P, t) + 1) end
for _, e in ipairs(plan.unlease or {}) do unleased[#unleased + 1] = ID .. ':' .. e end
results[n] = ARGV[4]
lset(S, n, S_FINISHED)
lset(TF, n, REL)
event('finished', n)
event('added', n, added_nodes)
if added_vertices > 0 then
  keep_backlog(settle(plan.next_vertex, plan.next_vertex + added_vertices - 1, H, plan.job_runs))
end
keep_backlog(finish_jobs({vertex_of}, H))
return {'ok', flush() and 1 or 0}
