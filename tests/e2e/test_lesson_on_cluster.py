"""The whole lesson on a real cluster: up, every exercise's checks -> solve -> checks, down.

Opt-in: set ``KUBELAB_E2E_KUBECONFIG`` to the kubeconfig of a disposable cluster (kind or
any other; it needs a LoadBalancer or NodePort path for the gateway and a default
StorageClass for Gitea). Skipped otherwise, never faked.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_cli

KUBECONFIG = os.environ.get("KUBELAB_E2E_KUBECONFIG")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not KUBECONFIG, reason="KUBELAB_E2E_KUBECONFIG is not set: no real cluster to test on"
    ),
    pytest.mark.timeout(3600),
]


@pytest.fixture
def env(_isolated_home: Path) -> dict[str, str]:
    assert KUBECONFIG is not None
    return {"KUBECONFIG": KUBECONFIG, "KUBELAB_HOME": str(_isolated_home)}


def test_traffic_splitting_lesson_end_to_end(env, tmp_path):
    report = tmp_path / "report.xml"
    proc = run_cli(
        "test",
        "istio-traffic-splitting",
        "--provider",
        "existing",
        "--output",
        "junit",
        "--out",
        str(report),
        env=env,
        timeout=3500,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    suite = ET.parse(report).getroot()
    cases = list(suite.iter("testcase"))
    assert len(cases) == 6
    # On a real cluster nothing is skipped: Kiali, Jaeger and VictoriaMetrics are there.
    assert all(c.find("skipped") is None for c in cases)
    assert all(c.find("failure") is None and c.find("error") is None for c in cases)


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
