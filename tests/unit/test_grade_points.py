"""Points and partial credit (docs/grading.md): what a check and an exercise are worth, what
a student earns, superseded exercises, and snapshots written before points existed."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from kubelab.checks.registry import CheckContext
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.runner import CheckOutcome, ExerciseOutcome
from kubelab.classroom import grade as grading
from kubelab.classroom.grade import grade_class
from kubelab.classroom.model import CheckGrade, ClassGrade, ExerciseGrade, StudentGrade
from kubelab.classroom.roster import Student
from kubelab.lessons.loader import find_lesson

P, F, W, E = Status.PASSED, Status.FAILED, Status.PENDING, Status.ERROR


def check(status: Status, points: float = 1, required: bool = True, id: str = "c") -> CheckGrade:
    return CheckGrade(id, "t", status, str(status), None, required, points)


def exercise(points: float, *checks: CheckGrade, superseded_by: str | None = None) -> ExerciseGrade:
    return ExerciseGrade("e", list(checks), superseded_by=superseded_by, points=points)


@pytest.mark.parametrize(
    ("graded", "earned"),
    [
        (exercise(2, check(P), check(P)), 2),  # passed: all of it
        (exercise(4, check(P, 1), check(F, 3)), 1),  # weighted: 1 of 4 check points
        (exercise(4, check(F, 1), check(P, 3)), 3),
        (exercise(3, check(P), check(F), check(F)), 1),  # unweighted: a third
        (exercise(2, check(P), check(W)), 1),  # pending earns nothing
        (exercise(2, check(P), check(E)), 1),  # nor does error
        (exercise(2, check(F), check(E), check(W)), 0),
        # Optional checks earn nothing and cost nothing, whatever their points.
        (exercise(2, check(F), check(P, 5, required=False)), 0),
        (exercise(2, check(P), check(F, 5, required=False)), 2),
        (exercise(3, check(P), check(F), check(P, 9, required=False)), 1.5),
        # No required check: passed, so all of it (an optional one failing changes nothing).
        (exercise(2, check(F, required=False)), 2),
        # Superseded: all of it, whatever its own checks say now.
        (exercise(5, check(F), check(F), superseded_by="later"), 5),
        (exercise(5, check(P, 1), check(F, 4), superseded_by="later"), 5),
    ],
)
def test_what_an_exercise_earns(graded: ExerciseGrade, earned: float) -> None:
    assert graded.earned == pytest.approx(earned)


def test_a_student_earns_the_sum_and_the_class_a_mean_percent() -> None:
    ana = StudentGrade(
        "ana",
        "Ana",
        "ana@x.org",
        "istio-ana",
        [
            ExerciseGrade("e1", [check(P, 1), check(F, 2)], points=3),  # 1 of 3
            ExerciseGrade("e2", [check(P)], points=1),  # 1 of 1
        ],
    )
    bob = StudentGrade(
        "bob",
        "Bob",
        "bob@x.org",
        "istio-bob",
        [
            ExerciseGrade("e1", [check(F, 1), check(F, 2)], points=3),
            ExerciseGrade("e2", [check(W)], points=1),
        ],
    )
    grade = ClassGrade(
        "l", "t", [("e1", "E1"), ("e2", "E2")], [ana, bob], {}, 0, {"e1": 3, "e2": 1}
    )
    assert (ana.earned, ana.possible, ana.percent()) == (2, 4, 50)
    assert (grade.total(ana), grade.possible, grade.percent(ana)) == (2, 4, 50)
    assert grade.percent(bob) == 0 and grade.mean_percent() == 25
    data = grade.to_json()
    assert data["exercises"] == [
        {"id": "e1", "title": "E1", "points": 3},
        {"id": "e2", "title": "E2", "points": 1},
    ]
    assert data["summary"]["possible"] == 4 and data["summary"]["mean_percent"] == 25
    score = data["students"][0]["score"]
    assert score == {"passed": 1, "total": 2, "points": 2, "possible": 4, "percent": 50}
    first = data["students"][0]["exercises"][0]
    assert (first["points"], first["earned"]) == (3, 1)
    assert [c["points"] for c in first["checks"]] == [1, 2]


def test_json_rounds_computed_points_to_4_decimals_and_reads_back_the_same() -> None:
    third = ExerciseGrade("e1", [check(P), check(F), check(F)], points=1)
    student = StudentGrade("ana", "Ana", "a@x.org", "ns", [third])
    grade = ClassGrade("l", "t", [("e1", "E1")], [student], exercise_points={"e1": 1})
    data = json.loads(json.dumps(grade.to_json()))
    assert data["students"][0]["exercises"][0]["earned"] == 0.3333
    assert data["students"][0]["score"]["percent"] == 33.3333
    assert ClassGrade.from_json(data).to_json() == data


def test_a_snapshot_without_points_reads_with_every_exercise_and_check_worth_1() -> None:
    """A kubelab.grade/v1 snapshot written before points existed."""
    old: dict[str, Any] = {
        "format": "kubelab.grade/v1",
        "lesson": "istio-traffic-splitting",
        "taken_at": "2026-11-22T14:05:00.123Z",
        "seconds": 3.2,
        "exercises": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}],
        "skipped": {},
        "summary": {"students": 1, "completed": 0, "errors": 0, "completion": 0.5},
        "students": [
            {
                "id": "ana",
                "name": "Ana",
                "email": "ana@x.org",
                "namespace": "istio-ana",
                "status": "failed",
                "score": {"passed": 1, "total": 2},
                "error": None,
                "seconds": 0.4,
                "exercises": [
                    {
                        "exercise": "a",
                        "status": "passed",
                        "superseded_by": None,
                        "attempts": 1,
                        "checks": [
                            {"id": "x", "type": "t", "status": "passed", "required": True,
                             "message": "ok", "hint": None},
                        ],
                    },
                    {
                        "exercise": "b",
                        "status": "failed",
                        "superseded_by": None,
                        "attempts": 1,
                        "checks": [
                            {"id": "x", "type": "t", "status": "passed", "required": True,
                             "message": "ok", "hint": None},
                            {"id": "y", "type": "t", "status": "failed", "required": True,
                             "message": "no", "hint": "do it"},
                        ],
                    },
                ],
            }
        ],
    }  # fmt: skip
    grade = ClassGrade.from_json(old)
    assert grade.points_of("a") == grade.points_of("b") == 1 and grade.possible == 2
    ana = grade.students[0]
    assert [e.points for e in ana.exercises] == [1, 1]
    assert [c.points for e in ana.exercises for c in e.checks] == [1, 1, 1]
    assert [e.earned for e in ana.exercises] == [1, 0.5]
    data = grade.to_json()
    assert data["students"][0]["score"] == {
        "passed": 1,
        "total": 2,
        "points": 1.5,
        "possible": 2,
        "percent": 75,
    }
    assert data["summary"]["mean_percent"] == 75


# -- through the grading engine, with a lesson whose exercises and checks have points ---------

LESSON = find_lesson("istio-traffic-splitting").lesson
GRADED = ["observe-initial-split", "split-50-50", "rollout-v2", "confirm-stable"]
STUDENT = Student("ana", "Ana", "ana@x.org")


def weighted_exercises() -> list[Any]:
    """The four exercises graded without Kiali and Jaeger, worth 2, 3, 4 and 1; the 90/10
    exercise's traffic check is worth 3 of its 6 check points, the 50/50 one's 2 of 3."""
    points = dict(zip(GRADED, (2, 3, 4, 1), strict=True))
    checks = {("observe-initial-split", "traffic-split"): 3, ("split-50-50", "traffic-split"): 2}
    out = []
    for ex in LESSON.exercises:
        if ex.id in points:
            weighted = [
                msgspec.structs.replace(c, points=checks.get((ex.id, ex.check_id(i)), 1))
                for i, c in enumerate(ex.checks)
            ]
            out.append(msgspec.structs.replace(ex, points=points[ex.id], checks=weighted))
    return out


def scripted(results: dict[str, dict[str, Status]]) -> Any:
    """A run_exercise answering each check with ``results[exercise][check]`` (default
    failed), the checks in the lesson's order."""

    def run(lesson_id: str, ex: Any, context: Any, only: Any = None) -> ExerciseOutcome:
        outcomes = []
        for i, spec in enumerate(ex.checks):
            status = results.get(ex.id, {}).get(ex.check_id(i), F)
            result = CheckResult(status, str(status))
            outcomes.append(CheckOutcome(ex.check_id(i), spec.type, spec.required, result))
        return ExerciseOutcome(lesson_id, ex.id, outcomes)

    return run


def namespaces() -> CheckContext:
    class One:
        def get(self, api_version: str, kind: str, name: str, namespace: Any = None) -> Any:
            return {"metadata": {"name": name}, "status": {"phase": "Active"}}

    return CheckContext(kube=One(), sampler=lambda spec: None)  # type: ignore[arg-type]


def grade_one(monkeypatch: pytest.MonkeyPatch, results: dict[str, dict[str, Status]]) -> Any:
    monkeypatch.setattr(grading, "run_exercise", scripted(results))
    exercises = weighted_exercises()
    result = grade_class(LESSON, [STUDENT], exercises, namespaces(), "istio")
    return result, {e.exercise: e for e in result.students[0].exercises}


ALL = {"virtualservice-weights": P, "traffic-split": P}


def test_the_engine_grades_with_the_lessons_points(monkeypatch: pytest.MonkeyPatch) -> None:
    # 90/10 still holds but the sampled traffic is off: 3 of 6 check points of 2.
    result, by_id = grade_one(
        monkeypatch,
        {
            "observe-initial-split": {
                "pods-ready": P,
                "sidecar-injected": P,
                **ALL,
                "traffic-split": F,
            }
        },
    )
    observe = by_id["observe-initial-split"]
    assert [(c.id, c.points) for c in observe.checks] == [
        ("pods-ready", 1),
        ("sidecar-injected", 1),
        ("virtualservice-weights", 1),
        ("traffic-split", 3),
    ]
    assert (observe.points, observe.earned, observe.status) == (2, 1, F)
    assert result.exercise_points == dict(zip(GRADED, (2, 3, 4, 1), strict=True))
    assert result.possible == 10 and result.total(result.students[0]) == 1


def test_a_fully_passed_later_exercise_gives_the_earlier_ones_full_credit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The student moved on to 100% v2: the 90/10 and 50/50 checks fail now.
    result, by_id = grade_one(
        monkeypatch, {"rollout-v2": ALL, "confirm-stable": {"http-stable": P}}
    )
    assert by_id["observe-initial-split"].superseded_by == "rollout-v2"
    assert by_id["split-50-50"].superseded_by == "rollout-v2"
    assert [by_id[e].earned for e in GRADED] == [2, 3, 4, 1]
    assert result.percent(result.students[0]) == 100


def test_a_partly_passed_later_exercise_supersedes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 100% v2 configured, but the traffic does not follow yet: rollout-v2 earns half of
    # its 4 points and does not stand in for the 50/50 exercise, which keeps its own
    # partial credit (the VirtualService check, 1 of its 3 check points).
    partial = {"virtualservice-weights": P, "traffic-split": F}
    result, by_id = grade_one(
        monkeypatch,
        {
            "observe-initial-split": {"pods-ready": P, "sidecar-injected": P},
            "split-50-50": {"virtualservice-weights": P},
            "rollout-v2": partial,
        },
    )
    split, rollout = by_id["split-50-50"], by_id["rollout-v2"]
    assert split.superseded_by is None and rollout.superseded_by is None
    assert split.earned == pytest.approx(1.0)  # 3 points x 1/3
    assert rollout.earned == pytest.approx(2.0)  # 4 points x 1/2
    # The 90/10 exercise is not superseded either (no later one fully passed): 2 x 2/6.
    assert by_id["observe-initial-split"].superseded_by is None
    assert by_id["observe-initial-split"].earned == pytest.approx(2 / 3)
    data = result.to_json()["students"][0]
    assert [e["earned"] for e in data["exercises"]] == [0.6667, 1.0, 2.0, 0.0]
    assert data["score"]["points"] == 3.6667 and data["score"]["possible"] == 10


def test_a_student_who_could_not_be_graded_earns_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(grading, "run_exercise", scripted({}))

    class Gone:
        def get(self, *args: Any, **kwargs: Any) -> Any:
            return None

    ctx = CheckContext(kube=Gone(), sampler=lambda spec: None)  # type: ignore[arg-type]
    result = grade_class(LESSON, [STUDENT], weighted_exercises(), ctx, "istio")
    record = result.students[0]
    assert record.error and [e.earned for e in record.exercises] == [0, 0, 0, 0]
    # Its error grades still carry what each check and exercise is worth.
    assert [e.points for e in record.exercises] == [2, 3, 4, 1]
    assert [c.points for c in record.exercises[0].checks] == [1, 1, 1, 3]
    assert result.to_json()["students"][0]["score"]["possible"] == 10
