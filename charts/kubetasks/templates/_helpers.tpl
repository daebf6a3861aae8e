{{/* Chart name, overridable. */}}
{{- define "kubetasks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "kubetasks.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubetasks.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of the release. */}}
{{- define "kubetasks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetasks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Common labels. Note: not app.kubernetes.io/managed-by=kubetasks, which marks the Jobs the operator makes. */}}
{{- define "kubetasks.labels" -}}
helm.sh/chart: {{ include "kubetasks.chart" . }}
{{ include "kubetasks.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetasks
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "kubetasks.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetasks.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference. */}}
{{- define "kubetasks.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Namespaced rules of the operator: what it does, and no more. It holds everything it grants in a
run's Role (configmaps get/update/patch, taskruns get/create), because RBAC lets it create a Role
or a RoleBinding only for rights it holds itself; so it needs neither `escalate` nor `bind` (with
those it could grant any right, cluster-admin's included, through a RoleBinding). No Secrets, no
pods/exec, no wildcards. Tasks are read only (their status aside).
*/}}
{{- define "kubetasks.rules" -}}
- apiGroups: ["kubetasks.io"]
  resources: ["tasks"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kubetasks.io"]
  resources: ["taskruns"]
  # create: cron ticks and hook runs (onSuccess, onFailure, onComplete); patch: cancelling a
  # replaced cron run; delete: retention; trigger (no such request exists): granted to each run's
  # Role on itself, which RBAC lets only a holder grant
  verbs: ["get", "list", "watch", "create", "patch", "delete", "trigger"]
- apiGroups: ["kubetasks.io"]
  # TaskQueues: shared concurrency limits its Tasks name (flow control)
  resources: ["taskqueues"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kubetasks.io"]
  # Waitpoints: the tokens runs wait for. create: granted to each SDK run's Role (its pods make
  # their tokens), which RBAC lets only a holder grant; status: a token past its expiry is timed out
  resources: ["waitpoints"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["kubetasks.io"]
  # TaskEvents (kubetasks send): each starts its subscribers' runs; delete: retention (events.retentionSeconds)
  resources: ["taskevents"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["kubetasks.io"]
  resources: ["tasks/status", "taskruns/status", "taskqueues/status", "waitpoints/status", "taskevents/status"]
  verbs: ["patch"]
- apiGroups: ["kubetasks.io"]
  # OwnerReferencesPermissionEnforcement (OpenShift turns it on): a child whose owner reference
  # has blockOwnerDeletion (a run's Jobs, ConfigMaps, identity objects) needs update on its
  # owner's finalizers; without it every child create is a 403 there.
  resources: ["tasks/finalizers", "taskruns/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  # deletecollection: cancelling deletes every Job of a run by its run-uid label, in one request
  verbs: ["get", "list", "watch", "create", "delete", "deletecollection"]
- apiGroups: [""]
  resources: ["pods"]
  # watch: a finished attempt's pods (exit code, log) come from an informer, not a list per attempt;
  # deletecollection: a cancelled run's pods are stopped with a short grace period
  verbs: ["get", "list", "watch", "deletecollection"]
- apiGroups: [""]
  resources: ["pods/log"]
  # a finished attempt's log is kept in a ConfigMap (logs.keepBytes)
  verbs: ["get"]
- apiGroups: [""]
  resources: ["configmaps"]
  # update/patch: granted to each run on its own checkpoints only (resourceNames); delete: an
  # idempotency key's claim left by a deleted run, before the garbage collector, and the oldest
  # kept logs past logs.namespaceBudgetBytes; list/watch: the kept logs' sizes (metadata only)
  verbs: ["create", "get", "list", "watch", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  # delete: a run's own account, once it has finished (only while the run owns it)
  verbs: ["create", "get", "delete"]
{{- if (.Values.storage | default dict).type }}
- apiGroups: [""]
  resources: ["secrets"]
  # With an object store only: each attempt's upload grant (a presigned PUT of its own result),
  # created by generateName and mounted into its pod; never read back, so no get/list/watch
  verbs: ["create"]
{{- end }}
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  # list: at start, the Roles of runs that finished while their deletes were in flight
  verbs: ["create", "get", "list", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  # list: the Events of an attempt's Job or pod that has not started say why (a missing
  # ServiceAccount, a pod sandbox that cannot be created), read by field selector
  verbs: ["create", "patch", "list"]
{{- end }}

{{/* Cluster-scoped reads kopf needs to discover and follow resources. */}}
{{- define "kubetasks.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{/* The Secret holding the metrics endpoint's TLS certificate and key. */}}
{{- define "kubetasks.metricsTLSSecret" -}}
{{- default (printf "%s-metrics-tls" (include "kubetasks.fullname" .)) .Values.metrics.tls.secretName }}
{{- end }}

{{/* Where the PVC of the filesystem store is mounted in the operator's container. */}}
{{- define "kubetasks.storeMount" -}}
/var/lib/kubetasks/store
{{- end }}

{{/* KUBETASKS_STORAGE_URL from storage.*: empty without a store. */}}
{{- define "kubetasks.storageURL" -}}
{{- $s := .Values.storage }}
{{- $prefix := default .Values.instanceID $s.prefix | trimAll "/" }}
{{- if eq $s.type "filesystem" }}
{{- printf "file://%s" (trimSuffix "/" (printf "%s/%s" (include "kubetasks.storeMount" .) $prefix)) }}
{{- else if $s.type }}
{{- $scheme := get (dict "s3" "s3" "gcs" "gs" "azure" "az") $s.type }}
{{- printf "%s://%s" $scheme (trimSuffix "/" (printf "%s/%s" $s.bucket $prefix)) }}
{{- end }}
{{- end }}

{{/* Where task pods reach the filesystem store's grant server (KUBETASKS_STORAGE_GRANT_URL). */}}
{{- define "kubetasks.grantURL" -}}
{{- printf "http://%s-grants.%s.svc:%v" (include "kubetasks.fullname" .) .Release.Namespace .Values.storage.grants.port }}
{{- end }}

{{/* The filesystem store's claim. */}}
{{- define "kubetasks.storeClaim" -}}
{{- default (printf "%s-store" (include "kubetasks.fullname" .)) .Values.storage.pvc.claimName }}
{{- end }}
