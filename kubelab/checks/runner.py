"""Run an exercise's checks and gather one outcome (the grader and ``kubelab check``).

A check never crashes the run: an unreachable API, a kind the cluster does not serve or
a bug in a check becomes that check's ``error`` result with a message, and the other
checks still run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubelab.checks import types
from kubelab.checks.registry import CheckContext, implementation
from kubelab.checks.result import CheckResult, Status, worst
from kubelab.errors import KubelabError
from kubelab.i18n import _
from kubelab.lessons.model import Exercise


@dataclass
class CheckOutcome:
    id: str
    type: str
    required: bool
    result: CheckResult

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "status": str(self.result.status),
            "message": self.result.message,
            "hint": self.result.hint,
            "evidence": self.result.evidence,
        }


@dataclass
class ExerciseOutcome:
    lesson: str
    exercise: str
    checks: list[CheckOutcome]

    @property
    def status(self) -> Status:
        return worst(c.result.status for c in self.checks if c.required)

    def to_json(self) -> dict[str, Any]:
        """The documented shape of ``kubelab check --output json``."""
        return {
            "lesson": self.lesson,
            "exercise": self.exercise,
            "status": str(self.status),
            "checks": [c.to_json() for c in self.checks],
        }


def run_check(spec: types.CheckSpec, ctx: CheckContext) -> CheckResult:
    """One check, whatever happens: failures to check become ``error`` results. A check
    with ``hold_seconds`` must then keep passing for that long (:func:`hold`)."""
    first = _run_once(spec, ctx)
    if spec.hold_seconds is None or first.status is not Status.PASSED:
        return first
    return hold(spec, ctx, first, spec.hold_seconds)


def _clock_time(ctx: CheckContext, start: dt.datetime, offset: float) -> str:
    return (start + dt.timedelta(seconds=offset)).strftime("%H:%M:%S")


def hold(
    spec: types.CheckSpec, ctx: CheckContext, first: CheckResult, seconds: float
) -> CheckResult:
    """Sample ``spec`` every ``hold_interval`` seconds until ``seconds`` have passed since
    ``first`` (a pass): passed only when every sample passed. The first sample that does
    not pass ends it, named by its time and offset (a failure, or an error when the check
    could not run)."""
    started, began = ctx.monotonic(), ctx.wall_clock()
    samples, last_pass, last = 1, 0.0, first
    while (elapsed := ctx.monotonic() - started) < seconds:
        ctx.sleep(min(spec.hold_interval, seconds - elapsed))
        result = _run_once(spec, ctx)
        at = ctx.monotonic() - started
        samples += 1
        if result.status is not Status.PASSED:
            evidence = {
                **result.evidence,
                "hold": {"seconds": seconds, "samples": samples, "broke_after": round(at, 3)},
            }
            message = _(
                "broke at {time} UTC, {at:.1f} s into the {hold:g} s it must hold (it "
                "passed from {start}, last at {held:.1f} s; sample {sample}): {message}"
            ).format(
                time=_clock_time(ctx, began, at),
                at=at,
                hold=seconds,
                start=_clock_time(ctx, began, 0),
                held=last_pass,
                sample=samples,
                message=result.message,
            )
            status = Status.ERROR if result.status is Status.ERROR else Status.FAILED
            return CheckResult(status, message, result.hint, evidence)
        last_pass, last = at, result
    message = _("held for {hold:g} s ({samples} samples, every {interval:g} s): {message}").format(
        hold=seconds, samples=samples, interval=spec.hold_interval, message=last.message
    )
    evidence = {**last.evidence, "hold": {"seconds": seconds, "samples": samples}}
    return CheckResult(Status.PASSED, message, None, evidence)


def _run_once(spec: types.CheckSpec, ctx: CheckContext) -> CheckResult:
    try:
        return implementation(spec.type)(spec, ctx)
    except KubelabError as exc:
        return CheckResult(Status.ERROR, exc.message, exc.hint)
    except Exception as exc:  # a bug in a check must not hide the other checks' results
        return CheckResult(
            Status.ERROR,
            _("the {check} check failed unexpectedly: {error_type}: {error}").format(
                check=spec.type, error=exc, error_type=type(exc).__name__
            ),
            _("Run again with --verbose; if it persists, report it."),
        )


def run_exercise(
    lesson_id: str,
    exercise: Exercise,
    ctx: CheckContext,
    only: list[str] | None = None,
) -> ExerciseOutcome:
    outcomes = []
    for index, spec in enumerate(exercise.checks):
        check_id = exercise.check_id(index)
        if only and check_id not in only:
            continue
        outcomes.append(CheckOutcome(check_id, spec.type, spec.required, run_check(spec, ctx)))
    return ExerciseOutcome(lesson_id, exercise.id, outcomes)


def wait_for_exercise(
    lesson_id: str,
    exercise: Exercise,
    ctx: CheckContext,
    timeout: float,
    poll: float = 2.0,
    on_attempt: Callable[[ExerciseOutcome], None] | None = None,
) -> ExerciseOutcome:
    """Re-run while the outcome is ``pending`` (pods starting, metrics not scraped yet)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = run_exercise(lesson_id, exercise, ctx)
        if on_attempt:
            on_attempt(outcome)
        if outcome.status is not Status.PENDING or time.monotonic() + poll > deadline:
            return outcome
        time.sleep(poll)
