-- Makes jobs ready again, ARGV[2] says why: `retry`, their backoff has
-- passed; `lost`, their lease expired (a worker died or was cut off), so the
-- attempt counts, and a job lost more than ARGV[3] times fails for good.
-- ARGV[4..]: the entries' nodes, `n` or `first-last`.
local why, max_lost = ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  local a, b = parse_range(ARGV[i])
  for n = a, b do
    local state = lget(S, n)
    if why == 'lost' and state == S_READY then
      -- Taken from its queue but never begun: its worker died in between.
      H.job(n)
    elseif why == 'retry' and state == S_RETRYING then
      if RUNNING then H.job(n) else lset(S, n, S_FAILED) end
    elseif why == 'lost' and state == S_RUNNING then
      local lost = nlost(n) + 1
      set_lost(n, math.min(lost, 255))
      if lost > max_lost then
        local message = 'the job was lost ' .. lost .. ' times (its worker died or lost its lease each time); given up after ' .. max_lost .. ' recoveries'
        errors[n] = message
        lset(S, n, S_FAILED)
        lset(TF, n, REL)
        event('failed', n)
        local path, func = job_of(n)
        end_project('failed', {failed_path = path, failed_function = func, error = message})
      elseif RUNNING then
        H.job(n)
        event('lost', n, lost)
      else
        lset(S, n, S_FAILED)
      end
    end
  end
end
flush()
return 1
