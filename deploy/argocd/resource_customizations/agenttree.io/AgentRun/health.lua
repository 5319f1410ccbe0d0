-- Argo CD health of an agenttree.io/v1alpha1 AgentRun (Lua 5.1, as Argo CD's gopher-lua).
-- Pending / Running -> Progressing, Succeeded -> Healthy, Failed -> Degraded,
-- Cancelled -> Suspended (a deliberate stop, not a fault). The operator is the only writer of
-- status; until it has written a phase the run is Progressing.
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

local function progress(status)
  local parts = {}
  if status.currentAgent ~= nil and status.currentAgent ~= "" then
    table.insert(parts, "agent " .. status.currentAgent)
  end
  if status.steps ~= nil then
    table.insert(parts, "step " .. tostring(status.steps))
  end
  if #parts == 0 then
    return ""
  end
  return " (" .. table.concat(parts, ", ") .. ")"
end

local function cancelRequested()
  local ann = obj.metadata and obj.metadata.annotations
  return ann ~= nil and ann["agenttree.io/cancel"] == "true"
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the run"
  return hs
end

local phase = status.phase
local succeeded = condition(status, "Succeeded")

if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "Pending" .. progress(status)
elseif phase == "Running" then
  hs.status = "Progressing"
  if cancelRequested() then
    hs.message = "Cancellation requested" .. progress(status)
  else
    hs.message = "Running" .. progress(status)
  end
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  if status.answer ~= nil and status.answer ~= "" then
    hs.message = status.answer
  else
    hs.message = "Succeeded" .. progress(status)
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  if status.message ~= nil and status.message ~= "" then
    hs.message = status.message
  elseif succeeded ~= nil and succeeded.message ~= nil and succeeded.message ~= "" then
    hs.message = succeeded.message
  else
    hs.message = "Failed" .. progress(status)
  end
elseif phase == "Cancelled" then
  hs.status = "Suspended"
  if status.message ~= nil and status.message ~= "" then
    hs.message = status.message
  else
    hs.message = "Cancelled"
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
