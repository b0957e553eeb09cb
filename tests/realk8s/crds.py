"""The upstream CRDs of Istio, Flagger and Argo Rollouts, adapted to Kubernetes v1.20.

The files in ``../shared/schemas/crds`` are what the charts install on a current cluster.
v1.20's API server refuses two things in them:

* ``x-kubernetes-validations`` (CEL validation rules, Kubernetes 1.25; 1.20 answers
  ``unknown field``): dropped, so those rules are not enforced here;
* an empty-string default (``default: ""``, on the ``name`` of every reference to a
  ConfigMap or Secret in Argo's pod templates): v1.20 reads it as null and refuses it
  (``default: Invalid value: "null": in body must be of type string``). Dropped, as is a
  ``default: null``; the field is then simply unset when omitted.

Everything else (structural schemas, printer columns, subresources, several versions) is
installed as published.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from kubelab.cluster.kube import Kube

SHARED_CRDS = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "crds"
DROPPED_KEYS = ("x-kubernetes-validations",)


def adapt(node: Any) -> Any:
    """A copy of a CRD (or any part of one) that v1.20 accepts."""
    if isinstance(node, list):
        return [adapt(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in DROPPED_KEYS:
            continue
        if key == "default" and value in (None, ""):
            continue
        out[key] = adapt(value)
    items = out.get("items")
    if isinstance(items, dict) and out.get("x-kubernetes-list-map-keys"):
        # A list-map key needs a default or must be required: it loses its "" default,
        # so it becomes required (a reference without a name was never useful).
        properties = items.get("properties") or {}
        for map_key in out["x-kubernetes-list-map-keys"]:
            if map_key in properties and "default" not in properties[map_key]:
                required = items.setdefault("required", [])
                if map_key not in required:
                    required.append(map_key)
    return out


def load(files: Iterable[Path] | None = None) -> list[dict[str, Any]]:
    """The adapted CRDs of ``files`` (default: every file of ``../shared/schemas/crds``)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    paths = sorted(files) if files is not None else sorted(SHARED_CRDS.glob("*.yaml"))
    crds = []
    for path in paths:
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds.append(adapt(doc))
    return crds


def install(kube: Kube, crds: list[dict[str, Any]], timeout: float = 60.0) -> list[str]:
    """Apply ``crds`` and wait until each is Established; their names."""
    names = []
    for crd in crds:
        kube.apply(crd)
        names.append(crd["metadata"]["name"])
    for name in names:
        kube.wait_condition(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            name,
            None,
            "Established",
            timeout,
        )
    return names
