-- Goes on with a release that an earlier call left (a vertex with more
-- out-edges than one call follows, see `cascade`): takes the backlog's
-- cursors and follows them, within the budget; what is still left goes
-- back. Any client may call it; each call is atomic.
-- Returns 1 if a backlog is still left, else 0.
local texts = redis.call('LRANGE', BL, 0, -1)
if #texts == 0 or not RUNNING then
  redis.call('DEL', BL)
  redis.call('ZREM', RELEASES, ID)
  return 0
end
local rest = cascade(cursors_parse(texts), H)
redis.call('DEL', BL)
keep_backlog(rest)
local more = flush()
if not more and not ended then redis.call('ZREM', RELEASES, ID) end
return more and 1 or 0
