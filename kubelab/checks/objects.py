"""Small readers of Kubernetes objects shared by the progressive-delivery checks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from kubelab.i18n import _
from kubelab.k8s.objects import dig
from kubelab.k8s.objects import meta as meta_of

_EPOCH = datetime.min.replace(tzinfo=UTC)


def _name(obj: dict[str, Any]) -> str:
    return str(meta_of(obj).get("name", ""))


def object_ref(kind: str, name: str, namespace: str | None) -> str:
    """How a check names an object: ``Deployment istio/app``, ``Namespace istio``."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def parse_time(value: Any) -> datetime:
    """An RFC 3339 timestamp as an aware datetime; the epoch when absent or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return _EPOCH
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _EPOCH
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def image_tag(image: str) -> str:
    """The tag of an image reference: ``reg:5000/app:v2`` -> ``v2``; none means ``latest``."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def _containers(workload: dict[str, Any] | None) -> list[dict[str, Any]]:
    containers = dig(workload, "spec", "template", "spec", "containers")
    return [c for c in containers or [] if isinstance(c, dict)]


def first_image(workload: dict[str, Any] | None) -> str | None:
    """The image of the first container of a Deployment's or ReplicaSet's pod template."""
    containers = _containers(workload)
    image = containers[0].get("image") if containers else None
    return str(image) if image else None


def _owned_by(obj: dict[str, Any], kind: str, name: str) -> bool:
    refs = meta_of(obj).get("ownerReferences") or []
    return any(
        isinstance(r, dict) and r.get("kind") == kind and r.get("name") == name for r in refs
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _one_of(values: Iterable[str]) -> str:
    values = list(values)
    if len(values) == 1:
        return values[0]
    return _("one of {values}").format(values=", ".join(values))


# -- Flagger ---------------------------------------------------------------------------------
