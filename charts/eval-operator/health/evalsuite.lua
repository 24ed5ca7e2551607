-- Argo CD health of an evals.io EvalSuite (a long-running stack), read from its conditions:
-- Ready, Stalled and Progressing with observedGeneration, as for every evals.io kind.
-- Healthy: Ready. Degraded: Stalled, or neither Ready nor Progressing. Suspended:
-- spec.suspend. Progressing: anything else, including a spec not observed yet.
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

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true"
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
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
