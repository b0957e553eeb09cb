#!/usr/bin/env python3
"""Refresh the CRD schemas kubelab validates rendered manifests against.

Reads the upstream CustomResourceDefinitions in ../shared/schemas/crds (Istio, Flagger,
Argo Rollouts) and writes, per API group, the openAPIV3Schema of every served version
to kubelab/validation/crds/<group>.json. kubelab keeps these copies so that
`kubelab up --dry-run` validates on machines without ../shared. A test checks the
copies still match the upstream files.

Usage: python scripts/sync-crd-schemas.py [SOURCE_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "schemas" / "crds"
TARGET = ROOT / "kubelab" / "validation" / "crds"


def extract(source: Path) -> dict[str, dict[str, dict[str, object]]]:
    """{group: {kind: {"scope": ..., "versions": {version: schema}}}} from CRD files."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    groups: dict[str, dict[str, dict[str, object]]] = {}
    for path in sorted(source.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            versions = {
                v["name"]: v["schema"]["openAPIV3Schema"]
                for v in spec["versions"]
                if v.get("served", True) and "schema" in v
            }
            groups.setdefault(spec["group"], {})[spec["names"]["kind"]] = {
                "scope": spec.get("scope", "Namespaced"),
                "versions": versions,
            }
    return groups


def render(groups: dict[str, dict[str, dict[str, object]]]) -> dict[str, str]:
    return {
        f"{group}.json": json.dumps(kinds, sort_keys=True, separators=(",", ":")) + "\n"
        for group, kinds in sorted(groups.items())
    }


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    if not source.is_dir():
        print(f"error: no CRD folder at {source}", file=sys.stderr)
        return 2
    TARGET.mkdir(parents=True, exist_ok=True)
    files = render(extract(source))
    for stale in set(p.name for p in TARGET.glob("*.json")) - set(files):
        (TARGET / stale).unlink()
    for name, text in files.items():
        (TARGET / name).write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(ROOT) / name} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
