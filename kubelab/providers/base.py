"""The Provider interface: where a lesson's cluster comes from and how to reach it.

A provider prepares a cluster (``ensure_cluster``), says what the cluster offers (which
components can be installed, whether images must be built), how checks send traffic
through its mesh, and removes what it created (``teardown``). ``preflight`` fails fast,
naming the missing tool or credential and how to get it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubelab.cluster.facts import ClusterFacts, RegistryAccess

if TYPE_CHECKING:  # the checks' types, not needed to plan or to create a cluster
    from kubelab.checks.sampling import Sampler
    from kubelab.checks.types import HttpStable, TrafficSplit
    from kubelab.cluster.kube import Kube

__all__ = ["ClusterFacts", "ClusterInfo", "Provider", "RegistryAccess"]


@dataclass
class ClusterInfo:
    """The cluster ``ensure_cluster`` made or found: its kubeconfig, and the provider's
    own bookkeeping (cluster name, location, addresses) kept in the lesson's state."""

    kubeconfig: Path
    details: dict[str, Any] = field(default_factory=dict)


class Provider(ABC):
    name: str
    # False where Helm components cannot be installed (the sandbox): exercises that need
    # them are marked unavailable instead.
    installs_components: bool = True
    builds_images: bool = True
    # False where one cluster cannot hold a class (a namespace and an app per student).
    hosts_classes: bool = True
    # What this provider's clusters lack, said once after `up` (None: nothing).
    lacks: str | None = None
    # True where the components' web UIs are missing and exercises take their offline
    # path (Exercise.offline), with kubelab's terminal views instead (the sandbox).
    offline: bool = False

    @abstractmethod
    def preflight(self) -> None:
        """Raise :class:`~kubelab.errors.SetupError` naming what is missing and the fix."""

    @abstractmethod
    def ensure_cluster(self, namespace: str) -> ClusterInfo:
        """A reachable cluster (created or reused); idempotent."""

    @abstractmethod
    def facts(self) -> ClusterFacts:
        """What this provider's clusters offer (registry address, gateway exposure). Pure:
        ``up --dry-run`` renders with it, without a cluster or credentials."""

    # True where `down --all` removes the whole cluster (kind): nothing to uninstall first.
    owns_cluster: bool = False

    @abstractmethod
    def teardown(self, details: dict[str, Any], everything: bool = False) -> list[str]:
        """Remove what the provider created (with ``everything``, the cluster itself where
        the provider made it); returns a line per thing removed."""

    @abstractmethod
    def sampler(
        self, kube: Kube, details: dict[str, Any], spec: TrafficSplit | HttpStable
    ) -> Sampler:
        """How a traffic check reaches the mesh on this provider."""

    def available_components(self, lesson_components: list[str]) -> set[str]:
        return set(lesson_components) if self.installs_components else set()

    def missing_component_hint(self, component: str) -> str:
        """What to do when ``component`` is missing on this provider's cluster."""
        from kubelab.i18n import _

        if self.installs_components:
            return _("`kubelab up LESSON` installs it: run it again.")
        return _("Run the lesson on a real cluster (kind, or any kubeconfig) for it.")
