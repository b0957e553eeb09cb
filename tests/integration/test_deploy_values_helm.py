"""kubelab's check of deploy values agrees with helm's own (the real helm binary).

For each chart, values a lesson might give: kubelab reports a problem exactly when
``helm template`` refuses the values for the chart's schema, and says nothing when helm
renders them. (The charts' template rules across keys, such as app-canary's stepWeight <=
maxWeight, are helm's alone: ``validate --render`` reports them.) Also: the annotation
``x-kubelab-sum`` leaves helm's lint clean and its rejection of a bad sum intact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import ROOT

from kubelab.k8s.data import deep_merge as merge
from kubelab.lessons.chart_values import chart_values_problems, injected
from kubelab.yamlio import dump_yaml


def _find_helm() -> str | None:
    for folder in [os.environ.get("KUBELAB_TOOLS_DIR"), str(ROOT / ".tools" / "bin")]:
        if folder and os.access(Path(folder) / "helm", os.X_OK):
            return str(Path(folder) / "helm")
    return shutil.which("helm")


HELM = _find_helm()
pytestmark = pytest.mark.skipif(HELM is None, reason="helm not found: scripts/install-tools.sh")

CASES: list[tuple[str, dict[str, Any]]] = [
    # refused
    ("app-backend", {"weights": {"v1": 90, "v2": 20}}),
    ("app-backend", {"weights": {"v1": 45}}),
    ("app-backend", {"weights": {"v1": "90", "v2": 10}}),
    ("app-backend", {"weights": {"v1": 110, "v2": 0}}),
    ("app-backend", {"weights": {"v3": 0}}),
    ("app-backend", {"weights": {"v2": None}}),
    ("app-backend", {"tester": {"enabled": "yes"}}),
    ("app-backend", {"gateway": {"enabeld": True}}),
    ("app-backend", {"gateway": {"tls": {"enabled": True}}}),
    ("app-backend", {"gateway": {"port": 70000, "hosts": []}}),
    ("app-backend", {"versions": {"v1": {"replicas": -1, "tag": "v 1"}}}),
    ("app-backend", {"image": {"registry": None}}),
    ("app-backend", {"image": {"pullPolicy": "Sometimes"}}),
    ("app-backend", {"resources": {"limits": {"cpu": True, "memory": "12 Mi"}}}),
    ("app-backend", {"commonLabels": {"bad key!": "x"}}),
    ("app-backend", {"tester": "no", "unknown": 1}),
    ("app-backend", {"nowhere": None}),
    ("app-canary", {"canary": {"analysis": {"threshold": "5"}}}),
    ("app-canary", {"canary": {"analysis": {"interval": "30 s", "stepWeight": 0}}}),
    ("app-canary", {"bugAfter": 0}),
    ("app-canary", {"canary": {"metrics": {"successRate": {"min": "high"}}}}),
    ("app-rollouts", {"analysis": {"successRate": {"threshold": "high"}}}),
    ("app-rollouts", {"scenarios": {"canary": {"weights": [0, 200]}}}),
    ("app-rollouts", {"app": {"replicas": 20}}),
    ("app-rollouts", {"scenarios": {"canaryAnalysis": {"pause": 15}}}),
    ("app-rollouts", {"scenarios": {"bluegreen": {"autoPromotionEnabled": "no"}}}),
    # rendered
    ("app-backend", {}),
    ("app-backend", {"weights": {"v1": 25, "v2": 75}}),
    ("app-backend", {"weights": {"v1": 100, "v2": 0}, "versions": {"v2": {"enabled": True}}}),
    (
        "app-backend",
        {"gateway": {"enabled": True, "tls": {"enabled": True, "credentialName": "c"}}},
    ),
    ("app-backend", {"image": {"pullSecrets": None}, "podAnnotations": None}),
    ("app-backend", {"commonLabels": {"team": "blue"}, "resources": None}),
    ("app-canary", {"replicas": None, "canary": {"analysis": {"threshold": 3}}}),
    ("app-canary", {"replicas": 2, "bugAfter": 5}),
    ("app-rollouts", {"scenarios": {"canary": {"weights": [50, 100]}}}),
    ("app-rollouts", {"analysis": {"successRate": {"threshold": 0.9}}}),
]


def _helm_template(chart: Path, values: dict[str, Any], tmp_path: Path) -> str | None:
    """helm's schema complaint about ``values`` (as kubelab gives them), or None."""
    assert HELM is not None
    values_file = tmp_path / "values.yaml"
    values_file.write_text(dump_yaml(values), encoding="utf-8")
    proc = subprocess.run(
        [HELM, "template", "r", str(chart), "-n", "demo", "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == 0:
        return None
    assert "don't meet the specifications of the schema" in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.parametrize(("chart", "values"), CASES, ids=[f"{c}-{v}" for c, v in CASES])
def test_kubelab_refuses_what_helm_refuses(chart, values, tmp_path):
    folder = ROOT / "charts" / chart
    under, over = injected("demo", True)
    ours = chart_values_problems(
        (folder / "values.schema.json").read_text(),
        (folder / "values.yaml").read_text(),
        values,
        under,
        over,
    )
    helms = _helm_template(folder, merge(merge(under, values), over), tmp_path)
    assert bool(ours) == (helms is not None), (ours, helms)


def test_the_sum_annotation_keeps_helm_lint_clean_and_helm_refusing_a_bad_sum(tmp_path):
    assert HELM is not None
    chart = ROOT / "charts" / "app-backend"
    lint = subprocess.run(
        [HELM, "lint", "--strict", str(chart)], capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "[WARNING]" not in lint.stdout and "[ERROR]" not in lint.stdout
    refused = _helm_template(chart, {"weights": {"v1": 90, "v2": 20}}, tmp_path)
    assert refused is not None and "weights.v2 must be one of the following: 10" in refused
    assert _helm_template(chart, {"weights": {"v1": 80, "v2": 20}}, tmp_path) is None
