{{/* The release's objects are named <release>-extauth, or <release> when it already says extauth. */}}
{{- define "extauth.fullname" -}}
{{- if contains "extauth" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-extauth" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "extauth.selectorLabels" -}}
app.kubernetes.io/name: extauth
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "extauth.labels" -}}
{{ include "extauth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "extauth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "extauth.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Whether the broker runs on PostgreSQL (else on the embedded store in a volume). */}}
{{- define "extauth.postgres" -}}
{{- if or .Values.postgres.url .Values.postgres.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Refuses values that would make a broken deployment, naming the value and the fix. */}}
{{- define "extauth.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "extauth.postgres" .)) -}}
{{- fail (printf "replicaCount: %d replicas need PostgreSQL (the embedded store is one process's); set postgres.existingSecret (a Secret holding CODER_PG_CONNECTION_URL) or postgres.url, or use replicaCount: 1" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.encryptionKeys.existingSecret) -}}
{{- fail "encryptionKeys.existingSecret: several replicas must share the token encryption keys; create a Secret with one (openssl rand -base64 32) and name it here" -}}
{{- end -}}
{{- if and .Values.postgres.url .Values.postgres.existingSecret -}}
{{- fail "postgres: set either postgres.url or postgres.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.oidc.issuerURL (not .Values.oidc.clientSecret.existingSecret) -}}
{{- fail "oidc.clientSecret.existingSecret: sign-in through the IdP needs its client secret; create a Secret with it and name it here" -}}
{{- end -}}
{{- range $i, $p := .Values.externalAuth -}}
{{- if not $p.type -}}
{{- fail (printf "externalAuth[%d].type: every provider needs a type (github, gitlab, bitbucket-cloud, azure-devops, gitea, …)" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
