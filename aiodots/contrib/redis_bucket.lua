-- The shared adaptive token bucket of aiodots.contrib.redis.RedisRateLimiter.
--
-- One call does everything a process needs in one round trip: record its feedback
-- (successes, 429s with their Retry-After), move the adaptive rate, and reserve up to
-- `want` send slots. The same rules as aiodots.ratelimit.AdaptiveRateLimiter, on state
-- every process shares; the dollar placeholders are that class's constants, filled in by
-- Python so both limiters follow one set of numbers.
--
-- Time is Redis's own clock (TIME), so machines need not agree on theirs: callers send
-- ages ("this request was sent 0.3 s ago") and receive offsets ("send in 0.02 s").
--
-- A reservation may lie in the future (the bucket goes into debt), but no further ahead
-- than `horizon` seconds, except the first slot of a call, which is always granted (so
-- one call serves at least one request): a rate cut or a pause then reaches every
-- process within about that time, and no process hoards slots another could use sooner.
--
-- KEYS[1] state (hash), KEYS[2] recent successes (list of "time count"),
-- KEYS[3] live processes (sorted set: process id -> last call)
-- ARGV: want, horizon, ceiling (0: none), burst, adaptive (1/0), successes, process id,
--       live ttl (s), key ttl (ms), then pairs of (429 age in s, Retry-After in s or 0)
--
-- Returns: granted, rate ('' while unthrottled), pause left (s), live processes,
-- decreases so far, then one offset (s from now) per granted slot.

local WINDOW = $WINDOW
local MIN_MEASURE = $MIN_MEASURE
local SETTLE = $SETTLE
local SLOW_START_DOUBLING = $SLOW_START_DOUBLING
local SLOW_START_FLOOR = $SLOW_START_FLOOR
local RECOVERY = $RECOVERY
local HOLD = $HOLD
local PLATEAU = $PLATEAU
local PROBE = $PROBE
local PAUSE_HOLD = $PAUSE_HOLD
local BETA = $BETA
local MIN_RATE = $MIN_RATE

local function fmt(x) return string.format('%.17g', x) end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local want = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local ceiling = tonumber(ARGV[3])
if ceiling <= 0 then ceiling = nil end
local burst = tonumber(ARGV[4])
local adaptive = ARGV[5] == '1'
local successes = tonumber(ARGV[6])

local raw = redis.call('HGETALL', KEYS[1])
local s = {}
for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end

local capacity = 1
if ceiling then capacity = burst end
local decreased_at = tonumber(s.decreased)  -- nil: never cut
-- Never cut: the caller's ceiling, or nil (unthrottled until a 429). Cut: the adapted
-- rate, under the caller's ceiling (a job run again with a lower one obeys it at once).
local rate = ceiling
if decreased_at then
  rate = tonumber(s.rate)
  if ceiling and rate > ceiling then rate = ceiling end
end
local tokens = math.min(tonumber(s.tokens) or capacity, capacity)
local refilled = tonumber(s.refilled) or now
local pause_until = tonumber(s.pause) or 0
local slow_start = s.slow == '1'
local start_rate = tonumber(s.start_rate) or 0
local w_max = tonumber(s.w_max) or 0
local first_ok = tonumber(s.first_ok)
local last_pause = tonumber(s.last_pause) or 0
local decreases = tonumber(s.decreases) or 0

-- Heartbeat: who is alive, so that each process knows its share if Redis goes away.
redis.call('ZADD', KEYS[3], now, ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[8]))
local live = redis.call('ZCARD', KEYS[3])

-- Successes: the measure of the rate the server accepts, over the last WINDOW seconds.
if successes > 0 then
  if not first_ok then first_ok = now end
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' ' .. successes)
end
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head or tonumber(string.match(head, '^(%S+)')) >= now - WINDOW then break end
  redis.call('LPOP', KEYS[2])
end

local function successes_since(start)
  local n = 0
  for _, entry in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    local at, count = string.match(entry, '^(%S+) (%d+)$$')
    if tonumber(at) >= start then n = n + tonumber(count) end
  end
  return n
end

local function bounded(r)
  r = math.max(MIN_RATE, r)
  if ceiling then r = math.min(r, ceiling) end
  return r
end

local function set_rate(r)
  if rate then
    -- Settle the tokens earned at the old rate before switching.
    tokens = math.min(capacity, tokens + (now - refilled) * rate)
  else
    tokens = 0
  end
  refilled = now
  rate = r
end

local function measured_rate()
  if not first_ok then return nil end
  local start = math.max(now - WINDOW, first_ok, pause_until + SETTLE)
  local span = now - start
  if span < MIN_MEASURE then return nil end
  return successes_since(start) / span
end

local function decrease()
  decreases = decreases + 1
  decreased_at = now
  if not rate then
    -- First 429 while unthrottled: start slow from half of what got through.
    local elapsed = math.max(now - (first_ok or now), 0.1)
    local seen = math.max(successes_since(now - WINDOW) / elapsed, 2 * SLOW_START_FLOOR)
    slow_start = true
    start_rate = bounded(seen / 2)
    set_rate(start_rate)
    return
  end
  local measured = measured_rate()
  local refused = rate
  if measured and measured < rate then refused = measured end
  slow_start = false
  w_max = refused
  set_rate(bounded(refused * BETA))
end

local function grow()
  -- The curve starts when sending resumes: a Retry-After pause is not recovery time.
  local t = now - math.max(decreased_at, pause_until)
  if t <= 0 then return end
  local target
  if slow_start then
    target = start_rate * 2 ^ math.min(t / SLOW_START_DOUBLING, 60)
  else
    local plateau = PLATEAU * w_max
    local hold_until = RECOVERY + HOLD + PAUSE_HOLD * last_pause
    if t < RECOVERY then
      local gap = plateau - BETA * w_max
      target = plateau - gap * (1 - t / RECOVERY) ^ 3
    elseif t < hold_until then
      target = plateau
    else
      target = plateau + PROBE * w_max * (t - hold_until) ^ 2
    end
  end
  target = bounded(target)
  if not rate or target > rate then set_rate(target) end
end

-- 429s reported by the caller, each with how long ago its request was sent.
for i = 10, #ARGV, 2 do
  local sent_at = now - tonumber(ARGV[i])
  local retry_after = tonumber(ARGV[i + 1])
  -- Only a request sent after the last cut proves the cut was not enough; and one sent
  -- within `horizon` after it may have used a slot reserved before it.
  if adaptive and (not decreased_at or sent_at >= decreased_at + horizon) then decrease() end
  if retry_after > 0 then
    pause_until = math.max(pause_until, now + retry_after)
    last_pause = retry_after
  end
end
if decreased_at then grow() end

-- Reserve up to `want` slots within the horizon (the first one in any case).
local offsets = {}
if want > 0 then
  local start = math.max(now, pause_until)
  if not rate then
    if start - now > horizon then want = 1 end
    for i = 1, want do offsets[i] = start - now end
  else
    -- Tokens at the moment sending may start (a pause fills the bucket to capacity only).
    local tok = math.min(capacity, tokens + (now - refilled) * rate)
    tok = math.min(capacity, tok + (start - now) * rate)
    for i = 1, want do
      local at = start + math.max(0, (i - tok) / rate)
      if i > 1 and at - now > horizon then break end
      offsets[i] = at - now
    end
    tokens = tok - #offsets - (start - now) * rate
    refilled = now
  end
end

local function opt(x) if x then return fmt(x) end return '' end
redis.call('HSET', KEYS[1],
  'rate', opt(rate), 'tokens', fmt(tokens), 'refilled', fmt(refilled),
  'pause', fmt(pause_until), 'decreased', opt(decreased_at), 'slow', slow_start and '1' or '0',
  'start_rate', fmt(start_rate), 'w_max', fmt(w_max), 'first_ok', opt(first_ok),
  'last_pause', fmt(last_pause), 'decreases', decreases)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end

local reply = {#offsets, opt(rate), fmt(math.max(0, pause_until - now)), live, decreases}
for i = 1, #offsets do reply[#reply + 1] = fmt(offsets[i]) end
return reply
