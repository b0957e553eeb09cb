"""A student's session: which lesson is running, which exercise is current, progress.

Progress lives in the state file beside what ``up`` created, so ``kubelab exercise``,
``hint``, ``check`` and ``progress`` agree on where the student is.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from kubelab.errors import UsageError
from kubelab.i18n import _
from kubelab.lessons.loader import LoadedLesson, find_lesson
from kubelab.lessons.model import Exercise
from kubelab.lessons.runner import exercise_available
from kubelab.state import ExerciseProgress, LessonRecord, State, StateStore


@dataclass
class Session:
    loaded: LoadedLesson
    record: LessonRecord
    available: set[str] | None  # components on the lesson's cluster; None when not deployed
    progress_of: dict[str, ExerciseProgress] = field(default_factory=dict)

    @property
    def deployed(self) -> bool:
        return "deploy" in self.record.steps_done

    def progress(self, exercise_id: str) -> ExerciseProgress:
        return self.progress_of.get(exercise_id) or ExerciseProgress()

    def available_here(self, exercise: Exercise) -> bool:
        return self.available is None or exercise_available(exercise, self.available)

    def done(self, exercise: Exercise) -> bool:
        """Passed once, or superseded by a later exercise that passed once."""
        return any(
            self.progress(e).passed_at is not None for e in (exercise.id, *exercise.superseded_by)
        )

    def current(self) -> Exercise | None:
        """The first exercise that can be done here and is not done; None when all are.

        "Done" only ever grows (a pass is remembered when a later check fails), so the
        current exercise never goes backwards. When no exercise can be done here (a lesson
        whose every exercise needs Argo Rollouts, in the sandbox) it is the first one.
        """
        exercises = self.loaded.lesson.exercises
        here = [e for e in exercises if self.available_here(e)]
        if not here:
            return exercises[0]
        return next((e for e in here if not self.done(e)), None)

    def current_or_last(self) -> Exercise:
        """The current exercise, or the last one once the lesson is complete."""
        current = self.current()
        if current is not None:
            return current
        here = [e for e in self.loaded.lesson.exercises if self.available_here(e)]
        return here[-1]

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
        """An exercise by id or by its number (1-based, as the screen shows "3/6")."""
        if exercise_id is None:
            return self.current_or_last()
        exercises = self.loaded.lesson.exercises
        if exercise_id.isdigit():
            number = int(exercise_id)
            if 1 <= number <= len(exercises):
                return exercises[number - 1]
            raise UsageError(
                _("lesson {lesson} has exercises 1 to {count}, not {number}").format(
                    lesson=self.loaded.lesson.id, count=len(exercises), number=number
                ),
                hint=_("kubelab progress --lesson {lesson} lists them.").format(
                    lesson=self.loaded.lesson.id
                ),
            )
        found = self.loaded.lesson.exercise(exercise_id)
        if found is None:
            ids = [e.id for e in exercises]
            close = difflib.get_close_matches(exercise_id, ids, n=1, cutoff=0.5)
            message = _("lesson {lesson} has no exercise {exercise!r}").format(
                lesson=self.loaded.lesson.id, exercise=exercise_id
            )
            if close:
                message += "; " + _("did you mean {exercise}?").format(exercise=close[0])
            raise UsageError(
                message,
                hint=_("Exercises: {ids} (or their numbers, 1 to {count}).").format(
                    ids=", ".join(ids), count=len(ids)
                ),
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
        if len(running) > 1:
            names = ", ".join(r.lesson for r in running)
            raise UsageError(
                _("several lessons are running ({names})").format(names=names),
                hint=_("Choose one with --lesson ID."),
            )
        if running:
            lesson = running[0].lesson
        elif len(state.progress) == 1:
            # Nothing runs (after `down`), but the student's progress of one lesson is kept.
            (lesson,) = state.progress
        else:
            raise UsageError(
                _("no lesson is running"),
                hint=_(
                    "Start one: kubelab up istio-traffic-splitting --provider sandbox "
                    "(or name one with --lesson to read its exercises)."
                ),
            )
    loaded = find_lesson(lesson)
    record = state.lessons.get(loaded.lesson.id) or LessonRecord(lesson=loaded.lesson.id)
    available = None
    if "deploy" in record.steps_done and record.provider:
        provider = get_provider(record.provider)
        loaded = loaded.on(provider)  # the offline paths, in the sandbox
        available = provider.available_components(loaded.lesson.components)
    return Session(loaded, record, available, dict(state.progress.get(loaded.lesson.id) or {}))
