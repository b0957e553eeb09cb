"""A lesson's own CI (``kubelab test``): up, then per exercise check -> solve -> check, down.

Like a track test on lab platforms or a Molecule test run: for each exercise in order,
its checks must not pass before its solve script (unless the lesson marks it
``passes_before_solve``: a check that cannot fail grades nothing), the solve script must
succeed, and every check must pass after it. Exercises the provider cannot run (they
need components the sandbox lacks) are reported as skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kubelab import paths
from kubelab.checks.result import Status
from kubelab.checks.runner import ExerciseOutcome, run_exercise, wait_for_exercise
from kubelab.cluster.kube import Kube
from kubelab.errors import KubelabError, KubelabTimeout, UsageError
from kubelab.lessons.loader import LoadedLesson
from kubelab.lessons.runner import (
    LessonRunner,
    check_context,
    exercise_available,
    lesson_namespace,
)
from kubelab.lessons.session import running_lessons
from kubelab.lessons.solve import run_solve
from kubelab.providers.base import Provider
from kubelab.state import StateStore


@dataclass
class ExerciseReport:
    exercise: str
    result: str  # "passed", "failed", "skipped", "error"
    seconds: float
    problems: list[str] = field(default_factory=list)
    before: ExerciseOutcome | None = None
    after: ExerciseOutcome | None = None
    solve_output: str = ""
    skipped_because: str = ""


@dataclass
class TestReport:
    lesson: str
    provider: str
    exercises: list[ExerciseReport]
    setup_error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.setup_error is None and all(
            e.result in ("passed", "skipped") for e in self.exercises
        )

    @property
    def tested(self) -> int:
        """How many exercises were run (not skipped)."""
        return sum(e.result != "skipped" for e in self.exercises)

    def to_json(self) -> dict[str, object]:
        return {
            "lesson": self.lesson,
            "provider": self.provider,
            "passed": self.passed,
            "tested": self.tested,
            "setup_error": self.setup_error,
            "seconds": round(self.seconds, 2),
            "exercises": [
                {
                    "exercise": e.exercise,
                    "result": e.result,
                    "seconds": round(e.seconds, 2),
                    "problems": e.problems,
                    "skipped_because": e.skipped_because or None,
                    "before": e.before.to_json() if e.before else None,
                    "after": e.after.to_json() if e.after else None,
                }
                for e in self.exercises
            ],
        }

    def to_junit(self) -> str:
        suite = ET.Element(
            "testsuite",
            name=f"kubelab.{self.lesson}",
            tests=str(len(self.exercises)),
            failures=str(sum(e.result == "failed" for e in self.exercises)),
            errors=str(sum(e.result == "error" for e in self.exercises) + bool(self.setup_error)),
            skipped=str(sum(e.result == "skipped" for e in self.exercises)),
            time=f"{self.seconds:.2f}",
        )
        ET.SubElement(
            ET.SubElement(suite, "properties"), "property", name="provider", value=self.provider
        )
        if self.setup_error:
            case = ET.SubElement(suite, "testcase", classname=self.lesson, name="up", time="0")
            ET.SubElement(case, "error", message=self.setup_error).text = self.setup_error
        for e in self.exercises:
            case = ET.SubElement(
                suite, "testcase", classname=self.lesson, name=e.exercise, time=f"{e.seconds:.2f}"
            )
            if e.result == "skipped":
                ET.SubElement(case, "skipped", message=e.skipped_because)
            elif e.result in ("failed", "error"):
                text = "\n".join(e.problems)
                ET.SubElement(
                    case,
                    "failure" if e.result == "failed" else "error",
                    message=e.problems[0] if e.problems else e.result,
                ).text = text
            lines = []
            for label, outcome in (("before solve", e.before), ("after solve", e.after)):
                if outcome:
                    lines.append(f"{label}: {outcome.status}")
                    lines += [
                        f"  {c.id}: {c.result.status}: {c.result.message}" for c in outcome.checks
                    ]
            if e.solve_output:
                lines += ["solve output:", e.solve_output]
            ET.SubElement(case, "system-out").text = "\n".join(lines)
        ET.indent(suite)
        return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


@contextlib.contextmanager
def isolated_home(keep: bool) -> Iterator[Path]:
    """A kubelab home of its own (``KUBELAB_HOME``) for the length of a lesson test.

    The sandbox lives in the home, so the test gets its own sandbox, state and progress
    and never touches the lesson a student is running. Removed afterwards unless ``keep``.
    """
    parent = paths.home_dir() / "tests"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    home = Path(tempfile.mkdtemp(prefix="test-", dir=parent))
    previous = os.environ.get("KUBELAB_HOME")
    os.environ["KUBELAB_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("KUBELAB_HOME", None)
        else:
            os.environ["KUBELAB_HOME"] = previous
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def cannot_share(loaded: LoadedLesson, provider: Provider, store: StateStore) -> str | None:
    """Why a test of ``loaded`` on ``provider``'s cluster would touch a running lesson.

    A cluster (kind, Hetzner, GKE, a kubeconfig) is shared with what the user runs on it:
    the test installs the lesson there and removes it afterwards, so it must not be running.
    """
    for record in running_lessons(store.load()):
        if record.provider == provider.name:
            return (
                f"lesson {record.lesson} is running on the {provider.name} cluster, and "
                f"kubelab test would deploy {loaded.lesson.id} there and remove it afterwards"
            )
    return None


def namespaces_in_use(kube: Kube, loaded: LoadedLesson) -> list[str]:
    """The lesson's namespaces that already have pods on the cluster (someone uses them)."""
    names = [n.name for n in loaded.lesson.namespaces] or [lesson_namespace(loaded.lesson)]
    return [n for n in names if kube.list("v1", "Pod", n)]


def run_lesson_test(
    loaded: LoadedLesson,
    provider: Provider,
    store: StateStore,
    keep: bool = False,
    pending_timeout: float = 90.0,
    progress: Callable[[str], None] = lambda _: None,
) -> TestReport:
    """Test ``loaded`` on ``provider``; the caller isolates it (:func:`isolated_home`, or
    :func:`cannot_share` on a cluster)."""
    loaded = loaded.on(provider)
    lesson = loaded.lesson
    report = TestReport(lesson.id, provider.name, [])
    started = time.monotonic()
    runner = LessonRunner(
        loaded,
        provider,
        store,
        lambda step, msg: progress(f"{step}: {msg}"),
        record_progress=False,
    )
    if provider.installs_components:
        try:
            runner.step_preflight()
            runner.step_cluster()
            busy = namespaces_in_use(runner.kube, loaded)
        except KubelabError as exc:
            report.setup_error = exc.message
            return report
        if busy:
            with store.transaction() as state:  # the record step_cluster started
                state.lessons.pop(lesson.id, None)
            raise UsageError(
                f"namespace {', '.join(busy)} already has pods on this cluster: kubelab test "
                f"would deploy {lesson.id} into it and delete it afterwards",
                hint="Test on a cluster nobody uses for this lesson, or in the sandbox: "
                f"kubelab test {lesson.id} --provider sandbox",
            )
    try:
        runner.up()
    except KubelabError as exc:
        report.setup_error = exc.message
        if not keep:
            runner.down()
        report.seconds = time.monotonic() - started
        return report
    record = store.load().lesson(lesson.id)
    ctx = check_context(provider, record)
    available = provider.available_components(lesson.components)
    try:
        for exercise in lesson.exercises:
            t0 = time.monotonic()
            item = ExerciseReport(exercise.id, "passed", 0.0)
            report.exercises.append(item)
            if not exercise_available(exercise, available):
                missing = sorted(exercise.needed_components() - available)
                item.result = "skipped"
                item.skipped_because = (
                    f"needs {', '.join(missing)}, not available on {provider.name}"
                )
                progress(f"{exercise.id}: skipped ({item.skipped_because})")
                continue
            item.before = run_exercise(lesson.id, exercise, ctx)
            if item.before.status is Status.PASSED and not exercise.passes_before_solve:
                item.problems.append(
                    "its checks already pass before the solve script: they cannot tell a "
                    "student who did the exercise from one who did not"
                )
            try:
                solve = run_solve(loaded, exercise, record)
            except KubelabTimeout as exc:  # report it and go on with the next exercise
                item.problems.append(exc.message)
                item.result = "error"
                item.seconds = time.monotonic() - t0
                progress(f"{exercise.id}: error ({exc.message})")
                continue
            item.solve_output = solve.output
            if solve.returncode != 0:
                item.problems.append(f"solve script exited with code {solve.returncode}")
            item.after = wait_for_exercise(lesson.id, exercise, ctx, pending_timeout, poll=1.0)
            for check in item.after.checks:
                if check.required and check.result.status is not Status.PASSED:
                    item.problems.append(
                        f"after solve, {check.id} is {check.result.status}: {check.result.message}"
                    )
            if item.problems:
                item.result = "error" if item.after.status is Status.ERROR else "failed"
            item.seconds = time.monotonic() - t0
            progress(f"{exercise.id}: {item.result} ({item.seconds:.1f}s)")
    finally:
        if not keep:
            runner.down()
        report.seconds = time.monotonic() - started
    return report
