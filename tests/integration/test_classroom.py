"""A whole class on the emulated Kubernetes API: ``class create`` for a 30-student roster,
students left in mixed states, ``grade`` in all four report formats, RBAC read back,
kubeconfigs that really authenticate (and stop when their token expires), ``class delete``.

The API is kubelab's sandbox API server (HTTPS on 127.0.0.1, the official client and
kubectl talk to it). It has no controllers, so each student's state is recorded into it
directly: the app's pods (Ready, with their istio-proxy sidecar) and the VirtualService
weights the student left. Traffic checks need a mesh, which the emulated API does not
have: :class:`MeshStandIn` answers for it by routing each request by the student's
VirtualService, exactly in proportion (the real transports are tested against Envoy and
kubectl exec elsewhere); a student whose VirtualService or pods are gone gets 503s.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab.checks.builtin import ISTIO_API, CheckContext, route_weights
from kubelab.checks.result import Status
from kubelab.checks.traffic import Destination, Sample
from kubelab.classroom import access, report
from kubelab.classroom.grade import GradeOptions
from kubelab.classroom.model import ClassGrade
from kubelab.classroom.roster import Student
from kubelab.classroom.service import (
    ClassService,
    ClassTools,
    expiry_lines,
    load_history,
    save_snapshot,
)
from kubelab.cluster.kube import CLASS_LABEL, STUDENT_LABEL, Kube
from kubelab.errors import KubelabError, ValidationFailed
from kubelab.lessons.loader import find_lesson
from kubelab.sandbox import resources
from kubelab.sandbox.threaded import TOKEN as ADMIN_TOKEN
from kubelab.sandbox.threaded import ThreadedApi as EmulatedApi
from kubelab.state import LessonRecord, StateStore
from kubelab.tools import find_tool

LESSON = "istio-traffic-splitting"
NS = "istio"
GROUPS = {
    "done": range(1, 9),  # 0/100 and stable: everything
    "half": range(9, 17),  # 50/50: exercises 1 and 3
    "started": range(17, 23),  # 90/10 as deployed: exercise 1
    "broken": range(23, 27),  # VirtualService, DestinationRule and v1's pods deleted
    "deleted": range(27, 31),  # namespace deleted
}
GRADED = ["observe-initial-split", "split-50-50", "rollout-v2", "confirm-stable"]

pytestmark = pytest.mark.timeout(300)


def sid(n: int) -> str:
    return f"s{n:02d}"


def roster_text(count: int = 30) -> str:
    lines = ["id,name,email"]
    lines += [f"{sid(n)},Aluno {n},aluno{n}@escola.example" for n in range(1, count + 1)]
    return "\n".join(lines) + "\n"


class MeshStandIn:
    """Routes sampled requests as the mesh would: by the VirtualService's weights, exactly in
    proportion, to versions that have a Ready pod; anything else answers 503."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def sample(
        self, dest: Destination, count: int, timeout: float, concurrency: int
    ) -> list[Sample]:
        vs = self.kube.get(ISTIO_API, "VirtualService", dest.service, dest.namespace)
        pods = self.kube.list("v1", "Pod", dest.namespace, f"app={dest.service}")
        running = {p["metadata"]["labels"].get("version") for p in pods}
        if vs is None:
            return [Sample(None, 503, False)] * count
        weights, _ = route_weights(vs)
        samples: list[Sample] = []
        for version, weight in weights.items():
            n = round(count * weight / 100)
            answer = Sample(version, 200, False) if version in running else Sample(None, 503, False)
            samples += [answer] * n
        return (samples + [Sample(None, 503, False)] * count)[:count]

    def hanging_versions(
        self, dest: Destination, versions: Iterable[str], timeout: float
    ) -> set[str]:
        return set()


def app_pod(namespace: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"app-backend-{version}-7d4b9c-x2x{version[-1]}",
            "namespace": namespace,
            "labels": {"app": "app-backend", "version": version},
        },
        "spec": {
            "containers": [
                {"name": "app-backend", "image": f"app-backend:{version}"},
                {"name": "istio-proxy", "image": "istio/proxyv2:1.30.3"},
            ]
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def set_weights(kube: Kube, namespace: str, v1: int, v2: int) -> None:
    vs = kube.get(ISTIO_API, "VirtualService", "app-backend", namespace)
    assert vs is not None
    for dest in vs["spec"]["http"][0]["route"]:
        dest["weight"] = v1 if dest["destination"]["subset"] == "v1" else v2
    meta = {"name": "app-backend", "namespace": namespace}
    kube.apply(
        {"apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": meta, "spec": vs["spec"]}
    )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[EmulatedApi]:
    server = EmulatedApi(tmp_path)
    try:
        yield server
    finally:
        server.close()


def make_service(api: EmulatedApi, home: Path, registry: str | None = None) -> ClassService:
    store = StateStore()
    with store.transaction() as state:
        state.lessons[LESSON] = LessonRecord(
            lesson=LESSON,
            provider="existing",
            steps_done=["preflight", "cluster", "components", "images", "deploy"],
            details={"kubeconfig": str(api.kubeconfig)},
        )
    kube = api.kube()
    tools = ClassTools(
        kube=kube,
        admin_kubeconfig=json.loads(api.kubeconfig.read_text()),
        admin_context=None,
        admin_folder=api.kubeconfig.parent,
        registry=registry,
        pull_token=lambda: ("kubelab-admin", "read-only-pull-token"),
        context=lambda: CheckContext(
            kube, sampler=lambda spec: MeshStandIn(kube), settle_seconds=0
        ),
        available={"istio", "victoria-metrics"},  # no Kiali, no Jaeger: two exercises skipped
    )
    return ClassService(find_lesson(LESSON), store, tools)


def record_states(api: EmulatedApi, kube: Kube) -> None:
    for group, numbers in GROUPS.items():
        for n in numbers:
            ns = f"{NS}-{sid(n)}"
            if group == "deleted":
                assert kube.delete("v1", "Namespace", ns)
                continue
            versions = ["v2"] if group == "broken" else ["v1", "v2"]
            for version in versions:
                api.record(resources.PODS, app_pod(ns, version))
            if group == "done":
                set_weights(kube, ns, 0, 100)
            elif group == "half":
                set_weights(kube, ns, 50, 50)
            elif group == "broken":
                assert kube.delete(ISTIO_API, "VirtualService", "app-backend", ns)
                assert kube.delete(ISTIO_API, "DestinationRule", "app-backend", ns)


def test_thirty_students_in_mixed_states_graded_in_every_format(
    api: EmulatedApi, tmp_path: Path, _isolated_home: Path
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text())
    service = make_service(api, _isolated_home)
    out = tmp_path / "kubeconfigs"
    record = service.create(roster, out, hours=8)
    assert len(record.students) == 30
    namespaces = {o["metadata"]["name"] for o in api.objects(resources.NAMESPACES)}
    assert {f"{NS}-{sid(n)}" for n in range(1, 31)} <= namespaces
    kube = api.kube()
    first = kube.get("v1", "Namespace", f"{NS}-s01")
    assert first is not None
    labels = first["metadata"]["labels"]
    assert labels["istio-injection"] == "enabled"
    assert labels[CLASS_LABEL] == LESSON and labels[STUDENT_LABEL] == "s01"
    vs = kube.get(ISTIO_API, "VirtualService", "app-backend", f"{NS}-s01")
    assert vs is not None and route_weights(vs)[0] == {"v1": 90, "v2": 10}
    assert kube.get(ISTIO_API, "Gateway", "app-backend-gateway", f"{NS}-s01") is None
    for n in (1, 30):
        path = out / f"{sid(n)}.kubeconfig"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # A second create changes nothing (resume after an interruption).
    before = kube.mutations
    service.create(roster, out, hours=8)
    assert service.kube.mutations == before or kube.mutations == before

    record_states(api, kube)
    grade = service.grade(service.students(), GradeOptions(concurrency=16))

    assert [e for e, _ in grade.exercises] == GRADED
    assert set(grade.skipped) == {"kiali-graph", "jaeger-traces"}
    by_id = {s.id: s for s in grade.students}
    expected_passed = {"done": 4, "half": 2, "started": 1, "broken": 0, "deleted": 0}
    for group, numbers in GROUPS.items():
        for n in numbers:
            student = by_id[sid(n)]
            assert student.passed == expected_passed[group], (group, student.to_json(4))
    done = by_id["s01"]
    assert all(e.status is Status.PASSED for e in done.exercises)
    assert done.exercise("observe-initial-split").superseded_by == "split-50-50" or (
        done.exercise("observe-initial-split").superseded_by in ("rollout-v2", "confirm-stable")
    )
    half = by_id["s09"]
    assert half.exercise("split-50-50").checks_status is Status.PASSED
    assert half.exercise("rollout-v2").status is Status.FAILED
    assert "v1 gets 50%, expected 0%" in " ".join(
        c.message for c in half.exercise("rollout-v2").checks
    )
    broken = by_id["s23"]
    assert broken.status is Status.FAILED
    messages = " ".join(c.message for e in broken.exercises for c in e.checks)
    assert "VirtualService istio-s23/app-backend does not exist" in messages
    assert "only 1 of 2 pods app=app-backend in istio-s23 exist" in messages
    gone = by_id["s27"]
    assert gone.status is Status.ERROR
    assert gone.error and "namespace istio-s27 does not exist" in gone.error
    assert all(c.status is Status.ERROR for e in gone.exercises for c in e.checks)

    # JSON: the documented shape, and it round-trips (snapshots are stored in it).
    data = grade.to_json()
    assert data["format"] == "kubelab.grade/v1"
    assert data["summary"]["students"] == 30 and data["summary"]["completed"] == 8
    assert data["summary"]["errors"] == 4
    assert data["summary"]["per_exercise"]["split-50-50"]["passed"] == 16
    assert ClassGrade.from_json(json.loads(json.dumps(data))).to_json() == data

    # JUnit: parses; one testsuite per student, one testcase per check.
    root = ET.fromstring(report.junit(grade))
    suites = root.findall("testsuite")
    assert len(suites) == 30
    checks_per_student = sum(len(find_lesson(LESSON).lesson.exercise(e).checks) for e in GRADED)
    s01 = next(s for s in suites if s.get("id") == "s01")
    assert int(s01.get("tests")) == checks_per_student and s01.get("failures") == "0"
    s09 = next(s for s in suites if s.get("id") == "s09")
    assert int(s09.get("failures")) > 0 and s09.get("errors") == "0"
    s27 = next(s for s in suites if s.get("id") == "s27")
    assert s27.get("errors") == str(len(GRADED))
    assert root.get("tests") == str(sum(int(s.get("tests")) for s in suites))

    # Table.
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(report.table(grade))
    text = console.export_text()
    assert "s01 Aluno 1" in text and "4/4" in text and "namespace istio-s27 does not exist" in text

    # HTML with progress over two snapshots.
    save_snapshot(grade)
    set_weights(kube, f"{NS}-s17", 50, 50)  # a student moves on between two gradings
    later = service.grade(service.students(), GradeOptions(concurrency=16))
    later.taken_at = (
        later.taken_at[:-3] + "59Z" if later.taken_at == grade.taken_at else later.taken_at
    )
    save_snapshot(later)
    history = load_history(LESSON)
    assert len(history) == 2 and history[-1].completion() > history[0].completion()
    page = report.html_report(later, history)
    assert page.startswith("<!doctype html>") and "<svg" in page and "polyline" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "namespace istio-s27 does not exist" in page
    html_file = tmp_path / "report.html"
    html_file.write_text(page)
    screenshot(html_file, tmp_path / "report.png")

    # Delete removes every namespace and kubeconfig of the class.
    removed = service.delete()
    assert sum(line.startswith("deleted namespace") for line in removed) == 26
    left = [
        o for o in api.objects(resources.NAMESPACES) if o["metadata"]["name"].startswith(f"{NS}-s")
    ]
    assert left == []
    assert not list(out.glob("*.kubeconfig"))
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


def test_roles_grant_nothing_outside_the_namespace_and_no_secrets(
    api: EmulatedApi, tmp_path: Path, _isolated_home: Path
) -> None:
    for lesson_id in ("istio-traffic-splitting", "flagger-canary", "argo-rollouts"):
        try:
            loaded = find_lesson(lesson_id)
        except Exception:  # a lesson not on disk yet
            continue
        service = ClassService(loaded, StateStore(), make_service(api, _isolated_home).tools)
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


def test_student_kubeconfig_works_and_says_when_it_expired(
    api: EmulatedApi, tmp_path: Path, _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text(2))
    service = make_service(api, _isolated_home)
    out = tmp_path / "kc"
    record = service.create(roster, out, hours=2)
    config_path = Path(record.students[0].kubeconfig or "")
    config = yaml.safe_load(config_path.read_text())
    assert config["contexts"][0]["context"]["namespace"] == f"{NS}-s01"
    assert api.kube().get("v1", "Namespace", f"{NS}-s01") is not None
    assert ADMIN_TOKEN not in config_path.read_text()
    kubectl = find_tool("kubectl")
    env = {**os.environ, "KUBECONFIG": str(config_path)}
    ok = subprocess.run(
        [str(kubectl), "get", "virtualservice", "app-backend", "-o", "name"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("/app-backend")

    api.expire_tokens()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    lines = expiry_lines(service.record(), at=later)
    assert lines == [
        f"s01: kubeconfig expired at {record.students[0].token_expires}",
        f"s02: kubeconfig expired at {record.students[1].token_expires}",
    ]
    # The cluster refuses the token; the kubeconfig still says it is valid: say both.
    with pytest.raises(KubelabError) as info:
        Kube(config_path).get("v1", "Namespace", f"{NS}-s01")
    assert "refused the token" in info.value.message and "(student s01)" in info.value.message
    # Three hours later, past the expiry written in the kubeconfig.
    monkeypatch.setattr("kubelab.cluster.kube.utcnow", lambda: later)
    with pytest.raises(KubelabError) as info:
        Kube(config_path).get("v1", "Namespace", f"{NS}-s01")
    expires = (record.students[0].token_expires or "")[:16].replace("T", " ")
    assert info.value.message == (
        f"your class kubeconfig {config_path} (student s01) expired at {expires} UTC"
    )
    assert info.value.hint == (
        "Ask your instructor for a new one: `kubelab class kubeconfigs --student s01`."
    )
    monkeypatch.setattr("kubelab.cluster.kube.utcnow", lambda: dt.datetime.now(dt.UTC))

    renewed = service.renew(hours=2, only=["s01"])
    assert renewed.students[0].kubeconfig == str(config_path)
    assert (
        Kube(config_path).get(ISTIO_API, "VirtualService", "app-backend", f"{NS}-s01") is not None
    )


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


def test_bad_roster_creates_nothing(api: EmulatedApi, tmp_path: Path, _isolated_home: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text(5) + "bad id,Zé,ze@x.org\n")
    service = make_service(api, _isolated_home)
    with pytest.raises(ValidationFailed) as info:
        service.create(roster, tmp_path / "kc", hours=8)
    assert any(":7: id 'bad id'" in d for d in info.value.details)
    assert api.kube().mutations == 0
    names = {o["metadata"]["name"] for o in api.objects(resources.NAMESPACES)}
    assert not any(n.startswith(f"{NS}-s") for n in names)
    assert not (tmp_path / "kc").exists()
    assert LESSON not in StateStore().load().classes


def test_cli_class_lifecycle_and_grade_reports(
    api: EmulatedApi, tmp_path: Path, _isolated_home: Path
) -> None:
    """The commands an instructor types, in a subprocess against the emulated API."""
    from conftest import run_cli

    make_service(api, _isolated_home)  # the lesson record `kubelab up` would have left
    env = {"KUBELAB_HOME": str(_isolated_home)}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,email\ns01,Ana,ana@x.org\nS 02,Bia,bia@x\n")
    proc = run_cli("class", "create", LESSON, "--roster", str(bad), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "bad.csv:3: id 'S 02' must be lowercase" in proc.stderr
    assert "bad.csv:3: email 'bia@x' is not an e-mail address" in proc.stderr
    assert "Traceback" not in proc.stderr

    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text(3))
    out = tmp_path / "kc"
    proc = run_cli("class", "create", LESSON, "--roster", str(roster), "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "3 students" in proc.stdout and ADMIN_TOKEN not in proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"s0{n}.kubeconfig" for n in (1, 2, 3)]

    proc = run_cli("class", "status", "-o", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert [s["namespace"] for s in status["students"]] == ["istio-s01", "istio-s02", "istio-s03"]
    assert status["warnings"] == []

    report_file = tmp_path / "grades.xml"
    proc = run_cli("grade", "-o", "junit", "--out", str(report_file), env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    suites = ET.parse(report_file).getroot().findall("testsuite")
    assert [s.get("id") for s in suites] == ["s01", "s02", "s03"]
    proc = run_cli("grade", "-o", "html", "--out", str(tmp_path / "g.html"), env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "2 snapshot(s)" in (tmp_path / "g.html").read_text()
    proc = run_cli("grade", "-o", "json", "--no-save", env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["students"] == 3

    # A student's machine: their own kubelab home and only their kubeconfig.
    student_env = {"KUBELAB_HOME": str(tmp_path / "student-home")}
    proc = run_cli("class", "join", str(out / "s02.kubeconfig"), env=student_env)
    assert proc.returncode == 0, proc.stderr
    assert "as s02" in proc.stdout and "namespace istio-s02" in proc.stdout
    proc = run_cli("exercise", "-o", "json", env=student_env)
    assert proc.returncode == 0, proc.stderr
    text = json.loads(proc.stdout)["instructions"]
    assert "-n istio-s02" in text and "-n istio " not in text
    proc = run_cli("check", "observe-initial-split", "-o", "json", env=student_env, timeout=120)
    checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["virtualservice-weights"]["status"] == "passed"
    assert "istio-s02/app-backend" in checks["virtualservice-weights"]["message"]
    assert proc.returncode == 1  # no pods in the emulated API: not done yet
    proc = run_cli("class", "join", str(roster), env=student_env)
    assert proc.returncode == 2 and "not a kubelab class kubeconfig" in proc.stderr

    proc = run_cli("class", "delete", LESSON, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("deleted namespace") == 3
    assert not list(out.iterdir())


def test_lesson_down_takes_its_class_with_it(
    api: EmulatedApi, tmp_path: Path, _isolated_home: Path
) -> None:
    from kubelab.lessons.runner import LessonRunner
    from kubelab.providers.existing import ExistingProvider

    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text(2))
    service = make_service(api, _isolated_home)
    record = service.create(roster, tmp_path / "kc", hours=2)
    store = StateStore()
    runner = LessonRunner(find_lesson(LESSON), ExistingProvider(api.kubeconfig), store)
    state = store.load()
    lines = runner._remove_class(state, dict(state.lessons[LESSON].details))
    assert lines == ["class of 2 students (namespaces, kubeconfig files)"]
    names = {o["metadata"]["name"] for o in api.objects(resources.NAMESPACES)}
    assert not {"istio-s01", "istio-s02"} & names
    assert not any(Path(s.kubeconfig or "").exists() for s in record.students)
    assert LESSON not in store.load().classes


def test_a_roster_id_cannot_take_over_an_existing_namespace(
    api: EmulatedApi, tmp_path: Path, _isolated_home: Path
) -> None:
    kube = api.kube()
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email\nana,Ana,ana@x.org\nsystem,Sys,sys@x.org\n")
    service = make_service(api, _isolated_home)
    with pytest.raises(ValidationFailed) as info:
        service.create(roster, tmp_path / "kc", hours=2)
    assert info.value.details == [
        f"{roster}:3: namespace istio-system already exists and is not system's class "
        "namespace: use another id"
    ]
    assert kube.get("v1", "Namespace", "istio-ana") is None  # nothing created
    live = kube.get("v1", "Namespace", "istio-system")
    assert live is not None and CLASS_LABEL not in (live["metadata"].get("labels") or {})
    # Even if somebody labels it by hand, delete removes only the class's students.
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "istio-system", "labels": {CLASS_LABEL: LESSON}},
        }
    )
    roster.write_text("id,name,email\nana,Ana,ana@x.org\n")
    service.create(roster, tmp_path / "kc", hours=2)
    assert service.delete()[0] == "deleted namespace istio-ana"
    assert kube.get("v1", "Namespace", "istio-system") is not None


def test_students_pull_with_a_read_only_token(
    api: EmulatedApi, tmp_path: Path, _isolated_home: Path
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text(1))
    service = make_service(api, _isolated_home, registry="gitea.course.example")
    service.create(roster, tmp_path / "kc", hours=2)
    secret = api.kube().get("v1", "Secret", "kubelab-registry", "istio-s01")
    assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auth = config["auths"]["gitea.course.example"]
    assert auth["password"] == "read-only-pull-token"
    app = next(
        o
        for o in api.objects(resources.DEPLOYMENTS, "istio-s01")
        if o["metadata"]["name"] == "app-backend-v2"
    )
    assert app["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "kubelab-registry"}]


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
