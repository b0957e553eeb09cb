"""What grading a class produces: one ``ClassGrade`` per run, stored as a snapshot.

The JSON form (:meth:`ClassGrade.to_json`) is the documented report format
(docs/grading.md, ``"format": "kubelab.grade/v1"``); snapshots are stored in it and read
back with :meth:`ClassGrade.from_json`, so every report can be made again from a snapshot.

Points (docs/grading.md, "Points and partial credit"): an exercise is worth its lesson
``points``; a passed exercise, or one superseded by a later exercise that fully passed,
earns all of them; otherwise it earns its points times the share of its required checks'
points that passed. Optional checks earn nothing. Snapshots written before points existed
read back with every exercise and check worth 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubelab.checks.result import Status, worst

FORMAT = "kubelab.grade/v1"
DEFAULT_POINTS = 1.0  # what an exercise or check is worth when a snapshot does not say


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


@dataclass
class CheckGrade:
    id: str
    type: str
    status: Status
    message: str
    hint: str | None = None
    required: bool = True
    # The check's share of its exercise's points (partial credit); optional checks earn
    # nothing whatever their points.
    points: float = DEFAULT_POINTS

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "status": str(self.status),
            "required": self.required,
            "points": self.points,
            "message": self.message,
            "hint": self.hint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckGrade:
        return cls(
            data["id"],
            data["type"],
            Status(data["status"]),
            data["message"],
            data.get("hint"),
            bool(data.get("required", True)),
            float(data.get("points", DEFAULT_POINTS)),
        )


@dataclass
class ExerciseGrade:
    exercise: str
    checks: list[CheckGrade]
    attempts: int = 1
    # A later exercise that passes and starts from this one's end state: this one counts
    # as done although its own checks no longer hold (the lesson's ``superseded_by``).
    superseded_by: str | None = None
    points: float = DEFAULT_POINTS  # what the exercise is worth (the lesson's ``points``)

    @property
    def checks_status(self) -> Status:
        return worst(c.status for c in self.checks if c.required)

    @property
    def status(self) -> Status:
        return Status.PASSED if self.superseded_by else self.checks_status

    @property
    def earned(self) -> float:
        """All the points when passed or superseded (also with no required check); else
        the points times the share of the required checks' points that passed (pending,
        failed and error earn nothing)."""
        if self.status is Status.PASSED:
            return self.points
        required = [c for c in self.checks if c.required]
        done = sum(c.points for c in required if c.status is Status.PASSED)
        return self.points * _ratio(done, sum(c.points for c in required))

    def to_json(self) -> dict[str, Any]:
        return {
            "exercise": self.exercise,
            "status": str(self.status),
            "superseded_by": self.superseded_by,
            "points": self.points,
            "earned": round(self.earned, 4),
            "attempts": self.attempts,
            "checks": [c.to_json() for c in self.checks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExerciseGrade:
        return cls(
            data["exercise"],
            [CheckGrade.from_json(c) for c in data["checks"]],
            int(data.get("attempts", 1)),
            data.get("superseded_by"),
            float(data.get("points", DEFAULT_POINTS)),
        )


@dataclass
class StudentGrade:
    id: str
    name: str
    email: str
    namespace: str
    exercises: list[ExerciseGrade] = field(default_factory=list)
    # Set when the student could not be graded at all (namespace deleted, deadline hit).
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(1 for e in self.exercises if e.status is Status.PASSED)

    @property
    def earned(self) -> float:
        return sum(e.earned for e in self.exercises)

    @property
    def possible(self) -> float:
        return sum(e.points for e in self.exercises)

    def percent(self, possible: float | None = None) -> float:
        """Points earned as a percentage (0-100) of ``possible`` (default: what this
        student's exercises are worth)."""
        return 100 * _ratio(self.earned, self.possible if possible is None else possible)

    @property
    def status(self) -> Status:
        if self.error:
            return Status.ERROR
        return worst(e.status for e in self.exercises)

    def exercise(self, exercise_id: str) -> ExerciseGrade | None:
        return next((e for e in self.exercises if e.exercise == exercise_id), None)

    def to_json(self, total: int, possible: float | None = None) -> dict[str, Any]:
        """``total``: exercises graded; ``possible``: the points they are worth (default:
        those of this student's exercises)."""
        possible = self.possible if possible is None else possible
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "namespace": self.namespace,
            "status": str(self.status),
            "score": {
                "passed": self.passed,
                "total": total,
                "points": round(self.earned, 4),
                "possible": round(possible, 4),
                "percent": round(self.percent(possible), 4),
            },
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "exercises": [e.to_json() for e in self.exercises],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudentGrade:
        return cls(
            data["id"],
            data["name"],
            data["email"],
            data["namespace"],
            [ExerciseGrade.from_json(e) for e in data["exercises"]],
            data.get("error"),
            float(data.get("seconds", 0.0)),
        )


@dataclass
class ClassGrade:
    lesson: str
    taken_at: str  # ISO 8601, UTC
    exercises: list[tuple[str, str]]  # (id, title) of the graded exercises, in lesson order
    students: list[StudentGrade]
    skipped: dict[str, str] = field(default_factory=dict)  # exercise id -> why not graded
    seconds: float = 0.0
    # Exercise id -> what it is worth (absent: DEFAULT_POINTS, as in older snapshots).
    exercise_points: dict[str, float] = field(default_factory=dict)

    def points_of(self, exercise_id: str) -> float:
        return self.exercise_points.get(exercise_id, DEFAULT_POINTS)

    @property
    def possible(self) -> float:
        """The points a student can earn: the sum of the graded exercises' points."""
        return sum(self.points_of(ex_id) for ex_id, _ in self.exercises)

    def earned(self, student: StudentGrade, exercise_id: str) -> float:
        """What ``student`` earned on ``exercise_id`` (0 when it was not graded)."""
        grade = student.exercise(exercise_id)
        return grade.earned if grade is not None else 0.0

    def total(self, student: StudentGrade) -> float:
        """The points ``student`` earned over the graded exercises."""
        return sum(self.earned(student, ex_id) for ex_id, _ in self.exercises)

    def percent(self, student: StudentGrade) -> float:
        """``student``'s points as a percentage (0-100) of :attr:`possible`."""
        return 100 * _ratio(self.total(student), self.possible)

    def mean_percent(self) -> float:
        """The class's mean of the students' percentages (0-100)."""
        percents = [self.percent(s) for s in self.students]
        return sum(percents) / len(percents) if percents else 0.0

    def per_exercise(self) -> dict[str, dict[str, int]]:
        """Exercise id -> number of students per status."""
        out: dict[str, dict[str, int]] = {}
        for ex_id, _ in self.exercises:
            counts = {str(s): 0 for s in Status}
            for student in self.students:
                grade = student.exercise(ex_id)
                counts[str(grade.status if grade else Status.ERROR)] += 1
            out[ex_id] = counts
        return out

    def completion(self) -> float:
        """Share of (student, exercise) pairs passed, 0..1."""
        total = len(self.students) * len(self.exercises)
        return sum(s.passed for s in self.students) / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        total = len(self.exercises)
        possible = self.possible
        return {
            "format": FORMAT,
            "lesson": self.lesson,
            "taken_at": self.taken_at,
            "seconds": round(self.seconds, 3),
            "exercises": [
                {"id": i, "title": t, "points": self.points_of(i)} for i, t in self.exercises
            ],
            "skipped": dict(self.skipped),
            "summary": {
                "students": len(self.students),
                "completed": sum(1 for s in self.students if s.passed == total and total),
                "errors": sum(1 for s in self.students if s.status is Status.ERROR),
                "completion": round(self.completion(), 4),
                "possible": round(possible, 4),
                "mean_percent": round(self.mean_percent(), 4),
                "per_exercise": self.per_exercise(),
            },
            "students": [s.to_json(total, possible) for s in self.students],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassGrade:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} report (format {data.get('format')!r})")
        return cls(
            data["lesson"],
            data["taken_at"],
            [(e["id"], e["title"]) for e in data["exercises"]],
            [StudentGrade.from_json(s) for s in data["students"]],
            dict(data.get("skipped") or {}),
            float(data.get("seconds", 0.0)),
            {e["id"]: float(e.get("points", DEFAULT_POINTS)) for e in data["exercises"]},
        )
