"""``hold_seconds``: a check that must keep passing, sampled at its interval, on a fake
clock (the real-time case, a VirtualService patched halfway on the real API server, is in
tests/realk8s/test_kube_real.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from kubelab.checks import types
from kubelab.checks.registry import CheckContext
from kubelab.checks.result import Status
from kubelab.checks.runner import run_check


class Clock:
    """Monotonic time that moves only when slept, and a wall clock that follows it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def wall(self) -> dt.datetime:
        return dt.datetime(2026, 12, 3, 14, 0, 0, tzinfo=dt.UTC) + dt.timedelta(
            seconds=self.now - 100.0
        )


class Flipping:
    """A Deployment with 2 replicas that becomes 5 once ``flip_at`` clock seconds passed
    (or never), and that cannot be read at all from ``fail_at``."""

    def __init__(
        self, clock: Clock, flip_at: float | None = None, fail_at: float | None = None
    ) -> None:
        self.clock, self.flip_at, self.fail_at = clock, flip_at, fail_at
        self.reads = 0

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        self.reads += 1
        elapsed = self.clock.now - 100.0
        if self.fail_at is not None and elapsed >= self.fail_at:
            from kubelab.errors import SetupError

            raise SetupError("the API server did not answer", hint="kubelab status")
        replicas = 5 if self.flip_at is not None and elapsed >= self.flip_at else 2
        return {"metadata": {"name": name, "uid": "u"}, "spec": {"replicas": replicas}}


def spec(**hold: Any) -> types.FieldEquals:
    return types.FieldEquals(
        kind="Deployment",
        api_version="apps/v1",
        name="app",
        namespace="istio",
        jsonpath="{.spec.replicas}",
        equals=2,
        **hold,
    )


def context(kube: Any, clock: Clock) -> CheckContext:
    return CheckContext(
        kube=kube,
        sampler=lambda s: None,  # type: ignore[arg-type,return-value]
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        wall_clock=clock.wall,
    )


def test_a_state_that_holds_passes_after_every_sample() -> None:
    clock = Clock()
    kube = Flipping(clock)
    result = run_check(spec(hold_seconds=30, hold_interval=5), context(kube, clock))
    assert result.status is Status.PASSED
    assert kube.reads == 7  # at 0, 5, ..., 30 s
    assert clock.slept == [5.0] * 6
    assert result.message == (
        "held for 30 s (7 samples, every 5 s): Deployment istio/app: {.spec.replicas} is 2"
    )
    assert result.evidence["hold"] == {"seconds": 30, "samples": 7}


def test_a_state_that_flips_halfway_fails_naming_when() -> None:
    clock = Clock()
    kube = Flipping(clock, flip_at=14)
    result = run_check(spec(hold_seconds=30, hold_interval=5), context(kube, clock))
    assert result.status is Status.FAILED
    assert kube.reads == 4  # 0, 5, 10 pass; 15 shows 5 replicas and ends it
    assert result.message == (
        "broke at 14:00:15 UTC, 15.0 s into the 30 s it must hold (it passed from 14:00:00, "
        "last at 10.0 s; sample 4): Deployment istio/app: {.spec.replicas} is 5, expected 2"
    )
    assert result.evidence["hold"] == {"seconds": 30, "samples": 4, "broke_after": 15.0}


def test_a_hold_is_not_started_before_the_check_passes() -> None:
    clock = Clock()
    kube = Flipping(clock, flip_at=0)  # wrong from the start
    result = run_check(spec(hold_seconds=30), context(kube, clock))
    assert result.status is Status.FAILED
    assert kube.reads == 1 and clock.slept == []
    assert result.message == "Deployment istio/app: {.spec.replicas} is 5, expected 2"


def test_a_sample_that_cannot_run_is_an_error_not_a_failure() -> None:
    clock = Clock()
    kube = Flipping(clock, fail_at=8)
    result = run_check(spec(hold_seconds=20, hold_interval=4), context(kube, clock))
    assert result.status is Status.ERROR
    assert result.message.startswith("broke at 14:00:08 UTC, 8.0 s into the 20 s")
    assert result.message.endswith("sample 3): the API server did not answer")
    assert result.hint == "kubelab status"


def test_the_last_interval_is_cut_to_the_hold() -> None:
    clock = Clock()
    result = run_check(spec(hold_seconds=12, hold_interval=5), context(Flipping(clock), clock))
    assert result.status is Status.PASSED
    assert clock.slept == [5.0, 5.0, 2.0]


@pytest.mark.parametrize(
    ("hold", "problem"),
    [
        ({"hold_seconds": 0}, "Expected `float` > 0"),
        ({"hold_seconds": 301}, "Expected `float` <= 300"),
        ({"hold_seconds": 10, "hold_interval": 0.1}, "Expected `float` >= 0.5"),
    ],
)
def test_hold_bounds_are_validated(hold: dict[str, Any], problem: str) -> None:
    raw = {
        "type": "field-equals",
        "kind": "Deployment",
        "api_version": "apps/v1",
        "name": "app",
        "jsonpath": "{.spec.replicas}",
        "equals": 2,
        **hold,
    }
    with pytest.raises(msgspec.ValidationError, match=problem.replace("`", ".")):
        msgspec.convert(raw, types.FieldEquals)
