{{/* chart label value: <name>-<version> */}}
{{- define "app-rollouts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of an object or pod template, as YAML (keys sorted).
Call with (dict "root" $ "extra" (dict ...) "pod" true|false).
Precedence, last wins: standard app.kubernetes.io/* labels, .Values.commonLabels, extra (the
selector label `app` is always passed in extra, so nothing can override it). Pod templates
leave out helm.sh/chart so a chart version bump alone does not start a new rollout.
*/}}
{{- define "app-rollouts.labels" -}}
{{- $root := .root -}}
{{- $labels := dict
    "app.kubernetes.io/name" $root.Chart.Name
    "app.kubernetes.io/instance" $root.Release.Name
    "app.kubernetes.io/managed-by" $root.Release.Service
-}}
{{- if not .pod -}}
{{- $_ := set $labels "helm.sh/chart" (include "app-rollouts.chart" $root) -}}
{{- end -}}
{{- $labels = mustMergeOverwrite $labels (deepCopy ($root.Values.commonLabels | default dict)) (.extra | default dict) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Image reference: [<registry>/]<repository>:<tag>. */}}
{{- define "app-rollouts.image" -}}
{{- $image := .Values.image -}}
{{- if $image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $image.registry) $image.repository $image.tag -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}

{{/*
metadata of an object of one scenario. Call with (dict "root" $ "name" "<object>" "app"
"<scenario>" "component" "<role>").
*/}}
{{- define "app-rollouts.metadata" -}}
name: {{ .name }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "app-rollouts.labels" (dict "root" .root "extra" (dict "app" .app "app.kubernetes.io/component" .component)) | nindent 2 }}
{{- end -}}

{{/*
A Service of one scenario: selects app=<scenario>; Argo Rollouts adds the
rollouts-pod-template-hash of a ReplicaSet to the selector of the Services a Rollout names.
Call with (dict "root" $ "name" "<service>" "app" "<scenario>" "component" "<role>").
*/}}
{{- define "app-rollouts.service" -}}
apiVersion: v1
kind: Service
metadata:
  {{- include "app-rollouts.metadata" . | nindent 2 }}
spec:
  type: ClusterIP
  selector:
    app: {{ .app }}
  ports:
    # Named "http" (and appProtocol http) so Istio handles the traffic as HTTP.
    - name: http
      port: {{ .root.Values.service.port | int }}
      targetPort: {{ .root.Values.app.port | int }}
      protocol: TCP
      appProtocol: http
{{- end -}}

{{/*
Pod template of a Rollout: app-backend at .Values.image.tag. APP_VERSION is NOT set here: the
image sets it from its own tag, so `v2` in the image reference is what makes the pods run v2.
Call with (dict "root" $ "app" "<scenario>").
*/}}
{{- define "app-rollouts.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "app-rollouts.labels" (dict "root" $root "pod" true "extra" (dict "app" .app "app.kubernetes.io/component" "backend")) | nindent 4 }}
  {{- with $v.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 10
  {{- with $v.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . | quote }}
    {{- end }}
  {{- end }}
  {{- with $v.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: app-backend
      image: {{ include "app-rollouts.image" $root | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      env:
        - name: BUG_AFTER
          value: {{ $v.app.bugAfter | int | quote }}
        - name: PORT
          value: {{ $v.app.port | int | quote }}
      ports:
        - name: http
          containerPort: {{ $v.app.port | int }}
          protocol: TCP
      {{- with $v.probes.liveness }}
      livenessProbe:
        httpGet:
          path: {{ .path }}
          port: {{ $v.app.port | int }}
        initialDelaySeconds: {{ .initialDelaySeconds | int }}
        periodSeconds: {{ .periodSeconds | int }}
        timeoutSeconds: {{ .timeoutSeconds | int }}
        failureThreshold: {{ .failureThreshold | int }}
      {{- end }}
      {{- with $v.probes.readiness }}
      readinessProbe:
        httpGet:
          path: {{ .path }}
          port: {{ $v.app.port | int }}
        initialDelaySeconds: {{ .initialDelaySeconds | int }}
        periodSeconds: {{ .periodSeconds | int }}
        timeoutSeconds: {{ .timeoutSeconds | int }}
        failureThreshold: {{ .failureThreshold | int }}
      {{- end }}
      {{- with $v.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
{{- end -}}

{{/*
Arguments of the success-rate AnalysisTemplate, as a Rollout passes them: its own namespace and
name (read from the Rollout's metadata) and the pod-template hash of the NEW ReplicaSet (the
preview one in blue/green, the canary one in a canary), which prefixes the names of its pods.
*/}}
{{- define "app-rollouts.successRateArgs" -}}
- name: namespace
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: rollout
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: new-hash
  valueFrom:
    podTemplateHashValue: Latest
{{- end -}}

{{/*
Checks that also hold when the values schema is bypassed (helm --skip-schema-validation).
Renders nothing; fails the release on error.
*/}}
{{- define "app-rollouts.validate" -}}
{{- $names := list -}}
{{- range $key, $s := .Values.scenarios -}}
{{- if $s.enabled -}}
{{- if has $s.name $names -}}
{{- fail (printf "scenarios.%s.name %q is used by another scenario: names must differ" $key $s.name) -}}
{{- end -}}
{{- $names = append $names $s.name -}}
{{- end -}}
{{- end -}}
{{- range $key := list "canary" "canaryAnalysis" -}}
{{- $s := index $.Values.scenarios $key -}}
{{- range $s.weights -}}
{{- if or (lt (int .) 0) (gt (int .) 100) -}}
{{- fail (printf "scenarios.%s.weights: %v is not a percentage from 0 to 100" $key .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $t := .Values.analysis.successRate.threshold -}}
{{- if or (lt (float64 $t) 0.0) (gt (float64 $t) 1.0) -}}
{{- fail (printf "analysis.successRate.threshold must be from 0 to 1 (got %v)" $t) -}}
{{- end -}}
{{- end -}}
