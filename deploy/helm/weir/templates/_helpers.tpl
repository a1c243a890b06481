{{/* The chart's name. */}}
{{- define "weir.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name for its objects. */}}
{{- define "weir.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "weir.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one role: (dict "ctx" $ "role" "ingest"). */}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "weir.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Secret with WEIR_WORKSPACE_SECRET, WEIR_SECRET_KEYS and WEIR_AMQP_URL. */}}
{{- define "weir.secretName" -}}
{{- .Values.existingSecret | default (include "weir.fullname" .) }}
{{- end }}

{{/* The environment of every weir container: (dict "ctx" $ "role" "worker"). */}}
{{- define "weir.env" -}}
{{- $v := .ctx.Values -}}
- name: WEIR_LISTEN
  value: "0.0.0.0:8080"
- name: WEIR_DATA
  value: /var/lib/weir
- name: WEIR_FLOWS
  value: /etc/weir/flows
- name: WEIR_INTEGRATIONS
  value: /etc/weir/integrations
- name: WEIR_ACTIONS
  value: /etc/weir/actions
- name: WEIR_PARTITIONS
  value: {{ $v.partitions | int64 | quote }}
- name: WEIR_MAX_QUEUE
  value: {{ $v.maxQueue | int64 | quote }}
- name: WEIR_GRACE
  value: {{ $v.grace | quote }}
{{- with $v.queuePrefix }}
- name: WEIR_QUEUE_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- if eq .role "worker" }}
- name: WEIR_PREFETCH
  value: {{ $v.worker.prefetch | int64 | quote }}
{{- end }}
{{- if $v.metrics.enabled }}
- name: WEIR_METRICS_OPEN
  value: "1"
{{- end }}
{{- with $v.publicUrl }}
- name: WEIR_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- range $name := list "WEIR_WORKSPACE_SECRET" "WEIR_SECRET_KEYS" "WEIR_AMQP_URL" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "weir.secretName" $.ctx }}
      key: {{ $name }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod annotations: Prometheus' scrape, and a checksum of the Secret's
     given values (variables from a Secret change with a restart only). */}}
{{- define "weir.podAnnotations" -}}
{{- if .ctx.Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: "8080"
prometheus.io/path: /metrics
{{- end }}
{{- if not .ctx.Values.existingSecret }}
checksum/secret: {{ list .ctx.Values.workspaceSecret .ctx.Values.secretKeys .ctx.Values.amqp.url | toJson | sha256sum }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The container's probes, port and mounts of the config folders. */}}
{{- define "weir.probes" -}}
ports:
  - name: http
    containerPort: 8080
    protocol: TCP
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 2
  failureThreshold: 60
{{- end }}

{{- define "weir.configMounts" -}}
- name: flows
  mountPath: /etc/weir/flows
  readOnly: true
- name: integrations
  mountPath: /etc/weir/integrations
  readOnly: true
- name: actions
  mountPath: /etc/weir/actions
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "weir.configVolumes" -}}
{{- $full := include "weir.fullname" . -}}
{{- range $what := list "flows" "integrations" "actions" }}
- name: {{ $what }}
  configMap:
    name: {{ printf "%s-%s" $full $what }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
