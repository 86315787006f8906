-- Begins attempts of leased jobs of one project. A job that is no longer
-- ready (its project ended, or the entry is stale) is let go; an entry none
-- of whose jobs begins loses its lease.
-- ARGV[2..]: the entries' nodes, `n` or `first-last`.
-- Returns, flat, three values per attempt begun: node, attempt, and its
-- input when it takes the previous node's: that node's result (JSON), or
-- `g:<node>` for a group's, which the caller assembles; else false.
local out = {}
local previous = {}
for i = 2, #ARGV do
  local a, b = parse_range(ARGV[i])
  local len = b - a + 1
  local began = 0
  if RUNNING and len > 1 and all_are(S, a, b, S_READY) and all_are(A, a, b, 0) then
    -- A run of first attempts: written as one substring per field.
    cfill(S, a, b, S_RUNNING)
    cfill(A, a, b, 1)
    if crange(TS, a, b) == string.rep(ZERO, len) then
      cfill(TS, a, b, REL)
    else
      for n = a, b do
        if cget(TS, n) == 0 then cset(TS, n, REL) end
      end
    end
    for n = a, b do row(out, previous, n, 1) end
    event('started', ARGV[i], 1)
    began = len
  else
    for n = a, b do
      if RUNNING and cget(S, n) == S_READY then
        start_attempt(n, out, previous)
        began = began + 1
      end
    end
  end
  if began == 0 then unleased[#unleased + 1] = ID .. ':' .. ARGV[i] end
end
fill_inputs(out, previous)
flush()
return out
