"""Workloads as kubectl sees them: the order objects are applied in, and whether a
rollout is complete (``kubectl rollout status``'s rules and words)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubelab.errors import KubelabError


@dataclass(frozen=True)
class Pending:
    """A wait's "not yet", saying what was seen (it is falsy, like None)."""

    reason: str = ""

    def __bool__(self) -> bool:
        return False


# -- apply order ------------------------------------------------------------------------------

# Namespaces and CRDs first (everything else may live in one or be one), then helm's
# install order for built-in kinds; custom resources (unknown kinds) come last.
_INSTALL_ORDER = [
    "Namespace",
    "CustomResourceDefinition",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
]
_RANK = {kind: i for i, kind in enumerate(_INSTALL_ORDER)}
#: The rank of kinds not listed: custom resources, applied last.
UNKNOWN_KIND_RANK = len(_INSTALL_ORDER)


def install_rank(kind: str) -> int:
    """Where ``kind`` goes in an apply: lower first; unknown kinds (custom resources) last."""
    return _RANK.get(kind, UNKNOWN_KIND_RANK)


def apply_order(objects: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``objects`` in apply order; the given order is kept within a kind."""
    return sorted(objects, key=lambda o: install_rank(str(o.get("kind", ""))))


# -- rollout status, as ``kubectl rollout status`` reads it ------------------------------------


def rollout_status(kind: str, obj: Mapping[str, Any] | None) -> Pending | None:
    """None when the rollout of ``obj`` is complete, else :class:`Pending` with kubectl's
    words. A rollout that cannot finish (progress deadline exceeded, a strategy that has
    no rollout) raises :class:`KubelabError` at once rather than running out the clock."""
    if obj is None:
        return Pending("it does not exist yet")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    name = meta.get("name")
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    kind_l = kind.lower()
    if kind == "Deployment":
        if generation > observed:
            return Pending("waiting for the deployment spec update to be observed")
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == (
                "ProgressDeadlineExceeded"
            ):
                raise KubelabError(
                    f"deployment {name} exceeded its progress deadline",
                    hint=f"kubectl describe deployment {name} -n {meta.get('namespace')}",
                )
        replicas = spec.get("replicas", 1)
        updated = int(status.get("updatedReplicas") or 0)
        total = int(status.get("replicas") or 0)
        available = int(status.get("availableReplicas") or 0)
        if replicas is not None and updated < replicas:
            return Pending(f"{updated} out of {replicas} new replicas have been updated")
        if total > updated:
            return Pending(f"{total - updated} old replicas are pending termination")
        if available < updated:
            return Pending(f"{available} of {updated} updated replicas are available")
        return None
    if kind == "StatefulSet":
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            raise KubelabError(
                f"statefulset {name}: rollout status is only available for the "
                "RollingUpdate strategy"
            )
        if observed == 0 or generation > observed:
            return Pending("waiting for the statefulset spec update to be observed")
        replicas = spec.get("replicas", 1)
        ready = int(status.get("readyReplicas") or 0)
        if replicas is not None and ready < replicas:
            return Pending(f"{ready} of {replicas} pods are ready")
        partition = (strategy.get("rollingUpdate") or {}).get("partition")
        if partition is not None and replicas is not None:
            updated = int(status.get("updatedReplicas") or 0)
            if updated < replicas - partition:
                return Pending(
                    f"partitioned rollout: {updated} of {replicas - partition} pods updated"
                )
            return None
        if status.get("updateRevision") != status.get("currentRevision"):
            updated = int(status.get("updatedReplicas") or 0)
            return Pending(
                f"{updated} pods at revision {status.get('updateRevision')}, "
                "rolling update in progress"
            )
        return None
    if kind == "DaemonSet":
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            raise KubelabError(
                f"daemonset {name}: rollout status is only available for the RollingUpdate strategy"
            )
        if generation > observed:
            return Pending("waiting for the daemonset spec update to be observed")
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        available = int(status.get("numberAvailable") or 0)
        if updated < desired:
            return Pending(f"{updated} out of {desired} new pods have been updated")
        if available < desired:
            return Pending(f"{available} of {desired} updated pods are available")
        return None
    raise KubelabError(f"cannot wait for the rollout of a {kind_l}: not a workload kind")
