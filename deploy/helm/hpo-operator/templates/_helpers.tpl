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
{{- $flavoured := .Chart.AppVersion }}
{{- if .Values.image.flavour }}{{ $flavoured = printf "%s-%s" .Chart.AppVersion .Values.image.flavour }}{{ end }}
{{- printf "%s:%s" .Values.image.repository (default $flavoured .Values.image.tag) }}
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
The trial kinds the platform enables (trialKinds), as the JSON list the operator reads from
HPO_TRIAL_KINDS: each {apiGroup, resource, kind}. The chart knows the Kind of jobs, jobsets and
trainjobs (knownTrialKinds, "group/resource": Kind; the operator's api/trial_kinds.py KNOWN_RESOURCES:
tests/integration/test_helm.py keeps the two equal); any other resource's entry must give its kind, which RBAC does not need but the operator
and the admission policy, reading an Experiment, do.
*/}}
{{- define "hpo-operator.knownTrialKinds" -}}
{{- dict "batch/jobs" "Job" "jobset.x-k8s.io/jobsets" "JobSet" "trainer.kubeflow.org/trainjobs" "TrainJob" | toJson }}
{{- end }}

{{- define "hpo-operator.trialKinds" -}}
{{- $known := include "hpo-operator.knownTrialKinds" . | fromJson }}
{{- $kinds := list }}
{{- range .Values.trialKinds }}
{{- $knownKind := get $known (printf "%s/%s" .apiGroup .resource) }}
{{- if and .kind $knownKind (ne .kind $knownKind) }}
{{- fail (printf "trialKinds: %s of %s are kind %s, not %s: leave kind out" .resource .apiGroup $knownKind .kind) }}
{{- end }}
{{- $kind := .kind | default $knownKind }}
{{- if not $kind }}
{{- fail (printf "trialKinds: the chart does not know the kind of %s in %s: give it, e.g. {apiGroup: %s, resource: %s, kind: TrainRun}" .resource .apiGroup .apiGroup .resource) }}
{{- end }}
{{- $kinds = append $kinds (dict "apiGroup" .apiGroup "resource" .resource "kind" $kind) }}
{{- end }}
{{- toJson $kinds }}
{{- end }}

{{/* The trial-kinds admission policy's name (and its binding's): cluster-scoped objects, named
after the release and its namespace so that two releases can coexist. */}}
{{- define "hpo-operator.trialKindsPolicy" -}}
{{- printf "%s-trial-kinds.%s" (include "hpo-operator.fullname" .) .Release.Namespace | trunc 253 }}
{{- end }}

{{/*
The group and Kind an Experiment's trials run as, in CEL, of the object named by the argument
(object or oldObject): the operator's api/trial_kinds.py template_kind(). A Job is batch/Job; a
resource is its apiVersion's group and its kind; anything else (a pod template) is /Pod.
*/}}
{{- define "hpo-operator.trialKindCel" -}}
has({{ . }}.spec.trialTemplate.job) ? 'batch/Job' :
has({{ . }}.spec.trialTemplate.resource) ?
({{ . }}.spec.trialTemplate.resource.apiVersion.contains('/') ?
{{ . }}.spec.trialTemplate.resource.apiVersion.substring(0, {{ . }}.spec.trialTemplate.resource.apiVersion.lastIndexOf('/')) : '')
+ '/' + {{ . }}.spec.trialTemplate.resource.kind :
'/Pod'
{{- end }}

{{/*
What the operator does, and nothing more: tests/integration/test_helm.py runs the operator as this
chart's ServiceAccount and fails on any refused request.
- experiments: kopf lists and watches them (event handler); the operator only writes their status
  (a merge patch of the status subresource, never a replace, so no update).
- trials: listed and watched (kopf index), created, read back when a create collides, and patched
  (labels, ownerReferences when adopting a user's Trial); status patched. Never deleted: the garbage
  collector removes them with their Experiment.
- pods: listed and watched (the operator's informers), created, deleted (podRetention Delete,
  timeouts, suspend); pods/log read for stdout metrics. With tenancy on, created, deleted and read
  only as the namespace's trial ServiceAccount (hpo-operator.trialRunnerRules), which the operator
  may impersonate, after a LocalSubjectAccessReview of the trial's author.
- persistentvolumeclaims: a checkpoint claim per configuration, like pods.
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
{{- if .Values.tenancy.enabled }}
# Trials' workloads are created, deleted and read as each namespace's trial ServiceAccount
# (hpo-operator.trialRunnerRules), never with the operator's own rights: it only watches them, asks
# whether a trial's author may create them, and impersonates that one account.
- apiGroups: [""]
  resources: [pods, persistentvolumeclaims]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [impersonate]
  resourceNames: [{{ .Values.tenancy.trialServiceAccount | quote }}]
- apiGroups: [authorization.k8s.io]
  resources: [localsubjectaccessreviews]
  verbs: [create]
{{- else }}
- apiGroups: [""]
  resources: [pods, persistentvolumeclaims]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
{{- end }}
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- range .Values.trialKinds }}
# Trials run as {{ .resource }}.{{ .apiGroup }} (trialKinds).
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ .resource }}]
  verbs: [get, list, watch{{ if not $.Values.tenancy.enabled }}, create, delete{{ end }}]
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

{{/* Tenancy: the user the operator runs as (its own writes pass the admission webhook untouched). */}}
{{- define "hpo-operator.operatorUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "hpo-operator.serviceAccountName" .) }}
{{- end }}

{{/* Tenancy: the namespaces where the chart creates the trial ServiceAccount (one a line; empty:
none): tenancy.namespaces, else with watch.scope namespace the watched ones. */}}
{{- define "hpo-operator.tenancyNamespaces" -}}
{{- if .Values.tenancy.namespaces }}
{{- range .Values.tenancy.namespaces }}
{{ . }}
{{- end }}
{{- else if eq .Values.watch.scope "namespace" }}
{{- include "hpo-operator.watchNamespaces" . }}
{{- end }}
{{- end }}

{{/* Tenancy: what the trial ServiceAccount of a namespace may do, and what the operator then does
as it: create, read and delete trials' pods (and their logs), checkpoint claims and the trialKinds.
The finalizers rule lets it create objects owned by a Trial or an Experiment where the API server
enforces OwnerReferencesPermissionEnforcement. */}}
{{- define "hpo-operator.trialRunnerRules" -}}
- apiGroups: [""]
  resources: [pods, persistentvolumeclaims]
  verbs: [get, create, delete]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [hpo.dev]
  resources: [experiments/finalizers, trials/finalizers]
  verbs: [update]
{{- range .Values.trialKinds }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ .resource }}]
  verbs: [get, create, delete]
{{- end }}
{{- end }}

{{/* Tenancy: the Secret of the admission webhook's certificate and the author signing key. */}}
{{- define "hpo-operator.admissionSecret" -}}
{{- .Values.tenancy.existingSecret | default (printf "%s-admission" (include "hpo-operator.fullname" .)) }}
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
{{- if .Values.tenancy.enabled }}
# The admission webhook, which the API server calls (templates/tenancy.yaml).
- from:
    {{- include "hpo-operator.apiServerPeers" . | trim | nindent 4 }}
  ports:
  - {port: {{ .Values.tenancy.webhook.port }}, protocol: TCP}
{{- end }}
{{- /* A platform adds its own ports through networkPolicy.operator.extraIngress. */}}
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
