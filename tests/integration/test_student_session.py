"""A student follows the whole traffic-splitting lesson in a terminal (a pseudo-terminal,
80 columns), typing the course's commands exactly as the lesson prints them.

After `kubelab up`: the first count shows about 90/10 answers, v1 hangs later (on the
student's own requests), the traffic graph and the traces are looked at on their offline
paths (`kubelab graph`, `kubelab traces`), the weights move to 50/50 and then 0/100 with
the printed patches, and 300 requests all come from v2. Every `kubelab check` passes at
its step, and each one's "Next" is the exercise the student does next. The whole
transcript is in the failure message when a step goes wrong.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
from support import lesson_block

from kubelab.sandbox.prometheus import find_prometheus
from kubelab.tools import find_tool

pexpect = pytest.importorskip("pexpect")

if find_prometheus() is None and os.environ.get("CI"):
    pytest.fail("prometheus is not installed (CI installs Debian's prometheus)")
pytestmark = [
    pytest.mark.skipif(find_prometheus() is None, reason="prometheus missing: apt install it"),
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing: install-tools.sh"),
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: install-tools.sh"),
    pytest.mark.timeout(420),
]

LESSON = "istio-traffic-splitting"
PROMPT = "[student]$ "


def printed(exercise_id: str, containing: str) -> str:
    """The lesson's bash block (English text, as the sandbox prints it: the offline paths)
    of ``exercise_id`` that contains ``containing``."""
    return lesson_block(LESSON, exercise_id, containing, offline=True)


class Terminal:
    def __init__(self, home: Path) -> None:
        self.transcript = io.StringIO()
        kubectl, kubelab = find_tool("kubectl"), Path(sys.executable).parent
        assert kubectl is not None
        env = {
            "HOME": str(home),
            "KUBELAB_HOME": str(home / ".kubelab"),
            "PATH": f"{kubectl.parent}:{kubelab}:/usr/bin:/bin",
            "TERM": "dumb",
            "LANG": "C.UTF-8",
            "PS1": PROMPT,
            "PS2": "> ",
        }
        self.shell = pexpect.spawn(
            "bash",
            ["--norc", "--noprofile"],
            env=env,
            cwd=str(home),
            dimensions=(40, 80),
            encoding="utf-8",
            codec_errors="replace",
            timeout=120,
        )
        self.shell.logfile_read = self.transcript
        self.shell.expect_exact(PROMPT)

    def run(self, command: str, timeout: float = 120) -> str:
        """Type ``command`` (several lines when pasted so), return what it printed."""
        self.shell.sendline(command)
        try:
            self.shell.expect_exact(PROMPT, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF):
            pytest.fail(f"no prompt after {command!r}\n--- transcript\n{self.log()}")
        output = self.shell.before or ""
        # Drop the echo of what was typed: everything up to its last line.
        last = command.splitlines()[-1]
        return output.split(last, 1)[-1] if last in output else output

    def interrupt_after(self, command: str, seconds: float) -> str:
        """Type ``command`` (one that runs until Ctrl-C), press Ctrl-C after ``seconds``,
        return what it printed."""
        self.shell.sendline(command)
        with contextlib.suppress(pexpect.TIMEOUT):
            self.shell.expect_exact("\x00never", timeout=seconds)
        self.shell.sendintr()
        try:
            self.shell.expect_exact(PROMPT, timeout=30)
        except (pexpect.TIMEOUT, pexpect.EOF):
            pytest.fail(f"no prompt after Ctrl-C of {command!r}\n--- transcript\n{self.log()}")
        return self.shell.before or ""

    def status(self) -> int:
        return int(self.run("echo rc=$?").split("rc=")[-1].split()[0])

    def log(self) -> str:
        return self.transcript.getvalue()

    def close(self) -> None:
        self.shell.sendline("exit")
        self.shell.close(force=True)


def counts(output: str) -> dict[str, int]:
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            found[parts[1]] = int(parts[0])
    return found


@pytest.fixture
def terminal():
    home = Path(tempfile.mkdtemp(prefix="kubelab-student-"))
    term = Terminal(home)
    yield term
    term.run("kubelab down", timeout=60)
    term.close()
    # What `kubelab down` left (nothing, unless it failed) is stopped by PID.
    from kubelab.providers.sandbox import stop

    left = stop(home / ".kubelab" / "sandbox")
    assert not left, f"kubelab down left {left} running\n--- transcript\n{term.log()[-3000:]}"


def test_a_student_follows_the_lesson_with_the_printed_commands(terminal):
    t = terminal

    def expect(condition: bool, what: str) -> None:
        assert condition, f"{what}\n--- transcript\n{t.log()}"

    out = t.run(f"kubelab up {LESSON} --provider sandbox")
    expect(t.status() == 0 and "is ready" in out, "up did not finish")
    export = re.search(r"export KUBECONFIG=\S+", out)
    expect(export is not None, "up printed no KUBECONFIG line")
    assert export is not None
    t.run(export.group(0))
    expect("1/6" in t.run("kubelab exercise"), "exercise 1 is not shown")

    # Exercise 1: the listing, the VirtualService, then the count, as printed.
    listing = t.run(printed("observe-initial-split", "custom-columns"))
    expect("istio-proxy" in listing, "the container listing names no sidecar")
    count = printed("observe-initial-split", "uniq -c")
    # "Run the count four or five times": about 90/10 first, then v1 hangs.
    runs = [counts(t.run(count)) for _ in range(5)]
    first = runs[0]
    expect(first.get("v1", 0) >= 5 and "timeout" not in first, f"not about 90/10 first: {runs}")
    expect(runs[-1].get("timeout", 0) >= 3, f"v1 did not hang by the 5th count: {runs}")
    out = t.run("kubelab check")
    expect("Exercise observe-initial-split: passed" in out, "exercise 1's check failed")
    expect("Next: kubelab exercise kiali-graph" in out, "check did not point at kiali-graph")

    # Exercise 2, its offline path: the traffic loop until Ctrl-C, `kubelab graph` until
    # Ctrl-C, then the check on the sandbox's Prometheus.
    shown = t.run("kubelab exercise")
    expect("2/6" in shown and "kubelab graph" in shown, "exercise 2's offline path not shown")
    t.interrupt_after(printed("kiali-graph", "while true"), 6)
    graph = t.interrupt_after(printed("kiali-graph", "kubelab graph"), 6)
    expect("app-backend → v1 (app-backend-v1)" in graph, "the graph shows no v1 edge")
    expect("app-backend → v2 (app-backend-v2)" in graph, "the graph shows no v2 edge")
    out = t.run("kubelab check")
    expect("Exercise kiali-graph: passed" in out, "the offline Kiali check failed")
    expect("Next: kubelab exercise split-50-50" in out, "check did not point at split-50-50")

    # Exercise 3: the printed JSON patch.
    expect("3/6" in t.run("kubelab exercise"), "exercise 3 is not the current one")
    out = t.run(printed("split-50-50", "kubectl patch"))
    expect("patched" in out, "the 50/50 patch failed")
    # v1 is hung now: its half of the answers are timeouts, v2 answers the other half.
    half = counts(t.run(count))
    expect(half.get("v2", 0) >= 1 and half.get("timeout", 0) >= 1, f"not v2 + hung v1: {half}")
    out = t.run("kubelab check")
    expect("Exercise split-50-50: passed" in out, "the 50/50 check failed")
    expect("Next: kubelab exercise jaeger-traces" in out, "check did not point at jaeger-traces")

    # Exercise 4, its offline path: 20 requests, then `kubelab traces` shows the hung v1.
    requests, show = printed("jaeger-traces", "kubelab traces").rsplit("\n", 1)
    t.run(requests, timeout=120)
    traces = t.run(show)
    expect("HUNG" in traces and "outbound|80|v1|" in traces, "no hung v1 trace shown")
    out = t.run("kubelab check")
    expect("Exercise jaeger-traces: passed" in out, "the offline Jaeger check failed")
    expect("Next: kubelab exercise rollout-v2" in out, "check did not point at rollout-v2")

    # Exercise 5: all traffic to v2.
    expect("patched" in t.run(printed("rollout-v2", "kubectl patch")), "the 0/100 patch failed")
    out = t.run("kubelab check")
    expect("Exercise rollout-v2: passed" in out, "the rollout check failed")
    expect("Next: kubelab exercise confirm-stable" in out, "check did not point at confirm-stable")

    # Exercise 6: 300 requests, every one answered by v2.
    stable = counts(t.run(printed("confirm-stable", "uniq -c"), timeout=300))
    expect(stable == {"v2": 300}, f"not 300 answers from v2: {stable}")
    out = t.run("kubelab check")
    expect("Exercise confirm-stable: passed" in out and "Lesson complete!" in out, "not done")
    out = t.run("kubelab progress")
    expect("6 of 6 exercises done" in out, f"progress: {out}")
