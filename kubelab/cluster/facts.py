"""What a provider's clusters offer kubelab, typed: the registry address, how the
ingress gateway is exposed and which platform Istio's CNI node agent is set up for.
Providers return it (``Provider.facts``); ``up`` records it in the lesson's state; the
install settings and the rendered manifests are made from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: The node port of Gitea's http Service, where every node reaches the registry.
REGISTRY_NODE_PORT = 30300

#: The platforms of Istio's Helm profiles (manifests/charts/istio-cni/files/
#: profile-platform-*.yaml, Istio 1.30.3) kubelab can name: where each puts the CNI plugin
#: binaries and configuration on the nodes. "" is a cluster with the usual /opt/cni/bin and
#: /etc/cni/net.d (kind, kubeadm).
MESH_PLATFORMS = ("", "gke", "k3d", "k3s", "microk8s", "minikube", "openshift")


def platform_of(git_version: str) -> str:
    """The mesh platform an API server's ``gitVersion`` reveals: ``v1.35.5+k3s1`` is k3s,
    ``v1.33.5-gke.1080000`` GKE; anything else is treated as the usual layout ("")."""
    if "+k3s" in git_version:
        return "k3s"
    if "-gke." in git_version:
        return "gke"
    return ""


@dataclass(frozen=True)
class RegistryAccess:
    """The one address of the lesson images' registry (Gitea's).

    Image references in every rendered Deployment/Rollout, the pull Secret's key, Gitea's
    ROOT_URL (so the registry's token realm), the push and the nodes' registry config all
    name :attr:`host`, ``localhost:<node_port>``:

    - the nodes pull from Gitea's NodePort on their own loopback, which the container
      runtime speaks plain HTTP to without any configuration (containerd and Docker treat
      ``localhost`` as an insecure registry) and which kube-proxy serves in its default
      iptables mode (``--iptables-localhost-nodeports``);
    - this machine pushes to the same name: through a port-forward bound to the same local
      port, or where ``push_via_forward`` is False, through a host port mapping (kind);
    - an in-cluster build (kaniko) runs on the node's network to see the same address.
    """

    node_port: int = REGISTRY_NODE_PORT
    push_via_forward: bool = True

    @property
    def host(self) -> str:
        return f"localhost:{self.node_port}"


@dataclass(frozen=True)
class ClusterFacts:
    """What a provider's clusters offer kubelab, typed (no string-keyed details):

    ``registry`` None means the provider runs no registry (the sandbox builds nothing);
    the gateway fields say how the ingress gateway is exposed.
    """

    registry: RegistryAccess | None
    gateway_service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"
    gateway_http_node_port: int | None = None
    gateway_https_node_port: int | None = None
    # Annotations of the gateway Service (a cloud's load balancer settings).
    gateway_annotations: Mapping[str, str] = field(default_factory=dict)
    # Istio's platform profile (one of MESH_PLATFORMS) for its CNI node agent; None: not
    # known before the cluster answers (a kubeconfig given by the instructor), read from
    # the API server's version by ``up`` (:func:`platform_of`).
    mesh_platform: str | None = ""

    def to_state(self) -> dict[str, Any]:
        return {
            "registry": None
            if self.registry is None
            else {
                "node_port": self.registry.node_port,
                "push_via_forward": self.registry.push_via_forward,
            },
            "gateway_service_type": self.gateway_service_type,
            "gateway_http_node_port": self.gateway_http_node_port,
            "gateway_https_node_port": self.gateway_https_node_port,
            "gateway_annotations": dict(self.gateway_annotations),
            "mesh_platform": self.mesh_platform,
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> ClusterFacts:
        registry = data.get("registry")
        return cls(
            registry=None
            if not registry
            else RegistryAccess(
                node_port=int(registry["node_port"]),
                push_via_forward=bool(registry["push_via_forward"]),
            ),
            gateway_service_type=data.get("gateway_service_type") or "LoadBalancer",
            gateway_http_node_port=data.get("gateway_http_node_port"),
            gateway_https_node_port=data.get("gateway_https_node_port"),
            gateway_annotations=dict(data.get("gateway_annotations") or {}),
            mesh_platform=data.get("mesh_platform", ""),
        )
