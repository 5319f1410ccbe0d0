-- Argo CD health of an agenttree.io/v1alpha1 AgentRun (Lua 5.1, as Argo CD's gopher-lua).
-- Pending / Running -> Progressing, Succeeded -> Healthy, Failed -> Degraded,
-- AwaitingApproval / Paused -> Suspended (waiting on a person: a decision, a raised budget), Cancelled -> Suspended (a deliberate stop,
-- not a fault). The operator is the only writer of status; until it has written a phase the run is
-- Progressing. Argo CD runs this with only the base, table and package libraries open (and
-- require("os") for time and date): no string.* or math.* here.
local hs = {}

local function nonEmpty(s)
  return s ~= nil and s ~= ""
end

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

-- Why the run is where it is: the Succeeded condition's message, then status.message, then the
-- first other condition that has a message.
local function why(status)
  local succeeded = condition(status, "Succeeded")
  if succeeded ~= nil and nonEmpty(succeeded.message) then
    return succeeded.message
  end
  if nonEmpty(status.message) then
    return status.message
  end
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if nonEmpty(c.message) then
        return c.message
      end
    end
  end
  return nil
end

local function progress(status)
  local parts = {}
  if nonEmpty(status.currentAgent) then
    table.insert(parts, "agent " .. status.currentAgent)
  end
  if status.steps ~= nil and status.steps ~= 0 then
    table.insert(parts, "step " .. tostring(status.steps))
  end
  if #parts == 0 then
    return ""
  end
  return " (" .. table.concat(parts, ", ") .. ")"
end

local function withWhy(label, status)
  local reason = why(status)
  if reason ~= nil then
    return label .. ": " .. reason
  end
  return label
end

local function cancelRequested()
  local ann = obj.metadata and obj.metadata.annotations
  return ann ~= nil and ann["agenttree.io/cancel"] == "true"
end

local function active(message)
  if cancelRequested() then
    return "Cancellation requested; " .. message
  end
  return message
end

local status = obj.status
if status == nil or not nonEmpty(status.phase) then
  hs.status = "Progressing"
  hs.message = active("Waiting for the operator to start the run")
  return hs
end

local phase = status.phase
if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = active(withWhy("Pending", status))
elseif phase == "Running" then
  hs.status = "Progressing"
  hs.message = active("Running" .. progress(status))
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = active(withWhy("Awaiting approval" .. progress(status), status))
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = active(withWhy("Paused" .. progress(status), status))
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  if nonEmpty(status.answer) then
    hs.message = status.answer
  else
    hs.message = "Succeeded" .. progress(status)
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = why(status) or ("Failed" .. progress(status))
elseif phase == "Cancelled" then
  hs.status = "Suspended"
  hs.message = why(status) or "Cancelled"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
