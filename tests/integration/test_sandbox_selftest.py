"""`kubelab test` runs the whole lesson in the sandbox; a crashed sandbox is cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support import run_cli

from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.skipif(
        find_tool("kubectl") is None, reason="kubectl missing: scripts/install-tools.sh"
    ),
    pytest.mark.timeout(400),
]


def test_lesson_test_in_the_sandbox_writes_junit(tmp_path, _isolated_home):
    """All six exercises run, none skipped: the Kiali and Jaeger ones on their offline
    paths, against the sandbox's Prometheus and span receiver."""
    from kubelab.sandbox.prometheus import find_prometheus

    if find_prometheus() is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (CI installs Debian's prometheus)")
        pytest.skip("prometheus missing: apt install prometheus")
    report = tmp_path / "report.xml"
    env = {"KUBELAB_HOME": str(_isolated_home)}
    proc = run_cli(
        "test",
        "istio-traffic-splitting",
        "--provider",
        "sandbox",
        "--output",
        "junit",
        "--out",
        str(report),
        env=env,
        timeout=380,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    suite = ET.parse(report).getroot()
    assert suite.tag == "testsuite"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == [
        "observe-initial-split",
        "kiali-graph",
        "split-50-50",
        "jaeger-traces",
        "rollout-v2",
        "confirm-stable",
    ]
    skipped = {name for name, c in cases.items() if c.find("skipped") is not None}
    assert skipped == set()
    assert all(c.find("failure") is None and c.find("error") is None for c in cases.values())
    # Exercises whose checks must fail before their solve did fail before it.
    out = cases["split-50-50"].find("system-out").text
    assert "before solve: failed" in out and "after solve: passed" in out
    assert suite.get("failures") == "0" and suite.get("skipped") == "0"
    # The offline checks ran against the stand-ins: Prometheus and the span receiver.
    assert "mesh-traffic-recorded" in cases["kiali-graph"].find("system-out").text
    assert "Jaeger has" in cases["jaeger-traces"].find("system-out").text
    # down ran: nothing left.
    assert not (_isolated_home / "sandbox").exists()


def test_lesson_test_never_touches_the_running_lab(_isolated_home):
    """A student's lab at 50/50 keeps running, unchanged, through `kubelab test`."""
    env = {"KUBELAB_HOME": str(_isolated_home)}
    assert run_cli("up", "istio-traffic-splitting", env=env).returncode == 0
    kubeconfig = _isolated_home / "sandbox" / "kubeconfig"
    kubectl = [str(find_tool("kubectl")), "--kubeconfig", str(kubeconfig)]
    patch = (
        '[{"op":"replace","path":"/spec/http/0/route/0/weight","value":50},'
        '{"op":"replace","path":"/spec/http/0/route/1/weight","value":50}]'
    )
    vs = ["virtualservice", "app-backend", "-n", "istio"]
    subprocess.run([*kubectl, "patch", *vs, "--type=json", f"-p={patch}"], check=True)
    state_before = json.loads((_isolated_home / "state.json").read_text())
    runtime = json.loads((_isolated_home / "sandbox" / "runtime.json").read_text())
    try:
        proc = run_cli("test", "istio-traffic-splitting", "-o", "json", env=env, timeout=380)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        from kubelab.sandbox.prometheus import find_prometheus

        # Without Prometheus the metrics exercise (kiali-graph) is the one skipped.
        assert json.loads(proc.stdout)["tested"] == (6 if find_prometheus() else 5)
        # The student's lab: same sandbox, same kubeconfig, same state, same 50/50.
        assert _alive(runtime["pid"]) and _alive(runtime["envoy_pid"])
        assert kubeconfig.is_file()
        assert json.loads((_isolated_home / "state.json").read_text()) == state_before
        weights = subprocess.run(
            [*kubectl, "get", *vs, "-o", "jsonpath={.spec.http[0].route[*].weight}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert weights.split() == ["50", "50"]
        assert list((_isolated_home / "tests").iterdir()) == []  # the test's home is gone
    finally:
        assert run_cli("down", env=env).returncode == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def test_crashed_sandbox_is_detected_and_cleaned(_isolated_home):
    env = {"KUBELAB_HOME": str(_isolated_home)}
    assert run_cli("up", "istio-traffic-splitting", env=env).returncode == 0
    workdir = _isolated_home / "sandbox"
    runtime = json.loads((workdir / "runtime.json").read_text())
    children = json.loads((workdir / "processes.json").read_text())["pids"]
    os.kill(runtime["pid"], signal.SIGKILL)  # the daemon dies without cleaning up
    deadline = time.monotonic() + 10
    while _alive(runtime["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = json.loads(run_cli("status", "--output", "json", env=env).stdout)
    assert status["running"] is False
    # The next `up` notices, cleans what is left and starts a fresh sandbox.
    proc = run_cli("up", "istio-traffic-splitting", env=env)
    assert proc.returncode == 0, proc.stderr
    fresh = json.loads((workdir / "runtime.json").read_text())
    assert fresh["pid"] != runtime["pid"]
    assert not any(_alive(p) for p in children)
    assert run_cli("down", env=env).returncode == 0
    assert not _alive(fresh["pid"])
