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
  local rec = nil
  if RUNNING and len > 1 then rec = lcommon(a, b) end
  if rec and rec[S] == S_READY and rec[A] == 0 then
    -- A run of first attempts, alike: written as one substring.
    lfill(a, b, {S_RUNNING, 1, rec[TS] == 0 and REL or rec[TS], rec[TF]})
    for n = a, b do row(out, previous, n, 1) end
    event('started', ARGV[i], 1)
    began = len
  else
    for n = a, b do
      if RUNNING and lget(S, n) == S_READY then
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
