"""Bulk YAML in and out with PyYAML's C loader and dumper (helm output, manifests, values).

Lesson files are read by ``kubelab.lessons.loader`` with the same C loader set to the YAML
1.2 core schema, and composed into nodes for the line of a problem.
"""

from __future__ import annotations

from typing import Any

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(data: Any) -> str:
    """Block-style YAML, keys in the order given."""
    return yaml.dump(data, Dumper=DUMPER, sort_keys=False, default_flow_style=False)


def load_all_yaml(text: str) -> list[dict[str, Any]]:
    """The mappings of a multi-document YAML stream (empty documents dropped)."""
    return [doc for doc in yaml.load_all(text, Loader=LOADER) if isinstance(doc, dict)]
