-- The shared adaptive token bucket of aiodots.contrib.redis.RedisRateLimiter.
--
-- One call does everything a process needs in one round trip: record its feedback
-- (successes, 429s with their Retry-After), move the adaptive rate, and reserve up to
-- `want` send slots. The same rules as aiodots.ratelimit.AdaptiveRateLimiter, on state
-- every process shares; the dollar placeholders are that class's constants, filled in by
-- Python so both limiters follow one set of numbers. redis_estimate.lua, put in front of
-- this file, solves the server's bucket from the send log as ratelimit_estimate.py does.
--
-- Time is Redis's own clock (TIME), so machines need not agree on theirs: callers send
-- times on their own clocks with how far theirs is from Redis's (as their fastest
-- recent round trip measured it), and receive offsets ("send in 0.02 s"). A call that
-- has yet to measure it is taken to have reached Redis at once (an age, as it were):
-- off by as long as it took, which the send log cannot afford (a first burst, sent
-- within a few milliseconds, would lose its order).
--
-- A reservation may lie in the future (the bucket goes into debt), but no further ahead
-- than `horizon` seconds, except the first slot of a call, which is always granted (so
-- one call serves at least one request): a rate cut or a pause then reaches every
-- process within about that time, and no process hoards slots another could use sooner.
--
-- After a 429 with Retry-After the rate is decided when the pause ends (as the
-- in-process limiter does), from the send log: when every process's accepted requests
-- were sent (KEYS[4], since the last pause ended) and the first phase of the job (KEYS[5],
-- its first burst), against when the refused one was. A window of successes cannot say
-- the rate there: at a few bursts a second the probe after a pause is refused before the
-- window may be measured, and a cut of a tenth a pause met a pause every second.
-- A 429 without Retry-After costs only its retry, and still cuts (measured, then 0.9).
--
-- KEYS[1] state (hash), KEYS[2] recent successes (list of "time count"),
-- KEYS[3] live processes (sorted set: process id -> last call),
-- KEYS[4] send times of accepted requests since the last pause (list),
-- KEYS[5] send times of the first phase's accepted requests (list)
-- ARGV: want, horizon, ceiling (0: none), burst, adaptive (1/0), when the requests
--       accepted since the caller's last call were sent (space-separated), process id,
--       live ttl (s), key ttl (ms), Redis's clock less the caller's ('' not known yet),
--       the caller's clock at this call, then pairs of (when a request answered 429 was
--       sent, its Retry-After in s or 0); times on the caller's clock
--
-- Returns: granted, rate ('' while unthrottled), pause left (s), live processes,
-- decreases so far, solved rate and burst ('' until solved), Redis's clock, then one
-- offset (s from now) per granted slot.

local WINDOW = $WINDOW
local MIN_MEASURE = $MIN_MEASURE
local SETTLE = $SETTLE
local SLOW_START_DOUBLING = $SLOW_START_DOUBLING
local SLOW_START_FLOOR = $SLOW_START_FLOOR
local RECOVERY = $RECOVERY
local HOLD = $HOLD
local PLATEAU = $PLATEAU
local SOLVED_PLATEAU = $SOLVED_PLATEAU
local PROBE = $PROBE
local PAUSE_HOLD = $PAUSE_HOLD
local BURST_SPAN = $BURST_SPAN
local BURST_MARGIN = $BURST_MARGIN
local PRECISE = $PRECISE
local PRECISE_TRIES = $PRECISE_TRIES
local BRACKET_RAMP = $BRACKET_RAMP
local LOG_SIZE = $LOG_SIZE
local BETA = $BETA
local MIN_RATE = $MIN_RATE

local function fmt(x) return string.format('%.17g', x) end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local want = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local ceiling = tonumber(ARGV[3])
if ceiling <= 0 then ceiling = nil end
local ceiling_burst = tonumber(ARGV[4])
local adaptive = ARGV[5] == '1'
local shift = tonumber(ARGV[10]) or (now - tonumber(ARGV[11]))
local function redis_time(t) return math.min(now, tonumber(t) + shift) end
local sent_ok = {}
for t in string.gmatch(ARGV[6], '%S+') do sent_ok[#sent_ok + 1] = redis_time(t) end
local successes = #sent_ok

local raw = redis.call('HGETALL', KEYS[1])
local s = {}
for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end

-- The bucket's capacity: the ceiling's burst, or one; a server's burst (less a margin)
-- once the log says what it is.
local server_burst = tonumber(s.burst)  -- the server's burst less the margin, once known
local capacity = server_burst or (ceiling and ceiling_burst or 1)
if ceiling then capacity = math.min(capacity, ceiling_burst) end
local decreased_at = tonumber(s.decreased)  -- nil: never cut
-- Never cut: the caller's ceiling, or nil (unthrottled until a 429). Cut: the adapted
-- rate, under the caller's ceiling (a job run again with a lower one obeys it at once).
-- Refused while unthrottled, the rate stays nil until that pause's end decides it.
local rate = ceiling
if decreased_at then
  rate = tonumber(s.rate) or ceiling
  if ceiling and rate and rate > ceiling then rate = ceiling end
end
local tokens = math.min(tonumber(s.tokens) or capacity, capacity)
local refilled = tonumber(s.refilled) or now
local pause_until = tonumber(s.pause) or 0
local slow_start = s.slow == '1'
local start_rate = tonumber(s.start_rate) or 0
local doubling = tonumber(s.doubling) or SLOW_START_DOUBLING
local w_max = tonumber(s.w_max) or 0
local first_ok = tonumber(s.first_ok)
local last_pause = tonumber(s.last_pause) or 0
local decreases = tonumber(s.decreases) or 0
-- The send log's phases (see ratelimit_estimate.py): when this one began (nil: with the
-- first request), how long the bucket had to refill before it, when its first refused
-- request was sent (nil: none yet), and whether a refusal's pause runs, with the rate
-- to be decided at its end; how many slots were granted while it ran.
local phase_start = tonumber(s.phase_start)
local phase_rest = tonumber(s.phase_rest)
local refused_at = tonumber(s.refused)
local refused_last = tonumber(s.refused_last)  -- when its last refused request was sent
local due = s.due == '1'
local held = tonumber(s.held) or 0
local has_first = s.first == '1'
local first_burst = tonumber(s.first_burst)  -- the first refusal's burst, if it was one
local tries = tonumber(s.tries) or 0  -- probes left that solve the rate only within PRECISE
local solved_rate = tonumber(s.solved_rate)
local solved_burst = tonumber(s.solved_burst)

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

local function push_all(key, times)
  -- In chunks: unpack() of thousands of values would overflow Lua's stack.
  for i = 1, #times, 256 do
    local chunk = {}
    for j = i, math.min(i + 255, #times) do chunk[#chunk + 1] = fmt(times[j]) end
    redis.call('RPUSH', key, unpack(chunk))
  end
end

-- ... and the send log: when each accepted request was sent. One sent before this
-- phase began belongs to a phase already decided.
if adaptive and successes > 0 then
  local fresh = {}
  for _, t in ipairs(sent_ok) do
    if not phase_start or t >= phase_start then fresh[#fresh + 1] = t end
  end
  push_all(KEYS[4], fresh)
  redis.call('LTRIM', KEYS[4], -LOG_SIZE, -1)
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
    tokens = -held  -- slots granted unthrottled while a pause's decision was due
  end
  refilled = now
  rate = r
end

-- The bucket holds `burst` when the pause ends, less the slots already granted for
-- after it while the decision was due.
local function fill(burst)
  tokens = burst - held - math.max(0, pause_until - now) * rate
end

local function measured_rate()
  if not first_ok then return nil end
  local start = math.max(now - WINDOW, first_ok, pause_until + SETTLE)
  local span = now - start
  if span < MIN_MEASURE then return nil end
  return successes_since(start) / span
end

local function cut()
  local measured = measured_rate()
  local refused = rate
  if measured and measured < rate then refused = measured end
  slow_start = false
  w_max = refused
  set_rate(bounded(refused * BETA))
end

local function decrease()
  -- A 429 without Retry-After.
  decreases = decreases + 1
  decreased_at = now
  if not rate then
    -- First 429 while unthrottled: start slow from half of what got through.
    local elapsed = math.max(now - (first_ok or now), 0.1)
    local seen = math.max(successes_since(now - WINDOW) / elapsed, 2 * SLOW_START_FLOOR)
    slow_start = true
    start_rate = bounded(seen / 2)
    doubling = SLOW_START_DOUBLING
    set_rate(start_rate)
    return
  end
  cut()
end

local function refused(sent_at)
  -- A 429 with Retry-After: note where this phase's refusals began; what to do about the
  -- rate is decided when the pause ends, once every process has told its successes.
  if phase_start and sent_at < phase_start then return end  -- an echo of the last one
  if not refused_at then
    decreases = decreases + 1
    decreased_at = now
    refused_at, refused_last = sent_at, sent_at
    due = true
  else
    refused_at = math.min(refused_at, sent_at)
    refused_last = math.max(refused_last, sent_at)
  end
end

-- The phase that just ended in a refusal, and the start of the next one.
local function close_phase(refused, next_start)
  local begun = phase_start
  local sends = {}
  local later = {}
  local last_sent = refused
  for _, v in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
    local t = tonumber(v)
    if t < refused and (not begun or t >= begun) then sends[#sends + 1] = t end
    if t < next_start then
      if t > last_sent then last_sent = t end
    else
      later[#later + 1] = t
    end
  end
  table.sort(sends)
  local start = begun or math.min(refused, sends[1] or refused)
  local phase = {start = start, refused = refused, sends = sends, rest = phase_rest}
  redis.call('DEL', KEYS[4])
  push_all(KEYS[4], later)
  phase_start = next_start
  phase_rest = math.max(0, next_start - last_sent)
  refused_at, refused_last = nil, nil
  return phase
end

local function keep_first(phase)
  has_first = true
  redis.call('DEL', KEYS[5])
  push_all(KEYS[5], phase.sends)
  redis.call('HSET', KEYS[1], 'first_start', fmt(phase.start),
    'first_refused', fmt(phase.refused), 'first_rest', phase.rest and fmt(phase.rest) or '')
end

local function first_phase()
  local sends = {}
  for _, v in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do sends[#sends + 1] = tonumber(v) end
  return {start = tonumber(s.first_start), refused = tonumber(s.first_refused),
          sends = sends, rest = tonumber(s.first_rest)}
end

-- A slow start from `r`, doubling every `d` seconds at the least, with `t` probes left
-- that solve the rate only within PRECISE. Once the first burst said the server's burst,
-- that (less the margin) goes out at once: the server's bucket is full after a pause.
local function probe(r, t, d)
  slow_start = true
  tries = t
  start_rate = r
  set_rate(r)
  doubling = math.max(SLOW_START_DOUBLING, d or 0)
  if first_burst then
    server_burst = math.max(1, first_burst - BURST_MARGIN)
    capacity = server_burst
    if ceiling then capacity = math.min(capacity, ceiling_burst) end
    fill(capacity)
  end
end

-- Probe again, after a probe the server refused too soon to say its rate closely: from
-- under the rates its phase allows, across them in about BRACKET_RAMP seconds.
local function reprobe(first, phase, r)
  local low, top = probe_bracket(first, phase, r)
  local begin = bounded(math.max(low, SLOW_START_FLOOR))
  local d = nil
  if top > begin then d = BRACKET_RAMP / (math.log(top / begin) / math.log(2)) end
  probe(begin, math.max(0, tries - 1), d)
end

-- Send at a (rate, burst) solved from the send log: that rate at once, and the burst at
-- once too when the server's bucket is full again (after a pause).
local function settle(r, b, full)
  if not slow_start then
    -- Refused at a rate held: trust the solution no further than a cut would go.
    r = math.max(r, BETA * rate)
  end
  solved_rate, solved_burst = r, b
  slow_start = false
  w_max = r
  server_burst = math.max(1, math.floor(b) - BURST_MARGIN)
  set_rate(bounded(SOLVED_PLATEAU * r))
  capacity = server_burst
  if ceiling then capacity = math.min(capacity, ceiling_burst) end
  if full then fill(capacity) else tokens = 0 end
end

local function after_pause()
  due = false
  -- A first refusal of unthrottled processes ends the phase of their first bursts, which
  -- left within a few milliseconds of each other: closer than their clocks and their
  -- ways to the server keep order. A request accepted may be logged as sent after one
  -- refused, and left out of a phase that ended at the first refusal (a burst of 5
  -- counted as 1, in traces of two processes). Every refused request found the bucket
  -- empty: that phase ends at the last one.
  local phase = close_phase(rate and refused_at or refused_last, pause_until)
  if not rate then
    -- All that is known is what got through. Start slow from half of that and double
    -- until refused again. When the accepted requests all left at once, their number
    -- is the server's burst.
    keep_first(phase)
    local elapsed = math.max(phase.refused - phase.start, 0.1)
    local seen = math.max(#phase.sends / elapsed, 2 * SLOW_START_FLOOR)
    local last_accepted = phase.sends[#phase.sends] or phase.start
    if last_accepted - phase.start <= BURST_SPAN then first_burst = #phase.sends end
    probe(bounded(seen / 2), PRECISE_TRIES, nil)
  elseif not has_first then
    -- Throttled by a ceiling from the start: this phase still began with the server's
    -- bucket full, and so says what its burst is.
    keep_first(phase)
    cut()
  else
    local precise = slow_start and tries > 0
    local within = nil
    if precise then within = PRECISE end
    local first = first_phase()
    local r, b = estimate_bucket(first, phase, within)
    if not r and slow_start then
      -- The server refused the probe itself, too soon to say its rate closely: probing
      -- on from there would be refused as soon, pause after pause.
      reprobe(first, phase, rate)
    elseif not r or r > rate then
      cut()
    else
      settle(r, b, true)
    end
  end
  held = 0
end

local function grow()
  -- The curve starts when sending resumes: a Retry-After pause is not recovery time.
  local t = now - math.max(decreased_at, pause_until)
  if t <= 0 then return end
  local target
  if slow_start then
    target = start_rate * 2 ^ math.min(t / doubling, 60)
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

-- 429s reported by the caller, each with when its request was sent.
for i = 12, #ARGV, 2 do
  local sent_at = redis_time(ARGV[i])
  local retry_after = tonumber(ARGV[i + 1])
  if retry_after > 0 then
    if adaptive then refused(sent_at) end
    pause_until = math.max(pause_until, now + retry_after)
    last_pause = retry_after
  elseif adaptive and not due and (not decreased_at or sent_at >= decreased_at + horizon) then
    -- Only a request sent after the last cut proves the cut was not enough; and one sent
    -- within `horizon` after it may have used a slot reserved before it. One answered
    -- while a pause's decision is due was sent in that pause's episode.
    decrease()
  end
end
-- Decided as soon as no slot it would change can be granted first: within `horizon` of
-- the pause's end (every process's answers to the phase have long been told by then).
if due and now >= pause_until - horizon then after_pause() end
if decreased_at and not due then grow() end

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
  if due then held = held + #offsets end
end

local function opt(x) if x then return fmt(x) end return '' end
redis.call('HSET', KEYS[1],
  'rate', opt(rate), 'tokens', fmt(tokens), 'refilled', fmt(refilled),
  'pause', fmt(pause_until), 'decreased', opt(decreased_at), 'slow', slow_start and '1' or '0',
  'start_rate', fmt(start_rate), 'doubling', fmt(doubling), 'w_max', fmt(w_max),
  'first_ok', opt(first_ok), 'last_pause', fmt(last_pause), 'decreases', decreases,
  'burst', opt(server_burst), 'phase_start', opt(phase_start), 'phase_rest', opt(phase_rest),
  'refused', opt(refused_at), 'refused_last', opt(refused_last), 'due', due and '1' or '0', 'held', held,
  'first', has_first and '1' or '0', 'first_burst', opt(first_burst), 'tries', tries,
  'solved_rate', opt(solved_rate), 'solved_burst', opt(solved_burst))
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end

local reply = {#offsets, opt(rate), fmt(math.max(0, pause_until - now)), live, decreases,
               opt(solved_rate), opt(solved_burst), fmt(now)}
for i = 1, #offsets do reply[#reply + 1] = fmt(offsets[i]) end
return reply
