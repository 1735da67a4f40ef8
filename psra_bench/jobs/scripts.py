"""The job queue's Lua scripts: every state change of a job is one atomic script on the Redis server.

Keys: every key of one queue starts with the queue's prefix ``{<ns>jobs}:`` (constants.JOB_QUEUE_PREFIX;
``ns`` is ``settings.cache_namespace``, e.g. ``{psra:jobs}:``, or ``{jobs}:`` with no namespace):

* ``{<ns>jobs}:job:{job_id}`` — the job's state hash (constants.JOB_KEY after the prefix);
* ``{<ns>jobs}:queue:{priority}`` — one FIFO list of pending job ids per priority;
* ``{<ns>jobs}:processing`` — ZSET of running job ids scored by lease deadline (ms, server clock);
  its size is the number of jobs running across all workers, which the dequeue script caps;
* ``{<ns>jobs}:workers`` — ZSET of live worker ids scored by "alive until" (ms);
* ``{<ns>jobs}:lost`` — ZSET of job ids found referenced (queued, running) after their hash was
  gone, scored by when that was noticed (ms): what the sweep reports as lost;
* ``{<ns>jobs}:events`` — pub/sub channel: ``new`` (submitted / slot freed) and ``cancel:{id}``;
* ``{<ns>jobs}:{suffix}`` — a handler's own keys (``JobQueue.key(suffix)``).

The braces are a Redis Cluster hash tag: only ``<ns>jobs`` is hashed, so all of one queue's keys
live in one slot and on one node. That is what lets a script take a job id from a list and build
its hash key (``prefix .. 'job:' .. id``) on a cluster: every key a script touches, declared in
KEYS or built from the prefix in ARGV, is in the slot of its KEYS. The same layout is used on a
single Redis, where the tag means nothing. Queues of different namespaces have different tags,
so they spread over the cluster's nodes.

Times come from the server's ``TIME`` so workers on other hosts agree on lease deadlines.
A running job is "owned" by (worker_id, attempts); heartbeats, progress, finish and re-queue
compare both, so a worker whose lease was reaped can no longer change the job.

A job's hash field ``committed`` = '1' marks its point of no return (a handler's COMMIT: its
effects are about to be, or are, committed). From then on a cancel is refused, on this attempt
and on any re-run, and an accepted cancel can no longer turn the outcome into CANCELLED.
"""

from __future__ import annotations

__all__ = [
    "SUBMIT",
    "DEQUEUE",
    "HEARTBEAT",
    "HEALTH",
    "PROGRESS",
    "FINISH",
    "REQUEUE",
    "CANCEL",
    "COMMIT",
    "REAP",
    "WORKER_ALIVE",
    "REPAIR_RUNNING",
    "REPAIR_PENDING",
    "FORGET",
]

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_OWNED = """
local function owned(jk, worker, attempt)
  local f = redis.call('HMGET', jk, 'status', 'worker_id', 'attempts', 'cancel_requested')
  return f[1] == 'running' and f[2] == worker and f[3] == attempt, f[4] == '1'
end
"""

# Move running jobs whose lease deadline passed back to the front of their queue (PENDING), or
# end them: CANCELLED if a cancel was requested, FAILED once `max_attempts` workers were lost.
_REAP_FN = """
local function reap(processing, prefix, now, max_attempts, max_age, limit, channel, lostkey)
  local ids = redis.call('ZRANGEBYSCORE', processing, '-inf', now, 'LIMIT', 0, limit)
  local moved = 0
  for _, id in ipairs(ids) do
    redis.call('ZREM', processing, id)
    local jk = prefix .. 'job:' .. id
    local f = redis.call('HMGET', jk, 'status', 'priority', 'lost', 'cancel_requested', 'ttl_seconds')
    if not f[1] then
      redis.call('ZADD', lostkey, now, id)
      redis.call('EXPIRE', lostkey, max_age)
    elseif f[1] == 'running' then
      moved = moved + 1
      local lost = tonumber(f[3] or '0') + 1
      local ttl = tonumber(f[5] or '3600')
      if f[4] == '1' then
        redis.call('HSET', jk, 'status', 'cancelled', 'lost', lost, 'completed_at', now,
          'error', 'cancelled on request (its worker was lost before it could stop the job)')
        redis.call('EXPIRE', jk, ttl)
      elseif lost >= max_attempts then
        local times = ' times'
        if lost == 1 then times = ' time' end
        redis.call('HSET', jk, 'status', 'failed', 'lost', lost, 'completed_at', now,
          'error', 'worker lost ' .. lost .. times .. ' (max_attempts=' .. max_attempts .. ')')
        redis.call('EXPIRE', jk, ttl)
      else
        local queue = prefix .. 'queue:' .. f[2]
        redis.call('HSET', jk, 'status', 'pending', 'lost', lost, 'progress', 0,
          'progress_message', 'requeued: its worker was lost')
        redis.call('LPUSH', queue, id)
        redis.call('EXPIRE', queue, max_age)
        redis.call('EXPIRE', jk, max_age)
      end
    end
  end
  if moved > 0 then redis.call('PUBLISH', channel, 'new') end
  return moved
end
"""

#: KEYS: job hash, queue list, channel. ARGV: job_id, job_type, priority, payload, ttl_seconds,
#: metadata json, max_age, owner ('' = nobody), timeout_seconds. Returns created_at (ms).
SUBMIT = (
    _NOW
    + """
local now = now_ms()
redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'job_type', ARGV[2], 'priority', ARGV[3],
  'payload', ARGV[4], 'ttl_seconds', ARGV[5], 'metadata', ARGV[6], 'status', 'pending',
  'created_at', now, 'progress', 0, 'attempts', 0, 'lost', 0, 'owner', ARGV[8] or '',
  'timeout_seconds', ARGV[9])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('PUBLISH', KEYS[3], 'new')
return now
"""
)

#: KEYS: processing, channel, lost, then the queue lists from highest to lowest priority.
#: ARGV: prefix, worker_id, lease_ms, max_running, max_attempts, max_age, count.
#: Takes up to ``count`` jobs while fewer than max_running run. Returns {'jobs', id, job_type,
#: payload, attempt, priority, timeout_seconds, id, ...} (6 fields per job), or {'full'} or {'empty'}.
DEQUEUE = (
    _NOW
    + _REAP_FN
    + """
local now = now_ms()
local prefix = ARGV[1]
local cap = tonumber(ARGV[4])
reap(KEYS[1], prefix, now, tonumber(ARGV[5]), tonumber(ARGV[6]), 20, KEYS[2], KEYS[3])
local room = cap - redis.call('ZCARD', KEYS[1])
if room <= 0 then return {'full'} end
local want = math.min(room, tonumber(ARGV[7]))
local out = {'jobs'}
local i = 4
while i <= #KEYS and want > 0 do
  local id = redis.call('LPOP', KEYS[i])
  if not id then
    i = i + 1
  else
    local jk = prefix .. 'job:' .. id
    local f = redis.call('HMGET', jk, 'status', 'job_type', 'payload', 'priority', 'timeout_seconds')
    if not f[1] then
      redis.call('ZADD', KEYS[3], now, id)  -- queued, but its hash is gone: lost
      redis.call('EXPIRE', KEYS[3], ARGV[6])
    elseif f[1] == 'pending' then
      local attempt = redis.call('HINCRBY', jk, 'attempts', 1)
      redis.call('HSET', jk, 'status', 'running', 'started_at', now, 'worker_id', ARGV[2],
        'progress', 0, 'progress_message', '')
      redis.call('EXPIRE', jk, ARGV[6])
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
      table.insert(out, id)
      table.insert(out, f[2])
      table.insert(out, f[3])
      table.insert(out, tostring(attempt))
      table.insert(out, f[4])
      table.insert(out, f[5] or '0')
      want = want - 1
    end
    -- otherwise the id is stale (the job was cancelled, or its hash is gone): look further
  end
end
if #out == 1 then return {'empty'} end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return out
"""
)

#: KEYS: processing, lost, then the hash of each job. ARGV: worker_id, lease_ms, max_age, then
#: job_id, attempt of each job (in KEYS' order). Renews all of one worker's leases in one call and
#: returns one flag per job: -1 if the job is no longer this worker's, 1 if a cancel was requested,
#: else 0. A job this worker still owns gets its lease back even if the processing entry was lost
#: (evicted or deleted); one whose hash is gone is recorded as lost.
HEARTBEAT = (
    _NOW
    + _OWNED
    + """
local now = now_ms()
local worker, lease, max_age = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
for i = 3, #KEYS do
  local jk, id, attempt = KEYS[i], ARGV[2 * i - 2], ARGV[2 * i - 1]
  local mine, cancel = owned(jk, worker, attempt)
  if not mine then
    if redis.call('EXISTS', jk) == 0 then
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('EXPIRE', KEYS[2], max_age)
    end
    out[#out + 1] = -1
  else
    redis.call('ZADD', KEYS[1], now + lease, id)
    redis.call('EXPIRE', jk, max_age)
    redis.call('EXPIRE', KEYS[1], max_age)
    if cancel then out[#out + 1] = 1 else out[#out + 1] = 0 end
  end
end
return out
"""
)

#: KEYS: processing, workers, then the queue lists from highest to lowest priority. Read-only:
#: returns {running jobs, live workers (alive past the server's now), queued jobs per list...}.
HEALTH = (
    _NOW
    + """
local out = {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[2], '(' .. now_ms(), '+inf')}
for i = 3, #KEYS do out[#out + 1] = redis.call('LLEN', KEYS[i]) end
return out
"""
)

#: KEYS: job hash. ARGV: worker_id, attempt, percent, message. Returns -1 / 1 / 0 as HEARTBEAT.
PROGRESS = (
    _OWNED
    + """
local mine, cancel = owned(KEYS[1], ARGV[1], ARGV[2])
if not mine then return -1 end
redis.call('HSET', KEYS[1], 'progress', ARGV[3], 'progress_message', ARGV[4])
if cancel then return 1 end
return 0
"""
)

#: KEYS: job hash, processing, channel. ARGV: job_id, worker_id, attempt, status, result json,
#: error, traceback, max_running. Compare-and-set: returns 0 if this worker/attempt no longer
#: owns the job (a late finisher whose lease was reaped changes nothing), 1 if it recorded
#: ``status``, 2 if it recorded CANCELLED instead: a cancel accepted before this FINISH wins
#: over any other outcome, unless the job passed its point of no return (``committed``).
#: Publishes a wake-up only when the cap was reached (other workers may be waiting for a slot).
FINISH = (
    _NOW
    + _OWNED
    + """
local mine, cancel = owned(KEYS[1], ARGV[2], ARGV[3])
if not mine then return 0 end
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[1])
local reply = 1
if cancel and ARGV[4] ~= 'cancelled' and redis.call('HGET', KEYS[1], 'committed') ~= '1' then
  local outcome = ARGV[4]
  if outcome == 'failed' then outcome = 'failed (' .. ARGV[6] .. ')' end
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completed_at', now,
    'error', 'cancelled on request while running (the handler then ended as ' .. outcome .. ')')
  reply = 2
elseif ARGV[4] == 'completed' then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'completed_at', now, 'result', ARGV[5], 'progress', 100)
else
  redis.call('HSET', KEYS[1], 'status', ARGV[4], 'completed_at', now, 'error', ARGV[6],
    'error_traceback', ARGV[7])
end
redis.call('EXPIRE', KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'ttl_seconds')))
if redis.call('ZCARD', KEYS[2]) + 1 >= tonumber(ARGV[8]) then redis.call('PUBLISH', KEYS[3], 'new') end
return reply
"""
)

#: KEYS: job hash, processing, channel. ARGV: job_id, worker_id, attempt, prefix, max_age.
#: A worker that stops gracefully gives an unfinished job back (front of its queue, PENDING).
REQUEUE = (
    _OWNED
    + """
if not owned(KEYS[1], ARGV[2], ARGV[3]) then return 0 end
local queue = ARGV[4] .. 'queue:' .. redis.call('HGET', KEYS[1], 'priority')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'pending', 'progress', 0, 'progress_message', 'requeued: its worker stopped')
redis.call('LPUSH', queue, ARGV[1])
redis.call('EXPIRE', queue, ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', KEYS[3], 'new')
return 1
"""
)

#: KEYS: job hash, channel. ARGV: job_id, prefix. Returns {'missing'}, {'cancelled'} (was pending),
#: {'cancelling'} (running: flag set, the worker stops it), {'committed', status} (past its point
#: of no return: refused) or {'final', status} (already ended).
CANCEL = (
    _NOW
    + """
local f = redis.call('HMGET', KEYS[1], 'status', 'priority', 'ttl_seconds', 'committed')
if not f[1] then return {'missing'} end
if (f[1] == 'pending' or f[1] == 'running') and f[4] == '1' then return {'committed', f[1]} end
if f[1] == 'pending' then
  redis.call('LREM', ARGV[2] .. 'queue:' .. f[2], 0, ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completed_at', now_ms(), 'cancel_requested', '1',
    'error', 'cancelled on request before it started')
  redis.call('EXPIRE', KEYS[1], tonumber(f[3]))
  return {'cancelled'}
elseif f[1] == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', KEYS[2], 'cancel:' .. ARGV[1])
  return {'cancelling'}
end
return {'final', f[1]}
"""
)

#: KEYS: job hash. ARGV: worker_id, attempt. A handler's point of no return: returns -1 if the
#: job is no longer this worker's, 1 if a cancel was requested first (the handler must stop and
#: roll back), else 0 after marking the job ``committed`` (from now on cancels are refused).
COMMIT = (
    _OWNED
    + """
local mine, cancel = owned(KEYS[1], ARGV[1], ARGV[2])
if not mine then return -1 end
if cancel then return 1 end
redis.call('HSET', KEYS[1], 'committed', '1')
return 0
"""
)

#: KEYS: processing, channel, lost. ARGV: prefix, max_attempts, max_age, limit. Returns jobs moved.
REAP = (
    _NOW
    + _REAP_FN
    + """
return reap(KEYS[1], ARGV[1], now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), KEYS[2], KEYS[3])
"""
)

#: KEYS: workers zset. ARGV: worker_id, alive_ms (0 = remove), max_age. Prunes dead workers.
WORKER_ALIVE = (
    _NOW
    + """
local now = now_ms()
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""
)

# -- the sweep's repairs: each re-checks one job atomically, so it is safe beside live workers --

#: KEYS: job hash, processing. ARGV: job_id, lease_ms. A RUNNING job missing from the processing
#: set gets a fresh lease there: its worker's next heartbeat renews it, or (worker gone) the
#: reaper re-queues it when the lease expires. Returns 1 if repaired, else 0.
REPAIR_RUNNING = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)

#: KEYS: job hash, channel. ARGV: job_id, prefix, max_age. A PENDING job in no queue list goes back
#: to the front of its priority's list. Returns 1 if repaired, else 0.
REPAIR_PENDING = """
local f = redis.call('HMGET', KEYS[1], 'status', 'priority')
if f[1] ~= 'pending' then return 0 end
local queue = ARGV[2] .. 'queue:' .. f[2]
if redis.call('LPOS', queue, ARGV[1]) then return 0 end
redis.call('LPUSH', queue, ARGV[1])
redis.call('EXPIRE', queue, ARGV[3])
redis.call('PUBLISH', KEYS[2], 'new')
return 1
"""

#: KEYS: job hash, container (a queue list or the processing set), lost. ARGV: job_id, 'list' or
#: 'zset', max_age. An id whose hash is gone is dropped from the container and recorded as lost.
#: Returns 1 if it was, else 0.
FORGET = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] == 'list' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('ZADD', KEYS[3], now_ms(), ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""
)
