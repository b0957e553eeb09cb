"""The ``existing`` provider: any cluster a kubeconfig (and context) points at.

kubelab creates no cluster here; ``preflight`` proves the kubeconfig is usable and the
API answers, and ``teardown`` leaves the cluster alone (the lesson's objects and
components are removed by ``kubelab down`` through their labels).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubelab.checks.sampling import Sampler
from kubelab.checks.types import HttpStable, TrafficSplit
from kubelab.cluster.kube import Kube
from kubelab.errors import SetupError
from kubelab.providers.base import ClusterFacts, ClusterInfo, Provider, RegistryAccess


def default_kubeconfig() -> Path | None:
    env = os.environ.get("KUBECONFIG")
    if env:
        for part in env.split(os.pathsep):
            if part and Path(part).is_file():
                return Path(part)
        return None
    path = Path.home() / ".kube" / "config"
    return path if path.is_file() else None


def real_cluster_sampler(
    kube: Kube, details: dict[str, Any], spec: TrafficSplit | HttpStable
) -> Sampler:
    """In-mesh traffic from the lesson's tester pod; gateway traffic from here."""
    from kubelab.checks.sampling import ExecSampler, HttpSampler

    if spec.via == "gateway":
        gateway = details.get("gateway_url")
        if not gateway:
            raise SetupError(
                "this cluster's ingress gateway has no address kubelab can reach",
                hint="Use via: in-mesh checks, or run `kubelab up` with --domain.",
            )
        return HttpSampler(str(gateway))
    return ExecSampler(kube, spec.tester, spec.namespace)


class ExistingProvider(Provider):
    name = "existing"

    def __init__(self, kubeconfig: Path | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context

    def _kubeconfig(self) -> Path:
        path = self.kubeconfig or default_kubeconfig()
        if path is None or not path.is_file():
            raise SetupError(
                "no kubeconfig found (KUBECONFIG or ~/.kube/config)",
                hint="Point KUBECONFIG at your cluster's kubeconfig "
                "(export KUBECONFIG=/path/to/kubeconfig), then run the same command again.",
            )
        return path

    def preflight(self) -> None:
        from kubelab.tools import require_tool

        require_tool("helm")
        require_tool("kubectl")
        Kube(self._kubeconfig(), self.context).version()

    def ensure_cluster(self, namespace: str) -> ClusterInfo:
        details: dict[str, Any] = {}
        if self.context:
            details["context"] = self.context
        return ClusterInfo(self._kubeconfig(), details)

    def facts(self) -> ClusterFacts:
        # Gitea's NodePort on every node's loopback (see RegistryAccess), a LoadBalancer
        # gateway (its address, when the cluster gives one, names the dashboards). Which
        # platform Istio's CNI is set up for is read from the API server's version by `up`.
        return ClusterFacts(registry=RegistryAccess(), mesh_platform=None)

    def teardown(self, details: dict[str, Any], everything: bool = False) -> list[str]:
        return []

    def sampler(
        self, kube: Kube, details: dict[str, Any], spec: TrafficSplit | HttpStable
    ) -> Sampler:
        return real_cluster_sampler(kube, details, spec)
