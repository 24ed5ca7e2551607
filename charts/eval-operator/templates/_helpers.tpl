{{/* Chart name, possibly overridden. */}}
{{- define "eval-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name, else release-chart. */}}
{{- define "eval-operator.fullname" -}}
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

{{- define "eval-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "eval-operator.labels" -}}
helm.sh/chart: {{ include "eval-operator.chart" . }}
{{ include "eval-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eval-operator
{{- end }}

{{/* Labels that select the operator pod. */}}
{{- define "eval-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eval-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "eval-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eval-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. Argument: the image values. */}}
{{- define "eval-operator.image" -}}
{{- $image := index . 0 }}
{{- $appVersion := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Service in front of the operator's /metrics; the alert on `up` uses it. */}}
{{- define "eval-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "eval-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether the operator watches every namespace (ClusterRole) or a list (Roles). */}}
{{- define "eval-operator.clusterWide" -}}
{{- if not .Values.watchNamespaces }}true{{- end }}
{{- end }}
