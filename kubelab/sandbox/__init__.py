"""The offline practice cluster: a Kubernetes-compatible API on 127.0.0.1, the lesson's
Deployments as real app_backend processes, and a real Envoy routing like the lesson's
VirtualService. It has no Istio control plane, Kiali, Jaeger, VictoriaMetrics or Gitea:
its telemetry (:mod:`kubelab.sandbox.telemetry`, :mod:`kubelab.sandbox.prometheus`)
answers the metrics and traces APIs in their place.
"""
