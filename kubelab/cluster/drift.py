"""What changed in a live object since kubelab applied it, field by field, and who changed it.

A second ``kubelab up`` must not undo a student's work (``kubectl patch`` of the weights,
``kubectl scale``), nor fight the controllers that own parts of the lesson's objects
(Flagger scales the target Deployment, Argo Rollouts sets the VirtualService weights).
Drift is a difference between the live object and the rendering kubelab applied last
(same :data:`~kubelab.cluster.kube.APPLIED_HASH_ANNOTATION`): the rendering did not
change, so somebody else changed the object. On a real API server ``managedFields`` says
who (``kubectl-patch``, ``flagger``); the sandbox keeps no managedFields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Field managers of kubectl's own writes: a person at a terminal, not a controller.
KUBECTL_MANAGERS = ("kubectl",)


@dataclass(frozen=True)
class Drift:
    """One field of a live object that differs from what the lesson deploys."""

    path: tuple[str | int, ...]
    live: Any
    lesson: Any
    managers: tuple[str, ...] = ()  # who set the live value (real servers only)

    @property
    def where(self) -> str:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    @property
    def by_controller(self) -> bool:
        """Set by a controller (Flagger, Argo Rollouts...), not by kubectl."""
        return any(not m.startswith(KUBECTL_MANAGERS) for m in self.managers)

    def to_json(self) -> dict[str, Any]:
        """As ``kubelab up -o json`` reports it (``changes.deploy.drift``)."""
        return {
            "field": self.where,
            "live": self.live,
            "lesson": self.lesson,
            "managers": list(self.managers),
        }

    def describe(self) -> str:
        by = f" (by {', '.join(self.managers)})" if self.managers else ""
        return f"{self.where} is {_short(self.live)}, the lesson has {_short(self.lesson)}{by}"


def _short(value: Any) -> str:
    text = "unset" if value is None else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _scalar_equal(live: Any, want: Any) -> bool:
    # bool is an int in Python; True must not match 1 the way the API would not either.
    if isinstance(live, bool) or isinstance(want, bool):
        return type(live) is type(want) and live == want
    if isinstance(live, int | float) and isinstance(want, int | float):
        return float(live) == float(want)
    return bool(live == want)


def contains(live: Any, want: Any) -> bool:
    """Whether ``live`` already holds everything in ``want`` (no :func:`differences`).

    Maps may carry more keys in ``live`` (defaults, fields of other managers, status).
    A list matches when ``want``'s items match items of ``live`` in the same order; ``live``
    may hold more (Istio's sidecar injector appends ``istio-proxy`` to a Pod's containers,
    and a Pod's spec cannot change anyway). Items kubelab dropped from its own manifest
    are caught by the applied-hash annotation, not here. ``null`` in ``want`` asks for the
    field to be unset; an empty map or list in ``want`` matches a field the server dropped.
    """
    return not differences(live, want)


def _holds_in_order(live: Any, want: list[Any]) -> bool:
    if not isinstance(live, list):
        return not want and live is None
    found = iter(live)
    # A subsequence test: each wanted item consumes live items up to its match.
    return all(any(contains(item, wanted) for item in found) for wanted in want)


def differences(
    live: Any, want: Any, path: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], Any, Any]]:
    """(path, live value, wanted value) for every field of ``want`` that ``live`` lacks,
    by the rules of :func:`contains`; lists that do not match are compared item by item
    when their lengths agree, and as a whole otherwise."""
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return [] if not want and live is None else [(path, live, want)]
        out = []
        for key, value in want.items():
            sub = (*path, key)
            if value is None:
                if live.get(key) is not None:
                    out.append((sub, live.get(key), None))
            elif key not in live:
                if value not in ({}, []):
                    out.append((sub, None, value))
            else:
                out += differences(live[key], value, sub)
        return out
    if isinstance(want, list):
        if _holds_in_order(live, want):
            return []
        if isinstance(live, list) and len(live) == len(want):
            pairs = enumerate(zip(live, want, strict=True))
            items = [d for i, (a, b) in pairs for d in differences(a, b, (*path, i))]
            return items or [(path, live, want)]
        return [(path, live, want)]
    return [] if _scalar_equal(live, want) else [(path, live, want)]


def _owns(fields: Any, path: tuple[str | int, ...]) -> bool:
    """Whether a manager's ``fieldsV1`` covers ``path`` (or an atomic parent of it)."""
    node = fields
    for part in path:
        if not isinstance(node, Mapping):
            return False
        if not node:
            return True  # an atomic value (a whole list) above the path
        if isinstance(part, int):
            # Granular lists are keyed by their items ("k:{...}", "v:..."); kubelab cannot
            # map an index to such a key without the list's schema: any item counts.
            return any(str(k).startswith(("k:", "v:", "i:")) for k in node)
        key = f"f:{part}"
        if key not in node:
            return False
        node = node[key]
    return True


def owners(live: Mapping[str, Any], path: tuple[str | int, ...], ignore: str) -> tuple[str, ...]:
    """The field managers (other than ``ignore``) whose managedFields cover ``path``."""
    found = []
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        manager = str(entry.get("manager") or "")
        if manager and manager != ignore and _owns(entry.get("fieldsV1") or {}, path):
            found.append(manager)
    return tuple(dict.fromkeys(found))
