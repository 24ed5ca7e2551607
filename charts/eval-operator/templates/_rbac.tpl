{{/*
The operator's own permissions, shared by the ClusterRole (all namespaces) and the per-namespace
Roles (watchNamespaces). Every verb is one the operator uses; nothing is a wildcard.
*/}}
{{- define "eval-operator.applicationRules" -}}
# Evaluations: kopf lists and watches them and patches its bookkeeping annotations onto them.
# (`get` adds nothing to what `list` shows; it is there for clients that re-read one object.)
- apiGroups: ["evals.io"]
  resources: ["evaluations"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written by each reconcile as a merge patch of the status subresource, never a PUT.
- apiGroups: ["evals.io"]
  resources: ["evaluations/status"]
  verbs: ["patch"]
# One Indexed Job per run: created, watched (an index, no polling), suspended or resumed with a
# patch, deleted on re-run and cancel.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
# The immutable run-config ConfigMap of each run; dataset and CA ConfigMaps are only checked.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "delete"]
# Only to check that a referenced Secret and key exist; values are never copied anywhere.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Runner pods: their IPs (for /progress) and termination messages (shard summaries).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{- end }}

{{/* kopf posts Kubernetes events about the handlers (and our Reconciled events) in the
objects' namespaces. */}}
{{- define "eval-operator.frameworkEventRules" -}}
# Framework (kopf): events about handler progress and errors, and the operator's own events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Cluster-scoped reads kopf needs in either mode. */}}
{{- define "eval-operator.frameworkClusterRules" -}}
# Framework (kopf): notices custom resources appearing and disappearing by watching CRDs.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
