{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "scheduler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; component suffixes are appended to it. */}}
{{- define "scheduler.fullname" -}}
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

{{- define "scheduler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scheduler.labels" -}}
helm.sh/chart: {{ include "scheduler.chart" . }}
{{ include "scheduler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: job-scheduler
{{- end }}

{{- define "scheduler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scheduler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "scheduler.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the Secret the pods read: the user's existing one or the chart's. */}}
{{- define "scheduler.secretName" -}}
{{- default (include "scheduler.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Non-secret settings (ConfigMap data, and inline env of the migrations hook). */}}
{{- define "scheduler.configData" -}}
{{- $data := dict "SCHEDULER_PROFILE" (toString .Values.config.profile) "SCHEDULER_LOG_LEVEL" (toString .Values.config.logLevel) }}
{{- range $key, $value := .Values.config.extraEnv }}
{{- $_ := set $data $key (toString $value) }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
Secret data, base64-encoded. Every value is required, and the signing secrets are held to the
rule the app enforces in production (at least 32 characters), so a bad install fails at render
time instead of in a crash-looping pod.
*/}}
{{- define "scheduler.secretData" -}}
{{- $s := .Values.secrets }}
{{- $secretKey := required "secrets.secretKey is required (random, at least 32 characters)" $s.secretKey }}
{{- $jwtSecret := required "secrets.jwtSecret is required (random, at least 32 characters)" $s.jwtSecret }}
{{- if lt (len $secretKey) 32 }}
{{- fail "secrets.secretKey must be at least 32 characters" }}
{{- end }}
{{- if lt (len $jwtSecret) 32 }}
{{- fail "secrets.jwtSecret must be at least 32 characters" }}
{{- end }}
{{- $data := dict
    "SCHEDULER_SECRET_KEY" $secretKey
    "SCHEDULER_JWT_SECRET" $jwtSecret
    "SCHEDULER_DATABASE_URL" (required "secrets.databaseUrl is required (postgresql+psycopg2://...)" $s.databaseUrl)
    "SCHEDULER_BROKER_URL" (required "secrets.brokerUrl is required (redis://...)" $s.brokerUrl)
    "FLOWER_USER" (required "secrets.flowerUser is required" $s.flowerUser)
    "FLOWER_PASSWORD" (required "secrets.flowerPassword is required" $s.flowerPassword) }}
{{- if $s.metricsToken }}
{{- $_ := set $data "SCHEDULER_METRICS_TOKEN" $s.metricsToken }}
{{- end }}
{{- range $key, $value := $data }}
{{- $_ := set $data $key (toString $value | b64enc) }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
Environment of an app container: only the secrets every role needs (Flower's credentials are
added by the Flower Deployment alone). Call with (dict "secretName" NAME).
*/}}
{{- define "scheduler.appEnv" -}}
{{- $env := list }}
{{- range $key := list "SCHEDULER_SECRET_KEY" "SCHEDULER_JWT_SECRET" "SCHEDULER_DATABASE_URL" "SCHEDULER_BROKER_URL" }}
{{- $env = append $env (dict "name" $key "valueFrom" (dict "secretKeyRef" (dict "name" $.secretName "key" $key))) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* Pod annotations that roll the pods when settings or secrets change. */}}
{{- define "scheduler.podAnnotations" -}}
checksum/config: {{ include "scheduler.configData" . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include "scheduler.secretData" . | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The writable scratch space of a read-only root filesystem. */}}
{{- define "scheduler.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{- define "scheduler.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}
