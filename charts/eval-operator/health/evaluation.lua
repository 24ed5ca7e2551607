-- Argo CD health of an evals.io Evaluation (a bounded run), read from its status conditions.
-- Healthy: the run succeeded and its thresholds hold. Degraded: the run failed, was cancelled,
-- is blocked on a missing input, or missed a threshold. Suspended: spec.suspend holds the run.
-- Progressing: anything else, including a spec the operator has not observed yet.
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
local succeeded = condition(status.conditions, "Succeeded")
local progressing = condition(status.conditions, "Progressing")
local passed = condition(status.conditions, "Passed")

if (stalled ~= nil and stalled.status == "True")
    or (succeeded ~= nil and succeeded.status == "False") then
  hs.status = "Degraded"
  hs.message = describe((stalled ~= nil and stalled.status == "True") and stalled or succeeded)
  return hs
end

if ready ~= nil and ready.status == "True" then
  if passed ~= nil and passed.status == "False" then
    hs.status = "Degraded"
    hs.message = "Thresholds not met: " .. (passed.message or "")
    return hs
  end
  hs.status = "Healthy"
  hs.message = describe(ready)
  if passed ~= nil and passed.message ~= nil and passed.message ~= "" then
    hs.message = hs.message .. " (" .. passed.message .. ")"
  end
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: the run waits until it is false"
  return hs
end

if progressing ~= nil and progressing.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(progressing)
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
