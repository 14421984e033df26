{{/* Names and shared snippets of the llmaas chart. */}}
{{- define "llmaas.name" -}}{{ .Release.Name }}{{- end }}

{{- define "llmaas.labels" -}}
app.kubernetes.io/part-of: llmaas
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "llmaas.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" .Release.Name) -}}
{{- end }}

{{- define "llmaas.databaseSecretName" -}}
{{- .Values.postgresql.existingSecret | default (printf "%s-databases" .Release.Name) -}}
{{- end }}

{{- define "llmaas.image" -}}
{{ .root.Values.image.registry }}/llmaas-{{ .name }}:{{ .root.Values.image.tag }}
{{- end }}

{{/* host:port of a service's gRPC port, through its headless Service (every pod). */}}
{{- define "llmaas.addr" -}}
{{ .root.Release.Name }}-{{ .name }}.{{ .root.Release.Namespace }}.svc.cluster.local:50051
{{- end }}

{{- define "llmaas.commonEnv" -}}
- name: LLMAAS_INTERNAL_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "llmaas.secretName" . }}, key: internal-secret}}
- name: LLMAAS_BIND_HOST
  value: "0.0.0.0"
- name: LLMAAS_GRPC_PORT
  value: "50051"
- name: LLMAAS_METRICS_PORT
  value: "9090"
- name: LLMAAS_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- if .Values.otlp.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlp.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_INSECURE
  value: "true"
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.otlp.traceSampling | quote }}
{{- end }}
{{- end }}
