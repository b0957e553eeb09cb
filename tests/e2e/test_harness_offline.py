"""The e2e harness (``e2e_harness``) on what kubelab really prints, without a cluster.

The cluster tests only run where one is given; their helpers are checked here on every
machine, on the JSON of real ``kubelab`` runs in the offline sandbox: ``up`` twice,
``status``, the student commands through the course, ``kubelab test``, ``down``. Each
helper is also shown to notice what it is there to notice (a third ``up`` after the
course changes the VirtualService back; a sandbox test report has skipped exercises).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from e2e_harness import (
    STEPS,
    Kubelab,
    Plan,
    current_context,
    current_server,
    follow_course,
    lesson_test_problems,
    objects_left,
    parse_json,
    parse_json_file,
    releases_left,
    removed_problems,
    run_group,
    second_up_problems,
    status_problems,
    up_changes,
    up_drift,
    up_problems,
)

from kubelab.lessons.loader import find_lesson
from kubelab.lessons.plan import STEPS as KUBELAB_STEPS
from kubelab.sandbox.prometheus import find_prometheus
from kubelab.tools import find_tool

pytestmark = [
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.skipif(
        find_tool("kubectl") is None, reason="kubectl missing: scripts/install-tools.sh"
    ),
    pytest.mark.timeout(300),
]

LESSON = "istio-traffic-splitting"
# What the sandbox cannot run: with Prometheus, nothing (the Kiali and Jaeger exercises
# follow their offline paths); without it the metrics exercise, and `kubelab exercise`
# says so.
NOT_IN_SANDBOX = set() if find_prometheus() else {"kiali-graph"}


def test_steps_are_kubelabs():
    assert list(KUBELAB_STEPS) == STEPS


def test_the_harness_on_sandbox_runs(_isolated_home: Path):
    lab = Kubelab({"KUBELAB_HOME": str(_isolated_home)}, "sandbox")
    plan = lab.plan(LESSON)
    assert plan.lesson == LESSON and not plan.releases  # the sandbox installs no component
    assert ("VirtualService", "istio") in plan.kinds and ("Namespace", None) in plan.kinds
    try:
        first = lab.up(LESSON, timeout=120)
        assert up_problems(first, LESSON, "sandbox", plan) == []
        objects = first["changes"]["deploy"]["objects"]
        assert up_changes(first) == [
            f"deploy: {objects} changes to {objects} objects",
            f"{objects} mutating Kubernetes API calls in all",
        ]
        assert up_problems(first, LESSON, "kind", plan) == [
            "up reports istio-traffic-splitting on sandbox"
        ]

        second = lab.up(LESSON, timeout=120)
        assert up_changes(second) == []
        assert second_up_problems(first, second) == []
        assert status_problems(lab.json("status"), LESSON, "sandbox") == []
        assert status_problems(lab.json("status"), "argo-rollouts", "sandbox") == [
            f"status lists ['{LESSON}'], not argo-rollouts"
        ]

        kubeconfig = Path(first["kubeconfig"])
        assert current_server(kubeconfig) == _server_in(kubeconfig)
        assert current_context(kubeconfig)
        left = objects_left(kubeconfig, plan)
        assert "virtualservice.networking.istio.io/app-backend in istio" in left
        assert "namespace/istio" in left

        lesson = find_lesson(LESSON).lesson
        assert follow_course(lab, lesson, unavailable=NOT_IN_SANDBOX, wait=60) == []
        progress = lab.json("progress")
        assert progress["passed"] == len(lesson.exercises) - len(NOT_IN_SANDBOX)

        # After the course the VirtualService sends everything to v2: `up` leaves the
        # student's work as it is, changes nothing, and names the drift field by field.
        third = lab.up(LESSON, timeout=120)
        assert up_changes(third) == []
        assert second_up_problems(first, third) == []
        assert (
            "VirtualService istio/app-backend: spec.http[0].route[0].weight is 0, the lesson has 90"
            in (up_drift(third))
        )
        # `up --reset` puts the lesson back, and the helpers see that it changed something.
        reset = lab.up(LESSON, "--reset", timeout=120)
        assert any(
            p.startswith("second up changed: deploy:") for p in second_up_problems(first, reset)
        )

        down = lab.json("down", LESSON)
        assert removed_problems(down, LESSON, plan) == []
        kind_plan = Kubelab(lab.env, "kind").plan(LESSON)
        assert kind_plan.release_names >= {"istiod", "kiali", "gitea"}
        missing = removed_problems(down, LESSON, kind_plan)
        assert len(missing) == 1 and "down does not say it removed releases" in missing[0]
        assert lab.running() == []
    finally:
        lab.run("down", timeout=120)


def _server_in(kubeconfig: Path) -> str:
    import yaml

    config = yaml.safe_load(kubeconfig.read_text())
    servers = [c["cluster"]["server"] for c in config["clusters"]]
    assert len(servers) == 1
    return str(servers[0])


@pytest.mark.timeout(600)
def test_lesson_test_report_of_a_sandbox_run(_isolated_home: Path, tmp_path: Path):
    lab = Kubelab({"KUBELAB_HOME": str(_isolated_home)}, "sandbox")
    report_file = tmp_path / "report.json"
    try:
        proc = lab.run(
            "test",
            LESSON,
            "--provider",
            "sandbox",
            "-o",
            "json",
            "--out",
            str(report_file),
            timeout=500,
        )
    finally:
        lab.run("down", timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = parse_json_file(report_file, proc)
    exercises = [e.id for e in find_lesson(LESSON).lesson.exercises]
    assert lesson_test_problems(report, exercises, skipped=NOT_IN_SANDBOX) == []
    # On a cluster nothing may be skipped: a report with a skipped exercise fails there,
    # naming it (as the sandbox without Prometheus skips the metrics exercise).
    skipping = copy.deepcopy(report)
    skipping["exercises"][1].update(
        result="skipped",
        problems=[],
        skipped_because="needs victoria-metrics, not available on sandbox",
    )
    problems = lesson_test_problems(skipping, exercises)
    assert [p.split(":")[0] for p in problems] == ["kiali-graph"]
    assert all("not available on sandbox" in p for p in problems)
    assert lesson_test_problems(skipping, exercises, skipped={"kiali-graph"}) == []
    assert lesson_test_problems(report, exercises[::-1], skipped=NOT_IN_SANDBOX) != []


def test_a_report_that_is_not_there_is_reported_with_the_output(tmp_path: Path):
    proc = subprocess.CompletedProcess(["py", "-c", "x", "test", "l"], 4, "out", "setup failed")
    with pytest.raises(AssertionError, match=r"(?s)test l wrote no JSON report.*setup failed"):
        parse_json_file(tmp_path / "missing.json", proc)
    with pytest.raises(AssertionError, match=r"(?s)test l printed no JSON \(exit 4\).*setup"):
        parse_json(proc)


def test_releases_left_reads_helm_list_json():
    plan = Plan(
        "l",
        frozenset({("kiali", "istio-system"), ("gitea", "gitea")}),
        frozenset(),
    )
    listing = json.loads(
        '[{"name":"kiali","namespace":"istio-system","revision":"2",'
        '"updated":"2026-01-01 10:00:00.0 +0000 UTC","status":"uninstalling",'
        '"chart":"kiali-server-2.11.0","app_version":"v2.11.0"},'
        '{"name":"gitea","namespace":"other","revision":"1","updated":"",'
        '"status":"deployed","chart":"gitea-12.0.0","app_version":"1.24"}]'
    )
    assert releases_left(plan, listing) == ["helm release kiali in istio-system (uninstalling)"]
    assert releases_left(plan, []) == []


def test_a_timeout_stops_the_command_and_what_it_started(tmp_path: Path):
    child = tmp_path / "child.pid"
    # The background sleep ignores SIGINT (bash does that for `&` jobs), like a helm
    # process outliving kubelab: it must go too.
    script = f"sleep 300 & echo $! > {child}; sleep 300"
    started = time.monotonic()
    with pytest.raises(AssertionError, match="did not finish in 1s"):
        run_group(["bash", "-c", script], dict(os.environ), timeout=1)
    assert time.monotonic() - started < 30
    pid = int(child.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"  # zombies are gone
