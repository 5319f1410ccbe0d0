-- Argo CD actions offered on an AgentRun: `cancel`, enabled while the run can still be stopped
-- (no phase yet, Pending, Running, AwaitingApproval or Paused) and no cancellation was requested already;
-- `retry`, enabled once the run Failed (it creates a new AgentRun with spec.forkFrom).
-- Argo CD runs discovery with only the base, table and package libraries open (and require("os")
-- for time and date): no string.* or math.* here.
local actions = {}
local phase = nil
if obj.status ~= nil then
  phase = obj.status.phase
end
local active = phase == nil or phase == "" or phase == "Pending" or phase == "Running"
  or phase == "AwaitingApproval" or phase == "Paused"
local requested = obj.metadata ~= nil and obj.metadata.annotations ~= nil
  and obj.metadata.annotations["agenttree.io/cancel"] == "true"
actions["cancel"] = {
  ["disabled"] = (not active) or requested,
  ["iconClass"] = "fa fa-fw fa-stop-circle",
  ["displayName"] = "Cancel run",
}
actions["retry"] = {
  ["disabled"] = phase ~= "Failed",
  ["iconClass"] = "fa fa-fw fa-redo",
  ["displayName"] = "Retry run",
}
return actions
