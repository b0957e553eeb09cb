"""The catalog of components a lesson can list under ``components:``, and their Helm releases.

Each :class:`Component` says what it is for, where it lives, what it needs first and which
Helm releases install it; each :class:`Release` pins one chart at an exact version.
``install_order`` turns a lesson's list into dependency order (dependencies included) and
``release_order`` does the same for releases, which the installer
(``kubelab.components.installer``) runs as a DAG: independent releases in parallel.
The values each release is installed with, and the extra objects a component applies after
its releases, come from ``kubelab.components.values``; ``docs/components.md`` lists every
pin with where it was read and rendered.

Every version below was read from the chart's source at the release tag (the commit is
named beside each pin) and rendered with ``helm template`` and kubelab's own values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: ``(namespace, service, port)`` of an in-cluster HTTP endpoint.
Endpoint = tuple[str, str, int]


@dataclass(frozen=True)
class Release:
    """One Helm release: a chart pinned at an exact version, installed into ``namespace``."""

    name: str  # helm release name (unique in the catalog)
    chart: str  # chart name in the repo
    repo: str  # https repo URL
    version: str  # EXACT chart version (never a range)
    namespace: str
    depends_on: tuple[str, ...] = ()  # release names, also across components
    wait: bool = True
    timeout: int = 600  # seconds
    secret_paths: tuple[str, ...] = ()  # dotted value paths holding secrets, masked in plans


@dataclass(frozen=True)
class Component:
    """Something a lesson needs on the cluster, installed by one or more Helm releases."""

    name: str
    title: str
    namespace: str
    description: str
    depends_on: tuple[str, ...] = field(default_factory=tuple)
    releases: tuple[Release, ...] = ()
    # The HTTP API checks query through the API server's service proxy (and `kubelab open`
    # port-forwards to when there is no ``ui``).
    api: Endpoint | None = None
    # The browser UI `kubelab open` port-forwards to, and the path to open there.
    ui: Endpoint | None = None
    ui_path: str = "/"


ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
# Istio 1.30.3 (istio/istio tag 1.30.3, 56df41f63e51; charts under manifests/charts). Its CRDs
# (base/files/crd-all.gen.yaml) have the same kinds as ../shared/schemas/crds/istio-crds.yaml
# (istio/api b8f8791d9653) and an identical Telemetry schema; that file is a superset for the
# networking kinds (fields added on istio/api master after 1.30).
ISTIO_VERSION = "1.30.3"
ISTIO_NAMESPACE = "istio-system"
# The release name gives the gateway pods `app: istio-ingressgateway` and
# `istio: ingressgateway` (manifests/charts/gateway/templates/_helpers.tpl trims "istio-");
# values.py also sets both labels explicitly.
GATEWAY_RELEASE = "istio-ingressgateway"

VM_REPO = "https://victoriametrics.github.io/helm-charts/"
# victoria-metrics-single 0.45.0 (VictoriaMetrics/helm-charts tag victoria-metrics-single-0.45.0,
# 930509bd292a; app v1.150.0; subchart victoria-metrics-common 0.3.15).
VM_VERSION = "0.45.0"
VM_NAMESPACE = "monitoring"
VM_SERVICE = "victoria-metrics"  # server.fullnameOverride in values.py
VM_PORT = 8428

JAEGER_REPO = "https://jaegertracing.github.io/helm-charts"
# jaeger 4.11.1 (jaegertracing/helm-charts tag jaeger-4.11.1, 6c602b54a180; Jaeger v2 2.19.0,
# all-in-one with in-memory storage when no storage is configured).
JAEGER_VERSION = "4.11.1"
JAEGER_SERVICE = "jaeger"  # fullnameOverride in values.py
JAEGER_QUERY_PORT = 16686  # HTTP query API and UI (/api/traces)
JAEGER_OTLP_GRPC_PORT = 4317  # where the Envoy sidecars send spans (OpenTelemetry)

KIALI_REPO = "https://kiali.org/helm-charts"
# kiali-server 2.29.0 (kiali/helm-charts tag v2.29.0, 03256abf169b; Kiali v2.29.0).
KIALI_VERSION = "2.29.0"
KIALI_PORT = 20001

GITEA_REPO = "https://dl.gitea.com/charts/"
# gitea 12.7.0 (Gitea 1.27.0). The chart's source lives on gitea.com (not reachable here); read
# from the published chart as vendored in linode/apl-core 6d9a93dfd3af charts/gitea/.
GITEA_VERSION = "12.7.0"
GITEA_NAMESPACE = "gitea"
GITEA_SERVICE = "gitea-http"
GITEA_PORT = 3000

CERT_MANAGER_REPO = "https://charts.jetstack.io"
# cert-manager v1.21.1 (cert-manager/cert-manager tag v1.21.1, 24e33194fb39;
# deploy/charts/cert-manager).
CERT_MANAGER_VERSION = "v1.21.1"

FLAGGER_REPO = "https://flagger.app"
# flagger 1.44.0 and loadtester 0.38.0 (fluxcd/flagger tag v1.44.0, 15bd6ad555e6; charts/flagger,
# charts/loadtester) -- the commit ../shared/schemas/crds/flagger-crds.yaml was taken from.
FLAGGER_VERSION = "1.44.0"
LOADTESTER_VERSION = "0.38.0"
LOADTESTER_RELEASE = "flagger-loadtester"

ARGO_REPO = "https://argoproj.github.io/argo-helm"
# argo-rollouts 2.41.0 (argoproj/argo-helm tag argo-rollouts-2.41.0, 8796aeaa8242; Argo
# Rollouts v1.9.0).
ARGO_ROLLOUTS_VERSION = "2.41.0"


def _istio(name: str, chart: str, *deps: str, timeout: int = 600) -> Release:
    return Release(
        name, chart, ISTIO_REPO, ISTIO_VERSION, ISTIO_NAMESPACE, tuple(deps), timeout=timeout
    )


CATALOG: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            "istio",
            "Istio service mesh",
            ISTIO_NAMESPACE,
            "istio base CRDs, CNI node agent, istiod control plane and ingress gateway",
            releases=(
                # values: manifests/charts/base/values.yaml
                _istio("istio-base", "base", timeout=300),
                # values: manifests/charts/istio-cni/values.yaml. The node agent must run
                # before istiod injects pods that rely on it (the ingress gateway's do not).
                _istio("istio-cni", "cni", timeout=300),
                # values: manifests/charts/istio-control/istio-discovery/values.yaml
                _istio("istiod", "istiod", "istio-base", "istio-cni"),
                # values: manifests/charts/gateway/values.yaml (+ values.schema.json). The
                # gateway pods are injected by istiod, so istiod must be up first.
                _istio(GATEWAY_RELEASE, "gateway", "istiod"),
            ),
        ),
        Component(
            "victoria-metrics",
            "VictoriaMetrics",
            VM_NAMESPACE,
            "single-node metrics store scraping Envoy sidecars and istiod",
            releases=(
                # values: charts/victoria-metrics-single/values.yaml
                Release(
                    "victoria-metrics",
                    "victoria-metrics-single",
                    VM_REPO,
                    VM_VERSION,
                    VM_NAMESPACE,
                ),
            ),
            api=(VM_NAMESPACE, VM_SERVICE, VM_PORT),
            ui=(VM_NAMESPACE, VM_SERVICE, VM_PORT),
            ui_path="/vmui/",
        ),
        Component(
            "kiali",
            "Kiali",
            ISTIO_NAMESPACE,
            "mesh graph and health, reading metrics from VictoriaMetrics",
            ("istio", "victoria-metrics"),
            releases=(
                # values: kiali-server/values.yaml; config keys: kiali/kiali v2.29.0
                # config/config.go (the chart writes them into the kiali ConfigMap).
                Release(
                    "kiali",
                    "kiali-server",
                    KIALI_REPO,
                    KIALI_VERSION,
                    ISTIO_NAMESPACE,
                    ("istiod", "victoria-metrics"),
                ),
            ),
            api=(ISTIO_NAMESPACE, "kiali", KIALI_PORT),
            ui=(ISTIO_NAMESPACE, "kiali", KIALI_PORT),
            ui_path="/kiali/",
        ),
        Component(
            "jaeger",
            "Jaeger",
            ISTIO_NAMESPACE,
            "distributed traces sent by the Envoy sidecars",
            releases=(
                # values: charts/jaeger/values.yaml; default config: jaegertracing/jaeger
                # v2.19.0 cmd/jaeger/internal/all-in-one.yaml
                Release("jaeger", "jaeger", JAEGER_REPO, JAEGER_VERSION, ISTIO_NAMESPACE),
            ),
            api=(ISTIO_NAMESPACE, JAEGER_SERVICE, JAEGER_QUERY_PORT),
            ui=(ISTIO_NAMESPACE, JAEGER_SERVICE, JAEGER_QUERY_PORT),
        ),
        Component(
            "gitea",
            "Gitea",
            GITEA_NAMESPACE,
            "Git server and container registry for the lesson's images",
            releases=(
                # values: charts/gitea/values.yaml and templates/_helpers.tpl of the vendored
                # published chart (linode/apl-core 6d9a93dfd3af).
                Release("gitea", "gitea", GITEA_REPO, GITEA_VERSION, GITEA_NAMESPACE, timeout=900),
            ),
            api=(GITEA_NAMESPACE, GITEA_SERVICE, GITEA_PORT),
            ui=(GITEA_NAMESPACE, GITEA_SERVICE, GITEA_PORT),
        ),
        Component(
            "cert-manager",
            "cert-manager",
            "cert-manager",
            "Let's Encrypt certificates for the gateway's hostnames (only with --tls)",
            releases=(
                # values: deploy/charts/cert-manager/values.yaml (+ values.schema.json)
                Release(
                    "cert-manager",
                    "cert-manager",
                    CERT_MANAGER_REPO,
                    CERT_MANAGER_VERSION,
                    "cert-manager",
                ),
            ),
        ),
        Component(
            "flagger",
            "Flagger",
            ISTIO_NAMESPACE,
            "automated canary analysis with Istio, metrics from VictoriaMetrics, load tester",
            ("istio", "victoria-metrics"),
            releases=(
                # values: charts/flagger/values.yaml
                Release(
                    "flagger",
                    "flagger",
                    FLAGGER_REPO,
                    FLAGGER_VERSION,
                    ISTIO_NAMESPACE,
                    ("istio-base", "victoria-metrics"),
                ),
                # values: charts/loadtester/values.yaml
                Release(
                    LOADTESTER_RELEASE,
                    "loadtester",
                    FLAGGER_REPO,
                    LOADTESTER_VERSION,
                    ISTIO_NAMESPACE,
                ),
            ),
            # The load tester's HTTP API, which Canary webhooks call.
            api=(ISTIO_NAMESPACE, LOADTESTER_RELEASE, 80),
        ),
        Component(
            "argo-rollouts",
            "Argo Rollouts",
            "argo-rollouts",
            "blue/green and canary Rollouts with analysis, and its dashboard",
            ("istio", "victoria-metrics"),
            releases=(
                # values: charts/argo-rollouts/values.yaml
                Release(
                    "argo-rollouts",
                    "argo-rollouts",
                    ARGO_REPO,
                    ARGO_ROLLOUTS_VERSION,
                    "argo-rollouts",
                ),
            ),
            ui=("argo-rollouts", "argo-rollouts-dashboard", 3100),
        ),
    )
}

#: Every release of the catalog by name.
RELEASES: dict[str, Release] = {r.name: r for c in CATALOG.values() for r in c.releases}

#: The component each release belongs to.
RELEASE_COMPONENT: dict[str, str] = {r.name: c.name for c in CATALOG.values() for r in c.releases}


def install_order(names: Iterable[str]) -> list[Component]:
    """``names`` plus their dependencies, each after everything it depends on."""
    ordered: list[Component] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        component = CATALOG[name]
        for dep in component.depends_on:
            visit(dep)
        ordered.append(component)

    for name in names:
        visit(name)
    return ordered


def release_order(components: Iterable[Component]) -> list[Release]:
    """The releases of ``components`` (as from :func:`install_order`), dependencies first.

    A dependency on a release of a component that is not being installed is dropped (the
    component's own ``depends_on`` already pulls in what it really needs).
    """
    wanted = {r.name: r for c in components for r in c.releases}
    ordered: list[Release] = []
    seen: set[str] = set()

    def visit(release: Release) -> None:
        if release.name in seen:
            return
        seen.add(release.name)
        for dep in release.depends_on:
            if dep in wanted:
                visit(wanted[dep])
        ordered.append(release)

    for release in wanted.values():
        visit(release)
    return ordered
