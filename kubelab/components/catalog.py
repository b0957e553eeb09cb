"""The catalog of components a lesson can list under ``components:``.

Each entry says what the component is for, where it lives and what it needs first;
``install_order`` turns a lesson's list into dependency order (dependencies included).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Component:
    name: str
    title: str
    namespace: str
    description: str
    depends_on: tuple[str, ...] = field(default_factory=tuple)


CATALOG: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            "istio",
            "Istio service mesh",
            "istio-system",
            "istio base CRDs, istiod control plane and the ingress gateway",
        ),
        Component(
            "victoria-metrics",
            "VictoriaMetrics",
            "monitoring",
            "single-node metrics store scraping Envoy sidecars and istiod",
        ),
        Component(
            "kiali",
            "Kiali",
            "istio-system",
            "mesh graph and health, reading metrics from VictoriaMetrics",
            ("istio", "victoria-metrics"),
        ),
        Component(
            "jaeger",
            "Jaeger",
            "istio-system",
            "distributed traces sent by the Envoy sidecars",
            ("istio",),
        ),
        Component(
            "gitea",
            "Gitea",
            "gitea",
            "Git server and container registry for the lesson's images",
        ),
        Component(
            "flagger",
            "Flagger",
            "istio-system",
            "automated canary analysis with Istio, metrics from VictoriaMetrics, load tester",
            ("istio", "victoria-metrics"),
        ),
        Component(
            "argo-rollouts",
            "Argo Rollouts",
            "argo-rollouts",
            "blue/green and canary Rollouts with analysis, and its dashboard",
            ("istio", "victoria-metrics"),
        ),
    )
}


def install_order(names: list[str]) -> list[Component]:
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
