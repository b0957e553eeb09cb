{{/*
Base name of every object: .Values.nameOverride or the chart name (app-backend).
Not derived from the release name: the course commands use the fixed name app-backend.
*/}}
{{- define "app-backend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* chart label value: <name>-<version> */}}
{{- define "app-backend.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of an object or pod template, as YAML (keys sorted).
Call with (dict "root" $ "extra" (dict ...) "pod" true|false).
Precedence, last wins: standard app.kubernetes.io/* labels, .Values.commonLabels, extra
(the selector labels app/version are always passed in extra so nothing can override them).
Pod templates leave out helm.sh/chart so a chart version bump alone does not restart pods.
*/}}
{{- define "app-backend.labels" -}}
{{- $root := .root -}}
{{- $labels := dict
    "app.kubernetes.io/name" (include "app-backend.name" $root)
    "app.kubernetes.io/instance" $root.Release.Name
    "app.kubernetes.io/managed-by" $root.Release.Service
-}}
{{- if not .pod -}}
{{- $_ := set $labels "helm.sh/chart" (include "app-backend.chart" $root) -}}
{{- end -}}
{{- $labels = mustMergeOverwrite $labels (deepCopy ($root.Values.commonLabels | default dict)) (.extra | default dict) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Image reference of one version: [<registry>/]<repository>:<tag>. Call with (dict "root" $ "tag" "v1"). */}}
{{- define "app-backend.image" -}}
{{- $image := .root.Values.image -}}
{{- if $image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $image.registry) $image.repository .tag -}}
{{- else -}}
{{- printf "%s:%s" $image.repository .tag -}}
{{- end -}}
{{- end -}}

{{/*
Hosts of the VirtualService: the Service name plus the gateway hosts when the gateway is on.
Istio rejects the wildcard "*" in a VirtualService bound to the mesh gateway, so it is left out
here (it stays in the Gateway). Returned as a YAML list.
*/}}
{{- define "app-backend.vsHosts" -}}
{{- $hosts := list (include "app-backend.name" .) -}}
{{- if .Values.gateway.enabled -}}
{{- range .Values.gateway.hosts -}}
{{- if ne . "*" -}}
{{- $hosts = append $hosts . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml (uniq $hosts) -}}
{{- end -}}

{{/*
Checks that also hold when the values schema is bypassed (helm --skip-schema-validation,
or values typed as strings with --set-string). Renders nothing; fails the release on error.
*/}}
{{- define "app-backend.validate" -}}
{{- $w1 := .Values.weights.v1 -}}
{{- $w2 := .Values.weights.v2 -}}
{{- range $key, $w := dict "v1" $w1 "v2" $w2 -}}
{{- $isInt := or (kindIs "int" $w) (kindIs "int64" $w) (and (kindIs "float64" $w) (eq $w (float64 (int $w)))) -}}
{{- if or (not $isInt) (lt (int $w) 0) (gt (int $w) 100) -}}
{{- fail (printf "weights.%s must be an integer from 0 to 100 (got %v)" $key $w) -}}
{{- end -}}
{{- end -}}
{{- if ne (add (int $w1) (int $w2)) 100 -}}
{{- fail (printf "weights.v1 + weights.v2 must be 100 (got %v + %v)" $w1 $w2) -}}
{{- end -}}
{{- range $version := list "v1" "v2" -}}
{{- $weight := int (index $.Values.weights $version) -}}
{{- if and (gt $weight 0) (not (index $.Values.versions $version).enabled) -}}
{{- fail (printf "weights.%s is %d but versions.%s.enabled is false: give it weight 0 or enable it" $version $weight $version) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.gateway.enabled .Values.gateway.tls.enabled (not .Values.gateway.tls.credentialName) -}}
{{- fail "gateway.tls.enabled needs gateway.tls.credentialName (the TLS Secret in the ingress gateway's namespace)" -}}
{{- end -}}
{{- end -}}
