-- Argo CD health check for crossfade.dev/InferencePool (Lua 5.1, as Argo CD runs it).
--
-- Install it in argocd-cm:
--   data:
--     resource.customizations.health.crossfade.dev_InferencePool: |
--       <this file>
--
-- Mapping, first match wins:
--   no status / no conditions yet           -> Progressing (operator has not reported)
--   status.observedGeneration < generation  -> Progressing (spec change not processed)
--   Ready=False reason InvalidSpec          -> Degraded   (fix the spec)
--   spec.paused                             -> Suspended  (frozen on purpose)
--   FailStatic=True                         -> Degraded   (holding last-known-good weights)
--   Ready=Unknown                           -> Progressing
--   Ready=False                             -> Degraded   (no placement serves)
--   FailingOver=True                        -> Progressing (traffic is moving)
--   Degraded=True                           -> Degraded   (serving, a placement is down)
--   Ready=True                              -> Healthy    (message says when on a fallback)
local hs = {}

local function condition(conditions, wanted)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local function is(c, status)
  return c ~= nil and c.status == status
end

local status = obj.status
local conditions = nil
if status ~= nil then
  conditions = status.conditions
end
if conditions == nil or #conditions == 0 then
  hs.status = "Progressing"
  hs.message = "waiting for the crossfade operator to report status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "operator has not processed generation " .. tostring(generation) .. " yet"
  return hs
end

local ready = condition(conditions, "Ready")
if is(ready, "False") and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = "invalid spec: " .. (ready.message or "")
  return hs
end

if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "paused: no scaling or traffic changes until spec.paused is false"
  return hs
end

local failStatic = condition(conditions, "FailStatic")
if is(failStatic, "True") then
  hs.status = "Degraded"
  hs.message = "fail-static, " .. describe(failStatic)
  return hs
end

if ready == nil or is(ready, "Unknown") then
  hs.status = "Progressing"
  hs.message = "readiness not known yet"
  return hs
end
if not is(ready, "True") then
  hs.status = "Degraded"
  hs.message = "not serving, " .. describe(ready)
  return hs
end

local failingOver = condition(conditions, "FailingOver")
if is(failingOver, "True") then
  hs.status = "Progressing"
  hs.message = "shifting traffic, " .. describe(failingOver)
  return hs
end

local degraded = condition(conditions, "Degraded")
if is(degraded, "True") then
  hs.status = "Degraded"
  hs.message = "serving, but " .. describe(degraded)
  return hs
end

hs.status = "Healthy"
local failedOver = condition(conditions, "FailedOver")
if is(failedOver, "True") then
  hs.message = "serving from a fallback placement, " .. describe(failedOver)
else
  hs.message = describe(ready)
end
return hs
