{{/*
Base name of every object: .Values.nameOverride or app-backend.
Not derived from the release name: the lesson's commands use the fixed name app-backend, and
Flagger derives the names it generates from it (<name>-primary, <name>-canary).
*/}}
{{- define "app-canary.name" -}}
{{- default "app-backend" .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* chart label value: <chart>-<version> */}}
{{- define "app-canary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of an object or pod template, as YAML (keys sorted).
Call with (dict "root" $ "extra" (dict ...) "pod" true|false).
Precedence, last wins: standard app.kubernetes.io/* labels, .Values.commonLabels, extra
(the selector label `app` is always passed in extra so nothing can override it).
Pod templates leave out helm.sh/chart so that a chart version bump alone does not change the
pod template: Flagger would take that for a new revision and start an analysis.
*/}}
{{- define "app-canary.labels" -}}
{{- $root := .root -}}
{{- $labels := dict
    "app.kubernetes.io/name" (include "app-canary.name" $root)
    "app.kubernetes.io/instance" $root.Release.Name
    "app.kubernetes.io/managed-by" $root.Release.Service
-}}
{{- if not .pod -}}
{{- $_ := set $labels "helm.sh/chart" (include "app-canary.chart" $root) -}}
{{- end -}}
{{- $labels = mustMergeOverwrite $labels (deepCopy ($root.Values.commonLabels | default dict)) (.extra | default dict) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Image reference: [<registry>/]<repository>:<tag>. */}}
{{- define "app-canary.image" -}}
{{- $image := .Values.image -}}
{{- if $image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $image.registry) $image.repository $image.tag -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}

{{/*
In-cluster URL of the canary Service Flagger generates, as the load tester (outside the mesh,
in another namespace) reaches it: http://<name>-canary.<namespace>[:port]
*/}}
{{- define "app-canary.canaryUrl" -}}
{{- $port := int .Values.service.port -}}
{{- printf "http://%s-canary.%s%s" (include "app-canary.name" .) .Release.Namespace (ternary "" (printf ":%d" $port) (eq $port 80)) -}}
{{- end -}}

{{/*
Rules across values that JSON Schema cannot express; they also hold when the schema is bypassed
(helm --skip-schema-validation, or --set-string). Renders nothing; fails the release on error.
*/}}
{{- define "app-canary.validate" -}}
{{- $a := .Values.canary.analysis -}}
{{- range $key := list "threshold" "stepWeight" "maxWeight" "iterations" "mirrorWeight" -}}
{{- $v := index $a $key -}}
{{- if not (or (kindIs "int" $v) (kindIs "int64" $v) (and (kindIs "float64" $v) (eq $v (float64 (int $v))))) -}}
{{- fail (printf "canary.analysis.%s must be an integer (got %v)" $key $v) -}}
{{- end -}}
{{- end -}}
{{- if lt (int $a.threshold) 1 -}}
{{- fail (printf "canary.analysis.threshold must be at least 1 (got %v)" $a.threshold) -}}
{{- end -}}
{{- if eq (int $a.iterations) 0 -}}
{{- range $key := list "stepWeight" "maxWeight" -}}
{{- $w := int (index $a $key) -}}
{{- if or (lt $w 1) (gt $w 100) -}}
{{- fail (printf "canary.analysis.%s must be from 1 to 100 (got %d)" $key $w) -}}
{{- end -}}
{{- end -}}
{{- if gt (int $a.stepWeight) (int $a.maxWeight) -}}
{{- fail (printf "canary.analysis.stepWeight (%d) must not be greater than canary.analysis.maxWeight (%d): the first step would already pass the maximum" (int $a.stepWeight) (int $a.maxWeight)) -}}
{{- end -}}
{{- else if lt (int $a.iterations) 0 -}}
{{- fail (printf "canary.analysis.iterations must be 0 (use stepWeight/maxWeight) or more (got %d)" (int $a.iterations)) -}}
{{- end -}}
{{- if and $a.mirror (or (lt (int $a.mirrorWeight) 1) (gt (int $a.mirrorWeight) 100)) -}}
{{- fail (printf "canary.analysis.mirrorWeight must be from 1 to 100 (got %d)" (int $a.mirrorWeight)) -}}
{{- end -}}
{{- if and $a.mirror $a.sessionAffinity.enabled -}}
{{- fail "canary.analysis.mirror and canary.analysis.sessionAffinity.enabled exclude each other: mirroring sends no user to the canary, so there is no session to keep" -}}
{{- end -}}
{{- if and .Values.autoscaler.enabled (gt (int .Values.autoscaler.minReplicas) (int .Values.autoscaler.maxReplicas)) -}}
{{- fail (printf "autoscaler.minReplicas (%d) must not be greater than autoscaler.maxReplicas (%d)" (int .Values.autoscaler.minReplicas) (int .Values.autoscaler.maxReplicas)) -}}
{{- end -}}
{{- end -}}
