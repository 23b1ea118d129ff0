{{/*
The chart's name and version, for the helm.sh/chart label.
*/}}
{{- define "keysmith.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the chart (hack/chartgen adds them to the objects copied from
config/ as well).
*/}}
{{- define "keysmith.labels" -}}
helm.sh/chart: {{ include "keysmith.chart" . }}
app.kubernetes.io/name: keysmith
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of a component's pods: (dict "ctx" $ "component" "manager").
*/}}
{{- define "keysmith.selectorLabels" -}}
app.kubernetes.io/name: keysmith
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of a component's objects: the chart's and the component.
*/}}
{{- define "keysmith.componentLabels" -}}
{{ include "keysmith.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The image of both components.
*/}}
{{- define "keysmith.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The token server's in-cluster URL (its Service, port 443).
*/}}
{{- define "keysmith.tokenServerURL" -}}
https://keysmith-token-server.{{ .Release.Namespace }}.svc
{{- end }}

{{/*
Topology spread constraints of a component, each with the component's pods as its
labelSelector unless it names one: (dict "ctx" $ "component" "manager" "constraints" list).
*/}}
{{- define "keysmith.topologySpread" -}}
{{- $selector := include "keysmith.selectorLabels" . | fromYaml }}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
- {{ toYaml $c | nindent 2 | trim }}
{{- end }}
{{- end }}

{{/*
The restricted securityContext of every pod and every container.
*/}}
{{- define "keysmith.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{- define "keysmith.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
  - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
