"""What grading a class produces: one ``ClassGrade`` per run, stored as a snapshot.

The JSON form (:meth:`ClassGrade.to_json`) is the documented report format
(docs/grading.md, ``"format": "kubelab.grade/v1"``); snapshots are stored in it and read
back with :meth:`ClassGrade.from_json`, so every report can be made again from a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubelab.checks.result import Status, worst

FORMAT = "kubelab.grade/v1"


@dataclass
class CheckGrade:
    id: str
    type: str
    status: Status
    message: str
    hint: str | None = None
    required: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "status": str(self.status),
            "required": self.required,
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
        )


@dataclass
class ExerciseGrade:
    exercise: str
    checks: list[CheckGrade]
    attempts: int = 1
    # A later exercise that passes and starts from this one's end state: this one counts
    # as done although its own checks no longer hold (the lesson's ``superseded_by``).
    superseded_by: str | None = None

    @property
    def checks_status(self) -> Status:
        return worst(c.status for c in self.checks if c.required)

    @property
    def status(self) -> Status:
        return Status.PASSED if self.superseded_by else self.checks_status

    def to_json(self) -> dict[str, Any]:
        return {
            "exercise": self.exercise,
            "status": str(self.status),
            "superseded_by": self.superseded_by,
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
    def status(self) -> Status:
        if self.error:
            return Status.ERROR
        return worst(e.status for e in self.exercises)

    def exercise(self, exercise_id: str) -> ExerciseGrade | None:
        return next((e for e in self.exercises if e.exercise == exercise_id), None)

    def to_json(self, total: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "namespace": self.namespace,
            "status": str(self.status),
            "score": {"passed": self.passed, "total": total},
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
        return {
            "format": FORMAT,
            "lesson": self.lesson,
            "taken_at": self.taken_at,
            "seconds": round(self.seconds, 3),
            "exercises": [{"id": i, "title": t} for i, t in self.exercises],
            "skipped": dict(self.skipped),
            "summary": {
                "students": len(self.students),
                "completed": sum(1 for s in self.students if s.passed == total and total),
                "errors": sum(1 for s in self.students if s.status is Status.ERROR),
                "completion": round(self.completion(), 4),
                "per_exercise": self.per_exercise(),
            },
            "students": [s.to_json(total) for s in self.students],
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
        )
