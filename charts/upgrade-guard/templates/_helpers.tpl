{{/*
Names: 50 characters at most, so every suffix below still fits a 63-character
name (Jobs and Services need one).
*/}}
{{- define "upgrade-guard.fullname" -}}
{{- $name := .Values.fullnameOverride -}}
{{- if not $name -}}
{{- $name = ternary .Release.Name (printf "%s-%s" .Release.Name .Chart.Name) (contains .Chart.Name .Release.Name) -}}
{{- end -}}
{{- $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/*
What selects the server's pods. Only the name, as in manifests/: a
Deployment's selector cannot change after it is created.
*/}}
{{- define "upgrade-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
{{- end -}}

{{- define "upgrade-guard.labels" -}}
{{ include "upgrade-guard.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "upgrade-guard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "upgrade-guard.tlsSecretName" -}}
{{- if and (eq .Values.certificates.mode "secret") .Values.certificates.secret.name -}}
{{ .Values.certificates.secret.name }}
{{- else -}}
{{ include "upgrade-guard.fullname" . }}-tls
{{- end -}}
{{- end -}}

{{- define "upgrade-guard.priorityClassName" -}}
{{- if .Values.priorityClass.name -}}
{{ .Values.priorityClass.name }}
{{- else if .Values.priorityClass.create -}}
{{ include "upgrade-guard.fullname" . }}-critical
{{- end -}}
{{- end -}}

{{/* The "restricted" Pod Security Standard, for the server and the cert Job alike. */}}
{{- define "upgrade-guard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "upgrade-guard.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The parts both webhooks share; the argument is (dict "root" $ "path" "/validate"). */}}
{{- define "upgrade-guard.webhook" -}}
{{- $root := .root -}}
{{- $values := $root.Values.webhooks -}}
clientConfig:
  service:
    namespace: {{ $root.Release.Namespace }}
    name: {{ include "upgrade-guard.fullname" $root }}
    path: {{ .path }}
    port: 443
  {{- if and (eq $root.Values.certificates.mode "secret") $root.Values.certificates.secret.caBundle }}
  caBundle: {{ $root.Values.certificates.secret.caBundle }}
  {{- end }}
rules:
  {{- if .data }}
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    # `kubectl set image pod/…` edits an image in place; `kubectl debug`
    # adds an ephemeral container through its subresource.
    resources: [pods, pods/ephemeralcontainers, persistentvolumeclaims]
    scope: Namespaced
  {{- else }}
  - apiGroups: [apps]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    # The scale subresources too: `kubectl scale` and autoscalers use them.
    resources: [statefulsets, deployments, statefulsets/scale, deployments/scale]
    scope: Namespaced
  {{- end }}
matchPolicy: Equivalent
# Never guard the control plane or the webhook's own rollout (it would
# deadlock with failurePolicy Fail).
namespaceSelector:
  {{- with $values.namespaceSelector.matchLabels }}
  matchLabels:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: {{ list "kube-system" $root.Release.Namespace | uniq | toJson }}
    {{- with $values.namespaceSelector.matchExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- if .data }}
sideEffects: None
admissionReviewVersions: [v1]
failurePolicy: {{ $values.data.failurePolicy }}
{{- else }}
sideEffects: NoneOnDryRun
admissionReviewVersions: [v1]
failurePolicy: {{ $values.failurePolicy }}
{{- end }}
timeoutSeconds: {{ $values.timeoutSeconds | int }}
{{- end -}}

{{/* cert-manager's cainjector fills caBundle from the serving Certificate's CA. */}}
{{- define "upgrade-guard.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "certManager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "upgrade-guard.fullname" . }}-serving
{{- end -}}
{{- end -}}
