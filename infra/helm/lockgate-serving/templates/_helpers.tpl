{{- define "lockgate.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: lockgate
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}
