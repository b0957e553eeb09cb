"""``kubelab check --watch`` in a pseudo-terminal, on the sandbox lesson: the display is
redrawn in place run after run, it exits 0 once the student's patch (the one the lesson
prints) lands, and 1 when its timeout passes first; a pass recorded earlier stays done
when a later run fails, with a warning."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
from support import SandboxHome, lesson_block, lesson_sandbox, run_bash

from kubelab.tools import find_tool

pexpect = pytest.importorskip("pexpect")

pytestmark = [
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing: install-tools.sh"),
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: install-tools.sh"),
    pytest.mark.timeout(400),
]

LAB = SandboxHome("kubelab-watch-")
lesson_up = lesson_sandbox(LAB)
CURSOR_UP = "\x1b[1A"  # rich's Live moves up over its last frame to draw the next one


def watch(*args: str) -> pexpect.spawn:
    """``kubelab check --watch ARGS`` in an 100x40 xterm-like pseudo-terminal."""
    env = {
        **os.environ,
        **LAB.env,
        "TERM": "xterm-256color",
        "COLUMNS": "100",
        "LINES": "40",
        "LANG": "C.UTF-8",
    }
    env.pop("NO_COLOR", None)
    return pexpect.spawn(
        sys.executable,
        ["-c", "from kubelab.cli.main import run; run()", "check", "--watch", *args],
        env=env,
        dimensions=(40, 100),
        encoding="utf-8",
        codec_errors="replace",
        timeout=60,
    )


def plain(screen: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)


def finish(child: pexpect.spawn) -> tuple[int, str]:
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    return int(child.exitstatus), child.before or ""


def test_watch_times_out_with_exit_1_while_nothing_changes() -> None:
    child = watch("split-50-50", "--timeout", "6", "--interval", "1")
    child.expect_exact("Watching split-50-50")
    code, rest = finish(child)
    screen = plain(rest)
    assert code == 1, screen
    assert CURSOR_UP in rest, "the display was not redrawn in place"
    assert "time is up" in screen
    assert "subset v1 gets 90%, expected 50%" in screen
    assert "split-50-50 did not pass within 6 s." in screen
    runs = [int(n) for n in re.findall(r"run (\d+), \d+ s of 6 s", screen)]
    assert max(runs) >= 2, screen


def test_watch_exits_0_when_the_printed_patch_lands() -> None:
    child = watch("split-50-50", "--timeout", "180", "--interval", "1")
    child.expect_exact("Watching split-50-50")
    child.expect(r"next run in \d+ s")  # a first run has failed and is on screen
    patch = run_bash(
        lesson_block("istio-traffic-splitting", "split-50-50", "patch"), LAB.kubeconfig
    )
    assert patch.returncode == 0, patch.stderr
    code, rest = finish(child)
    screen = plain(rest)
    assert code == 0, screen
    assert "Exercise split-50-50: passed" in screen
    assert "Well done. Next: kubelab exercise" in screen
    progress = LAB.kubelab("progress", "--output", "json")
    rows = {r["exercise"]: r for r in json.loads(progress.stdout)["exercises"]}
    assert rows["split-50-50"]["status"] == "passed" and rows["split-50-50"]["passed_at"]


def test_a_recorded_pass_is_not_regressed_by_a_later_failing_run() -> None:
    # After the previous test the split is 50/50: the 90/10 exercise no longer holds.
    before = LAB.kubelab("progress", "--output", "json")
    assert before.returncode == 0, before.stderr
    proc = LAB.kubelab("check", "split-50-50", "--watch", "--timeout", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    patch = run_bash(lesson_block("istio-traffic-splitting", "rollout-v2", "patch"), LAB.kubeconfig)
    assert patch.returncode == 0, patch.stderr
    proc = LAB.kubelab("check", "split-50-50", "--watch", "--timeout", "4", "--interval", "1")
    assert proc.returncode == 1
    assert "warning: split-50-50 passed at" in proc.stderr
    assert "stays done; this run is failed" in proc.stderr
    # Not a screen: one line per run in the log, then the last outcome.
    assert "Exercise split-50-50: failed" in proc.stderr + proc.stdout
    progress = LAB.kubelab("progress", "--output", "json")
    rows = {r["exercise"]: r for r in json.loads(progress.stdout)["exercises"]}
    assert rows["split-50-50"]["done"] and rows["split-50-50"]["passed_at"]
    assert rows["split-50-50"]["status"] == "failed"  # the last run's outcome, kept apart
    # ... and the current exercise did not go back to it.
    current = [r["exercise"] for r in rows.values() if r["current"]]
    assert current and current[0] != "split-50-50"
