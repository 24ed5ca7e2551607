-- Argo CD health of an evals.io EvalSuite (a long-running stack, and optionally the matrix it
-- runs), read from its conditions with observedGeneration, as for every evals.io kind.
-- Degraded: Stalled; the stack neither Ready nor Progressing; a cell regressed against the
-- baseline (Regressed); the last run did not pass (Passed False). Progressing: the stack
-- coming up, a run of the matrix in progress, a spec not observed yet. Healthy: Ready, and
-- the last run of the matrix (if any) passed.
local hs = {}

local function condition(conditions, type)
  for _, c in ipairs(conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  local reason = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

local status = obj.status
if status == nil or status.observedGeneration == nil
    or status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local ready = condition(status.conditions, "Ready")
local stalled = condition(status.conditions, "Stalled")
local progressing = condition(status.conditions, "Progressing")
local passed = condition(status.conditions, "Passed")
local regressed = condition(status.conditions, "Regressed")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

if ready ~= nil and ready.status == "True" then
  if regressed ~= nil and regressed.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(regressed)
    return hs
  end
  if passed ~= nil and passed.status == "False" then
    hs.status = "Degraded"
    hs.message = describe(passed)
    return hs
  end
  if progressing ~= nil and progressing.status == "True" then
    hs.status = "Progressing"
    hs.message = describe(progressing)
    return hs
  end
  hs.status = "Healthy"
  hs.message = describe(passed or ready)
  return hs
end

if ready ~= nil and ready.status == "False"
    and progressing ~= nil and progressing.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
