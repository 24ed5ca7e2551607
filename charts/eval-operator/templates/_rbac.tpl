{{/*
The operator's own permissions, shared by the ClusterRole (all namespaces) and the per-namespace
Roles (watchNamespaces). Every verb is one the operator uses; nothing is a wildcard.
*/}}
{{- define "eval-operator.applicationRules" -}}
# Evaluations: listed and watched; read once more when a child's event (or a write conflict)
# asks for a reconcile. The operator never writes to an Evaluation itself: no annotations, no
# finalizers.
- apiGroups: ["evals.io"]
  resources: ["evaluations"]
  verbs: ["get", "list", "watch"]
# Status is written by the reconcile as a merge patch of the status subresource, with a
# resourceVersion precondition; never a PUT.
- apiGroups: ["evals.io"]
  resources: ["evaluations/status"]
  verbs: ["patch"]
# One Indexed Job per run: created, watched (an index, no polling), suspended or resumed with a
# patch, deleted on re-run and cancel.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "delete", "patch"]
# The immutable run-config ConfigMap of each run, and the ledger of a budgeted run's retried
# shards (created, then patched); the previous run's deleted by label on a re-run. Dataset and
# CA ConfigMaps are only checked for existence.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "deletecollection"]
# Runner pods: their IPs (for /progress), why they wait (a missing Secret or image shows up
# here) and their termination messages (shard summaries). No access to Secrets at all: the
# operator never reads an API key.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{- end }}

{{/* Events in the objects' namespaces: kopf's about its own errors, and the operator's. */}}
{{- define "eval-operator.frameworkEventRules" -}}
# Framework (kopf) and application: events about handler errors, and the runs' milestones.
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
