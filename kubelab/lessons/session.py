"""A student's session: which lesson is running, which exercise is current, progress.

Progress lives in the state file beside what ``up`` created, so ``kubelab exercise``,
``hint``, ``check`` and ``progress`` agree on where the student is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubelab.errors import UsageError
from kubelab.lessons.loader import LoadedLesson, find_lesson
from kubelab.lessons.model import Exercise
from kubelab.lessons.runner import exercise_available
from kubelab.state import ExerciseProgress, LessonRecord, State, StateStore, now


@dataclass
class Session:
    loaded: LoadedLesson
    record: LessonRecord
    available: set[str] | None  # components on the lesson's cluster; None when not deployed

    @property
    def deployed(self) -> bool:
        return "deploy" in self.record.steps_done

    def progress(self, exercise_id: str) -> ExerciseProgress:
        return self.record.progress.get(exercise_id) or ExerciseProgress()

    def available_here(self, exercise: Exercise) -> bool:
        return self.available is None or exercise_available(exercise, self.available)

    def current(self) -> Exercise:
        """The first exercise not passed yet that can be done here (else the last one; the
        first when none can be done here, e.g. a lesson whose every exercise needs Argo
        Rollouts, in the sandbox)."""
        exercises = self.loaded.lesson.exercises
        for exercise in exercises:
            if self.available_here(exercise) and self.progress(exercise.id).status != "passed":
                return exercise
        if not any(self.available_here(e) for e in exercises):
            return exercises[0]
        return exercises[-1]

    @property
    def namespace(self) -> str:
        """Where this student works: the lesson's namespace, or their own in a class."""
        from kubelab.lessons.runner import lesson_namespace

        home = lesson_namespace(self.loaded.lesson)
        return str(self.record.details.get("namespace") or home)

    def localize(self, text: str) -> str:
        """Lesson text with ``-n <lesson namespace>`` pointed at the student's namespace."""
        from kubelab.lessons.runner import lesson_namespace

        home, mine = lesson_namespace(self.loaded.lesson), self.namespace
        if home == mine:
            return text
        return re.sub(
            rf"(-n |--namespace[ =]|namespace: |-n=)({re.escape(home)})(?![-a-z0-9])",
            lambda m: m.group(1) + mine,
            text,
        )

    def checkable(self, exercise: Exercise) -> Exercise:
        """``exercise`` with its checks aimed at the student's namespace."""
        from kubelab.lessons.runner import lesson_namespace

        return exercise.in_namespace(lesson_namespace(self.loaded.lesson), self.namespace)

    def exercise(self, exercise_id: str | None) -> Exercise:
        if exercise_id is None:
            return self.current()
        found = self.loaded.lesson.exercise(exercise_id)
        if found is None:
            ids = ", ".join(e.id for e in self.loaded.lesson.exercises)
            raise UsageError(
                f"lesson {self.loaded.lesson.id} has no exercise {exercise_id!r}",
                hint=f"Exercises: {ids}",
            )
        return found


def running_lessons(state: State) -> list[LessonRecord]:
    return [r for r in state.lessons.values() if "deploy" in r.steps_done]


def open_session(store: StateStore, lesson: str | None) -> Session:
    """The session of ``lesson``, or of the one running lesson when not given."""
    from kubelab.providers import get_provider

    state = store.load()
    if lesson is None:
        running = running_lessons(state)
        if not running:
            raise UsageError(
                "no lesson is running",
                hint="Start one: kubelab up istio-traffic-splitting --provider sandbox "
                "(or name one with --lesson to read its exercises).",
            )
        if len(running) > 1:
            names = ", ".join(r.lesson for r in running)
            raise UsageError(
                f"several lessons are running ({names})", hint="Choose one with --lesson ID."
            )
        lesson = running[0].lesson
    loaded = find_lesson(lesson)
    record = state.lessons.get(loaded.lesson.id) or LessonRecord(lesson=loaded.lesson.id)
    available = None
    if "deploy" in record.steps_done and record.provider:
        available = get_provider(record.provider).available_components(loaded.lesson.components)
    return Session(loaded, record, available)


def record_progress(
    store: StateStore,
    lesson_id: str,
    exercise_id: str,
    status: str | None = None,
    hint_shown: bool = False,
) -> ExerciseProgress:
    with store.transaction() as state:
        record = state.lesson(lesson_id)
        progress = record.progress.setdefault(exercise_id, ExerciseProgress())
        if status is not None:
            progress.status = status
            progress.checked_at = now()
            progress.attempts += 1
        if hint_shown:
            progress.hints_shown += 1
        return progress.model_copy()
