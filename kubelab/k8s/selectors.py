"""Kubernetes label selectors: parse the string form and match labels against it.

Used to validate selectors written in lesson files and, later, wherever kubelab selects
objects by label. Grammar as in ``kubectl -l``: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``,
``k in (a,b)``, ``k notin (a,b)``, joined by commas.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# A label key: optional DNS prefix + "/" + name (63 chars max, alnum at both ends).
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"
_REQUIREMENT = re.compile(
    rf"""^\s*(?:
        (?P<notexists>!\s*(?P<nkey>{_KEY}))
      | (?P<skey>{_KEY})\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
      | (?P<ekey>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})
      | (?P<exists>{_KEY})
    )\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" also match objects without the label, as in Kubernetes.
        return not present or value not in self.values


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def parse(selector: str) -> list[Requirement]:
    """Parse a selector string; raise ``ValueError`` naming the bad part."""
    if not selector.strip():
        return []
    requirements = []
    for part in _split(selector):
        m = _REQUIREMENT.match(part)
        if not m:
            raise ValueError(f"invalid label selector {selector!r}: cannot parse {part.strip()!r}")
        if m["notexists"]:
            requirements.append(Requirement(m["nkey"], "!"))
        elif m["skey"]:
            values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
            if not values or not all(re.fullmatch(_VALUE, v) for v in values):
                raise ValueError(f"invalid label selector {selector!r}: bad values in {part!r}")
            requirements.append(Requirement(m["skey"], m["setop"], values))
        elif m["ekey"]:
            op = "=" if m["op"] in ("=", "==") else "!="
            requirements.append(Requirement(m["ekey"], op, (m["value"],)))
        else:
            requirements.append(Requirement(m["exists"], "exists"))
    return requirements


def matches(selector: str | list[Requirement], labels: Mapping[str, str] | None) -> bool:
    reqs = parse(selector) if isinstance(selector, str) else selector
    return all(r.matches(labels or {}) for r in reqs)
