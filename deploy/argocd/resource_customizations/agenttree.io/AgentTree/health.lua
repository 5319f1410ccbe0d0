-- Argo CD health of an agenttree.io/v1alpha1 AgentTree (Lua 5.1, as Argo CD's gopher-lua).
-- Until the operator has observed the current generation: Progressing. Then, from the conditions:
-- Degraded=True -> Degraded (it wins over Ready: a bad agent must not hide behind a ready root),
-- Ready=True -> Healthy, anything else -> Progressing (worker Deployments rolling out).
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
local ready = condition(status, "Ready")
local progressing = condition(status, "Progressing")

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = messageOf(degraded, "Degraded")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  local agents = ""
  if status.ready ~= nil and status.ready ~= "" then
    agents = " (" .. status.ready .. " agents ready)"
  end
  hs.message = messageOf(ready, "Ready") .. agents
else
  hs.status = "Progressing"
  hs.message = messageOf(progressing, messageOf(ready, "Waiting for the worker Deployments"))
end
return hs
