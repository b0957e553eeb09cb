"""Where a student is: the current exercise, progress that survives `down`, exercise lookup."""

from __future__ import annotations

import json

import pytest

from kubelab.errors import UsageError
from kubelab.lessons.loader import find_lesson
from kubelab.lessons.progress import record_progress, reset_progress
from kubelab.lessons.session import Session
from kubelab.state import LessonRecord, StateStore

LESSON = "istio-traffic-splitting"


@pytest.fixture
def store(tmp_path):
    return StateStore(tmp_path / "state.json")


def session(store: StateStore, available: set[str] | None = frozenset()) -> Session:
    # No component available, as in the sandbox: kiali-graph and jaeger-traces are skipped.
    state = store.load()
    return Session(
        find_lesson(LESSON),
        state.lessons.get(LESSON) or LessonRecord(lesson=LESSON),
        None if available is None else set(available),
        dict(state.progress.get(LESSON) or {}),
    )


def current(store: StateStore) -> str | None:
    found = session(store).current()
    return found.id if found else None


def test_a_failed_check_of_a_superseded_exercise_does_not_hold_the_student_back(store):
    record_progress(store, LESSON, "observe-initial-split", "passed")
    record_progress(store, LESSON, "split-50-50", "failed")
    assert current(store) == "split-50-50"
    record_progress(store, LESSON, "rollout-v2", "passed")
    # split-50-50 is superseded by rollout-v2: the student is at confirm-stable now.
    assert current(store) == "confirm-stable"
    record_progress(store, LESSON, "confirm-stable", "passed")
    assert current(store) is None
    assert session(store).current_or_last().id == "confirm-stable"


def test_the_current_exercise_never_goes_backwards(store):
    record_progress(store, LESSON, "observe-initial-split", "passed")
    record_progress(store, LESSON, "split-50-50", "passed")
    assert current(store) == "rollout-v2"
    # Once at 100% v2, the earlier checks fail (the split moved on): still at rollout-v2.
    record_progress(store, LESSON, "split-50-50", "failed")
    record_progress(store, LESSON, "observe-initial-split", "failed")
    assert current(store) == "rollout-v2"
    progress = session(store).progress("split-50-50")
    assert progress.status == "failed" and progress.passed_at is not None
    assert progress.attempts == 2


def test_unavailable_exercises_are_skipped_and_available_ones_are_not(store):
    record_progress(store, LESSON, "observe-initial-split", "passed")
    assert current(store) == "split-50-50"  # kiali-graph needs kiali
    everything = session(store, available=None).current()
    assert everything is not None and everything.id == "kiali-graph"


def test_progress_lives_beside_the_lesson_record_and_reset_forgets_it(store):
    record_progress(store, LESSON, "observe-initial-split", "passed")
    with store.transaction() as state:  # what `down` does to the lesson's record
        state.lessons.pop(LESSON, None)
    assert current(store) == "split-50-50"
    assert reset_progress(store, LESSON) == 1
    assert current(store) == "observe-initial-split"


def test_a_version_1_state_file_keeps_its_progress(store):
    store.path.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "lessons": {
                    LESSON: {
                        "lesson": LESSON,
                        "steps_done": ["deploy"],
                        "progress": {"observe-initial-split": {"status": "passed", "attempts": 1}},
                    }
                },
            }
        )
    )
    state = store.load()
    assert state.progress[LESSON]["observe-initial-split"].status == "passed"
    assert state.lessons[LESSON].steps_done == ["deploy"]


def test_exercises_by_number_and_a_did_you_mean(store):
    s = session(store)
    assert s.exercise("3").id == "split-50-50"
    assert s.exercise("1").id == "observe-initial-split"
    with pytest.raises(UsageError, match="has exercises 1 to 6, not 7"):
        s.exercise("7")
    with pytest.raises(UsageError, match="did you mean split-50-50"):
        s.exercise("split-5050")
    with pytest.raises(UsageError) as info:
        s.exercise("zzz")
    assert "did you mean" not in str(info.value)


def test_a_pass_during_up_is_recorded_but_the_student_still_starts_at_exercise_1(store):
    record_progress(store, LESSON, "observe-initial-split", "passed", student=False)
    progress = session(store).progress("observe-initial-split")
    assert progress.status == "passed" and progress.attempts == 1 and progress.passed_at is None
    assert current(store) == "observe-initial-split"
    record_progress(store, LESSON, "observe-initial-split", "passed")
    assert current(store) == "split-50-50"
