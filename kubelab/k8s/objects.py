"""Reading Kubernetes objects that may be partial or malformed (what a student wrote,
what a cluster answered): never a KeyError or TypeError, a default instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...``, or None when a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one."""
    if isinstance(value, dict):
        return value
    return dict(value) if isinstance(value, Mapping) else {}


def meta(obj: Any) -> dict[str, Any]:
    """An object's metadata, or an empty one."""
    return mapping(dig(obj, "metadata"))
