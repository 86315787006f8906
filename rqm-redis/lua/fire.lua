-- Applies finished jobs to the graph and settles new vertices: a test and
-- building block of the engine's transitions. KEYS: vx, ed, vp.
-- ARGV[1]: first vertex to settle; ARGV[2]: last (or -1 for none);
-- ARGV[3..]: vertices of finished jobs.
-- Returns {ready job nodes, started group nodes, ended group nodes}.
local ready, started, ended = {}, {}, {}
local h = {}
function h.job(node) ready[#ready + 1] = node end
function h.run(first, last) for n = first, last do ready[#ready + 1] = n end end
function h.group(role, node)
  if role == ROLE_START then started[#started + 1] = node else ended[#ended + 1] = node end
end
local first, last = tonumber(ARGV[1]), tonumber(ARGV[2])
if last >= first then settle(first, last, h) end
local finished = {}
for i = 3, #ARGV do finished[#finished + 1] = tonumber(ARGV[i]) end
if #finished > 0 then finish_jobs(finished, h) end
cflush(P)
return {ready, started, ended}
