"""Grading a whole class: every exercise's checks for every student, concurrently.

The work is one task per (student, exercise), run by a bounded pool of threads (checks
spend their time waiting for the API server, so threads overlap that wait). A task whose
checks could not run (``error``: API busy, a dropped connection) is retried with backoff;
each student has a deadline, after which their remaining exercises are reported as
``error`` instead of holding up the class. A student whose namespace is gone or broken
gets ``error`` with the reason, never a crash of the whole run.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kubelab.checks.registry import CheckContext
from kubelab.checks.result import Status
from kubelab.checks.runner import ExerciseOutcome, run_exercise
from kubelab.classroom.model import (
    DEFAULT_POINTS,
    CheckGrade,
    ClassGrade,
    ExerciseGrade,
    StudentGrade,
)
from kubelab.classroom.roster import Student
from kubelab.errors import KubelabError
from kubelab.i18n import Lang
from kubelab.lessons.model import Exercise, Lesson

DEFAULT_CONCURRENCY = 64


@dataclass
class GradeOptions:
    concurrency: int = DEFAULT_CONCURRENCY
    retries: int = 2  # extra attempts of an exercise whose checks could not run
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    student_deadline: float = 300.0  # seconds for all of one student's exercises
    sleep: Callable[[float], None] = time.sleep
    # Told (students graded so far, students in all) each time a student is done.
    on_student: Callable[[int, int], None] | None = None


def _check_points(exercise: Exercise) -> dict[str, float]:
    """Check id -> the check's ``points`` (its share of the exercise's)."""
    return {exercise.check_id(i): float(spec.points) for i, spec in enumerate(exercise.checks)}


def _grade_of(outcome: ExerciseOutcome, attempts: int, exercise: Exercise) -> ExerciseGrade:
    points = _check_points(exercise)
    return ExerciseGrade(
        outcome.exercise,
        [
            CheckGrade(
                c.id,
                c.type,
                c.result.status,
                c.result.message,
                c.result.hint,
                c.required,
                points.get(c.id, DEFAULT_POINTS),
            )
            for c in outcome.checks
        ],
        attempts,
        points=float(exercise.points),
    )


def _error_grade(exercise: Exercise, message: str) -> ExerciseGrade:
    return ExerciseGrade(
        exercise.id,
        [
            CheckGrade(
                exercise.check_id(i),
                spec.type,
                Status.ERROR,
                message,
                None,
                spec.required,
                float(spec.points),
            )
            for i, spec in enumerate(exercise.checks)
        ],
        0,
        points=float(exercise.points),
    )


def mark_superseded(exercises: Sequence[Exercise], record: StudentGrade) -> None:
    """Count an exercise as done when a later one that starts from its end state passes,
    every required check of it (a later exercise that passes only in part supersedes
    nothing: the earlier one keeps its own partial credit)."""
    if record.error:
        return
    passed = {g.exercise for g in record.exercises if g.checks_status is Status.PASSED}
    for exercise, grade in zip(exercises, record.exercises, strict=True):
        if grade.checks_status is Status.PASSED:
            continue
        grade.superseded_by = next((e for e in exercise.superseded_by if e in passed), None)


def namespace_problem(ctx: CheckContext, namespace: str) -> str | None:
    """Why ``namespace`` cannot be graded (deleted, being deleted), or None."""
    obj = ctx.kube.get("v1", "Namespace", namespace)
    if obj is None:
        return (
            f"namespace {namespace} does not exist (deleted?); "
            "`kubelab class create` creates it again"
        )
    meta = obj.get("metadata") or {}
    if meta.get("deletion_timestamp") or meta.get("deletionTimestamp"):
        return f"namespace {namespace} is being deleted"
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Terminating":
        return f"namespace {namespace} is being deleted"
    return None


def grade_class(
    lesson: Lesson,
    students: Sequence[Student],
    exercises: Sequence[Exercise],
    ctx: CheckContext,
    lesson_namespace: str,
    options: GradeOptions | None = None,
    skipped: dict[str, str] | None = None,
    lang: Lang = "en",
) -> ClassGrade:
    """Grade ``exercises`` for ``students``; ``ctx`` reaches the class's cluster."""
    opts = options or GradeOptions()
    started = time.monotonic()
    # Milliseconds: two runs within a second are two snapshots.
    taken_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    grades = {
        s.id: StudentGrade(s.id, s.name, s.email, s.namespace(lesson_namespace)) for s in students
    }
    first_task: dict[str, float] = {}
    results: dict[tuple[str, str], ExerciseGrade] = {}
    remaining = {s.id: len(exercises) for s in students}
    finished = 0  # students whose every exercise is graded
    lock = threading.Lock()

    def finish(student: Student, exercise: Exercise, grade: ExerciseGrade) -> None:
        nonlocal finished
        with lock:
            results[(student.id, exercise.id)] = grade
            remaining[student.id] -= 1
            done = remaining[student.id] == 0
            finished += done
            count = finished
        if done:
            record = grades[student.id]
            record.exercises = [results[(student.id, e.id)] for e in exercises]
            mark_superseded(exercises, record)
            record.seconds = time.monotonic() - first_task[student.id]
            if opts.on_student is not None:
                opts.on_student(count, len(students))

    def check_namespace(student: Student) -> None:
        namespace = grades[student.id].namespace
        try:
            problem = namespace_problem(ctx, namespace)
        except KubelabError as exc:
            problem = f"could not read namespace {namespace}: {exc.message}"
        if problem:
            grades[student.id].error = problem

    def task(student: Student, exercise: Exercise) -> None:
        record = grades[student.id]
        if record.error:
            first_task.setdefault(student.id, time.monotonic())
            finish(student, exercise, _error_grade(exercise, record.error))
            return
        with lock:  # the student's clock starts with their first exercise, not the class's
            first_task.setdefault(student.id, time.monotonic())
            deadline = first_task[student.id] + opts.student_deadline
        target = exercise.in_namespace(lesson_namespace, record.namespace)
        delay = opts.backoff
        attempts = 0
        while True:
            if time.monotonic() > deadline:
                message = (
                    f"not graded: the deadline of {opts.student_deadline:g}s per student "
                    "was reached"
                )
                finish(student, exercise, _error_grade(exercise, message))
                return
            attempts += 1
            outcome = run_exercise(lesson.id, target, ctx)
            if outcome.status is not Status.ERROR or attempts > opts.retries:
                finish(student, exercise, _grade_of(outcome, attempts, exercise))
                return
            opts.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay *= 2

    with ThreadPoolExecutor(max_workers=max(1, opts.concurrency)) as pool:
        list(pool.map(check_namespace, students))
        futures = [pool.submit(task, s, e) for s in students for e in exercises]
        for future in futures:
            future.result()
    if not exercises:
        for record in grades.values():
            record.seconds = time.monotonic() - started
    return ClassGrade(
        lesson.id,
        taken_at,
        [(e.id, lesson.text(e.title, lang)) for e in exercises],
        [grades[s.id] for s in students],
        dict(skipped or {}),
        time.monotonic() - started,
        {e.id: float(e.points) for e in exercises},
    )
