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

import pytest
from support import offline_class_tools

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
