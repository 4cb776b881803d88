-- The server's token bucket, found again from the send log: aiodots/ratelimit_estimate.py
-- in Lua, for redis_bucket.lua (which this file is put in front of). Function for
-- function the same; see the Python for why each step is what it is. A phase is a
-- table {start = s, refused = s, sends = {sorted send times}, rest = s or nil}.

local EST_ITERATIONS = $ITERATIONS
local EST_MAX_RATE = $MAX_RATE
local EST_UNSAID = $UNSAID
local EST_ROUNDS = $ROUNDS
local EST_RATE_POSITION = $RATE_POSITION
local EST_LEFTOVER = $LEFTOVER

-- (the fewest tokens any accepted request found, the tokens the refused one found)
local function replay(phase, rate, burst, leftover)
  local level = burst
  if phase.rest then level = math.min(burst, (leftover or 0) + phase.rest * rate) end
  local t = phase.start
  local lowest = math.huge
  local sends = phase.sends
  for i = 1, #sends do
    local sent = sends[i]
    level = level + (sent - t) * rate
    if level > burst then level = burst end
    if level < lowest then lowest = level end
    level = level - 1
    t = sent
  end
  return lowest, math.min(burst, level + (phase.refused - t) * rate)
end

-- The least x in [low, high] where the increasing `found(x)` reaches one token.
local function threshold(found, low, high)
  if found(low) >= 1 then return low end
  if found(high) < 1 then return high end
  for _ = 1, EST_ITERATIONS do
    local mid = (low + high) / 2
    if found(mid) < 1 then low = mid else high = mid end
  end
  return (low + high) / 2
end

local function burst_bounds(phase, rate)
  local top = #phase.sends + 2
  local least = threshold(function(b) return (replay(phase, rate, b, EST_LEFTOVER)) end, 1, top)
  local most = threshold(function(b) local _, r = replay(phase, rate, b); return r end, 1, top)
  return least, most
end

local function solve_burst(phase, rate)
  local low, high = burst_bounds(phase, rate)
  local whole = math.ceil(low - 1e-9)
  if whole <= high then return whole end
  return (low + high) / 2
end

-- (least, most) rates that fit the phase with `burst`, or nil.
local function rate_bounds(phase, burst)
  if phase.refused <= phase.start then return nil end
  local _, still = replay(phase, 0, burst)
  if still >= 1 then return nil end
  local high = (#phase.sends + 1) / (phase.refused - phase.start)
  while select(2, replay(phase, high, burst)) < 1 do
    high = high * 2
    if high > EST_MAX_RATE then return nil end
  end
  local least = threshold(function(r) return (replay(phase, r, burst, EST_LEFTOVER)) end, 0, high)
  local most = threshold(function(r) local _, x = replay(phase, r, burst); return x end, 0, high)
  return least, most
end

local function solve_rate(phase, burst, within)
  local low, high = rate_bounds(phase, burst)
  if not low then return nil end
  if high > within * low then return nil end
  local rate = high
  if low <= high then rate = low + EST_RATE_POSITION * (high - low) end
  if rate > 0 then return rate end
  return nil
end

-- (rate, burst) consistent with both phases, or nil.
local function estimate_bucket(first, last, within)
  local span = last.refused - last.start
  if span <= 0 or #last.sends == 0 then return nil end
  local rate = #last.sends / span
  local burst = 0
  for _ = 1, EST_ROUNDS do
    local previous = burst
    burst = solve_burst(first, rate)
    if burst == previous then break end
    rate = solve_rate(last, burst, within or EST_UNSAID)
    if not rate then return nil end
  end
  return rate, burst
end

-- (a rate under the server's to probe again from, the most the last phase allows)
local function probe_bracket(first, last, rate)
  local low, high = rate_bounds(last, solve_burst(first, rate))
  if not low then low, high = 0, rate end
  local top = math.min(high, rate)
  return math.max(low, top / 2), top
end
