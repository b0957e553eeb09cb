"""Looking at the mesh from the terminal: ``kubelab graph`` (metrics) and ``kubelab traces``.

Both read a component's HTTP API (VictoriaMetrics' Prometheus API, Jaeger's query API) the
way the checks do: through the API server's service proxy of the lesson's cluster, or at a
URL given by hand (a port-forward). The sandbox answers the same paths with its Prometheus
and its span receiver (see docs/observability-offline.md).
"""
