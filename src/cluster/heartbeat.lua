-- A node's heartbeat: says it is alive (or leaving) and learns how many
-- nodes are alive and its rank among them (by node id), on Redis' clock.
--
-- KEYS[1]: the nodes hash, node id -> "<instance>|<ms>".
-- ARGV: node, instance (one per process), ttl_ms (alive if seen within),
--   leaving ("1" removes the node).
-- Returns {live, rank, conflict}: conflict = 1 when another process with
-- the same node id was seen within ttl_ms.
local key = KEYS[1]
local node, instance, ttl, leaving = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function parse(v)
  local i, at = string.match(v or '', '^(.*)|(%d+)$')
  return i, tonumber(at or '0') or 0
end

local conflict = 0
local other, seen = parse(redis.call('HGET', key, node))
if other and other ~= instance and now - seen < ttl then
  conflict = 1
end
if leaving == '1' then
  redis.call('HDEL', key, node)
else
  redis.call('HSET', key, node, instance .. '|' .. now)
end

local live, rank = 0, 0
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local _, at = parse(all[i + 1])
  if now - at < ttl then
    live = live + 1
    if all[i] < node then
      rank = rank + 1
    end
  elseif now - at > 100 * ttl then
    redis.call('HDEL', key, all[i])
  end
end
return {live, rank, conflict}
