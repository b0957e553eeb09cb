"""One `up` or `down` at a time per home: a second one waits, says for whom, goes on."""

from __future__ import annotations

import subprocess
import sys
import time

from kubelab import homelock

HOLDER = """
import sys, time
from pathlib import Path
from kubelab import homelock
with homelock.exclusive(Path(sys.argv[1]), "up"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(home, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_waits_and_is_told_for_whom(tmp_path):
    holder = _hold(tmp_path, 1.5)
    told: list[str] = []
    started = time.monotonic()
    try:
        with homelock.exclusive(tmp_path, "down", told.append):
            waited = time.monotonic() - started
            assert (tmp_path / homelock.LOCK_NAME).read_text().startswith("kubelab down (pid ")
    finally:
        holder.wait(timeout=10)
    assert 0.8 < waited < 10
    assert len(told) == 1
    assert told[0].startswith(f"kubelab up (pid {holder.pid}) is running for {tmp_path}")


def test_a_killed_holder_frees_the_lock(tmp_path):
    holder = _hold(tmp_path, 60)
    holder.kill()
    holder.wait(timeout=10)
    told: list[str] = []
    started = time.monotonic()
    with homelock.exclusive(tmp_path, "up", told.append):
        pass
    assert time.monotonic() - started < 2 and told == []


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    told: list[str] = []
    started = time.monotonic()
    with homelock.exclusive(tmp_path, "test", told.append):
        with homelock.exclusive(tmp_path, "up", told.append):
            pass
        with homelock.exclusive(tmp_path, "down", told.append):
            pass
    assert told == [] and time.monotonic() - started < 2  # never waited for itself
    # Released: another process gets it at once.
    assert _hold(tmp_path, 0).wait(timeout=10) == 0


def test_holding_one_home_does_not_hold_another(tmp_path):
    other = tmp_path / "other"
    holder = _hold(other, 1.0)
    told: list[str] = []
    try:
        with (
            homelock.exclusive(tmp_path / "mine", "up", told.append),
            homelock.exclusive(other, "down", told.append),  # waits for the holder
        ):
            pass
    finally:
        holder.wait(timeout=10)
    assert len(told) == 1 and f"for {other}" in told[0]
