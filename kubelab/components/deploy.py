"""A lesson's components as DAG nodes: Helm releases, their secrets and extra manifests.

``component_plan`` describes what would be installed (chart, exact version, repo,
namespace, dependencies, values with secrets masked) for ``--dry-run``; ``component_nodes``
turns the same releases into installer nodes that call helm (skipping releases already
at the same chart version and values) and apply each component's extra manifests
once its releases are ready. ``removal_nodes`` is the reverse, for ``kubelab down``.
Both take an optional ``archives`` (release name -> checked chart archive, from
``kubelab.components.localcharts``): then each release is installed from its archive
instead of its repository (``kubelab up --charts DIR``).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubelab.cluster.helm import HelmClient, mask_values
from kubelab.cluster.kube import Kube
from kubelab.components import catalog
from kubelab.components.installer import Node, reversed_dag
from kubelab.components.values import (
    InstallSettings,
    component_names,
    extra_manifests,
    values_for,
)


def components_for(names: list[str], settings: InstallSettings) -> list[catalog.Component]:
    """The components to install for ``names``, dependencies first."""
    return catalog.install_order(component_names(list(names), settings))


def _mask_paths(values: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    masked = mask_values(values)
    for path in paths:
        node = masked
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = "***"
    return dict(masked)


def component_plan(
    names: list[str],
    settings: InstallSettings,
    archives: Mapping[str, Path] | None = None,
) -> list[dict[str, Any]]:
    """Every release with chart, exact version, repo, where helm gets the chart from
    (``source``: the repo, or the local archive), namespace, deps and masked values."""
    plan = []
    for component in components_for(names, settings):
        for release in component.releases:
            archive = (archives or {}).get(release.name)
            plan.append(
                {
                    "component": component.name,
                    "release": release.name,
                    "chart": release.chart,
                    "version": release.version,
                    "repo": release.repo,
                    "source": str(archive) if archive is not None else release.repo,
                    "namespace": release.namespace,
                    "depends_on": list(release.depends_on),
                    "values": _mask_paths(values_for(release, settings), release.secret_paths),
                }
            )
    return plan


def component_objects(names: list[str], settings: InstallSettings) -> list[dict[str, Any]]:
    """The objects applied beside the components' releases (the exposure Gateway and
    routes, the dashboard viewer, TLS), each with the component it belongs to."""
    return [
        {"component": component.name, "object": obj}
        for component in components_for(names, settings)
        for obj in extra_manifests(component, settings)
    ]


def ensure_gitea_admin(kube: Kube, settings: InstallSettings, namespace: str) -> str:
    """The Secret Gitea's admin password comes from: random, made once, never replaced."""
    name = settings.gitea_admin_secret
    if kube.get("v1", "Secret", name, namespace) is not None:
        return "unchanged"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "kubelab"},
            },
            "type": "Opaque",
            "stringData": {"username": "kubelab-admin", "password": secrets.token_urlsafe(24)},
        }
    )
    return "created"


def component_nodes(
    components: list[catalog.Component],
    settings: InstallSettings,
    helm: HelmClient,
    kube: Kube,
    archives: Mapping[str, Path] | None = None,
) -> list[Node]:
    """The installer's nodes for ``components``: one per release (from ``archives`` when
    given, else from its repository), Gitea's admin Secret, each component's manifests."""
    selected = {r.name for c in components for r in c.releases}
    nodes: list[Node] = []
    for component in components:
        for release in component.releases:
            deps = tuple(d for d in release.depends_on if d in selected)
            if component.name == "gitea":
                secret = f"{release.name}:admin-secret"
                nodes.append(
                    Node(
                        secret,
                        (),
                        functools.partial(ensure_gitea_admin, kube, settings, release.namespace),
                        "gitea admin password",
                    )
                )
                deps = (*deps, secret)
            nodes.append(
                Node(
                    release.name,
                    deps,
                    _ensure(helm, release, settings, (archives or {}).get(release.name)),
                    component.title,
                )
            )
        manifests = extra_manifests(component, settings)
        if manifests:
            nodes.append(
                Node(
                    f"{component.name}:manifests",
                    tuple(r.name for r in component.releases),
                    _apply(kube, manifests),
                    f"{component.title} settings",
                )
            )
    return nodes


def _ensure(
    helm: HelmClient,
    release: catalog.Release,
    settings: InstallSettings,
    archive: Path | None = None,
) -> Callable[[], str]:
    def run() -> str:
        result = helm.ensure_release(
            release.name,
            release.chart,
            repo=release.repo,
            version=release.version,
            namespace=release.namespace,
            values=values_for(release, settings),
            wait=release.wait,
            timeout=release.timeout,
            secrets=release.secret_paths,
            archive=archive,
        )
        return result.action

    return run


def _apply(kube: Kube, objects: list[dict[str, Any]]) -> Callable[[], str]:
    def run() -> str:
        before = kube.mutations
        # Shared by every lesson on the cluster: kubelab's, but no single lesson's.
        kube.apply_all(objects, labels={"app.kubernetes.io/managed-by": "kubelab"})
        return "applied" if kube.mutations > before else "unchanged"

    return run


def removal_nodes(components: list[catalog.Component], helm: HelmClient) -> list[Node]:
    """Uninstall ``components``' releases, dependents before what they depend on."""
    selected = {r.name: r for c in components for r in c.releases}
    forward = [
        Node(r.name, tuple(d for d in r.depends_on if d in selected), lambda: "")
        for r in selected.values()
    ]

    def remover(name: str) -> Callable[[], str]:
        release = selected[name]

        def run() -> str:
            helm.uninstall(release.name, release.namespace, wait=True)
            return "removed"

        return run

    return reversed_dag(forward, remover)
