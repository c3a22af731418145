{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "vitq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-chart, unless the release name already holds the chart name. */}}
{{- define "vitq.fullname" -}}
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

{{- define "vitq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vitq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vitq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vitq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vitq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vitq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the admin token (key "token"). */}}
{{- define "vitq.adminSecretName" -}}
{{- if .Values.server.admin.existingSecret }}
{{- .Values.server.admin.existingSecret }}
{{- else }}
{{- printf "%s-admin" (include "vitq.fullname" .) }}
{{- end }}
{{- end }}

{{/* The server config rendered from values (docs/SERVING.md), as YAML. */}}
{{- define "vitq.serverConfig" -}}
server:
  listen: 0.0.0.0:{{ .Values.server.grpcPort }}
  metrics_listen: 0.0.0.0:{{ .Values.server.metricsPort }}
  max_message_bytes: {{ .Values.server.maxMessageBytes | int64 }}
  drain_grace_s: {{ .Values.server.drainGraceSeconds }}
  engine_threads: {{ .Values.server.engineThreads }}
  {{- if .Values.server.tls.enabled }}
  tls:
    cert: /etc/vitq/tls/tls.crt
    key: /etc/vitq/tls/tls.key
    {{- if .Values.server.tls.clientAuth }}
    client_ca: /etc/vitq/tls/ca.crt
    {{- end }}
  {{- end }}
  {{- if .Values.server.admin.enabled }}
  admin:
    listen: 0.0.0.0:{{ .Values.server.admin.port }}
    token_file: /etc/vitq/admin/token
  {{- end }}
  {{- if eq .Values.config.reload "inprocess" }}
  watch_config: true
  {{- end }}
models:
{{ required "models: the model repository needs at least one model" .Values.models | toYaml | indent 2 }}
{{- end }}

{{/* Health probe: native gRPC without TLS; with TLS (which Kubernetes' gRPC probe cannot
     speak) vitq-client health over localhost. */}}
{{- define "vitq.probe" -}}
{{- if .root.Values.server.tls.enabled -}}
exec:
  command:
    - /usr/local/bin/vitq-client
    - health
    - --address
    - localhost:{{ .root.Values.server.grpcPort }}
    - --tls-ca
    - /etc/vitq/tls/{{ ternary "ca.crt" "tls.crt" .root.Values.server.tls.clientAuth }}
    - --tls-server-name
    - localhost
    {{- if .root.Values.server.tls.clientAuth }}
    - --tls-cert
    - /etc/vitq/tls/tls.crt
    - --tls-key
    - /etc/vitq/tls/tls.key
    {{- end }}
    - --connect-timeout-s
    - "2"
{{- else -}}
grpc:
  port: {{ .root.Values.server.grpcPort }}
  service: ""
{{- end }}
periodSeconds: {{ .probe.periodSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}
