{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "resizeq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "resizeq.fullname" -}}
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

{{/* The presign resources' name: <fullname>-presign, within 63 characters. */}}
{{- define "resizeq.presign.fullname" -}}
{{- printf "%s-presign" (include "resizeq.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "resizeq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "resizeq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "resizeq.presign.serviceAccountName" -}}
{{- if .Values.presign.serviceAccount.create }}
{{- default (include "resizeq.presign.fullname" .) .Values.presign.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.presign.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels ---------------------------------------------------------------------------------- */}}

{{- define "resizeq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "resizeq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: resizeq
{{- end }}

{{- define "resizeq.worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "resizeq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "resizeq.presign.selectorLabels" -}}
app.kubernetes.io/name: {{ include "resizeq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: presign
{{- end }}

{{- define "resizeq.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .chart.AppVersion) }}
{{- end }}

{{/* Config ---------------------------------------------------------------------------------- */}}

{{/*
The worker's effective config: .Values.config with metrics.listen set from metrics.port.
Returned as YAML (include can only return strings); callers use fromYaml.
*/}}
{{- define "resizeq.worker.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $metrics := dict "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port)) }}
{{- $config = mustMergeOverwrite $config (dict "metrics" $metrics) }}
{{- toYaml $config }}
{{- end }}

{{/* The sidecar's config file: the shared aws section and its own presign section. */}}
{{- define "resizeq.presign.config" -}}
{{- $presign := mustMergeOverwrite (deepCopy .Values.presign.config) (dict "listen" "0.0.0.0:8080") }}
{{- toYaml (dict "aws" (deepCopy (.Values.config.aws | default dict)) "presign" $presign) }}
{{- end }}

{{/*
TOML rendering. Helm's own toToml prints every number of a values file as a float ("20.0"),
which the worker rejects for integer keys, so values are rendered here: whole numbers as
integers, strings JSON-quoted (JSON escapes are valid TOML basic-string escapes), lists and
nested lists' maps inline, maps as [tables]. Null values are left out (the worker's default).
*/}}
{{- define "resizeq.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "resizeq.toml.value" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) }}
{{- if eq (float64 $v) (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "resizeq.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" $v }}{ {{- $first := true }}{{ range $k := keys $v | sortAlpha }}{{ $e := get $v $k }}{{ if not (kindIs "invalid" $e) }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ include "resizeq.toml.key" $k }} = {{ include "resizeq.toml.value" $e }}{{ end }}{{ end }}}
{{- else }}{{ fail (printf "config: cannot render %v (%s) as TOML" $v (kindOf $v)) }}
{{- end }}
{{- end }}

{{/* A table: its plain keys first, then its sub-tables. Argument: dict "path" "table". */}}
{{- define "resizeq.toml.table" -}}
{{- $table := .table }}
{{- $path := .path }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if and (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) }}
{{ include "resizeq.toml.key" $k }} = {{ include "resizeq.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if kindIs "map" $v }}
{{- $sub := ternary (include "resizeq.toml.key" $k) (printf "%s.%s" $path (include "resizeq.toml.key" $k)) (eq $path "") }}

[{{ $sub }}]
{{- include "resizeq.toml.table" (dict "path" $sub "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "resizeq.toml" -}}
# Rendered by the resizeq Helm chart from .Values; keys as in deploy/resizeq.example.toml.
{{- include "resizeq.toml.table" (dict "path" "" "table" .) }}
{{ end }}

{{/* Checks that the schema cannot express ---------------------------------------------------- */}}

{{- define "resizeq.checks" -}}
{{- $config := .Values.config }}
{{- if not (and $config.queue $config.queue.url) }}
{{- fail "config.queue.url is required: the URL of the SQS queue of the source bucket's events (CloudFormation output QueueUrl)" }}
{{- end }}
{{- if not (and $config.aws $config.aws.region) }}
{{- fail "config.aws.region is required: the AWS region of the queue and the buckets" }}
{{- end }}
{{- $shutdown := 25 }}
{{- if and $config.worker (hasKey $config.worker "shutdown_timeout_secs") }}
{{- $shutdown = int $config.worker.shutdown_timeout_secs }}
{{- end }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add $shutdown 5) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least config.worker.shutdown_timeout_secs + 5 (%d): Kubernetes would kill the worker while it drains" (int .Values.terminationGracePeriodSeconds) (add $shutdown 5)) }}
{{- end }}
{{- if and .Values.presign.enabled (not .Values.presign.config.bucket) }}
{{- fail "presign.config.bucket is required with presign.enabled: the source bucket uploads go to" }}
{{- end }}
{{- end }}
