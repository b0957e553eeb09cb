"""Releasing what a cluster made in its cloud before the cluster itself is deleted.

A Service of type LoadBalancer makes a cloud load balancer, a PersistentVolumeClaim a
cloud disk; deleting a GKE cluster leaves both behind, still billed. Deleting them from
inside the cluster first lets the cloud controllers remove them, so ``kubelab cluster
delete`` leaves nothing billed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubelab.cluster.kube import Kube
from kubelab.errors import KubelabError


def release_cloud_resources(
    kube: Kube,
    timeout: float = 300.0,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Delete LoadBalancer Services and PersistentVolumeClaims everywhere, then wait until
    no PersistentVolume is left (their disks are gone). Returns a line per thing released."""
    released: list[str] = []
    for svc in kube.list("v1", "Service"):
        if (svc.get("spec") or {}).get("type") == "LoadBalancer":
            meta = svc["metadata"]
            if kube.delete("v1", "Service", meta["name"], meta["namespace"]):
                released.append(f"load balancer of service {meta['namespace']}/{meta['name']}")
    for pvc in kube.list("v1", "PersistentVolumeClaim"):
        meta = pvc["metadata"]
        if kube.delete("v1", "PersistentVolumeClaim", meta["name"], meta["namespace"]):
            released.append(f"volume of claim {meta['namespace']}/{meta['name']}")
    deadline = time.monotonic() + timeout
    while kube.list("v1", "PersistentVolume") and time.monotonic() < deadline:
        sleep(poll)
    left = kube.list("v1", "PersistentVolume")
    if left:
        names = ", ".join(pv["metadata"]["name"] for pv in left)
        raise KubelabError(
            f"volumes still bound after {timeout:.0f}s: {names}",
            hint="Check `kubectl get pv`; `kubelab cluster leftovers` lists what is billed.",
        )
    return released
