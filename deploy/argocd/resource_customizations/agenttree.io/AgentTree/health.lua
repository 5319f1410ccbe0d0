-- Argo CD health of an agenttree.io/v1alpha1 AgentTree (Lua 5.1, as Argo CD's gopher-lua).
-- Until the operator has observed the current generation: Progressing. Then, from the conditions:
-- Degraded=True or Stalled=True -> Degraded (an invalid spec, or workers refused / stuck / failing;
-- it wins over Ready: a bad agent must not hide behind a ready root); Ready not True -> Progressing
-- with the Ready condition's message ("spec.agents[0] (supervisor): 0/1 workers ready");
-- Reconciling=True (a rollout while the old workers serve) -> Progressing; otherwise Healthy.
-- Argo CD runs this with only the base, table and package libraries open (and require("os") for
-- time and date): no string.* or math.* here.
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function messageOf(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the tree"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local degraded = condition(status, "Degraded")
local stalled = condition(status, "Stalled")
local reconciling = condition(status, "Reconciling")
local ready = condition(status, "Ready")

if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = messageOf(degraded, messageOf(stalled, "Degraded"))
elseif isTrue(stalled) then
  hs.status = "Degraded"
  hs.message = messageOf(stalled, "Stalled")
elseif not isTrue(ready) then
  hs.status = "Progressing"
  hs.message = messageOf(ready, messageOf(reconciling, "Waiting for the worker Deployments"))
elseif isTrue(reconciling) then
  hs.status = "Progressing"
  hs.message = messageOf(reconciling, "Reconciling")
else
  hs.status = "Healthy"
  hs.message = messageOf(ready, "Ready")
end
return hs
