{{/*
The operator's own permissions, shared by the ClusterRole (all namespaces) and the per-namespace
Roles (watchNamespaces). Every verb is one the operator uses; nothing is a wildcard.
*/}}
{{- define "eval-operator.applicationRules" -}}
# Evaluations: listed and watched; read once more when a child's event (or a write conflict)
# asks for a reconcile. The operator writes no annotation or finalizer on an Evaluation a
# person made; the cells of an EvalSuite's matrix are its own: applied server-side and deleted
# when their model or task leaves the matrix. A server-side apply that makes a missing object
# is authorized as create as well as patch (here and for every applied kind below).
- apiGroups: ["evals.io"]
  resources: ["evaluations"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
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
# CA ConfigMaps are only checked for existence. A suite's postgresql.conf and redis.conf are
# applied server-side, listed by the suite's label and deleted when no longer wanted.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "patch", "delete", "deletecollection"]
# Runner pods: their IPs (for /progress), why they wait (a missing Secret or image shows up
# here) and their termination messages (shard summaries); an EvalSuite's migration and cell
# report pods, listed by job-name, for their reports.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# EvalSuites: listed and watched (a suite's change reconciles it and the Evaluations in it);
# read once more on a write conflict. Status only by a merge patch with a resourceVersion.
- apiGroups: ["evals.io"]
  resources: ["evalsuites"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["evals.io"]
  resources: ["evalsuites/status"]
  verbs: ["patch"]
# A suite's generated credentials (store and cache), and an early-stopping run's control
# token (derived from the operator's key, so never read back): created once, never read,
# updated or listed. A 409 keeps the password that is there. The operator never reads any
# Secret: runner, migration and backup pods get credentials by secretKeyRef, from the kubelet.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# The suite's stack, applied server-side (create for what is missing, patch for the rest),
# watched for its readiness, and deleted when the spec stops asking for it (listed by the
# suite's label).
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "create", "patch", "delete"]
# An EvalSuite's NetworkPolicies (spec.networkPolicy), applied server-side, deleted when the
# spec stops asking for them (listed by the suite's label).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "create", "patch", "delete"]
# The results dashboard's autoscaler and disruption budget (spec.dashboard), applied
# server-side, deleted when the dashboard is turned off (listed by the suite's label).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "create", "patch", "delete"]
# An EvalSuite's ServiceMonitors, PodMonitor and PrometheusRule (spec.monitoring), where the
# Prometheus Operator's CRDs are served; deleted when monitoring is turned off.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors", "podmonitors", "prometheusrules"]
  verbs: ["list", "create", "patch", "delete"]
# An EvalSuite's issuer chain and certificates (spec.tls), where cert-manager's CRDs are
# served; their Ready conditions make TLSReady, and a renewal (watched) rolls the server that
# uses the certificate; deleted when TLS is turned off.
- apiGroups: ["cert-manager.io"]
  resources: ["issuers"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The backup volume, applied server-side; the store's data volume, read and asked for more
# when store.managed.size grows (a StatefulSet cannot change the claims it made). Never
# deleted: the data volumes are the StatefulSet controller's, and go with the suite only by
# owner reference.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "patch"]
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
