"""Releasing what a cluster made in its cloud before the cluster itself is deleted.

A Service of type LoadBalancer makes a cloud load balancer, a PersistentVolumeClaim a
cloud disk; deleting a GKE cluster leaves both behind, still billed. Deleting them from
inside the cluster first lets the cloud controllers remove them, so ``kubelab cluster
delete`` leaves nothing billed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubelab.cluster.kube import Kube
from kubelab.errors import KubelabError


def release_cloud_resources(
    kube: Kube,
    timeout: float = 300.0,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Release what the cluster made in its cloud; returns a line per thing released.

    LoadBalancer Services go first. Then the workloads whose pods mount a claim (a claim in
    use keeps its ``pvc-protection`` finalizer, and its disk stays attached and billed),
    then the claims. It waits until no claim and no PersistentVolume is left (their disks
    are gone) and raises :class:`KubelabError` naming what is left when that does not
    happen within ``timeout``: the caller must not delete the cluster over a billed disk.
    """
    deadline = time.monotonic() + timeout
    released: list[str] = []
    for svc in kube.list("v1", "Service"):
        if (svc.get("spec") or {}).get("type") == "LoadBalancer":
            meta = svc["metadata"]
            if kube.delete("v1", "Service", meta["name"], meta["namespace"]):
                released.append(f"load balancer of service {meta['namespace']}/{meta['name']}")
    claims = {
        (c["metadata"]["namespace"], c["metadata"]["name"])
        for c in kube.list("v1", "PersistentVolumeClaim")
    }
    owners = {(pod["metadata"]["namespace"], _top_owner(kube, pod)) for pod in _users(kube, claims)}
    for namespace, (api_version, kind, name) in sorted(owners):
        if kube.delete(api_version, kind, name, namespace):
            released.append(f"{kind.lower()} {namespace}/{name} (it mounts a claim)")
    while _users(kube, claims) and time.monotonic() < deadline:
        sleep(poll)
    for namespace, name in sorted(claims):
        if kube.delete("v1", "PersistentVolumeClaim", name, namespace):
            released.append(f"volume of claim {namespace}/{name}")
    while time.monotonic() < deadline and (
        kube.list("v1", "PersistentVolumeClaim") or kube.list("v1", "PersistentVolume")
    ):
        sleep(poll)
    left_claims = kube.list("v1", "PersistentVolumeClaim")
    left_volumes = kube.list("v1", "PersistentVolume")
    if left_claims or left_volumes:
        names = [f"claim {c['metadata']['namespace']}/{c['metadata']['name']}" for c in left_claims]
        names += [f"volume {v['metadata']['name']}" for v in left_volumes]
        holders = sorted(
            f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in _users(
                kube, {(c["metadata"]["namespace"], c["metadata"]["name"]) for c in left_claims}
            )
        )
        held = f" (still mounted by pod {', '.join(holders)})" if holders else ""
        raise KubelabError(
            f"disks not released after {timeout:.0f}s: {', '.join(names)}{held}",
            hint="They would stay billed after the cluster is gone. See `kubectl get pvc,pv "
            "-A` and `kubectl describe pvc`; `kubelab cluster leftovers` lists what is billed.",
        )
    return released


def _users(kube: Kube, claims: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """The pods (not yet finished) that mount one of ``claims`` ((namespace, name) pairs)."""
    if not claims:
        return []
    found = []
    for pod in kube.list("v1", "Pod"):
        namespace = pod["metadata"]["namespace"]
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and (namespace, claim) in claims:
                found.append(pod)
                break
    return found


def _top_owner(kube: Kube, obj: dict[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name) of the object that manages the pod ``obj``, following controller
    owner references (Pod -> ReplicaSet -> Deployment, Pod -> StatefulSet); ``obj`` itself
    when nothing manages it. Deleting that one keeps a controller from making it again."""
    current, api_version, kind = obj, "v1", "Pod"
    for _ in range(4):
        meta = current["metadata"]
        ref = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
        if ref is None:
            break
        parent = kube.get(ref["apiVersion"], ref["kind"], ref["name"], meta["namespace"])
        if parent is None:
            break
        current, api_version, kind = parent, str(ref["apiVersion"]), str(ref["kind"])
    return api_version, kind, str(current["metadata"]["name"])
