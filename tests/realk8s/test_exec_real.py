"""Exec, and the in-mesh traffic checks built on it, through a real kube-apiserver.

The tester pod gets Istio's sidecars from a real mutating webhook (``istio-validation`` and
``istio-proxy`` beside ``curl-test``, as istiod injects them with Istio CNI), so it has the
containers it has on a real cluster.
The API server proxies each exec to the node agent's kubelet endpoint, which runs the
command on this machine with ``http_proxy`` at the mesh stand-in; the mesh routes by the
VirtualService, DestinationRule and Ready pods the API server holds, and the real
``app_backend`` answers (v1 hangs after 30 requests).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from kubelab.checks.registry import CheckContext
from kubelab.checks.result import Status
from kubelab.checks.runner import run_exercise
from kubelab.cluster.kube import Kube
from kubelab.lessons.loader import LoadedLesson, find_lesson
from kubelab.lessons.plan import render
from kubelab.providers.existing import ExistingProvider
from kubelab.validation.podsecurity import baseline_problems

LESSON = "istio-traffic-splitting"
TESTER = "curl-test"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def loaded() -> LoadedLesson:
    return find_lesson(LESSON)


@pytest.fixture(scope="module")
def lab(control_plane, mesh, loaded: LoadedLesson) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The lesson's app, as the deploy step renders it, in its own namespace."""
    namespace = "exec-lab"
    kube = control_plane.kube()
    rendered = render(loaded, namespaces={"istio": namespace})
    kube.apply_all([o.obj for o in rendered.objects])
    for version in ("v1", "v2"):
        kube.wait_rollout("Deployment", f"app-backend-{version}", namespace, timeout=60)
    kube.wait_condition("v1", "Pod", TESTER, namespace, "Ready", 60)
    yield namespace
    kube.delete("v1", "Namespace", namespace)


def context(kube: Kube) -> CheckContext:
    provider = ExistingProvider()
    return CheckContext(kube=kube, sampler=lambda spec: provider.sampler(kube, {}, spec))


def exercise(loaded: LoadedLesson, exercise_id: str, namespace: str):  # type: ignore[no-untyped-def]
    found = next(e for e in loaded.lesson.exercises if e.id == exercise_id)
    return found.in_namespace("istio", namespace)


def test_the_tester_pod_has_istios_containers(control_plane, lab: str) -> None:  # type: ignore[no-untyped-def]
    pod = control_plane.kube().get("v1", "Pod", TESTER, lab)
    assert pod is not None
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["istio-validation"]
    assert [c["name"] for c in pod["spec"]["containers"]] == [TESTER, "istio-proxy"]


def test_the_pods_the_server_admitted_meet_pod_security_baseline(control_plane, lab: str) -> None:  # type: ignore[no-untyped-def]
    """Student namespaces enforce baseline; the lesson's pods, sidecars included as the
    server stored them, must pass it (v1.20 has no PodSecurity admission to ask)."""
    pods = control_plane.kube().list("v1", "Pod", lab)
    assert len(pods) >= 3  # v1, v2 and the tester
    for pod in pods:
        assert "istio-proxy" in [c["name"] for c in pod["spec"]["containers"]]
        assert baseline_problems(pod) == [], pod["metadata"]["name"]
    # The same pods with istio-init as injected without CNI would be refused.
    without_cni = json.loads(json.dumps(pods[0]))
    without_cni["spec"]["initContainers"][0]["securityContext"] = {
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        "runAsUser": 0,
    }
    assert baseline_problems(without_cni) == [
        "spec.initContainers[0].securityContext.capabilities.add: NET_ADMIN, NET_RAW not allowed"
    ]


def test_the_real_server_refuses_exec_without_a_container_name(control_plane, lab: str) -> None:  # type: ignore[no-untyped-def]
    """What every in-mesh check hit before kubelab named the container."""
    core = client.CoreV1Api(control_plane.kube().api_client())
    with pytest.raises(ApiException) as refused:
        stream(
            core.connect_get_namespaced_pod_exec,
            TESTER,
            lab,
            command=["true"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
    # The websocket client reports the refused upgrade as status 0, the answer in `reason`.
    reason = str(refused.value.reason)
    assert reason.startswith("Handshake status 400 Bad Request")
    status = json.loads(reason.rsplit(" -+-+- ", 1)[1])
    assert status["message"] == (
        "a container name must be specified for pod curl-test, choose one of: "
        "[istio-validation curl-test istio-proxy]"
    )


def test_kube_exec_picks_the_container_kubectl_would(control_plane, lab: str) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    result = kube.exec(lab, TESTER, ["sh", "-c", "echo in $HOSTNAME"])
    assert (result.exit_code, result.stdout) == (0, f"in {TESTER}\n")
    call = control_plane.agent.execs[-1]
    assert (call.namespace, call.pod, call.container) == (lab, TESTER, TESTER)


def test_kube_exec_into_a_named_container(control_plane, lab: str) -> None:  # type: ignore[no-untyped-def]
    kube = control_plane.kube()
    result = kube.exec(lab, TESTER, ["true"], container="istio-proxy")
    assert result.exit_code == 0
    assert control_plane.agent.execs[-1].container == "istio-proxy"


def test_kube_exec_returns_exit_code_and_stderr(control_plane, lab: str) -> None:  # type: ignore[no-untyped-def]
    result = control_plane.kube().exec(lab, TESTER, ["sh", "-c", "echo out; echo oops >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "oops\n")


def test_exec_into_a_container_the_pod_lacks_names_them(control_plane, lab: str) -> None:  # type: ignore[no-untyped-def]
    from kubelab.errors import KubelabError

    with pytest.raises(KubelabError) as refused:
        control_plane.kube().exec(lab, TESTER, ["true"], container="app")
    assert "container app is not valid for pod curl-test" in refused.value.message


def test_kubectl_exec_as_the_lesson_prints_it(control_plane, lab: str) -> None:  # type: ignore[no-untyped-def]
    """The course's command, with kubectl defaulting the container as it does on Istio."""
    result = control_plane.kubectl(
        "exec",
        "-n",
        lab,
        TESTER,
        "--",
        "sh",
        "-c",
        "for i in $(seq 1 10); do curl -s --max-time 1 http://app-backend/ || echo timeout; done",
    )
    answers = result.stdout.splitlines()
    # One line per request: an answer, or "timeout" once v1 hangs (it does after 30).
    assert len(answers) == 10, answers
    assert all(a.startswith(("v1 - Request ", "v2 - Request ")) or a == "timeout" for a in answers)
    assert sum(a.startswith("v2 - ") for a in answers) == 1  # 90/10: the mesh's split is exact


def test_in_mesh_checks_follow_the_course_on_the_real_server(  # type: ignore[no-untyped-def]
    control_plane, loaded: LoadedLesson, lab: str
) -> None:
    """Exercises 1, 3, 5 and 6 through exec: each passes once its state is there, and the
    previous exercise's split no longer does."""
    kube = control_plane.kube()
    ctx = context(kube)
    before = len(control_plane.agent.execs)
    first = run_exercise(LESSON, exercise(loaded, "observe-initial-split", lab), ctx)
    assert first.status is Status.PASSED, first.to_json()

    def weights(v1: int, v2: int) -> None:
        patch = [
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": v1},
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": v2},
        ]
        patch_text = json.dumps(patch)
        control_plane.kubectl(
            "patch", "virtualservice", "app-backend", "-n", lab, "--type=json", "-p", patch_text
        )

    weights(50, 50)
    half = run_exercise(LESSON, exercise(loaded, "split-50-50", lab), ctx)
    assert half.status is Status.PASSED, half.to_json()
    again = run_exercise(LESSON, exercise(loaded, "observe-initial-split", lab), ctx)
    assert again.status is Status.FAILED

    weights(0, 100)
    rollout = run_exercise(LESSON, exercise(loaded, "rollout-v2", lab), ctx)
    assert rollout.status is Status.PASSED, rollout.to_json()
    stable = run_exercise(LESSON, exercise(loaded, "confirm-stable", lab), ctx)
    assert stable.status is Status.PASSED, stable.to_json()
    # Every request of the checks went through the real API server's exec.
    calls = control_plane.agent.execs[before:]
    assert calls and {(c.pod, c.container) for c in calls} == {(TESTER, TESTER)}


def test_a_traffic_check_fails_when_v2_has_no_pods(  # type: ignore[no-untyped-def]
    control_plane, mesh, loaded: LoadedLesson, lab: str
) -> None:
    kube = control_plane.kube()
    control_plane.kubectl("scale", "deploy/app-backend-v2", "-n", lab, "--replicas=0")
    try:
        kube.wait_for(
            lambda: not kube.list("v1", "Pod", lab, "app=app-backend,version=v2"),
            timeout=30,
            what="v2's pods to go",
        )
        time.sleep(2 * mesh.refresh)  # the mesh learns of it, as Envoy does from istiod
        outcome = run_exercise(LESSON, exercise(loaded, "rollout-v2", lab), context(kube))
        assert outcome.status is not Status.PASSED, outcome.to_json()
    finally:
        control_plane.kubectl("scale", "deploy/app-backend-v2", "-n", lab, "--replicas=1")
        kube.wait_rollout("Deployment", "app-backend-v2", lab, timeout=60)
