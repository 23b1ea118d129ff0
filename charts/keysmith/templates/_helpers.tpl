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

{{/*
A Go duration of values.schema.json's form (integers and units: 1m30s, 500ms) in
nanoseconds, printed as an integer; templates read it back with atoi.
*/}}
{{- define "keysmith.durationNanos" -}}
{{- $units := dict "ns" 1 "us" 1000 "µs" 1000 "ms" 1000000 "s" 1000000000 "m" 60000000000 "h" 3600000000000 }}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+(ns|us|µs|ms|s|m|h)" (toString .) -1 }}
{{- $n := regexFind "^[0-9]+" . }}
{{- $total = add $total (mul (atoi $n) (get $units (trimPrefix $n .))) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
Fails the render unless manager.leaderElection satisfies client-go's leader election
(leaseDuration > renewDeadline > 1.2 × retryPeriod): otherwise every manager replica would
exit at start, and the fail-closed webhook would refuse every APICredential write.
*/}}
{{- define "keysmith.checkLeaderElection" -}}
{{- $le := .Values.manager.leaderElection }}
{{- $lease := include "keysmith.durationNanos" $le.leaseDuration | atoi }}
{{- $renew := include "keysmith.durationNanos" $le.renewDeadline | atoi }}
{{- $retry := include "keysmith.durationNanos" $le.retryPeriod | atoi }}
{{- if le $lease $renew }}
{{- fail (printf "manager.leaderElection.renewDeadline (%s) must be less than manager.leaderElection.leaseDuration (%s)" $le.renewDeadline $le.leaseDuration) }}
{{- end }}
{{- if le (mul $renew 10) (mul $retry 12) }}
{{- fail (printf "manager.leaderElection.renewDeadline (%s) must be more than 1.2 × manager.leaderElection.retryPeriod (%s)" $le.renewDeadline $le.retryPeriod) }}
{{- end }}
{{- end }}

{{/*
Fails the render unless tokenLifetime <= maxTokenLifetime <= 24h, as the token server
requires at start (every replica would exit otherwise).
*/}}
{{- define "keysmith.checkTokenLifetimes" -}}
{{- $t := .Values.tokenServer }}
{{- $life := include "keysmith.durationNanos" $t.tokenLifetime | atoi }}
{{- $max := include "keysmith.durationNanos" $t.maxTokenLifetime | atoi }}
{{- if lt $max $life }}
{{- fail (printf "tokenServer.maxTokenLifetime (%s) must be at least tokenServer.tokenLifetime (%s)" $t.maxTokenLifetime $t.tokenLifetime) }}
{{- end }}
{{- if gt $max 86400000000000 }}
{{- fail (printf "tokenServer.maxTokenLifetime (%s) must be at most 24h" $t.maxTokenLifetime) }}
{{- end }}
{{- end }}

{{/*
Fails the render when a component's PodDisruptionBudget would forbid every voluntary
disruption (an integer minAvailable not below replicas: no node drain could ever evict
one of its pods): (dict "name" "manager" "values" .Values.manager).
*/}}
{{- define "keysmith.checkPDB" -}}
{{- $v := .values }}
{{- if and $v.pdb.enabled (not (kindIs "string" $v.pdb.minAvailable)) }}
{{- if ge (int $v.pdb.minAvailable) (int $v.replicas) }}
{{- fail (printf "%s.pdb.minAvailable (%v) must be less than %s.replicas (%v), or no node could be drained; raise the replicas or set %s.pdb.enabled=false" .name $v.pdb.minAvailable .name $v.replicas .name) }}
{{- end }}
{{- end }}
{{- end }}
