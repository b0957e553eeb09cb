"""helm, run locally: rendering charts without a cluster (``helm template``).

Rendering is what ``kubelab up --dry-run`` and ``kubelab validate --render`` need; it
touches no cluster. A values-schema or template failure becomes a ``ValidationFailed``
whose details are helm's own lines.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from kubelab.errors import KubelabTimeout, ValidationFailed
from kubelab.tools import require_tool

TEMPLATE_TIMEOUT = 60.0


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(data: Any) -> str:
    """Block-style YAML, keys in the order given."""
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)


def load_all_yaml(text: str) -> list[dict[str, Any]]:
    """The mappings of a multi-document YAML stream (empty documents dropped)."""
    return [doc for doc in yaml.load_all(text, Loader=_LOADER) if isinstance(doc, dict)]


def template(
    chart: Path, release: str, namespace: str, values: dict[str, Any]
) -> list[dict[str, Any]]:
    """Objects of ``chart`` rendered with ``values`` (``helm template``), in helm's order."""
    helm = require_tool("helm")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kubelab-values-") as fh:
        fh.write(dump_yaml(values))
        fh.flush()
        cmd = [str(helm), "template", release, str(chart), "--namespace", namespace]
        cmd += ["--values", fh.name]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=TEMPLATE_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise KubelabTimeout(
                f"helm template of {chart.name} did not finish in {TEMPLATE_TIMEOUT:.0f}s"
            ) from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        raise ValidationFailed(
            f"helm could not render chart {chart.name} for release {release}",
            details=[f"{chart.name}: {ln.removeprefix('Error: ')}" for ln in lines]
            or ["helm exited with no message"],
            hint="Fix the values in the lesson's deploy section.",
        )
    return load_all_yaml(proc.stdout)
