"""The ``kind`` provider: a local Kubernetes cluster in Docker, made for the lessons.

The cluster config maps the ingress gateway's NodePorts to the host (80 -> 30080,
443 -> 30443) and points containerd at the Gitea registry through a registry mirror
(``/etc/containerd/certs.d``), so pods pull the lesson's images by the same name the
chart renders. The kubeconfig kind prints is stored 0600 in kubelab's home.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from kubelab import paths
from kubelab.checks.sampling import Sampler
from kubelab.checks.types import HttpStable, TrafficSplit
from kubelab.cluster.kube import Kube
from kubelab.errors import KubelabTimeout, SetupError
from kubelab.providers.base import ClusterFacts, ClusterInfo, Provider, RegistryAccess
from kubelab.providers.existing import real_cluster_sampler

DEFAULT_NAME = "kubelab"
# kindest/node v1.35.0, by digest: kind v0.31.0's default node image (its
# pkg/apis/config/defaults/image.go at tag v0.31.0), so kind >= v0.31.0 runs it. Kubernetes
# 1.35 meets Istio 1.30's minimum (1.32) and, from 1.33 on, Istio injects its proxy as a
# native sidecar (an init container), as on k3s v1.35.
NODE_IMAGE = (
    "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f"
)
HTTP_NODE_PORT = 30080
HTTPS_NODE_PORT = 30443
GITEA_NODE_PORT = 30300
CREATE_TIMEOUT = 600


#: Gitea's NodePort, which the node pulls from and a host port mapping serves here.
REGISTRY = RegistryAccess(node_port=GITEA_NODE_PORT, push_via_forward=False)


def registry_host() -> str:
    """The registry name images carry on kind: Gitea's NodePort, seen from the node."""
    return REGISTRY.host


def registry_hosts_toml() -> str:
    """containerd hosts.toml: pull from Gitea's NodePort over plain HTTP (local only)."""
    endpoint = f"http://{registry_host()}"
    return (
        f'server = "{endpoint}"\n\n'
        f'[host."{endpoint}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  skip_verify = true\n"
    )


def kind_config(name: str, hosts_dir: Path) -> dict[str, Any]:
    """The kind cluster: host ports for the gateway and Gitea, containerd's registry config.

    ``hosts_dir`` holds ``<registry host>/hosts.toml`` and is mounted as
    ``/etc/containerd/certs.d`` on the node (containerd's ``config_path``).
    """
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": name,
        "containerdConfigPatches": [
            '[plugins."io.containerd.grpc.v1.cri".registry]\n'
            '  config_path = "/etc/containerd/certs.d"\n'
        ],
        "nodes": [
            {
                "role": "control-plane",
                "image": NODE_IMAGE,
                "extraPortMappings": [
                    {"containerPort": HTTP_NODE_PORT, "hostPort": 80, "protocol": "TCP"},
                    {"containerPort": HTTPS_NODE_PORT, "hostPort": 443, "protocol": "TCP"},
                    # docker push from this machine reaches Gitea's registry here
                    {
                        "containerPort": GITEA_NODE_PORT,
                        "hostPort": GITEA_NODE_PORT,
                        "protocol": "TCP",
                    },
                ],
                "extraMounts": [
                    {
                        "hostPath": str(hosts_dir),
                        "containerPath": "/etc/containerd/certs.d",
                        "readOnly": True,
                    }
                ],
            }
        ],
    }


class KindProvider(Provider):
    name = "kind"

    def __init__(self, cluster_name: str = DEFAULT_NAME) -> None:
        self.cluster_name = cluster_name
        self.workdir = paths.home_dir() / f"kind-{cluster_name}"

    def _kind(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        from kubelab.tools import require_tool

        kind = require_tool("kind")
        try:
            return subprocess.run(
                [str(kind), *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise KubelabTimeout(
                f"kind {args[0]} did not finish in {timeout:.0f}s",
                hint="Is Docker responsive? `docker info`",
            ) from None

    def preflight(self) -> None:
        from kubelab.providers.requirements import DOCKER
        from kubelab.tools import require_tool

        for tool in ("kind", "helm", "kubectl"):
            require_tool(tool)
        probe = DOCKER.probe()
        if not probe.ok:
            raise SetupError(f"kind needs a running Docker engine: {probe.detail}", hint=DOCKER.fix)

    def exists(self) -> bool:
        proc = self._kind("get", "clusters")
        return self.cluster_name in proc.stdout.split()

    def ensure_cluster(self, namespace: str) -> ClusterInfo:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.exists():
            hosts_dir = self.workdir / "certs.d"
            (hosts_dir / registry_host()).mkdir(parents=True, exist_ok=True)
            (hosts_dir / registry_host() / "hosts.toml").write_text(registry_hosts_toml())
            config_path = self.workdir / "kind-config.json"
            config_path.write_text(json.dumps(kind_config(self.cluster_name, hosts_dir), indent=2))
            proc = self._kind(
                "create",
                "cluster",
                "--name",
                self.cluster_name,
                "--config",
                str(config_path),
                "--wait",
                "120s",
                timeout=CREATE_TIMEOUT,
            )
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["kind failed"])[-1]
                raise SetupError(
                    f"kind could not create cluster {self.cluster_name}: {last}",
                    hint="`kind delete cluster --name "
                    f"{self.cluster_name}` and try again; `docker info` must work.",
                )
        kubeconfig = self.workdir / "kubeconfig"
        proc = self._kind("get", "kubeconfig", "--name", self.cluster_name)
        if proc.returncode != 0:
            raise SetupError(f"kind has no kubeconfig for {self.cluster_name}: {proc.stderr}")
        paths.write_private(kubeconfig, proc.stdout)
        return ClusterInfo(
            kubeconfig,
            {"cluster_name": self.cluster_name, "gateway_url": "http://127.0.0.1:80"},
        )

    def facts(self) -> ClusterFacts:
        # The gateway on fixed NodePorts that the cluster config maps to the host's 80/443.
        return ClusterFacts(
            registry=REGISTRY,
            gateway_service_type="NodePort",
            gateway_http_node_port=HTTP_NODE_PORT,
            gateway_https_node_port=HTTPS_NODE_PORT,
        )

    owns_cluster = True

    def teardown(self, details: dict[str, Any], everything: bool = False) -> list[str]:
        # `kubelab down LESSON` removes the lesson; `down --all` the whole kind cluster.
        return self.delete_cluster() if everything else []

    def delete_cluster(self) -> list[str]:
        if not self.exists():
            return []
        proc = self._kind("delete", "cluster", "--name", self.cluster_name, timeout=300)
        if proc.returncode != 0:
            raise SetupError(f"kind could not delete cluster {self.cluster_name}: {proc.stderr}")
        return [f"deleted kind cluster {self.cluster_name}"]

    def sampler(
        self, kube: Kube, details: dict[str, Any], spec: TrafficSplit | HttpStable
    ) -> Sampler:
        return real_cluster_sampler(kube, details, spec)
