-- Argo CD action `cancel` on an AgentRun: request cancellation through the annotation the
-- operator honours (docs/contracts.md, "Annotations"). The spec is immutable, and the operator is
-- the only writer of status, so an annotation is the one channel left; the operator cancels the
-- Temporal workflow and sets phase Cancelled.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["agenttree.io/cancel"] = "true"
return obj
