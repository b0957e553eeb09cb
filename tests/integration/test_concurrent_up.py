"""Two `kubelab up` at once on one home, then `down`: one sandbox, and nothing left.

Before the lifecycle lock (kubelab/homelock.py) both `up` started a sandbox; `down`
stopped the one the state named and a daemon and an Envoy kept running.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ROOT, SandboxHome

from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing: install-tools.sh"),
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: install-tools.sh"),
    pytest.mark.timeout(300),
]

LAB = SandboxHome("kubelab-concurrent-")
LESSON = "istio-traffic-splitting"


def _up() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kubelab", "up", LESSON, "--provider", "sandbox"],
        cwd=ROOT,
        env={**os.environ, **LAB.env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _sandbox_processes() -> list[int]:
    """Processes of this home's sandbox: those whose command line names its folder (the
    daemon, Envoy), and those the sandbox recorded as running (the apps), seen so far."""
    folder = LAB.home / "sandbox"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(folder).encode() in (proc / "cmdline").read_bytes():
                    SEEN.add(int(proc.name))
            except OSError:
                continue
    with contextlib.suppress(OSError, ValueError, KeyError):
        SEEN.update(json.loads((folder / "processes.json").read_text())["pids"])
    return sorted(pid for pid in SEEN if _alive(pid))


SEEN: set[int] = set()


def test_two_ups_then_down_leave_no_process():
    first, second = _up(), _up()
    try:
        outputs = [p.communicate(timeout=240) for p in (first, second)]
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    # One of them waited for the other, and said so.
    waited = [err for _, err in outputs if "is running for" in err]
    assert len(waited) == 1, outputs
    assert "waiting for it to finish" in waited[0]
    running = _sandbox_processes()
    daemons = [pid for pid in running if b"sandbox.daemon" in _cmdline(pid)]
    assert len(daemons) == 1, daemons  # one sandbox, not two
    assert len(running) >= 4  # the daemon, Envoy, the apps
    assert LAB.kubelab("down").returncode == 0
    deadline = time.monotonic() + 15
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sandbox_processes() == []


def test_down_during_up_waits_and_removes_what_up_made():
    SEEN.clear()
    up = _up()
    try:
        lock = LAB.home / "lifecycle.lock"
        deadline = time.monotonic() + 60
        while "kubelab up" not in _read(lock) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "kubelab up" in _read(lock)  # up is under way
        watcher = _Watcher()
        watcher.start()
        down = LAB.kubelab("down", timeout=240)
        watcher.stop()
        assert up.wait(timeout=240) == 0, up.communicate()
    finally:
        if up.poll() is None:
            up.kill()
    assert down.returncode == 0, down.stderr
    assert "waiting for it to finish" in down.stderr
    assert len(SEEN) >= 4  # up's sandbox ran, and was seen running
    deadline = time.monotonic() + 15
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sandbox_processes() == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class _Watcher:
    """Notes the sandbox's processes while `down` waits for `up` (they start meanwhile)."""

    def __init__(self) -> None:
        import threading

        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            _sandbox_processes()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
