{{- define "lockgate-worker.labels" -}}
app.kubernetes.io/name: lockgate-worker
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: lockgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
