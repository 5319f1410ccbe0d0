-- Argo CD actions offered on an AgentRun: `cancel`, enabled while the run can still be stopped
-- (no phase yet, Pending or Running) and no cancellation was requested already.
local actions = {}
local phase = nil
if obj.status ~= nil then
  phase = obj.status.phase
end
local active = phase == nil or phase == "" or phase == "Pending" or phase == "Running"
local requested = obj.metadata ~= nil and obj.metadata.annotations ~= nil
  and obj.metadata.annotations["agenttree.io/cancel"] == "true"
actions["cancel"] = {
  ["disabled"] = (not active) or requested,
  ["iconClass"] = "fa fa-fw fa-stop-circle",
  ["displayName"] = "Cancel run",
}
return actions
