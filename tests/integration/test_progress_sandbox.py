"""A student's progress through the real CLI: recorded from `up` on, never going backwards,
kept across `down`/`up`, forgotten only by `progress --reset`."""

from __future__ import annotations

import json
import time

import pytest
from support import SandboxHome, course_patch, lesson_sandbox

from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing: install-tools.sh"),
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: install-tools.sh"),
    pytest.mark.timeout(300),
]

LAB = SandboxHome("kubelab-progress-", env={"KUBELAB_PROMETHEUS": ""})  # kiali-graph unavailable
kubelab = LAB.kubelab
kubectl = LAB.kubectl
LESSON = "istio-traffic-splitting"


def as_json(*args: str) -> dict:
    proc = kubelab(*args, "-o", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def progress() -> dict[str, dict]:
    return {e["exercise"]: e for e in as_json("progress")["exercises"]}


def rollout_v2() -> None:
    kubectl(*course_patch(0, 100))
    time.sleep(1.0)


lesson_up = lesson_sandbox(LAB, LESSON)


def test_the_checks_up_ran_are_recorded():
    first = progress()["observe-initial-split"]
    assert first["status"] == "passed" and first["attempts"] == 1
    # up's pass does not make the exercise done: the student starts with exercise 1.
    assert first["passed_at"] is None and not first["done"]
    assert as_json("exercise")["exercise"] == "observe-initial-split"
    assert kubelab("check").returncode == 0
    assert progress()["observe-initial-split"]["passed_at"]
    assert as_json("exercise")["exercise"] == "split-50-50"  # kiali-graph is skipped here


def test_the_current_exercise_follows_superseded_by_and_never_goes_back():
    assert kubelab("check", "split-50-50").returncode == 1  # still 90/10
    assert as_json("exercise")["exercise"] == "split-50-50"
    rollout_v2()
    proc = kubelab("check", "rollout-v2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # split-50-50 is superseded; jaeger-traces (its offline path here) is not done yet.
    assert "Next: kubelab exercise jaeger-traces" in proc.stdout
    # exercise and check now agree with that "Next".
    assert as_json("exercise")["exercise"] == "jaeger-traces"
    assert as_json("check")["exercise"] == "jaeger-traces"
    # The initial split's check fails now (it is 0/100), and nothing goes back.
    assert kubelab("check", "observe-initial-split").returncode == 1
    assert as_json("exercise")["exercise"] == "jaeger-traces"
    assert as_json("exercise", "3")["exercise"] == "split-50-50"
    rows = progress()
    assert rows["split-50-50"]["done"] and rows["split-50-50"]["status"] == "failed"


def test_a_mistyped_exercise_gets_a_did_you_mean():
    proc = kubelab("exercise", "rollout-2")
    assert proc.returncode == 2
    assert "did you mean rollout-v2?" in proc.stderr


def weights() -> list[str]:
    jsonpath = "jsonpath={.spec.http[0].route[*].weight}"
    return kubectl("get", "virtualservice", "app-backend", "-n", "istio", "-o", jsonpath).split()


def test_a_second_up_keeps_the_students_work_and_reset_puts_the_lesson_back():
    assert weights() == ["0", "100"]  # the student's rollout
    proc = kubelab("up", LESSON, "--provider", "sandbox", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    changes = json.loads(proc.stdout)["changes"]
    assert changes["api_writes"] == 0 and changes["deploy"]["changed"] == 0
    drift = {d["field"]: d for d in changes["deploy"]["drift"]["VirtualService istio/app-backend"]}
    assert (
        drift["spec.http[0].route[0].weight"]["live"],
        drift["spec.http[0].route[0].weight"]["lesson"],
    ) == (0, 90)
    assert weights() == ["0", "100"]
    table = kubelab("up", LESSON, "--provider", "sandbox")
    assert "VirtualService istio/app-backend changed since it was deployed" in table.stderr
    assert "`kubelab up --reset` puts it back" in table.stderr
    # --reset (no terminal here, so no question) puts the lesson's 90/10 back.
    assert kubelab("up", LESSON, "--provider", "sandbox", "--reset").returncode == 0
    assert weights() == ["90", "10"]
    rollout_v2()


def test_progress_survives_down_and_up_and_reset_forgets_it():
    before = progress()
    assert kubelab("down").returncode == 0
    assert progress()["rollout-v2"]["status"] == "passed"  # readable with no lesson running
    assert kubelab("up", LESSON, "--provider", "sandbox").returncode == 0
    after = progress()
    assert after["rollout-v2"]["passed_at"] == before["rollout-v2"]["passed_at"]
    assert (
        after["observe-initial-split"]["attempts"]
        == before["observe-initial-split"]["attempts"] + 1
    )
    out = kubelab("progress").stdout
    assert "exercises done" in out
    assert kubelab("progress", "--reset").returncode == 0
    after_reset = as_json("progress")
    assert after_reset["done"] == 0 and after_reset["passed"] == 0
    assert {row["status"] for row in after_reset["exercises"]} == {"not-started", "unavailable"}
