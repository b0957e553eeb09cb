"""Broken meshes must fail the traffic checks, with a message that names the cause.

Each test breaks the sandbox the way a student could (kubectl only), runs the exercise's
check through the real CLI, and puts the lesson back. Before answers were classified by
the app itself, every one of these states passed: Envoy's own 503 "no healthy upstream"
carried the subset's name and was counted as that version's answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support import SandboxHome, course_patch, lesson_sandbox

from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing: install-tools.sh"),
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: install-tools.sh"),
    pytest.mark.timeout(300),
]

LAB = SandboxHome("kubelab-false-pass-")
kubelab = LAB.kubelab
kubectl = LAB.kubectl
LESSON = "istio-traffic-splitting"


def weights(v1: int, v2: int) -> None:
    kubectl(*course_patch(v1, v2))


def subset_version(index: int, version: str) -> None:
    kubectl(
        "patch",
        "destinationrule",
        "app-backend",
        "-n",
        "istio",
        "--type=json",
        f'-p=[{{"op":"replace","path":"/spec/subsets/{index}/labels/version","value":"{version}"}}]',
    )


def wait_ready(deployment: str) -> None:
    kubectl("rollout", "status", f"deployment/{deployment}", "-n", "istio", "--timeout=60s")


def restart_v1() -> None:
    """A fresh v1, so that it answers (and can be misrouted) before it hangs again."""
    kubectl("rollout", "restart", "deployment/app-backend-v1", "-n", "istio")
    wait_ready("app-backend-v1")


def check(exercise: str) -> tuple[int, dict]:
    proc = kubelab("check", exercise, "--output", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout)
    return proc.returncode, {c["id"]: c for c in data["checks"]}


@contextmanager
def split(v1: int, v2: int) -> Iterator[None]:
    weights(v1, v2)
    time.sleep(1.0)
    try:
        yield
    finally:
        weights(90, 10)


lesson_up = lesson_sandbox(LAB, LESSON)


def test_the_deployed_lesson_passes_first():
    code, checks = check("observe-initial-split")
    assert code == 0, checks


def test_v2_scaled_to_zero_fails_the_50_50_split():
    with split(50, 50):
        kubectl("scale", "deployment/app-backend-v2", "-n", "istio", "--replicas=0")
        try:
            time.sleep(1.0)
            code, checks = check("split-50-50")
        finally:
            kubectl("scale", "deployment/app-backend-v2", "-n", "istio", "--replicas=1")
            wait_ready("app-backend-v2")
    assert code == 1
    message = checks["traffic-split"]["message"]
    assert checks["traffic-split"]["evidence"]["counts"].get("v2", 0) == 0
    assert (
        "requests to subset v2 answered 503 no healthy upstream: are the pods labelled "
        "version=v2 running and ready, and does DestinationRule subset v2 select them?"
    ) in message
    assert "kubectl get destinationrule app-backend" in checks["traffic-split"]["hint"]


def test_subset_v2_selecting_v1_pods_fails_the_rollout_and_stability():
    with split(0, 100):
        subset_version(1, "v1")
        restart_v1()
        try:
            code, checks = check("rollout-v2")
            stable_code, stable = check("confirm-stable")
        finally:
            subset_version(1, "v2")
    assert code == 1
    message = checks["traffic-split"]["message"]
    assert checks["traffic-split"]["evidence"]["counts"].get("v2", 0) == 0
    assert (
        "routed to subset v2 were answered by v1" in message
        or "requests to subset v2 hung past 2s, but the pods labelled version=v2 answer "
        "when asked directly: does DestinationRule subset v2 select them?"
        in message
    ), message
    assert stable_code == 1
    assert "subset v2" in stable["http-stable"]["message"], stable["http-stable"]["message"]


def test_subset_labels_selecting_nothing_fail_the_initial_split():
    subset_version(0, "nope")
    try:
        time.sleep(1.0)
        code, checks = check("observe-initial-split")
    finally:
        subset_version(0, "v1")
    assert code == 1
    assert (
        "requests to subset v1 answered 503 no healthy upstream: are the pods labelled "
        "version=v1 running and ready" in checks["traffic-split"]["message"]
    )
    # The other checks of the exercise still pass: only the traffic shows the fault.
    assert checks["virtualservice-weights"]["status"] == "passed"


def test_both_subsets_selecting_the_same_pods_fail_the_split():
    restart_v1()
    with split(50, 50):
        subset_version(1, "v1")
        try:
            time.sleep(1.0)
            code, checks = check("split-50-50")
        finally:
            subset_version(1, "v2")
    assert code == 1
    message = checks["traffic-split"]["message"]
    assert checks["traffic-split"]["evidence"]["counts"].get("v2", 0) == 0
    assert "subset v2" in message, message


def test_crash_looping_v2_fails_the_split():
    with split(50, 50):
        # A typo in APP_VERSION stops the app at start: v2's new pod crash-loops. The old
        # pod keeps serving until the new one is ready (as on a real cluster), so it goes too.
        kubectl("set", "env", "deployment/app-backend-v2", "-n", "istio", "APP_VERSION=V2")
        try:
            kubectl("delete", "pod", "-n", "istio", "-l", "app=app-backend,version=v2")
            # Between two restarts the pod shows Running for a moment: look a few times.
            deadline = time.monotonic() + 15
            while "CrashLoopBackOff" not in (pods := kubectl("get", "pods", "-n", "istio")):
                assert time.monotonic() < deadline, pods
                time.sleep(0.5)
            code, checks = check("split-50-50")
        finally:
            kubectl("set", "env", "deployment/app-backend-v2", "-n", "istio", "APP_VERSION=v2")
            wait_ready("app-backend-v2")
    assert code == 1
    message = checks["traffic-split"]["message"]
    assert checks["traffic-split"]["evidence"]["counts"].get("v2", 0) == 0
    assert "requests to subset v2 answered 503" in message, message


def service_selector(app: str) -> None:
    selector = json.dumps({"spec": {"selector": {"app": app}}})
    kubectl("patch", "service", "app-backend", "-n", "istio", "-p", selector)


def test_a_service_selecting_nothing_fails_the_split():
    with split(50, 50):
        service_selector("nope")
        try:
            time.sleep(1.0)
            code, checks = check("split-50-50")
        finally:
            service_selector("app-backend")
    assert code == 1
    message = checks["traffic-split"]["message"]
    assert checks["traffic-split"]["evidence"]["counts"] == {}
    assert "answered 503" in message, message


def test_the_lesson_passes_again_once_repaired():
    code, checks = check("observe-initial-split")
    assert code == 0, checks
