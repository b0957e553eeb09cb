"""Helpers of the tests that grade a class with points and export its gradebook CSV: the
traffic-splitting lesson with weighted exercises and checks, and the check that a
gradebook CSV says what the JSON grade of the same run says (docs/grading.md)."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

import msgspec

from kubelab.lessons.loader import LoadedLesson

#: What each exercise of istio-traffic-splitting is worth in the weighted lesson.
EXERCISE_POINTS = {
    "observe-initial-split": 2.0,
    "kiali-graph": 1.0,
    "split-50-50": 3.0,
    "jaeger-traces": 1.0,
    "rollout-v2": 4.0,
    "confirm-stable": 1.0,
}
#: (exercise, check id) -> the check's share; the others keep 1.
CHECK_POINTS = {
    ("observe-initial-split", "virtualservice-weights"): 2.0,
    ("observe-initial-split", "traffic-split"): 2.0,
    ("split-50-50", "traffic-split"): 2.0,
}

#: The columns before the exercises and after them, per LMS (report.gradebook_rows).
LEADING = {
    "generic": ["id", "name", "email"],
    "moodle": ["Email address", "Full name", "kubelab ID"],
    "canvas": ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"],
    "google-classroom": ["Email Address", "Full Name", "kubelab ID"],
}
TRAILING = {
    "generic": ["total", "possible", "percent"],
    "moodle": ["Total"],
    "canvas": ["Final Points"],
    "google-classroom": ["Total"],
}


def weighted(loaded: LoadedLesson) -> LoadedLesson:
    """``loaded`` with :data:`EXERCISE_POINTS` and :data:`CHECK_POINTS` (as a lesson author
    would write ``points:`` on exercises and checks)."""
    exercises = []
    for exercise in loaded.lesson.exercises:
        checks = [
            msgspec.structs.replace(
                check, points=CHECK_POINTS.get((exercise.id, exercise.check_id(i)), 1.0)
            )
            for i, check in enumerate(exercise.checks)
        ]
        exercises.append(
            msgspec.structs.replace(
                exercise, points=EXERCISE_POINTS.get(exercise.id, 1.0), checks=checks
            )
        )
    lesson = msgspec.structs.replace(loaded.lesson, exercises=exercises)
    return dataclasses.replace(loaded, lesson=lesson)


def cents(value: float) -> int:
    """Points in hundredths, as the gradebook writes them (2 decimals)."""
    return round(value * 100)


def check_gradebook(text: str, data: dict[str, Any], lms: str) -> dict[str, dict[str, float]]:
    """Assert that the gradebook CSV ``text`` (``--lms lms``) is laid out as that LMS
    imports it and says what the JSON grade ``data`` of the same run says: one row per
    student in roster order, the points earned per exercise (2 decimals), a total that is
    the sum of the row's cells. Returns student id -> exercise id -> points."""
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")  # RFC 4180 lines
    rows = list(csv.reader(io.StringIO(text, newline="")))
    exercises = data["exercises"]
    titled = lms != "generic"
    names = [e["title"] if titled else e["id"] for e in exercises]
    assert rows[0] == [*LEADING[lms], *names, *TRAILING[lms]], rows[0]
    body = rows[1:]
    if lms == "canvas":
        points_row, body = body[0], body[1:]
        assert points_row[:5] == ["Points Possible", "", "", "", ""]
        assert [float(p) for p in points_row[5:-1]] == [e["points"] for e in exercises]
        assert float(points_row[-1]) == data["summary"]["possible"]
    assert len(body) == len(data["students"])
    found: dict[str, dict[str, float]] = {}
    first = len(LEADING[lms])
    for row, student in zip(body, data["students"], strict=True):
        assert len(row) == len(rows[0])
        identity = dict(zip(LEADING[lms], row, strict=False))
        if lms == "generic":
            assert identity == {
                "id": student["id"],
                "name": student["name"],
                "email": student["email"],
            }
        elif lms == "canvas":
            assert (identity["Student"], identity["SIS Login ID"]) == (
                student["name"],
                student["email"],
            )
            assert identity["ID"] == identity["SIS User ID"] == identity["Section"] == ""
        else:
            assert row[:3] == [student["email"], student["name"], student["id"]]
        cells = [float(c) for c in row[first : first + len(exercises)]]
        earned = {e["exercise"]: e["earned"] for e in student["exercises"]}
        assert [cents(c) for c in cells] == [cents(earned[e["id"]]) for e in exercises], (
            student["id"],
            row,
        )
        total = float(row[first + len(exercises)])
        assert cents(total) == sum(cents(c) for c in cells)
        # The total of the cells as written is the JSON's within the rounding of each cell.
        assert abs(total - student["score"]["points"]) <= 0.005 * len(exercises) + 1e-9
        if lms == "generic":
            assert float(row[-2]) == student["score"]["possible"]
            assert abs(float(row[-1]) - student["score"]["percent"]) <= 0.005
        found[student["id"]] = dict(zip((e["id"] for e in exercises), cells, strict=True))
    return found
