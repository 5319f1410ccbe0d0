{{/* Name of the chart, overridable. */}}
{{- define "agent-tree.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: "<release>-agent-tree", or the release name when it already contains the chart name. */}}
{{- define "agent-tree.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agent-tree.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries, minus the instance (selector labels add it). part-of=agent-tree
is also what the local pod runner selects on. */}}
{{- define "agent-tree.baseLabels" -}}
helm.sh/chart: {{ include "agent-tree.chart" . }}
app.kubernetes.io/part-of: agent-tree
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "agent-tree.labels" -}}
{{ include "agent-tree.baseLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector of the operator pod (immutable once installed: keep it small). */}}
{{- define "agent-tree.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-tree.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "agent-tree.operatorLabels" -}}
{{ include "agent-tree.baseLabels" . }}
{{ include "agent-tree.operatorSelectorLabels" . }}
{{- end -}}

{{- define "agent-tree.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "agent-tree.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image reference: digest wins over tag; tag defaults to appVersion. */}}
{{- define "agent-tree.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Default worker image: workers.image, falling back to the operator's image. */}}
{{- define "agent-tree.workerImage" -}}
{{- if .Values.workers.image.repository -}}
{{- printf "%s:%s" .Values.workers.image.repository (default .Chart.AppVersion .Values.workers.image.tag) -}}
{{- else -}}
{{- include "agent-tree.image" . -}}
{{- end -}}
{{- end -}}

{{/* True when the operator watches every namespace (ClusterRole) rather than a list (Roles). */}}
{{- define "agent-tree.clusterWide" -}}
{{- if not .Values.operator.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* Namespaces that get the workers' ServiceAccount: release, watched and extra ones, deduplicated. */}}
{{- define "agent-tree.workerNamespaces" -}}
{{- $all := concat (list .Release.Namespace) .Values.operator.watchNamespaces .Values.workers.serviceAccount.extraNamespaces -}}
{{- join "," (uniq $all) -}}
{{- end -}}

{{/* Name of the Secret the chart creates for connection URLs given as plain values. */}}
{{- define "agent-tree.connectionSecretName" -}}
{{- printf "%s-connections" (include "agent-tree.fullname" .) -}}
{{- end -}}

{{/* Pod securityContext of the release's own pods (operator, retention job): restricted Pod Security. */}}
{{- define "agent-tree.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext of the release's own containers (operator, retention job). */}}
{{- define "agent-tree.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* AGENT_TREE_DATABASE_URL from the connection Secret (rendered by the chart or existing): the DSN
is never rendered into a pod spec. Empty when no database is configured. */}}
{{- define "agent-tree.databaseUrlEnv" -}}
{{- if or .Values.postgresql.url .Values.postgresql.existingSecret -}}
- name: AGENT_TREE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "agent-tree.connectionSecretName" .) .Values.postgresql.existingSecret }}
      key: {{ if .Values.postgresql.existingSecret }}{{ .Values.postgresql.existingSecretKey }}{{ else }}DATABASE_URL{{ end }}
{{- end -}}
{{- end -}}

{{/* AGENT_TREE_REDIS_URL from the connection Secret, like the database URL. */}}
{{- define "agent-tree.redisUrlEnv" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret -}}
- name: AGENT_TREE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "agent-tree.connectionSecretName" .) .Values.redis.existingSecret }}
      key: {{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}REDIS_URL{{ end }}
{{- end -}}
{{- end -}}

{{/* The REST API (api.*): its objects are named "<fullname>-api". */}}
{{- define "agent-tree.apiFullname" -}}
{{- printf "%s-api" (include "agent-tree.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector of the API pods (immutable once installed: keep it small). */}}
{{- define "agent-tree.apiSelectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-tree.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end -}}

{{- define "agent-tree.apiLabels" -}}
{{ include "agent-tree.baseLabels" . }}
{{ include "agent-tree.apiSelectorLabels" . }}
{{- end -}}

{{- define "agent-tree.apiServiceAccountName" -}}
{{- if .Values.api.serviceAccount.create -}}
{{- default (include "agent-tree.apiFullname" .) .Values.api.serviceAccount.name -}}
{{- else -}}
{{- required "api.serviceAccount.name is required when api.serviceAccount.create is false" .Values.api.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The API image: api.image.repository (tag, or digest), else the operator's image. */}}
{{- define "agent-tree.apiImage" -}}
{{- if .Values.api.image.repository -}}
{{- if .Values.api.image.digest -}}
{{- printf "%s@%s" .Values.api.image.repository .Values.api.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.api.image.repository (default .Chart.AppVersion .Values.api.image.tag) -}}
{{- end -}}
{{- else -}}
{{- include "agent-tree.image" . -}}
{{- end -}}
{{- end -}}
