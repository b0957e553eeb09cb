"""No process of the control plane outlives its test session: neither when a test fails
(the fixture stops them by PID) nor when the test process itself is killed (each child
has ``PR_SET_PDEATHSIG``). A pytest of its own runs ``probe_session.py`` for each case."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(180)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited: only its parent's wait is missing.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def probe(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    pids_at = tmp_path / "pids-at"
    env = {
        **os.environ,
        "PROBE_PIDS_AT": str(pids_at),
        "PROBE_MODE": mode,
        "CI": os.environ.get("CI", ""),
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pytest", str(HERE / "probe_session.py"), "-q",
            "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'probe'}",
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE.parents[1],
    )  # fmt: skip
    return process, pids_at


def recorded_pids(pids_at: Path) -> dict[str, int]:
    pid_file = Path(pids_at.read_text())
    return {
        name: int(pid) for name, pid in (line.split() for line in pid_file.read_text().splitlines())
    }


def test_a_failing_session_leaves_no_process(control_plane, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    process, pids_at = probe(tmp_path, "fail")
    out, _ = process.communicate(timeout=150)
    assert process.returncode == 1, out
    assert "failing on purpose" in out
    pids = recorded_pids(pids_at)
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    assert [name for name, pid in pids.items() if alive(pid)] == []


def test_a_killed_session_leaves_no_process(control_plane, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    process, pids_at = probe(tmp_path, "hang")
    deadline = time.monotonic() + 120
    while not pids_at.exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        time.sleep(0.2)
    pids = recorded_pids(pids_at)
    assert all(alive(pid) for pid in pids.values())
    process.send_signal(signal.SIGKILL)  # no fixture teardown runs: only the kernel acts
    process.wait(30)
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [name for name, pid in pids.items() if alive(pid)] == []


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 error")])
def test_without_the_binaries_a_skip_says_how_and_ci_fails(
    tmp_path: Path, ci: str, outcome: str
) -> None:
    env = {**os.environ, "KUBELAB_K8S_CACHE": str(tmp_path / "no-cache"), "CI": ci}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", str(HERE / "probe_session.py"), "-q", "-rs",
            "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'probe'}",
        ],
        env=env, capture_output=True, text=True, timeout=120, cwd=HERE.parents[1],
    )  # fmt: skip
    assert outcome in done.stdout, done.stdout
    assert "bash scripts/build-control-plane.sh" in done.stdout
    assert done.returncode == (0 if not ci else 1)
