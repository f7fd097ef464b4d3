{{/* Names, labels and the operator's RBAC rules, shared by the templates. */}}

{{- define "hpo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object's name: <release>-<chart>, or <release> if it contains the chart's name. */}}
{{- define "hpo-operator.fullname" -}}
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

{{- define "hpo-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hpo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hpo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The app.kubernetes.io labels every object gets. */}}
{{- define "hpo-operator.labels" -}}
{{ include "hpo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: hpo-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "hpo-operator.chart" . }}
{{- end }}

{{- define "hpo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hpo-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hpo-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* With watch.scope namespace: the watched namespaces, one a line (default: the release's). */}}
{{- define "hpo-operator.watchNamespaces" -}}
{{- $namespaces := .Values.watch.namespaces | default (list .Release.Namespace) }}
{{- range $namespaces }}
{{ . }}
{{- end }}
{{- end }}

{{/*
What the operator does, and nothing more: tests/integration/test_helm.py runs the operator as this
chart's ServiceAccount and fails on any refused request.
- experiments: kopf lists and watches them (event handler); the operator only writes their status
  (a merge patch of the status subresource, never a replace, so no update).
- trials: listed and watched (kopf index), created, read back when a create collides, and patched
  (labels, ownerReferences when adopting a user's Trial); status patched. Never deleted: the garbage
  collector removes them with their Experiment.
- pods: listed and watched (kopf index), created, deleted (podRetention Delete, timeouts, suspend);
  pods/log read for stdout metrics.
- events: created by kopf.event (kopf never updates or patches an Event).
- <kind>/finalizers update: Trials and pods carry ownerReferences with blockOwnerDeletion, which an
  API server enforcing OwnerReferencesPermissionEnforcement only accepts from a user who may update
  the owner's finalizers (without it, creating a Trial or a pod is refused with 403).
get is granted wherever list is: it reveals nothing list does not.
*/}}
{{- define "hpo-operator.namespacedRules" -}}
- apiGroups: [hpo.dev]
  resources: [experiments]
  verbs: [get, list, watch]
- apiGroups: [hpo.dev]
  resources: [experiments/status]
  verbs: [get, patch]
- apiGroups: [hpo.dev]
  resources: [trials]
  verbs: [get, list, watch, create, patch]
- apiGroups: [hpo.dev]
  resources: [trials/status]
  verbs: [get, patch]
- apiGroups: [hpo.dev]
  resources: [experiments/finalizers, trials/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- range .Values.trialKinds }}
# Trials run as {{ .resource }}.{{ .apiGroup }} (trialKinds).
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ .resource }}]
  verbs: [get, list, watch, create, delete]
{{- if and (eq .resource "trainjobs") (eq .apiGroup "trainer.kubeflow.org") }}
# A TrainJob trial's pods get its labels through a patch of each of its runtime's replicated jobs,
# which the operator reads (ClusterTrainingRuntimes: hpo-operator.clusterRules).
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [trainingruntimes]
  verbs: [get]
{{- end }}
{{- end }}
{{- if .Values.kueue.enabled }}
# Suspending an experiment whose trials name a Kueue queue holds them there: the operator finds
# their Kueue Workloads and sets spec.active.
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get, list, patch]
{{- end }}
{{- end }}

{{/* What the operator reads outside its namespaces, whatever the watch scope: the
ClusterTrainingRuntimes of TrainJob trials (trialKinds has trainjobs of trainer.kubeflow.org). Empty
when it needs nothing. */}}
{{- define "hpo-operator.clusterRules" -}}
{{- range .Values.trialKinds }}
{{- if and (eq .resource "trainjobs") (eq .apiGroup "trainer.kubeflow.org") }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [clustertrainingruntimes]
  verbs: [get]
{{- end }}
{{- end }}
{{- end }}

{{/* The dashboard's names and labels: its own app.kubernetes.io/name, so that the operator's
selectors (its Deployment's, its metrics Service's) never match the dashboard's pods. */}}
{{- define "hpo-operator.dashboardFullname" -}}
{{- printf "%s-dashboard" (include "hpo-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hpo-operator.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-dashboard" (include "hpo-operator.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hpo-operator.dashboardLabels" -}}
{{ include "hpo-operator.dashboardSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: dashboard
app.kubernetes.io/part-of: hpo-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "hpo-operator.chart" . }}
{{- end }}

{{/* What the dashboard reads, and nothing more: it lists and watches Experiments and Trials
(tests/integration/test_helm.py runs it as this ServiceAccount and checks nothing is refused). */}}
{{- define "hpo-operator.dashboardRules" -}}
- apiGroups: [hpo.dev]
  resources: [experiments, trials]
  verbs: [get, list, watch]
{{- end }}

{{/* The operator's NetworkPolicy ingress rules: one per port it serves, each from its peers (none
when no peer is given). */}}
{{- define "hpo-operator.operatorIngress" -}}
{{- $np := .Values.networkPolicy }}
{{- with $np.operator.healthFrom }}
# kopf's health endpoint (the liveness probe's port).
- from:
    {{- toYaml . | nindent 4 }}
  ports:
  - {port: {{ $.Values.health.port }}, protocol: TCP}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- with $np.operator.metricsFrom }}
# Prometheus metrics.
- from:
    {{- toYaml . | nindent 4 }}
  ports:
  - {port: {{ $.Values.metrics.port }}, protocol: TCP}
{{- end }}
{{- end }}
{{- /* A port the operator serves itself (an admission webhook's, say) goes here, beside the two
above, with its own peers (for a webhook: the API server, hpo-operator.apiServerPeers). A platform
adds its own through networkPolicy.operator.extraIngress. */}}
{{- range $np.operator.extraIngress }}
{{- if .from }}
- from:
    {{- toYaml .from | nindent 4 }}
  ports:
  - {port: {{ .port }}, protocol: {{ .protocol | default "TCP" }}}
{{- end }}
{{- end }}
{{- end }}

{{/* The API server as NetworkPolicy peers: it is not a pod, so by address. */}}
{{- define "hpo-operator.apiServerPeers" -}}
{{- range .Values.networkPolicy.apiServer.cidrs }}
- ipBlock: {cidr: {{ . | quote }}}
{{- end }}
{{- end }}

{{/* What the operator's and the dashboard's pods connect to: the API server, at the `kubernetes`
Service's port and its endpoints' (network plugins match one or the other; apiServer.port too,
when set), and DNS. */}}
{{- define "hpo-operator.networkPolicyEgress" -}}
{{- $np := .Values.networkPolicy }}
{{- $ports := list }}
{{- range $np.apiServer.ports }}
{{- $ports = append $ports (int .) }}
{{- end }}
{{- if .Values.apiServer.port }}
{{- $ports = append $ports (int .Values.apiServer.port) }}
{{- end }}
# The API server.
- to:
    {{- include "hpo-operator.apiServerPeers" . | trim | nindent 4 }}
  ports:
  {{- range $ports | uniq }}
  - {port: {{ . }}, protocol: TCP}
  {{- end }}
{{- with $np.dns.to }}
# DNS.
- to:
    {{- toYaml . | nindent 4 }}
  ports:
  {{- range $np.dns.ports }}
  - {port: {{ . }}, protocol: UDP}
  - {port: {{ . }}, protocol: TCP}
  {{- end }}
{{- end }}
{{- end }}
