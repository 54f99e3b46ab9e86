-- One lease exchange of a node for one shared limit (a budget for one
-- period, or a rate window for one minute), atomic in Redis.
--
-- KEYS[1]: the limit's hash. Fields: `leased` (what all nodes hold),
--   `used` (what all nodes used), `held:<node>`, `used:<node>`.
-- ARGV: node, used (this node's usage so far, absolute), ask, back,
--   limit, ttl_ms.
-- Returns {grant, held, used, leased, node_used}.
--
-- Invariants: `leased` is the sum of the nodes' `held`; a node's `held`
-- is at least its `used`; a grant never makes `leased` pass the limit.
-- Usage beyond a node's leases (spent while Redis was unreachable, or real
-- cost above a reservation) is added to `held` and `leased` as it is, so
-- the cluster's books stay true and later grants shrink by it.
-- Usage is sent absolute, so a retried or repeated exchange counts nothing
-- twice, and a Redis that lost its data is filled again by the next
-- exchange of every node.
local key = KEYS[1]
local node = ARGV[1]
local used_now = tonumber(ARGV[2])
local ask = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])

local held_f = 'held:' .. node
local used_f = 'used:' .. node
local function num(field)
  return tonumber(redis.call('HGET', key, field) or '0') or 0
end
local held = num(held_f)
local mine = num(used_f)
local leased = num('leased')
local used = num('used')

if used_now > mine then
  used = used + (used_now - mine)
  mine = used_now
end
if mine > held then
  leased = leased + (mine - held)
  held = mine
end
if back > held - mine then
  back = held - mine
end
if back > 0 then
  held = held - back
  leased = leased - back
end
local grant = limit - leased
if grant > ask then
  grant = ask
end
if grant < 0 then
  grant = 0
end
held = held + grant
leased = leased + grant

local function int(v)
  return string.format('%d', v)
end
redis.call('HSET', key, held_f, int(held), used_f, int(mine), 'leased', int(leased), 'used', int(used))
redis.call('PEXPIRE', key, ttl)
return {grant, held, used, leased, mine}
