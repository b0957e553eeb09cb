"""Recording a student's progress: check outcomes, hints shown, and forgetting it all.

Progress lives in the state file's own ``progress`` (lesson -> exercise), apart from what
``up`` created, so it survives ``down`` and a later ``up``.
"""

from __future__ import annotations

import msgspec

from kubelab.state import ExerciseProgress, StateStore, now


def record_progress(
    store: StateStore,
    lesson_id: str,
    exercise_id: str,
    status: str | None = None,
    hint_shown: bool = False,
    student: bool = True,
) -> ExerciseProgress:
    """Record a check's outcome (or a hint shown). ``student=False`` for the checks `up`
    runs: recorded, but a pass then does not make the exercise done, so the student still
    starts with exercise 1 (an observation exercise passes before anyone did anything)."""
    with store.transaction() as state:
        progress = state.progress.setdefault(lesson_id, {}).setdefault(
            exercise_id, ExerciseProgress()
        )
        if status is not None:
            progress.status = status
            progress.checked_at = now()
            progress.attempts += 1
            if status == "passed" and progress.passed_at is None and student:
                progress.passed_at = progress.checked_at
        if hint_shown:
            progress.hints_shown += 1
        return msgspec.structs.replace(progress)


def reset_progress(store: StateStore, lesson_id: str) -> int:
    """Forget a lesson's progress; returns how many exercises had some."""
    with store.transaction() as state:
        return len(state.progress.pop(lesson_id, {}))
