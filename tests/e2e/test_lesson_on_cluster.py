"""Every lesson on a real cluster: up, every exercise's checks -> solve -> checks, down.

Opt-in: set ``KUBELAB_E2E_KUBECONFIG`` to the kubeconfig of a disposable cluster (kind or
any other; it needs a LoadBalancer or NodePort path for the gateway, a default StorageClass
for Gitea and room for Istio, VictoriaMetrics, Kiali, Jaeger, Gitea, Flagger and Argo
Rollouts). Skipped otherwise, never faked: on a cluster nothing is skipped either, so
Flagger's analysis (the weights it moves, the metrics it reads from VictoriaMetrics, the
load tester's webhooks, the rollback) and Argo Rollouts' analyses (the load-test Job, the
success-rate queries, the VirtualService weights it moves) really run.

flagger-canary starts a real Flagger analysis of about 4 minutes (30 s intervals) in each
exercise, so that run takes 30 to 40 minutes after the components are installed.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_cli

from kubelab.lessons.loader import find_lesson

KUBECONFIG = os.environ.get("KUBELAB_E2E_KUBECONFIG")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not KUBECONFIG, reason="KUBELAB_E2E_KUBECONFIG is not set: no real cluster to test on"
    ),
]

# (lesson, seconds the `kubelab test` run may take; the pytest timeout adds 100 to that)
LESSONS = [
    ("istio-traffic-splitting", 3500),
    ("flagger-canary", 5300),
    ("argo-rollouts", 5300),
]


@pytest.fixture
def env(_isolated_home: Path) -> dict[str, str]:
    assert KUBECONFIG is not None
    return {"KUBECONFIG": KUBECONFIG, "KUBELAB_HOME": str(_isolated_home)}


@pytest.mark.parametrize(
    ("lesson", "seconds"),
    [
        pytest.param(lesson, seconds, id=lesson, marks=pytest.mark.timeout(seconds + 100))
        for lesson, seconds in LESSONS
    ],
)
def test_lesson_end_to_end(env, tmp_path, lesson, seconds):
    exercises = [e.id for e in find_lesson(lesson).lesson.exercises]
    report = tmp_path / "report.xml"
    proc = run_cli(
        "test",
        lesson,
        "--provider",
        "existing",
        "--output",
        "junit",
        "--out",
        str(report),
        env=env,
        timeout=seconds,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    suite = ET.parse(report).getroot()
    cases = list(suite.iter("testcase"))
    assert [c.get("name") for c in cases] == exercises
    # On a real cluster nothing is skipped: `up` installs every component the exercises need.
    assert all(c.find("skipped") is None for c in cases)
    assert all(c.find("failure") is None and c.find("error") is None for c in cases)


@pytest.mark.timeout(3600)
def test_second_up_changes_nothing(env):
    first = run_cli(
        "up", "istio-traffic-splitting", "--provider", "existing", env=env, timeout=3000
    )
    assert first.returncode == 0, first.stderr[-4000:]
    second = run_cli(
        "up",
        "istio-traffic-splitting",
        "--provider",
        "existing",
        "-o",
        "json",
        env=env,
        timeout=3000,
    )
    try:
        assert second.returncode == 0, second.stderr[-4000:]
        assert "nothing to change" in second.stderr
        assert " installed" not in second.stderr and " upgraded" not in second.stderr
        status = json.loads(run_cli("status", "-o", "json", env=env).stdout)
        assert status["lesson"] == "istio-traffic-splitting"
    finally:
        assert run_cli("down", "--all", env=env, timeout=1800).returncode == 0
