"""Which objects a LIST or a watch wants: label selectors (kubelab.k8s.selectors), the
field selectors each kind supports (any other is a 400, as kube-apiserver answers), and
the namespace."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubelab.k8s import selectors
from kubelab.k8s.objects import meta as _meta
from kubelab.sandbox.errors import bad_request
from kubelab.sandbox.resources import ResourceType


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = _meta(obj).get("labels")
    return labels if isinstance(labels, dict) else {}


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


FieldRequirement = tuple[str, str, str]  # (path, "=" | "!=", value)


def parse_field_selector(selector: str) -> list[FieldRequirement]:
    """``metadata.name=x,status.phase!=Running``; any dotted field path is accepted."""
    out: list[FieldRequirement] = []
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise bad_request(f'invalid field selector: "{term}": expected key=value or key!=value')
        op = "!=" if m[2] == "!=" else "="
        out.append((m[1], op, m[3]))
    return out


_OBJECT_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_EVENT_FIELDS = (
    *(f"involvedObject.{f}" for f in _OBJECT_FIELDS),
    *("reason", "reportingComponent", "source", "type"),
)
# The field selectors each kind supports besides metadata.name and metadata.namespace,
# as kube-apiserver's registries declare them; any other is a 400.
_FIELD_LABELS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    ),
    ("", "Event"): _EVENT_FIELDS,
    ("events.k8s.io", "Event"): _EVENT_FIELDS,
    ("", "Secret"): ("type",),
    ("", "Namespace"): ("status.phase",),
    ("", "Node"): ("spec.unschedulable",),
    ("", "Service"): ("spec.clusterIP", "spec.type"),
    ("", "ReplicationController"): ("status.replicas",),
    ("apps", "ReplicaSet"): ("status.replicas",),
    ("batch", "Job"): ("status.successful",),
}


def parse_label_selector(selector: str) -> list[selectors.Requirement]:
    try:
        return selectors.parse(selector)
    except ValueError as e:
        raise bad_request(f"unable to parse requirement: {e}") from e


@dataclass(frozen=True)
class Filter:
    """Which objects of one resource a list or watch wants."""

    storage_key: tuple[str, str]
    namespace: str | None = None
    labels: tuple[selectors.Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def build(
        cls, rt: ResourceType, namespace: str | None, label_selector: str, field_selector: str
    ) -> Filter:
        fields = tuple(parse_field_selector(field_selector))
        supported = _FIELD_LABELS.get((rt.group, rt.kind), ())
        for path, _op, _value in fields:
            if path not in supported and path not in ("metadata.name", "metadata.namespace"):
                raise bad_request(f"field label not supported: {path}")
        return cls(
            rt.storage_key,
            namespace if rt.namespaced else None,
            tuple(parse_label_selector(label_selector)),
            fields,
        )

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and _meta(obj).get("namespace") != self.namespace:
            return False
        if self.labels and not selectors.matches(list(self.labels), _labels(obj)):
            return False
        for path, op, value in self.fields:
            if (_field_value(obj, path) == value) != (op == "="):
                return False
        return True


def label_selector_string(selector: Any) -> str:
    """A ``metav1.LabelSelector`` (matchLabels/matchExpressions) as a ``-l`` string."""
    if not isinstance(selector, dict):
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
