{{- define "vigil.tokenSecret" -}}
{{- if .Values.existingTokenSecret -}}{{ .Values.existingTokenSecret }}{{- else -}}{{ .Release.Name }}-token{{- end -}}
{{- end -}}
{{- define "vigil.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
