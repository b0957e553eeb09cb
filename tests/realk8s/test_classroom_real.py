"""A whole class on the real kube-apiserver: ``class create`` for 30 students, RBAC decided
by the real authorizer with each student's real TokenRequest token, token expiry as the
server enforces it, grading in every report format, ``class delete`` and ``down`` with real
namespace finalization, and the instructor's and students' commands in subprocesses.

The app's pods are made by the real Deployment and ReplicaSet controllers, get Istio's
sidecars from a real mutating webhook, and are Ready through the node agent. Grading a
class of 30 samples traffic with :class:`ProportionalMesh` (the VirtualService's weights,
exactly), since 30 students' worth of curl through exec would take minutes here; the
exec transport itself, with real traffic, is tested in ``test_exec_real.py`` and by the
student's own ``kubelab check`` below.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import stat
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from gradebook import check_gradebook, weighted
from support import ProportionalMesh

from kubelab.checks.mesh import ISTIO_API, route_weights
from kubelab.checks.registry import CheckContext
from kubelab.checks.result import Status
from kubelab.classroom import access, report
from kubelab.classroom.grade import GradeOptions
from kubelab.classroom.model import ClassGrade
from kubelab.classroom.service import ClassService, ClassTools, expiry_lines
from kubelab.cluster.kube import CLASS_LABEL, STUDENT_LABEL, Kube
from kubelab.errors import KubelabError, ValidationFailed
from kubelab.lessons.loader import LoadedLesson, find_lesson
from kubelab.state import LessonRecord, StateStore

LESSON = "istio-traffic-splitting"
NS = "istio"
GROUPS = {
    "done": range(1, 9),  # 0/100 and stable: everything
    "half": range(9, 17),  # 50/50: exercises 1 and 3
    "started": range(17, 23),  # 90/10 as deployed: exercise 1
    "broken": range(23, 27),  # VirtualService and DestinationRule deleted, v1 scaled to 0
    "deleted": range(27, 31),  # namespace deleted
}
GRADED = ["observe-initial-split", "split-50-50", "rollout-v2", "confirm-stable"]

pytestmark = pytest.mark.timeout(600)


def roster_text(prefix: str, count: int) -> str:
    lines = ["id,name,email"]
    lines += [f"{prefix}{n:02d},Aluno {n},aluno{n}@escola.example" for n in range(1, count + 1)]
    return "\n".join(lines) + "\n"


def lesson_record(kubeconfig: Path) -> None:
    """What `kubelab up --provider existing` leaves in the state file."""
    with StateStore().transaction() as state:
        state.lessons[LESSON] = LessonRecord(
            lesson=LESSON,
            provider="existing",
            steps_done=["preflight", "cluster", "components", "images", "deploy"],
            details={"kubeconfig": str(kubeconfig)},
        )


def class_service(
    kube: Kube,
    kubeconfig: Path,
    registry: str | None = None,
    loaded: LoadedLesson | None = None,
) -> ClassService:
    """The class service of the lesson (``loaded``: another version of it, e.g. with
    points) on ``kube``, its checks' traffic sampled by :class:`ProportionalMesh`."""
    lesson_record(kubeconfig)
    tools = ClassTools(
        kube=kube,
        admin_kubeconfig=yaml.safe_load(kubeconfig.read_text()),
        admin_context=None,
        admin_folder=kubeconfig.parent,
        registry=registry,
        pull_token=lambda: ("kubelab-admin", "read-only-pull-token"),
        context=lambda: CheckContext(
            kube, sampler=lambda spec: ProportionalMesh(kube), settle_seconds=0
        ),
        available={"istio", "victoria-metrics"},  # no Kiali, no Jaeger: two exercises skipped
    )
    return ClassService(loaded or find_lesson(LESSON), StateStore(), tools)


def set_weights(kube: Kube, namespace: str, v1: int, v2: int) -> None:
    vs = kube.get(ISTIO_API, "VirtualService", "app-backend", namespace)
    assert vs is not None
    for dest in vs["spec"]["http"][0]["route"]:
        dest["weight"] = v1 if dest["destination"]["subset"] == "v1" else v2
    meta = {"name": "app-backend", "namespace": namespace}
    kube.apply(
        {"apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": meta, "spec": vs["spec"]}
    )


def wait_for_class_pods(kube: Kube, namespaces: Iterable[str]) -> None:
    for ns in namespaces:
        for version in ("v1", "v2"):
            kube.wait_rollout("Deployment", f"app-backend-{version}", ns, timeout=120)
        kube.wait_condition("v1", "Pod", "curl-test", ns, "Ready", 120)


def wait_gone(kube: Kube, namespaces: Iterable[str], timeout: float = 120) -> None:
    left = set(namespaces)
    kube.wait_for(
        lambda: not [n for n in left if kube.get("v1", "Namespace", n) is not None],
        timeout=timeout,
        what=f"namespaces {', '.join(sorted(left))} to finalize",
    )


def _normal(message: str) -> str:
    message = re.sub(r"app-backend-v[12]-[a-z0-9]+-[a-z0-9]+", "POD", message)
    return re.sub(r"\(\d+(\.\d+)?s\)", "(TIME)", message)  # how long a check took


def summary(grade: ClassGrade) -> dict[str, Any]:
    """Per student and exercise: status and each check's status and message, with the
    names the two APIs give differently (pod names) taken out."""
    out: dict[str, Any] = {}
    for student in grade.students:
        out[student.id] = {
            "status": str(student.status),
            "passed": student.passed,
            "error": student.error,
            "exercises": {
                e.exercise: [(str(c.status), _normal(c.message)) for c in e.checks]
                for e in student.exercises
            },
        }
    return out


def test_thirty_students_graded_in_every_format_then_deleted(  # type: ignore[no-untyped-def]
    control_plane, mesh, tmp_path: Path, _isolated_home: Path
) -> None:
    kube = control_plane.kube()
    prefix = "t"
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text(prefix, 30))
    # Exercises worth 2, 3, 4 and 1 points, some checks worth more than others.
    service = class_service(kube, control_plane.kubeconfig, loaded=weighted(find_lesson(LESSON)))
    out = tmp_path / "kubeconfigs"
    record = service.create(roster, out, hours=8)
    assert len(record.students) == 30
    namespaces = [f"{NS}-{prefix}{n:02d}" for n in range(1, 31)]
    first = kube.get("v1", "Namespace", namespaces[0])
    assert first is not None
    labels = first["metadata"]["labels"]
    assert labels["istio-injection"] == "enabled"
    assert labels[CLASS_LABEL] == LESSON and labels[STUDENT_LABEL] == f"{prefix}01"
    vs = kube.get(ISTIO_API, "VirtualService", "app-backend", namespaces[0])
    assert vs is not None and route_weights(vs)[0] == {"v1": 90, "v2": 10}
    assert kube.get(ISTIO_API, "Gateway", "app-backend-gateway", namespaces[0]) is None
    for path in out.glob("*.kubeconfig"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    wait_for_class_pods(kube, namespaces)
    pod = kube.list("v1", "Pod", namespaces[0], "app=app-backend,version=v1")[0]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app-backend", "istio-proxy"]

    # A second create changes nothing (resume after an interruption).
    before = kube.mutations
    service.create(roster, out, hours=8)
    tokens_only = kube.mutations - before
    assert tokens_only == 0

    build_states(control_plane, kube, prefix)
    told: list[tuple[int, int]] = []
    grade = service.grade(
        service.students(),
        GradeOptions(concurrency=16, on_student=lambda done, total: told.append((done, total))),
    )
    # Progress: once per student, up to the whole class.
    assert len(told) == 30 and told[-1] == (30, 30) and {t for _, t in told} == {30}
    assert [e for e, _ in grade.exercises] == GRADED
    assert set(grade.skipped) == {"kiali-graph", "jaeger-traces"}
    by_id = {s.id: s for s in grade.students}
    expected_passed = {"done": 4, "half": 2, "started": 1, "broken": 0, "deleted": 0}
    for group, numbers in GROUPS.items():
        for n in numbers:
            student = by_id[f"{prefix}{n:02d}"]
            assert student.passed == expected_passed[group], (group, student.to_json(4))
    half = by_id[f"{prefix}09"]
    assert half.exercise("split-50-50").checks_status is Status.PASSED
    assert half.exercise("rollout-v2").status is Status.FAILED
    assert "v1 gets 50%, expected 0%" in " ".join(
        c.message for c in half.exercise("rollout-v2").checks
    )
    broken = by_id[f"{prefix}23"]
    assert broken.status is Status.FAILED
    messages = " ".join(c.message for e in broken.exercises for c in e.checks)
    assert f"VirtualService {NS}-{prefix}23/app-backend does not exist" in messages
    gone = by_id[f"{prefix}27"]
    assert gone.status is Status.ERROR
    assert gone.error and f"namespace {NS}-{prefix}27 does not exist" in gone.error

    data = grade.to_json()
    assert data["summary"]["students"] == 30 and data["summary"]["completed"] == 8
    assert data["summary"]["errors"] == 4
    assert data["summary"]["per_exercise"]["split-50-50"]["passed"] == 16
    assert ClassGrade.from_json(json.loads(json.dumps(data))).to_json() == data
    # Points: superseded exercises count in full; the broken namespaces keep the sidecar
    # check's share (1 of 6 check points) of the first exercise's 2 points.
    assert [e["points"] for e in data["exercises"]] == [2.0, 3.0, 4.0, 1.0]
    expected_points = {"done": 10.0, "half": 5.0, "started": 2.0, "broken": 0.3333, "deleted": 0}
    for group, numbers in GROUPS.items():
        for n in numbers:
            score = by_id[f"{prefix}{n:02d}"].to_json(4, grade.possible)["score"]
            assert (score["points"], score["possible"]) == (expected_points[group], 10), (
                group,
                score,
            )
    assert data["summary"]["mean_percent"] == round(
        (8 * 100 + 8 * 50 + 6 * 20 + 4 * 10 / 3) / 30, 4
    )
    # The gradebook of every LMS says what the JSON says, student by student.
    for lms in report.LMS:
        points = check_gradebook(report.gradebook_csv(grade, lms), data, lms)
        assert list(points[f"{prefix}01"].values()) == [2, 3, 4, 1]
        assert points[f"{prefix}23"]["observe-initial-split"] == 0.33
    root = ET.fromstring(report.junit(grade))
    assert len(root.findall("testsuite")) == 30
    first = {p.get("name"): p.get("value") for p in root.find("testsuite").iter("property")}
    assert (first["points_earned"], first["points_possible"], first["percent"]) == (
        "10",
        "10",
        "100",
    )
    page = report.html_report(grade)
    assert (
        page.startswith("<!doctype html>") and f"namespace {NS}-{prefix}27 does not exist" in page
    )

    # Delete: every namespace finalizes for real (pods, ReplicaSets, Secrets go with it).
    removed = service.delete()
    assert sum(line.startswith("deleted namespace") for line in removed) == 26
    wait_gone(kube, namespaces)
    assert not list(out.glob("*.kubeconfig"))
    assert LESSON not in StateStore().load().classes
    assert kube.list("v1", "Namespace", label_selector=f"{CLASS_LABEL}={LESSON}") == []

    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(report.table(grade))
    text = console.export_text()
    assert f"{prefix}01 Aluno 1" in text and "10/10 100%" in text and "5/10 50%" in text
    html_file = tmp_path / "report.html"
    html_file.write_text(page)
    screenshot(html_file, tmp_path / "report.png")


def build_states(control_plane, kube: Kube, prefix: str) -> None:  # type: ignore[no-untyped-def]
    for group, numbers in GROUPS.items():
        for n in numbers:
            ns = f"{NS}-{prefix}{n:02d}"
            if group == "deleted":
                assert kube.delete("v1", "Namespace", ns)
            elif group == "done":
                set_weights(kube, ns, 0, 100)
            elif group == "half":
                set_weights(kube, ns, 50, 50)
            elif group == "broken":
                assert kube.delete(ISTIO_API, "VirtualService", "app-backend", ns)
                assert kube.delete(ISTIO_API, "DestinationRule", "app-backend", ns)
                control_plane.kubectl("scale", "deploy/app-backend-v1", "-n", ns, "--replicas=0")
    # A real namespace takes a while to finalize (grading meanwhile says it "is being
    # deleted"); the deleted group is graded once it is gone.
    wait_gone(kube, [f"{NS}-{prefix}{n:02d}" for n in GROUPS["deleted"]])
    for n in GROUPS["broken"]:
        ns = f"{NS}-{prefix}{n:02d}"
        kube.wait_for(
            lambda ns=ns: not kube.list("v1", "Pod", ns, "app=app-backend,version=v1"),
            timeout=60,
            what=f"v1's pods in {ns} to go",
        )


# -- what a student may do: a can-i matrix from the real authorizer ------------------------

#: (what, method, path, body or None, expected status). {ns} is the student's namespace,
#: {other} another student's. Bodies are minimal but valid, so 403 means "forbidden", not
#: "malformed".
MATRIX: list[tuple[str, str, str, Any, int]] = [
    ("read own VirtualService", "GET",
     "/apis/networking.istio.io/v1beta1/namespaces/{ns}/virtualservices/app-backend", None, 200),
    ("change own split", "PATCH",
     "/apis/networking.istio.io/v1beta1/namespaces/{ns}/virtualservices/app-backend",
     {"metadata": {"annotations": {"note": "50-50 next"}}}, 200),
    ("read own DestinationRule", "GET",
     "/apis/networking.istio.io/v1beta1/namespaces/{ns}/destinationrules/app-backend", None, 200),
    ("list own pods", "GET", "/api/v1/namespaces/{ns}/pods", None, 200),
    ("read own pod logs", "GET", "/api/v1/namespaces/{ns}/pods/curl-test/log?container=curl-test",
     None, 200),
    ("list own services", "GET", "/api/v1/namespaces/{ns}/services", None, 200),
    ("read own deployments", "GET", "/apis/apps/v1/namespaces/{ns}/deployments", None, 200),
    ("lift own quota", "PATCH", "/api/v1/namespaces/{ns}/resourcequotas/student",
     {"spec": {"hard": {"pods": "1000"}}}, 403),
    ("delete own quota", "DELETE", "/api/v1/namespaces/{ns}/resourcequotas/student", None, 403),
    ("delete own limit range", "DELETE", "/api/v1/namespaces/{ns}/limitranges/student", None,
     403),
    # No exercise of this lesson changes a Deployment: the Role does not let students.
    ("restart own deployment", "PATCH", "/apis/apps/v1/namespaces/{ns}/deployments/app-backend-v2",
     {"spec": {"template": {"metadata": {"annotations": {"restarted": "now"}}}}}, 403),
    ("make own deployment privileged", "PATCH",
     "/apis/apps/v1/namespaces/{ns}/deployments/app-backend-v1",
     {"spec": {"template": {"spec": {"containers": [
         {"name": "app-backend", "securityContext": {"privileged": True}}]}}}}, 403),
    ("scale own deployment", "PATCH",
     "/apis/apps/v1/namespaces/{ns}/deployments/app-backend-v1/scale",
     {"spec": {"replicas": 1000}}, 403),
    ("mount the node's disk in a pod", "POST", "/api/v1/namespaces/{ns}/pods",
     {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "h"},
      "spec": {"containers": [{"name": "h", "image": "busybox"}],
               "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}, 403),
    ("open own namespace to everyone", "DELETE",
     "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/student", None, 403),
    ("drop own mesh isolation", "DELETE",
     "/apis/security.istio.io/v1/namespaces/{ns}/authorizationpolicies/student", None, 403),
    ("lift own Pod Security labels", "PATCH", "/api/v1/namespaces/{ns}",
     {"metadata": {"labels": {"pod-security.kubernetes.io/warn": "privileged"}}}, 403),
    ("read own events", "GET", "/api/v1/namespaces/{ns}/events", None, 200),
    ("read another student's VirtualService", "GET",
     "/apis/networking.istio.io/v1beta1/namespaces/{other}/virtualservices/app-backend", None, 403),
    ("change another student's split", "PATCH",
     "/apis/networking.istio.io/v1beta1/namespaces/{other}/virtualservices/app-backend",
     {"metadata": {"annotations": {"note": "x"}}}, 403),
    ("list another student's pods", "GET", "/api/v1/namespaces/{other}/pods", None, 403),
    ("delete another student's pod", "DELETE", "/api/v1/namespaces/{other}/pods/curl-test", None,
     403),
    ("read own Secrets", "GET", "/api/v1/namespaces/{ns}/secrets", None, 403),
    ("read the Gitea admin Secret", "GET", "/api/v1/namespaces/gitea/secrets/gitea-admin", None,
     403),
    ("list namespaces", "GET", "/api/v1/namespaces", None, 403),
    ("delete another student's namespace", "DELETE", "/api/v1/namespaces/{other}", None, 403),
    ("delete own namespace", "DELETE", "/api/v1/namespaces/{ns}", None, 403),
    ("list nodes", "GET", "/api/v1/nodes", None, 403),
    ("list pods everywhere", "GET", "/api/v1/pods", None, 403),
    ("create a pod", "POST", "/api/v1/namespaces/{ns}/pods",
     {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
      "spec": {"containers": [{"name": "x", "image": "busybox"}]}}, 403),
    ("change a ConfigMap", "POST", "/api/v1/namespaces/{ns}/configmaps",
     {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, 403),
    ("bind cluster-admin to oneself", "POST",
     "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
     {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
      "metadata": {"name": "me-admin"},
      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                  "name": "cluster-admin"},
      "subjects": [{"kind": "ServiceAccount", "name": "student", "namespace": "{ns}"}]}, 403),
    ("grant oneself a Role in own namespace", "POST",
     "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
     {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
      "metadata": {"name": "me-edit"},
      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
      "subjects": [{"kind": "ServiceAccount", "name": "student", "namespace": "{ns}"}]}, 403),
    ("mint a new token", "POST", "/api/v1/namespaces/{ns}/serviceaccounts/student/token",
     {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
      "spec": {"expirationSeconds": 86400}}, 403),
    ("install a CRD", "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
     {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
      "metadata": {"name": "xs.evil.example"}}, 403),
]  # fmt: skip


def _fill(value: Any, ns: str, other: str) -> Any:
    text = json.dumps(value).replace("{ns}", ns).replace("{other}", other)
    return json.loads(text)


def token_of(kubeconfig: Path) -> str:
    return str(yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"])


def test_student_rbac_matrix_from_the_real_authorizer(  # type: ignore[no-untyped-def]
    control_plane, mesh, tmp_path: Path, _isolated_home: Path
) -> None:
    kube = control_plane.kube()
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text("m", 2))
    service = class_service(kube, control_plane.kubeconfig)
    record = service.create(roster, tmp_path / "kc", hours=2)
    mine, other = f"{NS}-m01", f"{NS}-m02"
    try:
        wait_for_class_pods(kube, [mine, other])
        token = token_of(Path(record.students[0].kubeconfig or ""))
        session = requests.Session()
        session.trust_env = False
        session.verify = str(control_plane.plane.ca_file)
        session.headers["Authorization"] = f"Bearer {token}"
        answers = []
        for what, method, path, body, expected in MATRIX:
            url = control_plane.plane.server + _fill(path, mine, other)
            kwargs: dict[str, Any] = {"timeout": 15}
            if body is not None:
                kwargs["data"] = json.dumps(_fill(body, mine, other))
                kwargs["headers"] = {
                    "Content-Type": "application/merge-patch+json"
                    if method == "PATCH"
                    else "application/json"
                }
            got = session.request(method, url, **kwargs).status_code
            answers.append((what, got, expected))
        wrong = [(what, got, expected) for what, got, expected in answers if got != expected]
        assert wrong == [], wrong
        assert len(answers) >= 15
        assert sum(expected == 403 for *_, expected in answers) >= 10
        student_config = Path(record.students[0].kubeconfig or "")
        # kubectl auth can-i (a SelfSubjectAccessReview) agrees with what happened.
        for args, want in [
            (["patch", "virtualservices.networking.istio.io", "-n", mine], "yes"),
            (["create", "pods", "--subresource=exec", "-n", mine], "yes"),
            (["get", "secrets", "-n", mine], "no"),
            (["get", "virtualservices.networking.istio.io", "-n", other], "no"),
            (["create", "serviceaccounts", "--subresource=token", "-n", mine], "no"),
            (["create", "pods", "--subresource=exec", "-n", other], "no"),
        ]:
            result = control_plane.kubectl(
                "auth", "can-i", *args, kubeconfig=student_config, check=False
            )
            assert result.stdout.strip() == want, (args, result.stderr)
        # The exercises' own commands work with the student's kubeconfig.
        result = control_plane.kubectl(
            "exec", "-n", mine, "curl-test", "--", "curl", "-s", "--max-time", "2",
            "http://app-backend/", kubeconfig=student_config,
        )  # fmt: skip
        assert re.match(r"v[12] - Request \d+", result.stdout)

        # sidecar-injected with the student's own credentials, which cannot read their
        # Namespace: judged by the pods, so a pod without the sidecar still fails it.
        from kubelab.checks.runner import run_check
        from kubelab.checks.types import SidecarInjected

        spec = SidecarInjected(namespace=mine, selector="app=app-backend")
        as_student = CheckContext(Kube(student_config), sampler=lambda spec: ProportionalMesh(kube))
        passed = run_check(spec, as_student)
        assert passed.status is Status.PASSED, passed
        assert passed.evidence["namespace_labels"] == "not readable with these credentials"
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "no-sidecar",
                    "namespace": mine,
                    # Istio's opt-out label: the injector leaves this pod alone.
                    "labels": {
                        "app": "app-backend",
                        "version": "v3",
                        "sidecar.istio.io/inject": "false",
                    },
                },
                "spec": {"containers": [{"name": "app", "image": "app-backend:v3"}]},
            }
        )
        failed = run_check(spec, as_student)
        assert failed.status is Status.FAILED
        assert "pods without the istio-proxy sidecar: no-sidecar" in failed.message

        # `replicas: 1000` (what a student of a lesson that patches Deployments could ask,
        # made here as the instructor): the namespace's quota holds the pods.
        hard = int(access.QUOTA_HARD["pods"])
        control_plane.kubectl("scale", "deploy/app-backend-v2", "-n", mine, "--replicas=1000")
        # The refusal shows in the ReplicaSet's ReplicaFailure condition (kept in its
        # status) and in a FailedCreate event (best effort: events may be dropped).
        deadline = time.monotonic() + 90
        refused: list[str] = []
        seen: list[str] = []
        while not refused and time.monotonic() < deadline:
            time.sleep(1)
            seen = [
                f"{c.get('type')}: {c.get('message')}"
                for rs in kube.list("apps/v1", "ReplicaSet", mine)
                for c in (rs.get("status") or {}).get("conditions") or []
            ]
            seen += [
                f"event {e.get('reason')}: {e.get('message')}"
                for e in kube.list("v1", "Event", mine)
                if e.get("type") == "Warning"
            ]
            refused = [line for line in seen if "exceeded quota" in line]
        quota = kube.get("v1", "ResourceQuota", "student", mine) or {}
        assert refused, (
            "the ReplicaSet controller was never refused by the quota",
            seen[-10:],
            quota.get("status"),
            len(kube.list("v1", "Pod", mine)),
        )
        assert len(kube.list("v1", "Pod", mine)) <= hard
        quota = kube.get("v1", "ResourceQuota", "student", mine) or {}
        assert int(quota["status"]["used"]["pods"]) <= hard
        # A pod without resources gets the LimitRange's requests (the quota needs them).
        pod = kube.get("v1", "Pod", "curl-test", mine) or {}
        requests_ = pod["spec"]["containers"][0]["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests_), requests_
    finally:
        service.delete()
        wait_gone(kube, [mine, other])


# -- tokens -------------------------------------------------------------------------------------


def forge_token(plane: Any, real_token: str, expires: dt.datetime) -> str:
    """The student's token with another expiry, signed with the cluster's own
    ServiceAccount key: what the same TokenRequest would have returned earlier."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    header, payload, _ = real_token.split(".")
    claims = json.loads(unb64(payload))
    claims["exp"] = int(expires.timestamp())
    claims["iat"] = claims["nbf"] = int((expires - dt.timedelta(hours=1)).timestamp())
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}".encode()
    signature = plane.sa_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(signature)}"


def test_student_tokens_expire_and_kubelab_says_what_to_do(  # type: ignore[no-untyped-def]
    control_plane, upstream_crds, tmp_path: Path, _isolated_home: Path
) -> None:
    kube = control_plane.kube()
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text("x", 2))
    service = class_service(kube, control_plane.kubeconfig)
    record = service.create(roster, tmp_path / "kc", hours=2)
    try:
        config_path = Path(record.students[0].kubeconfig or "")
        config = yaml.safe_load(config_path.read_text())
        assert config["contexts"][0]["context"]["namespace"] == f"{NS}-x01"
        assert "client-key-data" not in config_path.read_text()  # no admin credentials
        # The expiry written is the one the real TokenRequest answered (2 hours).
        expires = dt.datetime.strptime(
            record.students[0].token_expires or "", "%Y-%m-%dT%H:%M:%SZ"
        ).replace(tzinfo=dt.UTC)
        left = expires - dt.datetime.now(dt.UTC)
        assert dt.timedelta(minutes=115) < left <= dt.timedelta(hours=2)
        assert Kube(config_path).get(ISTIO_API, "VirtualService", "app-backend", f"{NS}-x01")

        # The same token, an hour past its expiry: the real server answers 401, and the
        # kubeconfig says when it expired and who renews it.
        past = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
        expired = tmp_path / "expired.kubeconfig"
        config["users"][0]["user"]["token"] = forge_token(
            control_plane.plane, token_of(config_path), past
        )
        config["extensions"][0]["extension"]["expires"] = past.strftime("%Y-%m-%dT%H:%M:%SZ")
        expired.write_text(yaml.safe_dump(config))
        with pytest.raises(KubelabError) as info:
            Kube(expired).get("v1", "Namespace", f"{NS}-x01")
        assert info.value.message == (
            f"your class kubeconfig {expired} (student x01) expired at {past:%Y-%m-%d %H:%M} UTC"
        )
        assert info.value.hint == (
            "Ask your instructor for a new one: `kubelab class kubeconfigs --student x01`."
        )
        assert expiry_lines(service.record(), at=expires + dt.timedelta(minutes=1)) == [
            f"x01: kubeconfig expired at {record.students[0].token_expires}",
            f"x02: kubeconfig expired at {record.students[1].token_expires}",
        ]

        # The class re-created (its ServiceAccount is new): the old token, still within its
        # lifetime, is refused; kubelab says both. (Student x02, whose token has not been
        # used yet: the API server caches a token it accepted for 10 seconds.)
        second = Path(record.students[1].kubeconfig or "")
        kube.delete("v1", "ServiceAccount", "student", f"{NS}-x02")
        kube.wait_for(
            lambda: kube.get("v1", "ServiceAccount", "student", f"{NS}-x02") is None,
            timeout=10,
            what="the ServiceAccount to go",
        )
        service.create(roster, tmp_path / "kc-again", hours=2)
        with pytest.raises(KubelabError) as info:
            Kube(second).get(ISTIO_API, "VirtualService", "app-backend", f"{NS}-x02")
        assert "refused the token" in info.value.message
        assert "(student x02)" in info.value.message and "valid until" in info.value.message

        renewed = service.renew(hours=2, only=["x02"])
        fresh = Path(next(s for s in renewed.students if s.id == "x02").kubeconfig or "")
        assert Kube(fresh).get(ISTIO_API, "VirtualService", "app-backend", f"{NS}-x02")
    finally:
        service.delete()
        wait_gone(kube, [f"{NS}-x01", f"{NS}-x02"])


# -- the same class graded on the real server and on the emulator --------------------------


def test_grades_on_the_real_server_and_the_emulator_are_the_same(  # type: ignore[no-untyped-def]
    control_plane, mesh, tmp_path: Path, _isolated_home: Path
) -> None:
    """One roster, the same students' states, graded on both APIs: identical results. The
    emulator has no controllers, so its pods are recorded as the real ones came out."""
    from kubelab.sandbox import resources
    from kubelab.sandbox.threaded import ThreadedApi

    prefix = "e"
    count = 10
    groups = {"done": range(1, 3), "half": range(3, 5), "started": range(5, 7),
              "broken": range(7, 9), "deleted": range(9, 11)}  # fmt: skip
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text(prefix, count))

    def grade_on(
        name: str, kube: Kube, kubeconfig: Path, record_pods: Any, broken_pods: Any
    ) -> dict[str, Any]:
        service = class_service(kube, kubeconfig, loaded=weighted(find_lesson(LESSON)))
        service.create(roster, tmp_path / f"kc-{name}", hours=2)
        record_pods(kube)
        for group, numbers in groups.items():
            for n in numbers:
                ns = f"{NS}-{prefix}{n:02d}"
                if group == "deleted":
                    kube.delete("v1", "Namespace", ns)
                elif group == "done":
                    set_weights(kube, ns, 0, 100)
                elif group == "half":
                    set_weights(kube, ns, 50, 50)
                elif group == "broken":
                    kube.delete(ISTIO_API, "VirtualService", "app-backend", ns)
                    kube.delete(ISTIO_API, "DestinationRule", "app-backend", ns)
                    # scale v1 to 0: the Deployment keeps no pod of v1
                    dep = kube.get("apps/v1", "Deployment", "app-backend-v1", ns)
                    assert dep is not None
                    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": {"name": "app-backend-v1", "namespace": ns},
                                "spec": {"replicas": 0}}, field_manager="student")  # fmt: skip
        broken_pods(kube)
        grade = service.grade(service.students(), GradeOptions(concurrency=8))
        result = summary(grade)
        # The gradebooks too: the same points, cell by cell, on both APIs.
        result["gradebooks"] = {lms: report.gradebook_csv(grade, lms) for lms in report.LMS}
        for lms, text in result["gradebooks"].items():
            check_gradebook(text, grade.to_json(), lms)
        service.delete()
        return result

    real_pods: dict[str, list[dict[str, Any]]] = {}
    admin = control_plane.kube()

    def wait_real(kube: Kube) -> None:
        namespaces = [f"{NS}-{prefix}{n:02d}" for n in range(1, count + 1)]
        wait_for_class_pods(kube, namespaces)
        for ns in namespaces:
            real_pods[ns] = kube.list("v1", "Pod", ns)

    def broken_real(kube: Kube) -> None:
        wait_gone(kube, [f"{NS}-{prefix}{n:02d}" for n in groups["deleted"]])
        for n in groups["broken"]:
            ns = f"{NS}-{prefix}{n:02d}"
            kube.wait_for(
                lambda ns=ns: not kube.list("v1", "Pod", ns, "app=app-backend,version=v1"),
                timeout=60,
                what="v1 scaled to 0",
            )

    on_real = grade_on("real", admin, control_plane.kubeconfig, wait_real, broken_real)
    wait_gone(admin, list(real_pods))

    (tmp_path / "emulator").mkdir()
    emulated = ThreadedApi(tmp_path / "emulator")
    try:

        def record_like_real(kube: Kube) -> None:
            for ns, pods in real_pods.items():
                for pod in pods:
                    meta = pod["metadata"]
                    if kube.get("v1", "Pod", meta["name"], ns) is not None:
                        # The tester pod kubelab applied itself: only its status is missing.
                        update = emulated.store.update_status
                        emulated.call(update, resources.PODS, ns, meta["name"], pod["status"])
                        continue
                    emulated.record(
                        resources.PODS,
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {"name": meta["name"], "namespace": ns,
                                         "labels": meta.get("labels") or {},
                                         "annotations": meta.get("annotations") or {}},
                            "spec": pod["spec"],
                            "status": pod["status"],
                        },
                    )  # fmt: skip

        def broken_emulated(kube: Kube) -> None:
            # What the ReplicaSet controller did on the real server: v1's pods deleted.
            for n in groups["broken"]:
                ns = f"{NS}-{prefix}{n:02d}"
                for pod in kube.list("v1", "Pod", ns, "app=app-backend,version=v1"):
                    kube.delete("v1", "Pod", pod["metadata"]["name"], ns)

        on_emulator = grade_on(
            "emulator", emulated.kube(), emulated.kubeconfig, record_like_real, broken_emulated
        )
    finally:
        emulated.close()
    assert on_emulator == on_real
    gradebooks = on_real.pop("gradebooks")
    assert {s["passed"] for s in on_real.values()} == {0, 1, 2, 4}
    assert "Final Points" in gradebooks["canvas"] and len(gradebooks["moodle"].split("\r\n")) == 12


# -- the commands an instructor and a student type ------------------------------------------------


def test_cli_class_lifecycle_and_a_students_own_check(  # type: ignore[no-untyped-def]
    control_plane, mesh, tmp_path: Path, _isolated_home: Path
) -> None:
    """`kubelab class ...`, `grade` and a student's `class join` / `exercise` / `check` in
    subprocesses against the real server. The student's check sends real traffic: exec in
    their tester pod with their own token, through the mesh stand-in."""
    from support import run_cli as run

    # Every credential kubelab reads, marked: no output, report or file of the class's
    # lifecycle and grading may hold one, nor the admin's client key.
    marks = {
        "HCLOUD_TOKEN": "mark-hcloud-3e1f07",
        "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/mark-google-8c2d55.json",
        "CLOUDSDK_CONFIG": "/nonexistent/mark-gcloud-41aa90",
    }
    outputs: list[str] = []

    def run_cli(*args: str, env: dict[str, str], **kwargs: Any) -> Any:
        proc = run(*args, env={**marks, **env}, **kwargs)
        outputs.append(proc.stdout + proc.stderr)
        return proc

    kube = control_plane.kube()
    lesson_record(control_plane.kubeconfig)
    env = {"KUBELAB_HOME": str(_isolated_home)}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,email\nc01,Ana,ana@x.org\nC 02,Bia,bia@x\n")
    proc = run_cli("class", "create", LESSON, "--roster", str(bad), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "bad.csv:3: id 'C 02' must be lowercase" in proc.stderr
    assert "Traceback" not in proc.stderr

    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text("c", 3))
    out = tmp_path / "kc"
    namespaces = [f"{NS}-c0{n}" for n in (1, 2, 3)]
    try:
        proc = run_cli(
            "class", "create", LESSON, "--roster", str(roster), "--out", str(out), env=env,
            timeout=180,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "3 students" in proc.stdout
        admin_key = yaml.safe_load(control_plane.kubeconfig.read_text())["users"][0]["user"]
        assert admin_key["client-key-data"] not in proc.stdout + proc.stderr
        assert sorted(p.name for p in out.iterdir()) == [f"c0{n}.kubeconfig" for n in (1, 2, 3)]
        wait_for_class_pods(kube, namespaces)

        proc = run_cli("class", "status", "-o", "json", env=env)
        assert proc.returncode == 0, proc.stderr
        status = json.loads(proc.stdout)
        assert [s["namespace"] for s in status["students"]] == namespaces
        assert status["warnings"] == []

        report_file = tmp_path / "grades.xml"
        proc = run_cli("grade", "-o", "junit", "--out", str(report_file), env=env, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr
        assert "graded 3/3" in proc.stderr  # progress, a line per tenth of the class
        suites = ET.parse(report_file).getroot().findall("testsuite")
        assert [s.get("id") for s in suites] == ["c01", "c02", "c03"]
        page = tmp_path / "g.html"
        proc = run_cli("grade", "-o", "html", "--out", str(page), env=env, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr
        assert "2 snapshot(s)" in page.read_text()
        # The gradebook CSV, through the CLI: what the snapshot of the same run says.
        gradebook = tmp_path / "grades.csv"
        proc = run_cli(
            "grade", "-o", "csv", "--lms", "canvas", "--out", str(gradebook), env=env,
            timeout=300,
        )  # fmt: skip
        assert proc.returncode in (0, 1), proc.stderr
        assert f"csv report written to {gradebook}" in proc.stderr
        from kubelab.classroom.service import load_history

        snapshot = load_history(LESSON)[-1].to_json()
        assert len(load_history(LESSON)) == 3
        text = gradebook.read_bytes().decode("utf-8")
        points = check_gradebook(text, snapshot, "canvas")
        assert list(points) == ["c01", "c02", "c03"]
        # The lesson as it is: every exercise worth 1 point (no `points:` in it).
        assert {e["points"] for e in snapshot["exercises"]} == {1.0}
        proc = run_cli("grade", "-o", "csv", "--no-save", env=env, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr
        assert proc.stdout.splitlines()[0].startswith("id,name,email,observe-initial-split,")

        # A student's machine: their own kubelab home and only their kubeconfig.
        student_env = {"KUBELAB_HOME": str(tmp_path / "student-home")}
        proc = run_cli("class", "join", str(out / "c02.kubeconfig"), env=student_env)
        assert proc.returncode == 0, proc.stderr
        assert "as c02" in proc.stdout and f"namespace {NS}-c02" in proc.stdout
        proc = run_cli("exercise", "-o", "json", env=student_env)
        assert proc.returncode == 0, proc.stderr
        text = json.loads(proc.stdout)["instructions"]
        assert f"-n {NS}-c02" in text and "-n istio " not in text
        proc = run_cli("check", "observe-initial-split", "-o", "json", env=student_env, timeout=180)
        outcome = json.loads(proc.stdout)
        checks = {c["id"]: c for c in outcome["checks"]}
        assert outcome["status"] == "passed", json.dumps(outcome, indent=1)
        assert proc.returncode == 0
        assert f"{NS}-c02/app-backend" in checks["virtualservice-weights"]["message"]
        assert checks["traffic-split"]["status"] == "passed"
        # Real exec with the student's own identity went into their tester pod only.
        calls = [c for c in control_plane.agent.execs if c.namespace == f"{NS}-c02"]
        assert calls and {(c.pod, c.container) for c in calls} == {("curl-test", "curl-test")}

        secrets = [*marks.values(), admin_key["client-key-data"]]
        for folder in (tmp_path, _isolated_home):
            for path in folder.rglob("*"):
                if path.is_file():
                    text = path.read_bytes().decode(errors="replace")
                    assert not [m for m in secrets if m in text], path
        assert len(outputs) >= 8
        assert not [m for m in secrets for text in outputs if m in text]

        proc = run_cli("class", "delete", LESSON, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("deleted namespace") == 3
        assert not list(out.iterdir())
        wait_gone(kube, namespaces)
    finally:
        for ns in namespaces:
            kube.delete("v1", "Namespace", ns)


def test_lesson_down_takes_its_class_with_it(  # type: ignore[no-untyped-def]
    control_plane, upstream_crds, tmp_path: Path, _isolated_home: Path
) -> None:
    from kubelab.lessons.runner import LessonRunner
    from kubelab.providers.existing import ExistingProvider

    kube = control_plane.kube()
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text("d", 2))
    service = class_service(kube, control_plane.kubeconfig)
    record = service.create(roster, tmp_path / "kc", hours=2)
    store = StateStore()
    runner = LessonRunner(find_lesson(LESSON), ExistingProvider(control_plane.kubeconfig), store)
    state = store.load()
    lines = runner._remove_class(state, dict(state.lessons[LESSON].details))
    assert lines == ["class of 2 students (namespaces, kubeconfig files)"]
    # delete_by_label waited for the real namespace controller to finish.
    assert kube.get("v1", "Namespace", f"{NS}-d01") is None
    assert kube.get("v1", "Namespace", f"{NS}-d02") is None
    assert not any(Path(s.kubeconfig or "").exists() for s in record.students)
    assert LESSON not in store.load().classes


def test_a_roster_id_cannot_take_over_an_existing_namespace(  # type: ignore[no-untyped-def]
    control_plane, upstream_crds, tmp_path: Path, _isolated_home: Path
) -> None:
    kube = control_plane.kube()
    taken = f"{NS}-system"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": taken}})
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email\nana,Ana,ana@x.org\nsystem,Sys,sys@x.org\n")
    service = class_service(kube, control_plane.kubeconfig)
    try:
        with pytest.raises(ValidationFailed) as info:
            service.create(roster, tmp_path / "kc", hours=2)
        assert info.value.details == [
            f"{roster}:3: namespace {taken} already exists and is not system's class "
            "namespace: use another id"
        ]
        assert kube.get("v1", "Namespace", f"{NS}-ana") is None  # nothing created
        # Even if somebody labels it by hand, delete removes only the class's students.
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": taken, "labels": {CLASS_LABEL: LESSON}},
            }
        )
        roster.write_text("id,name,email\nana,Ana,ana@x.org\n")
        service.create(roster, tmp_path / "kc", hours=2)
        assert service.delete()[0] == f"deleted namespace {NS}-ana"
        assert kube.get("v1", "Namespace", taken) is not None
    finally:
        kube.delete("v1", "Namespace", taken)
        wait_gone(kube, [f"{NS}-ana", taken])


def test_students_pull_with_a_read_only_token(  # type: ignore[no-untyped-def]
    control_plane, upstream_crds, tmp_path: Path, _isolated_home: Path
) -> None:
    kube = control_plane.kube()
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text("p", 1))
    service = class_service(kube, control_plane.kubeconfig, registry="gitea.course.example")
    service.create(roster, tmp_path / "kc", hours=2)
    try:
        secret = kube.get("v1", "Secret", "kubelab-registry", f"{NS}-p01")
        assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
        config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
        assert config["auths"]["gitea.course.example"]["password"] == "read-only-pull-token"
        app = kube.get("apps/v1", "Deployment", "app-backend-v2", f"{NS}-p01")
        assert app is not None
        assert app["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "kubelab-registry"}]
        # The pods the real ReplicaSet controller made carry it too.
        kube.wait_rollout("Deployment", "app-backend-v2", f"{NS}-p01", timeout=60)
        pod = kube.list("v1", "Pod", f"{NS}-p01", "app=app-backend,version=v2")[0]
        assert pod["spec"]["imagePullSecrets"] == [{"name": "kubelab-registry"}]
    finally:
        service.delete()
        wait_gone(kube, [f"{NS}-p01"])


def test_bad_roster_creates_nothing(  # type: ignore[no-untyped-def]
    control_plane, upstream_crds, tmp_path: Path, _isolated_home: Path
) -> None:
    kube = control_plane.kube()
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text("b", 5) + "bad id,Zé,ze@x.org\n")
    service = class_service(kube, control_plane.kubeconfig)
    with pytest.raises(ValidationFailed) as info:
        service.create(roster, tmp_path / "kc", hours=8)
    assert any(":7: id 'bad id'" in d for d in info.value.details)
    assert kube.mutations == 0
    assert kube.get("v1", "Namespace", f"{NS}-b01") is None
    assert not (tmp_path / "kc").exists()
    assert LESSON not in StateStore().load().classes


def screenshot(page: Path, png: Path) -> None:
    """Open the report in headless Chromium and take a screenshot (Debian's chromium)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package `chromium`; .ci/run installs it)")
    profile = png.parent / "chromium-profile"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1280,1600",
            f"--screenshot={png}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
