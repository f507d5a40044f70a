{{- define "tuneforge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tuneforge.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tuneforge.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tuneforge.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The engine's grace period: the preStop pause, then the drain, then a margin before SIGKILL. */}}
{{- define "tuneforge.engineGracePeriod" -}}
{{ add (int .Values.engine.preStopSeconds) (int .Values.engine.drainTimeoutSeconds) 10 }}
{{- end -}}

{{- define "tuneforge.redisUrl" -}}
{{- if .Values.redis.enabled -}}
redis://{{ include "tuneforge.fullname" . }}-redis:6379/0
{{- else -}}
{{ required "redis.redisUrl is required when redis.enabled is false" .Values.redis.redisUrl }}
{{- end -}}
{{- end -}}

{{- define "tuneforge.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tuneforge.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
