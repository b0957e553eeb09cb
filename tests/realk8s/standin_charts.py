"""Small stand-ins for the catalog's upstream charts, for the components step on the real
control plane (the real charts are neither reachable from here nor installable on v1.20).

:func:`write_chart` writes one chart at a release's pinned chart name and version, whose
objects are shaped like what kubelab waits for or talks to after the install: the
Deployments ``helm --wait`` waits for (the node agent makes their pods Ready) and the
Services the catalog names as endpoints (``gitea-http:3000``, ``victoria-metrics:8428``,
``kiali:20001``, ``jaeger:16686``, the ingress gateway with the Service type kubelab asks
for...). Names come from the same values keys as in the real charts (``fullnameOverride``,
``server.fullnameOverride``, ``service.type``, ``labels``), each read with a default, and
there is no values schema: any values kubelab passes render. No PersistentVolumeClaim
(nothing binds volumes here) and no ``kubeVersion``.

:func:`standin_folder` lays them out as ``kubelab charts pull`` does, through kubelab's own
``pull_charts`` with a puller that runs ``helm package`` instead of ``helm pull``: the
archives and ``charts.json`` are exactly what ``kubelab up --charts DIR`` reads.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kubelab.components.catalog import Release
from kubelab.components.localcharts import PullResult, pull_charts


@dataclass(frozen=True)
class Workload:
    """A Deployment or DaemonSet (and a Service in front of it when ``ports`` are given)."""

    name: str  # a Go template expression giving the object name
    ports: tuple[tuple[str, int], ...] = ()
    service_type: str = '"ClusterIP"'  # a Go template expression
    # Pod labels (Go template expression of a map); default: name and instance.
    labels: str = ""
    condition: str = "true"  # Go template condition: render only when it holds
    env: tuple[tuple[str, str, str], ...] = ()  # (variable, secret name expr, key)
    service: str = ""  # the Service's name expression when it differs from the Deployment's
    node_port: str = ""  # expression of the first port's nodePort (rendered when set)
    kind: str = "Deployment"  # or DaemonSet (no replicas)


def _dig(path: str, default: str) -> str:
    """``.Values.a.b`` read safely (a missing ``a`` is not an error) with a default."""
    parts = path.split(".")
    expr = ".Values"
    for part in parts[:-1]:
        expr = f"({expr}.{part} | default dict)"
    return f"({expr}.{parts[-1]} | default {default})"


@dataclass(frozen=True)
class StandIn:
    workloads: tuple[Workload, ...] = ()
    gateway: bool = False  # the Istio gateway: labels and Service ports from values
    extra: tuple[str, ...] = field(default_factory=tuple)  # literal extra templates


GATEWAY_PORTS = (("status-port", 15021), ("http2", 80), ("https", 443))

STANDINS: dict[str, StandIn] = {
    # istio/base: CRDs (the fixture installs Istio's, adapted to v1.20) and a webhook.
    "base": StandIn(
        extra=(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n"
            "  name: istio-reader-service-account\n  namespace: {{ .Release.Namespace }}\n",
        )
    ),
    "istiod": StandIn(
        (
            Workload(
                '"istiod"',
                (
                    ("grpc-xds", 15010),
                    ("https-dns", 15012),
                    ("https-webhook", 443),
                    ("http-monitoring", 15014),
                ),
                labels='(dict "app" "istiod" "istio" "pilot")',
            ),
        )
    ),
    # istio/cni: the node agent, one pod per node (helm --wait waits for it to be Ready).
    "cni": StandIn(
        (
            Workload(
                '"istio-cni-node"', kind="DaemonSet", labels='(dict "k8s-app" "istio-cni-node")'
            ),
        )
    ),
    "gateway": StandIn(gateway=True),
    "victoria-metrics-single": StandIn(
        (
            Workload(
                _dig(
                    "server.fullnameOverride",
                    '(printf "%s-victoria-metrics-single-server" .Release.Name)',
                ),
                (("http", 8428),),
            ),
        )
    ),
    "jaeger": StandIn(
        (
            Workload(
                _dig("fullnameOverride", ".Release.Name"),
                (("http-query", 16686), ("grpc-otlp", 4317), ("http-otlp", 4318)),
            ),
        )
    ),
    "kiali-server": StandIn((Workload('"kiali"', (("http", 0),), labels='(dict "app" "kiali")'),)),
    "gitea": StandIn(
        (
            Workload(
                ".Release.Name",
                (("http", 0),),
                service_type=_dig("service.http.type", '"ClusterIP"'),
                service='(printf "%s-http" .Release.Name)',
                node_port=_dig("service.http.nodePort", '""'),
                env=(
                    (
                        "GITEA_ADMIN_USERNAME",
                        _dig("gitea.admin.existingSecret", '"gitea-admin"'),
                        "username",
                    ),
                    (
                        "GITEA_ADMIN_PASSWORD",
                        _dig("gitea.admin.existingSecret", '"gitea-admin"'),
                        "password",
                    ),
                ),
            ),
        )
    ),
    "cert-manager": StandIn((Workload('"cert-manager"', (("http-metrics", 9402),)),)),
    "flagger": StandIn((Workload('"flagger"'),)),
    "loadtester": StandIn(
        (
            Workload(
                _dig("fullnameOverride", '(printf "%s-loadtester" .Release.Name)'),
                (("http", 80),),
            ),
        )
    ),
    "argo-rollouts": StandIn(
        (
            Workload('"argo-rollouts"', (("metrics", 8090),)),
            Workload(
                '"argo-rollouts-dashboard"',
                (("dashboard", 3100),),
                condition=_dig("dashboard.enabled", "false"),
            ),
        )
    ),
}

# Ports given as 0 take their number from values, as the real charts do.
_PORT_FROM_VALUES = {
    ("kiali-server", "http"): _dig("server.port", "20001"),
    ("gitea", "http"): _dig("service.http.port", "3000"),
}


def _workload(chart: str, w: Workload) -> str:
    labels = (
        w.labels
        or '(dict "app.kubernetes.io/name" $name "app.kubernetes.io/instance" .Release.Name)'
    )
    ports = [(n, str(p) if p else _PORT_FROM_VALUES[(chart, n)]) for n, p in w.ports]
    lines = [
        f"{{{{- if {w.condition} }}}}",
        f"{{{{- $name := {w.name} }}}}",
        f"{{{{- $labels := {labels} }}}}",
        "apiVersion: apps/v1",
        f"kind: {w.kind}",
        "metadata:",
        "  name: {{ $name }}",
        "  namespace: {{ .Release.Namespace }}",
        "  labels: {{- toYaml $labels | nindent 4 }}",
        "spec:",
        *(["  replicas: 1"] if w.kind == "Deployment" else []),
        "  selector:",
        "    matchLabels: {{- toYaml $labels | nindent 6 }}",
        "  template:",
        "    metadata:",
        "      labels: {{- toYaml $labels | nindent 8 }}",
        "    spec:",
        # The real istio-cni DaemonSet tolerates every taint (values.yaml `tolerations`),
        # so its pod lands on the node despite the not-ready taint no controller lifts here.
        *(["      tolerations:", "        - operator: Exists"] if w.kind == "DaemonSet" else []),
        "      containers:",
        "        - name: main",
        '          image: "standin.kubelab.invalid/{{ .Chart.Name }}:{{ .Chart.Version }}"',
    ]
    if ports:
        lines.append("          ports:")
        for name, port in ports:
            lines += [
                f"            - name: {name}",
                f"              containerPort: {{{{ {port} }}}}",
            ]
    if w.env:
        lines.append("          env:")
        for var, secret, key in w.env:
            lines += [
                f"            - name: {var}",
                "              valueFrom:",
                "                secretKeyRef:",
                f"                  name: {{{{ {secret} }}}}",
                f"                  key: {key}",
            ]
    if ports:
        lines += [
            "---",
            "apiVersion: v1",
            "kind: Service",
            "metadata:",
            f"  name: {{{{ {w.service or '$name'} }}}}",
            "  namespace: {{ .Release.Namespace }}",
            "  labels: {{- toYaml $labels | nindent 4 }}",
            "spec:",
            f"  type: {{{{ {w.service_type} }}}}",
            "  selector: {{- toYaml $labels | nindent 4 }}",
            "  ports:",
        ]
        for number, (name, port) in enumerate(ports):
            lines += [
                f"    - name: {name}",
                f"      port: {{{{ {port} }}}}",
                f"      targetPort: {{{{ {port} }}}}",
            ]
            if number == 0 and w.node_port:
                lines += [
                    f"      {{{{- with {w.node_port} }}}}",
                    "      nodePort: {{ . }}",
                    "      {{- end }}",
                ]
    lines.append("{{- end }}")
    return "\n".join(lines) + "\n"


_GATEWAY = """\
{{- $labels := .Values.labels | default (dict "app" .Release.Name "istio" "ingressgateway") }}
{{- $service := .Values.service | default dict }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
  labels: {{- toYaml $labels | nindent 4 }}
spec:
  replicas: 1
  selector:
    matchLabels: {{- toYaml $labels | nindent 6 }}
  template:
    metadata:
      labels: {{- toYaml $labels | nindent 8 }}
    spec:
      containers:
        - name: istio-proxy
          image: "standin.kubelab.invalid/{{ .Chart.Name }}:{{ .Chart.Version }}"
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
  labels: {{- toYaml $labels | nindent 4 }}
  {{- with $service.annotations }}
  annotations: {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $service.type | default "LoadBalancer" }}
  selector: {{- toYaml $labels | nindent 4 }}
  ports:
  {{- range ($service.ports | default (list DEFAULT_PORTS)) }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .targetPort | default .port }}
      protocol: {{ .protocol | default "TCP" }}
      {{- if .nodePort }}
      nodePort: {{ .nodePort }}
      {{- end }}
  {{- end }}
""".replace("DEFAULT_PORTS", " ".join(f'(dict "name" "{n}" "port" {p})' for n, p in GATEWAY_PORTS))


def write_chart(release: Release, folder: Path) -> Path:
    """The stand-in chart of ``release`` (its pinned chart name and version) in ``folder``."""
    standin = STANDINS[release.chart]
    chart = folder / release.chart
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\n"
        f"name: {release.chart}\n"
        f"version: {release.version}\n"
        f"description: kubelab test stand-in of {release.chart} from {release.repo}\n"
        "type: application\n"
    )
    templates = [_workload(release.chart, w) for w in standin.workloads]
    if standin.gateway:
        templates.append(_GATEWAY)
    templates += list(standin.extra)
    for number, text in enumerate(templates):
        (chart / "templates" / f"standin-{number}.yaml").write_text(text)
    return chart


def package(helm: Path, chart: Path, destination: Path) -> Path:
    """``helm package`` of ``chart`` into ``destination``; the archive's path."""
    done = subprocess.run(
        [str(helm), "package", str(chart), "--destination", str(destination)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"helm package {chart.name} failed: {done.stderr}")
    (archive,) = destination.glob("*.tgz")
    return archive


def standin_folder(
    helm: Path, releases: Iterable[Release], folder: Path, sources: Path
) -> list[PullResult]:
    """``folder`` as ``kubelab charts pull`` leaves it, holding the stand-ins of
    ``releases`` (their sources are written under ``sources``)."""

    def puller(release: Release, staging: Path) -> Path:
        return package(helm, write_chart(release, sources), staging)

    return pull_charts(folder, releases, puller)
