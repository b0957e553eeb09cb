"""The classroom's parts that need no cluster: roster errors, each student's objects and
Role (what it grants is read off the rendered objects here; the real authorizer's answers
are in tests/realk8s/test_classroom_real.py), reports that survive hostile text, and the
kubeconfig's inlined CA."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from support import ProportionalMesh, offline_class_tools

from kubelab.checks.result import Status
from kubelab.classroom import access, report
from kubelab.classroom.model import ClassGrade
from kubelab.classroom.roster import Student
from kubelab.classroom.service import ClassService
from kubelab.errors import ValidationFailed
from kubelab.lessons.loader import find_lesson
from kubelab.state import StateStore

LESSON = "istio-traffic-splitting"


def test_roles_grant_nothing_outside_the_namespace_and_no_secrets(
    tmp_path: Path,
) -> None:
    for lesson_id in ("istio-traffic-splitting", "flagger-canary", "argo-rollouts"):
        try:
            loaded = find_lesson(lesson_id)
        except Exception:  # a lesson not on disk yet
            continue
        service = ClassService(loaded, StateStore(), offline_class_tools(tmp_path))
        student = Student("ana", "Ana", "ana@escola.example")
        identity, app = service.student_parts(student)
        objects = identity + app
        ns = student.namespace(service.namespace)
        kinds = [o["kind"] for o in objects]
        assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
        role = next(o for o in objects if o["kind"] == "Role")
        binding = next(o for o in objects if o["kind"] == "RoleBinding")
        assert role["metadata"]["namespace"] == ns == binding["metadata"]["namespace"]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "student",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "student", "namespace": ns}
        ]
        for rule in role["rules"]:
            assert (
                "*" not in rule["verbs"]
                and "*" not in rule["resources"]
                and "*" not in rule["apiGroups"]
            )
            assert "secrets" not in rule["resources"], (lesson_id, rule)
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
            if set(rule["verbs"]) - {"get", "list", "watch"}:
                # writes only on what exercises change
                allowed = {
                    "deployments",
                    "virtualservices",
                    "destinationrules",
                    "canaries",
                    "rollouts",
                    "rollouts/status",
                    "pods",
                    "pods/exec",
                }
                assert set(rule["resources"]) <= allowed, (lesson_id, rule)
        # Every object of the app lands in the student's namespace.
        assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {ns}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name,email\nAna,ana@x.org\n", "roster.csv:1: missing column(s) id"),
        ("id,name,email\nAna,Ana,ana@x.org\n", "roster.csv:2: id 'Ana' must be lowercase"),
        (
            "id,name,email\na1,Ana,ana@x.org\na1,Bia,bia@x.org\n",
            "roster.csv:3: id 'a1' is already used on line 2",
        ),
        ("id,name,email\na1,,ana@x.org\n", "roster.csv:2: name is empty"),
        (
            "id,name,email\na1,Ana,ana.x.org\n",
            "roster.csv:2: email 'ana.x.org' is not an e-mail address",
        ),
        ("id,name,email\na1,Ana,ana@x.org,extra\n", "roster.csv:2: 4 fields but the header has 3"),
        ("id,name,email\n", "lists no students"),
        ("", "is empty"),
    ],
)
def test_roster_errors_name_the_line(text: str, expected: str) -> None:
    from kubelab.classroom.roster import parse_roster

    with pytest.raises(ValidationFailed) as info:
        parse_roster(text)
    assert expected in "\n".join([info.value.message, *info.value.details])


def test_reports_survive_hostile_text() -> None:
    from kubelab.classroom.model import CheckGrade, ExerciseGrade, StudentGrade

    student = StudentGrade(
        "bob",
        "Bob [/] <script>",
        "bob@x.org",
        "istio-bob",
        [ExerciseGrade("e1", [CheckGrade("c", "t", Status.FAILED, "curl: \x1b[0m exit 7 & <b>")])],
    )
    grade = ClassGrade(LESSON, "2026-11-22T10:00:00.000Z", [("e1", "E1")], [student])
    root = ET.fromstring(report.junit(grade))
    assert root.find(".//failure").get("message") == "curl: [0m exit 7 & <b>"
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(report.table(grade))
    assert "Bob [/] <script>" in console.export_text()
    page = report.html_report(grade)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_student_kubeconfig_inlines_a_ca_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nabc\n")
    admin = {
        "clusters": [
            {
                "name": "mk",
                "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority": "ca.crt"},
            }
        ],
        "contexts": [{"name": "mk", "context": {"cluster": "mk", "user": "admin"}}],
        "users": [{"name": "admin", "user": {"client-key-data": "SECRET"}}],
        "current-context": "mk",
    }
    token = access.IssuedToken("tok", dt.datetime(2026, 11, 22, 20, tzinfo=dt.UTC))
    config = access.student_kubeconfig(
        admin, LESSON, Student("ana", "Ana", "a@x.org"), "istio-ana", token, folder=tmp_path
    )
    cluster = config["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]).startswith(b"-----BEGIN")
    assert "SECRET" not in json.dumps(config)
    assert config["users"][0]["user"] == {"token": "tok"}


def test_a_roster_is_bounded_and_must_be_a_file(tmp_path):
    from kubelab.classroom.roster import MAX_STUDENTS, load_roster, parse_roster
    from kubelab.errors import ValidationFailed

    rows = "\n".join(f"s{i},Student {i},s{i}@example.org" for i in range(MAX_STUDENTS + 1))
    started = time.monotonic()
    with pytest.raises(ValidationFailed, match=f"lists {MAX_STUDENTS + 1} students; a class"):
        parse_roster("id,name,email\n" + rows)
    assert time.monotonic() - started < 2  # said at once, before anything is created
    assert len(parse_roster("id,name,email\n" + rows.rsplit("\n", 1)[0])) == MAX_STUDENTS
    with pytest.raises(ValidationFailed, match="is a folder"):
        load_roster(tmp_path)


# -- a class of 30 on the emulated API, graded with points and exported as gradebooks -----------

GROUPS = {
    "done": range(1, 9),  # 0/100: every exercise (the first two superseded)
    "half": range(9, 17),  # 50/50: the first exercise superseded, the 50/50 one passed
    "started": range(17, 23),  # 90/10 as created: the first exercise
    "broken": range(23, 27),  # VirtualService and DestinationRule deleted, no v1 pod
    "deleted": range(27, 31),  # namespace deleted: not graded
}


def _ready_pod(namespace: str, name: str, labels: dict[str, str], containers: list[str]) -> Any:
    """A pod as the kubelet reports it: running, every container ready."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": c, "image": f"{c}:test"} for c in containers]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [
                {"type": t, "status": "True"}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {"name": c, "ready": True, "restartCount": 0, "state": {"running": {}}}
                for c in containers
            ],
        },
    }


def test_a_class_of_30_on_the_emulated_api_exports_its_gradebook(
    tmp_path: Path, _isolated_home: Path
) -> None:
    """30 students in five states on kubelab's emulated API (no controllers: the pods are
    written as a kubelet would report them), graded with weighted exercises and checks;
    the gradebook CSV of every LMS says what the JSON grade says, student by student."""
    import yaml
    from gradebook import check_gradebook, weighted

    from kubelab.checks.mesh import ISTIO_API
    from kubelab.checks.registry import CheckContext
    from kubelab.classroom.grade import GradeOptions
    from kubelab.classroom.service import ClassTools
    from kubelab.sandbox import resources
    from kubelab.sandbox.threaded import ThreadedApi
    from kubelab.state import LessonRecord

    prefix = "g"
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "id,name,email\n"
        + "".join(f"{prefix}{n:02d},Aluno {n},aluno{n}@escola.example\n" for n in range(1, 31))
    )
    api = ThreadedApi(tmp_path)
    try:
        kube = api.kube()
        with StateStore().transaction() as state:
            state.lessons[LESSON] = LessonRecord(
                lesson=LESSON,
                provider="existing",
                steps_done=["preflight", "cluster", "components", "images", "deploy"],
                details={"kubeconfig": str(api.kubeconfig)},
            )
        tools = ClassTools(
            kube=kube,
            admin_kubeconfig=yaml.safe_load(api.kubeconfig.read_text()),
            admin_context=None,
            admin_folder=api.kubeconfig.parent,
            registry=None,
            pull_token=lambda: ("kubelab-admin", "read-only-pull-token"),
            context=lambda: CheckContext(
                kube, sampler=lambda spec: ProportionalMesh(kube), settle_seconds=0
            ),
            available={"istio", "victoria-metrics"},
        )
        service = ClassService(weighted(find_lesson(LESSON)), StateStore(), tools)
        assert len(service.create(roster, tmp_path / "kc", hours=2).students) == 30
        for group, numbers in GROUPS.items():
            for n in numbers:
                ns = f"istio-{prefix}{n:02d}"
                if group == "deleted":
                    assert kube.delete("v1", "Namespace", ns)
                    continue
                versions = ("v2",) if group == "broken" else ("v1", "v2")
                for version in versions:
                    labels = {"app": "app-backend", "version": version}
                    name = f"app-backend-{version}-5d8f7c9b4-x{n:02d}"
                    api.record(
                        resources.PODS,
                        _ready_pod(ns, name, labels, ["app-backend", "istio-proxy"]),
                    )
                tester = _ready_pod(ns, "curl-test", {}, ["curl-test", "istio-proxy"])
                api.call(api.store.update_status, resources.PODS, ns, "curl-test", tester["status"])
                if group == "broken":
                    assert kube.delete(ISTIO_API, "VirtualService", "app-backend", ns)
                    assert kube.delete(ISTIO_API, "DestinationRule", "app-backend", ns)
                    continue
                v1, v2 = {"done": (0, 100), "half": (50, 50), "started": (90, 10)}[group]
                vs = kube.get(ISTIO_API, "VirtualService", "app-backend", ns)
                assert vs is not None
                for route in vs["spec"]["http"][0]["route"]:
                    route["weight"] = v1 if route["destination"]["subset"] == "v1" else v2
                meta = {"name": "app-backend", "namespace": ns}
                kube.apply({"apiVersion": ISTIO_API, "kind": "VirtualService",
                            "metadata": meta, "spec": vs["spec"]})  # fmt: skip

        grade = service.grade(service.students(), GradeOptions(concurrency=16))
    finally:
        api.close()

    data = json.loads(json.dumps(grade.to_json()))
    assert ClassGrade.from_json(data).to_json() == data
    assert [(e["id"], e["points"]) for e in data["exercises"]] == [
        ("observe-initial-split", 2.0),
        ("split-50-50", 3.0),
        ("rollout-v2", 4.0),
        ("confirm-stable", 1.0),
    ]
    # What each group earns: superseded exercises count in full, the broken namespaces
    # keep the sidecar check's share (1 of 6) of the first exercise's 2 points.
    expected = {"done": 10.0, "half": 5.0, "started": 2.0, "broken": 0.3333, "deleted": 0.0}
    by_id = {s["id"]: s for s in data["students"]}
    for group, numbers in GROUPS.items():
        for n in numbers:
            score = by_id[f"{prefix}{n:02d}"]["score"]
            assert (score["points"], score["possible"]) == (expected[group], 10.0), (group, score)
    half = by_id[f"{prefix}09"]["exercises"]
    assert [(e["exercise"], e["status"], e["earned"]) for e in half] == [
        ("observe-initial-split", "passed", 2.0),
        ("split-50-50", "passed", 3.0),
        ("rollout-v2", "failed", 0.0),
        ("confirm-stable", "failed", 0.0),
    ]
    assert half[0]["superseded_by"] == "split-50-50"
    broken = by_id[f"{prefix}23"]["exercises"][0]
    assert {c["id"]: (c["status"], c["points"]) for c in broken["checks"]} == {
        "pods-ready": ("failed", 1.0),
        "sidecar-injected": ("passed", 1.0),
        "virtualservice-weights": ("failed", 2.0),
        "traffic-split": ("failed", 2.0),
    }
    assert data["summary"]["mean_percent"] == round(
        sum(s["score"]["percent"] for s in data["students"]) / 30, 4
    )
    for lms in report.LMS:
        points = check_gradebook(report.gradebook_csv(grade, lms), data, lms)
        assert points[f"{prefix}01"] == {
            "observe-initial-split": 2,
            "split-50-50": 3,
            "rollout-v2": 4,
            "confirm-stable": 1,
        }
        assert points[f"{prefix}23"]["observe-initial-split"] == 0.33
        assert points[f"{prefix}27"] == dict.fromkeys(points[f"{prefix}01"], 0.0)
