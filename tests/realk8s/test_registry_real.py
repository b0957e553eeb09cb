"""One registry address per provider, on the real API server: ``up`` twice (in-process,
components from stand-in charts, images built by kaniko Jobs against the Gitea stub) with
each real provider's own facts (``Provider.facts``: what kind, Hetzner and GKE clusters
offer), the cluster itself being this control plane.

For each provider the Deployments' images, the pull Secret's key, Gitea's ROOT_URL, its
NodePort and the recorded state name the same address, the nodes' registry configuration
that provider writes names it too, and the second ``up`` keeps it and writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from registry_checks import LESSON, assert_one_registry_address
from standin_charts import standin_folder

from kubelab.components import catalog
from kubelab.components.localcharts import lesson_releases
from kubelab.lessons.loader import find_lesson
from kubelab.lessons.runner import LessonRunner
from kubelab.providers.base import ClusterFacts, Provider
from kubelab.providers.existing import ExistingProvider
from kubelab.providers.gke import GkeProvider
from kubelab.providers.hetzner import LB_LOCATION_ANNOTATION, HetznerProvider
from kubelab.providers.kind import KindProvider
from kubelab.state import StateStore
from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.timeout(900),
]


class OnThisCluster(ExistingProvider):
    """``real``'s facts and name on the control plane of the tests: its cluster (kind's
    Docker node, Hetzner's servers, GKE's cluster) is what cannot run here."""

    def __init__(self, real: Provider, kubeconfig: Path) -> None:
        super().__init__(kubeconfig)
        self.real = real
        self.name = real.name

    def preflight(self) -> None:
        pass

    def facts(self) -> ClusterFacts:
        return self.real.facts()


def _node_registry_config(name: str, registry: str, tmp_path: Path) -> None:
    """What each provider tells its nodes about the registry names ``registry``."""
    if name == "kind":
        from kubelab.providers.kind import kind_config, registry_hosts_toml

        # containerd's certs.d: a folder named after the registry, pulling over plain HTTP.
        config = kind_config("kubelab", tmp_path / "certs.d")
        assert config["nodes"][0]["extraMounts"][0]["containerPath"] == "/etc/containerd/certs.d"
        assert registry_hosts_toml().startswith(f'server = "http://{registry}"')
        ports = {m["containerPort"] for m in config["nodes"][0]["extraPortMappings"]}
        assert int(registry.rsplit(":", 1)[1]) in ports  # the push from the host
    elif name == "hetzner":
        from kubelab.providers import hetzner

        # k3s's registries.yaml mirror (rendered by the playbook: tests/integration).
        wired = hetzner._default_installer("token", 1, "nbg1", "lab").keywords  # type: ignore[attr-defined]
        assert wired["registry_host"] == registry
        assert wired["registry_endpoint"] == f"http://{registry}"
    elif name == "gke":
        from google.cloud import container_v1

        # No node config: containerd speaks plain HTTP to localhost; kube-proxy's iptables
        # mode (the legacy datapath the cluster asks for) serves the NodePort there.
        spec = GkeProvider().gke.cluster_spec("lab", 1, "e2-standard-4")
        legacy = container_v1.DatapathProvider.LEGACY_DATAPATH
        assert spec.network_config.datapath_provider == legacy


PROVIDERS = {
    "existing": lambda: ExistingProvider(),
    "kind": lambda: KindProvider(),
    "hetzner": lambda: HetznerProvider(),
    "gke": lambda: GkeProvider(project="kubelab-test"),
}


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_one_registry_address_per_provider_kept_by_a_second_up(  # type: ignore[no-untyped-def]
    control_plane,
    mesh,
    gitea,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    _isolated_home: Path,
) -> None:
    helm = find_tool("helm")
    assert helm is not None
    env = {
        "KUBELAB_HOME": str(_isolated_home),
        "KUBECONFIG": str(control_plane.kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    real = PROVIDERS[name]()
    registry = real.facts().registry
    assert registry is not None
    kube = control_plane.kube()
    releases = lesson_releases(find_lesson(LESSON).lesson.components)
    charts = tmp_path / "charts"
    standin_folder(helm, releases, charts, tmp_path / "standin-src")
    provider = OnThisCluster(real, control_plane.kubeconfig)

    def runner(**options: Any) -> LessonRunner:
        return LessonRunner(find_lesson(LESSON), provider, StateStore(), poll=0.05, options=options)

    namespaces = {"istio", "gitea", *(r.namespace for r in releases)}
    try:
        first = runner(charts=str(charts)).up()
        assert first.record.details["registry"] == registry.host
        assert_one_registry_address(kube, env, registry.host)
        _node_registry_config(name, registry.host, tmp_path)
        gateway = kube.get("v1", "Service", catalog.GATEWAY_RELEASE, catalog.ISTIO_NAMESPACE)
        assert gateway is not None
        annotations = gateway["metadata"].get("annotations") or {}
        if name == "hetzner":
            # The hcloud CCM makes no load balancer without a location: the Service names it.
            assert annotations[LB_LOCATION_ANNOTATION] == "nbg1"
        else:
            assert LB_LOCATION_ANNOTATION not in annotations
        if name == "kind":
            assert gateway["spec"]["type"] == "NodePort"
            assert [p.get("nodePort") for p in gateway["spec"]["ports"]][1:] == [30080, 30443]

        second = runner().up()
        assert second.api_writes == 0, second.changes()
        assert set(second.components.values()) <= {"unchanged"}, second.components
        assert second.record.details["registry"] == registry.host
        assert_one_registry_address(kube, env, registry.host)
    finally:
        runner().down()
        control_plane.delete_namespaces(namespaces)
