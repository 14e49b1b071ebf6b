{{/* The label every object carries, as deploy/base's kustomization sets it. */}}
{{- define "portcullis.labels" -}}
app.kubernetes.io/name: portcullis
{{- end }}

{{/* The policy files: the given ones, else the shipped default in the chosen mode. */}}
{{- define "portcullis.policies" -}}
{{- if .Values.policies }}
{{- toYaml .Values.policies }}
{{- else }}
default.yaml: |
{{ .Files.Get "files/default.yaml" | replace "mode: enforce" (printf "mode: %s" .Values.mode) | indent 2 }}
{{- end }}
{{- end }}
