{{/* Rules that only exist cluster-wide. */}}
{{- define "agent-tree.clusterScopedRules" -}}
# kopf: discover the agenttree.io resources and notice CRD changes at run time.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if not (include "agent-tree.clusterWide" .) }}
# kopf, when watching a list of namespaces, observes which of them exist. Without this it retries
# the forbidden list for ~1 minute at every start before falling back (measured), delaying every
# handler. Names of namespaces only; nothing inside them.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end -}}

{{/*
Rules in every watched namespace (or cluster-wide). Verbs are what the operator's code and kopf
actually call: every write is a PATCH (merge patch, server-side apply), never a PUT, so no
"update" except where the API demands it (finalizers).
*/}}
{{- define "agent-tree.namespacedRules" -}}
# Watch trees and runs; kopf keeps its progress annotations and finalizers on them by PATCH.
- apiGroups: ["agenttree.io"]
  resources: ["agenttrees"]
  verbs: ["get", "list", "watch", "patch"]
# Runs also get deleted: spec.ttlSecondsAfterFinished.
- apiGroups: ["agenttree.io"]
  resources: ["agentruns"]
  verbs: ["get", "list", "watch", "patch", "delete"]
# One AgentApproval per tool call waiting for a person (created, never updated: approvers write the
# decision), watched for decisions to deliver.
- apiGroups: ["agenttree.io"]
  resources: ["agentapprovals"]
  verbs: ["get", "list", "watch", "create"]
# The operator is the only writer of their status.
- apiGroups: ["agenttree.io"]
  resources: ["agenttrees/status", "agentruns/status", "agentapprovals/status"]
  verbs: ["patch"]
# Worker Deployments carry an owner reference to their tree with blockOwnerDeletion, which
# (OwnerReferencesPermissionEnforcement) needs update on the owner's finalizers.
- apiGroups: ["agenttree.io"]
  resources: ["agenttrees/finalizers"]
  verbs: ["update"]
# One worker Deployment per agent: server-side applied (create + patch), watched for readiness,
# deleted when its agent leaves the tree.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events on AgentTrees and AgentRuns (kubectl describe); kopf only POSTs them.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Whether the Secrets a tree references (model.apiKeySecretRef) exist, by name: a missing one is
# reported as a Degraded condition instead of a crash-looping worker. Never list or watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Worker pods (label-selected watch): a container waiting in CrashLoopBackOff, ImagePullBackOff, ...
# becomes the tree's Degraded=True WorkersFailing. Read only.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{- end -}}
