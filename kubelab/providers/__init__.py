"""Where a lesson's cluster comes from: existing, kind, hetzner, gke, sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubelab.errors import SetupError, UsageError

if TYPE_CHECKING:
    from kubelab.providers.base import Provider


def get_provider(name: str) -> Provider:
    """The provider called ``name`` (imported on demand: each pulls its own clients)."""
    from kubelab.providers.requirements import PROVIDERS

    if name == "sandbox":
        from kubelab.providers.sandbox import SandboxProvider

        return SandboxProvider()
    if name == "existing":
        from kubelab.providers.existing import ExistingProvider

        return ExistingProvider()
    if name == "kind":
        from kubelab.providers.kind import KindProvider

        return KindProvider()
    if name == "hetzner":
        from kubelab.providers.hetzner import HetznerProvider

        return HetznerProvider()
    if name == "gke":
        from kubelab.providers.gke import GkeProvider

        return GkeProvider()
    if name in PROVIDERS:
        raise SetupError(
            f"deploying to the {name} provider is not available in this version of kubelab",
            hint="Use --provider sandbox to practise offline, or --dry-run to see the plan.",
        )
    raise UsageError(f"unknown provider {name!r}", hint=f"Use one of: {', '.join(PROVIDERS)}.")
