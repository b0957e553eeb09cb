"""kubectl-style JSONPath for ``field-equals``: ``{.metadata.labels.app}``.

Supports what lesson checks need: dotted fields, ``[n]`` indexes, ``['key']`` and
backslash-escaped dots (``{.metadata.labels.app\\.kubernetes\\.io/name}``), as kubectl does.
"""

from __future__ import annotations

import re
from typing import Any

_MISSING = object()
_TOKEN = re.compile(r"\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]|\.((?:\\.|[^.\[\\])+)")


def parse(path: str) -> list[str | int]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot parse JSONPath {path!r} at {text[pos:]!r}")
        index, quoted, dquoted, name = m.groups()
        if index is not None:
            parts.append(int(index))
        else:
            parts.append(quoted if quoted is not None else (dquoted or name.replace("\\.", ".")))
        pos = m.end()
    return parts


def _step(current: Any, part: str | int) -> Any:
    if isinstance(current, list) and isinstance(part, int):
        return current[part] if 0 <= part < len(current) else _MISSING
    if isinstance(current, dict) and isinstance(part, str):
        return current.get(part, _MISSING)
    return _MISSING


def lookup(obj: Any, path: str) -> Any:
    """The value at ``path`` or ``MISSING``."""
    current = obj
    for part in parse(path):
        current = _step(current, part)
        if current is _MISSING:
            break
    return current


MISSING = _MISSING
