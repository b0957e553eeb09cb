"""The grading engine's own rules, with the cluster replaced by a namespace lookup and the
checks by a scripted ``run_exercise``: retries of ``error``, the per-student deadline,
``superseded_by``, and retargeting checks at a student's namespace."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kubelab.checks.registry import CheckContext
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.runner import CheckOutcome, ExerciseOutcome
from kubelab.classroom import grade as grading
from kubelab.classroom.grade import GradeOptions, grade_class
from kubelab.classroom.roster import Student
from kubelab.errors import UsageError
from kubelab.lessons.loader import find_lesson
from kubelab.state import LessonRecord, StateStore

LESSON = find_lesson("istio-traffic-splitting").lesson
EXERCISES = [e for e in LESSON.exercises if not e.needed_components() - {"istio"}]


class Namespaces:
    """Stands in for Kube.get on Namespaces: these exist."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        assert kind == "Namespace"
        return (
            {"metadata": {"name": name}, "status": {"phase": "Active"}}
            if name in self.names
            else None
        )


def ctx(names: set[str]) -> CheckContext:
    return CheckContext(kube=Namespaces(names), sampler=lambda spec: None)  # type: ignore[arg-type]


def outcome(exercise_id: str, status: Status) -> ExerciseOutcome:
    return ExerciseOutcome(
        LESSON.id,
        exercise_id,
        [CheckOutcome("c", "resource-exists", True, CheckResult(status, str(status)))],
    )


STUDENTS = [Student("ana", "Ana", "ana@x.org"), Student("bia", "Bia", "bia@x.org")]


def test_error_is_retried_then_graded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[tuple[str, str], int] = {}
    lock = threading.Lock()

    def scripted(lesson_id: str, exercise: Any, context: Any, only: Any = None) -> ExerciseOutcome:
        namespace = exercise.checks[0].namespace
        with lock:
            n = calls[(namespace, exercise.id)] = calls.get((namespace, exercise.id), 0) + 1
        return outcome(exercise.id, Status.ERROR if n == 1 else Status.PASSED)

    monkeypatch.setattr(grading, "run_exercise", scripted)
    result = grade_class(
        LESSON,
        STUDENTS,
        EXERCISES,
        ctx({"istio-ana", "istio-bia"}),
        "istio",
        GradeOptions(concurrency=4, backoff=0.0),
    )
    assert all(
        e.status is Status.PASSED and e.attempts == 2 for s in result.students for e in s.exercises
    )
    assert set(calls.values()) == {2}


def test_persistent_error_stops_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading, "run_exercise", lambda *a, **k: outcome(a[1].id, Status.ERROR))
    slept: list[float] = []
    result = grade_class(
        LESSON,
        STUDENTS[:1],
        EXERCISES[:1],
        ctx({"istio-ana"}),
        "istio",
        GradeOptions(retries=2, backoff=0.5, sleep=slept.append),
    )
    assert result.students[0].exercises[0].attempts == 3
    assert slept == [0.5, 1.0]


def test_deadline_reports_error_instead_of_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading, "run_exercise", lambda *a, **k: outcome(a[1].id, Status.PASSED))
    result = grade_class(
        LESSON,
        STUDENTS[:1],
        EXERCISES,
        ctx({"istio-ana"}),
        "istio",
        GradeOptions(student_deadline=-1),
    )
    checks = [c for e in result.students[0].exercises for c in e.checks]
    assert checks and all(c.status is Status.ERROR and "deadline" in c.message for c in checks)


def test_missing_namespace_is_an_error_for_that_student_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(grading, "run_exercise", lambda *a, **k: outcome(a[1].id, Status.PASSED))
    result = grade_class(LESSON, STUDENTS, EXERCISES, ctx({"istio-ana"}), "istio")
    ana, bia = result.students
    assert ana.status is Status.PASSED and ana.error is None
    assert bia.status is Status.ERROR and "namespace istio-bia does not exist" in (bia.error or "")


def test_superseded_exercises_count_as_done(monkeypatch: pytest.MonkeyPatch) -> None:
    # The student moved on to 100% v2: the 90/10 and 50/50 exercises no longer hold.
    passing = {"rollout-v2", "confirm-stable"}
    monkeypatch.setattr(
        grading,
        "run_exercise",
        lambda *a, **k: outcome(a[1].id, Status.PASSED if a[1].id in passing else Status.FAILED),
    )
    result = grade_class(LESSON, STUDENTS[:1], EXERCISES, ctx({"istio-ana"}), "istio")
    by_id = {e.exercise: e for e in result.students[0].exercises}
    assert by_id["observe-initial-split"].superseded_by == "rollout-v2"
    assert by_id["split-50-50"].superseded_by == "rollout-v2"
    assert by_id["observe-initial-split"].checks_status is Status.FAILED
    assert result.students[0].passed == len(EXERCISES)


def test_retarget_moves_checks_and_namespace_objects() -> None:
    exercise = LESSON.exercises[0]
    moved = exercise.in_namespace("istio", "istio-ana")
    assert {getattr(c, "namespace", None) for c in moved.checks} == {"istio-ana"}
    assert {getattr(c, "namespace", None) for c in exercise.checks} == {"istio"}  # untouched


def test_a_class_needs_a_real_cluster(_isolated_home: Any) -> None:
    from kubelab.classroom.service import tools_for

    store = StateStore()
    with store.transaction() as state:
        state.lessons[LESSON.id] = LessonRecord(
            lesson=LESSON.id, provider="sandbox", steps_done=["deploy"], details={"kubeconfig": "x"}
        )
    with pytest.raises(UsageError, match="needs a real cluster"):
        tools_for(find_lesson(LESSON.id), store)


def test_in_namespace_rewrites_queries_and_jaeger_services() -> None:
    kiali = LESSON.exercise("kiali-graph")
    jaeger = LESSON.exercise("jaeger-traces")
    assert kiali is not None and jaeger is not None
    queries = [
        c.query for c in kiali.in_namespace("istio", "istio-ana").checks if hasattr(c, "query")
    ]
    assert queries and all('"istio-ana"' in q and '"istio"' not in q for q in queries)
    services = [
        c.service for c in jaeger.in_namespace("istio", "istio-ana").checks if hasattr(c, "service")
    ]
    assert services and all(s.endswith(".istio-ana") for s in services)


def test_each_student_gets_the_whole_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # 6 students x 2 exercises of 0.2 s on 2 workers: 1.2 s in all, 0.4 s per student.
    import time

    def slow(*a: Any, **k: Any) -> ExerciseOutcome:
        time.sleep(0.2)
        return outcome(a[1].id, Status.PASSED)

    monkeypatch.setattr(grading, "run_exercise", slow)
    students = [Student(f"s{n}", f"S{n}", f"s{n}@x.org") for n in range(6)]
    result = grade_class(
        LESSON,
        students,
        EXERCISES[:2],
        ctx({f"istio-s{n}" for n in range(6)}),
        "istio",
        GradeOptions(concurrency=2, student_deadline=1.0),
    )
    assert all(s.status is Status.PASSED for s in result.students), [
        s.to_json(2) for s in result.students
    ]
