"""The traffic-split acceptance rule meets its error rates: < 1/1000 false alarms on a
correct split, >= 999/1000 detection of a split off by 20 points."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubelab.checks.stats import DELTA, FALSE_ALARM, MISS, plan_for, plan_samples

LESSON_SPLITS = [
    {"v1": 90, "v2": 10},
    {"v1": 50, "v2": 50},
    {"v1": 0, "v2": 100},
    {"v1": 100, "v2": 0},
    {"v1": 80, "v2": 20},
    {"v1": 95, "v2": 5},
]


@pytest.mark.parametrize("split", LESSON_SPLITS, ids=str)
def test_exact_error_rates_of_the_lesson_splits(split):
    plan = plan_samples(split)
    assert plan.false_alarm <= FALSE_ALARM
    assert plan.miss <= MISS
    assert plan.samples <= 300  # keeps a check to a few seconds even when v1 hangs


def test_documented_sample_sizes():
    """docs/traffic-checks.md quotes these numbers."""
    assert plan_samples({"v1": 90, "v2": 10}).samples == 170
    assert plan_samples({"v1": 50, "v2": 50}).samples == 260
    assert plan_samples({"v1": 0, "v2": 100}).samples == 40
    assert plan_samples({"v1": 90, "v2": 10}).accept == {"v1": (138, 165), "v2": (5, 32)}


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=100), st.integers(min_value=2, max_value=3))
def test_any_split_meets_both_bounds(first, versions):
    rest = 100 - first
    if versions == 2:
        split = {"v1": first, "v2": rest}
    else:
        split = {"v1": first, "v2": rest // 2, "v3": rest - rest // 2}
    plan = plan_samples(split)
    assert plan.false_alarm <= FALSE_ALARM
    assert plan.miss <= MISS


def _draw(rng: random.Random, shares: dict[str, float], n: int) -> dict[str, int]:
    versions = list(shares)
    cumulative, total = [], 0.0
    for v in versions:
        total += shares[v]
        cumulative.append(total)
    counts = dict.fromkeys(versions, 0)
    for _ in range(n):
        u = rng.random() * total
        counts[next(v for v, c in zip(versions, cumulative, strict=True) if u < c)] += 1
    return counts


def _accepts(plan, counts):
    return all(lo <= counts.get(v, 0) <= hi for v, (lo, hi) in plan.accept.items())


@pytest.mark.parametrize(
    ("expect", "wrong"),
    [
        ({"v1": 90, "v2": 10}, {"v1": 0.70, "v2": 0.30}),
        ({"v1": 50, "v2": 50}, {"v1": 0.30, "v2": 0.70}),
        ({"v1": 50, "v2": 50}, {"v1": 0.70, "v2": 0.30}),
        ({"v1": 0, "v2": 100}, {"v1": 0.20, "v2": 0.80}),
    ],
    ids=str,
)
def test_seeded_simulation_of_real_draws(expect, wrong):
    """Independent of the exact sums: draw requests one by one with a seeded RNG."""
    rng = random.Random(20261122)
    plan = plan_samples(expect)
    runs = 3000
    correct = {v: w / 100 for v, w in expect.items()}
    false_alarms = sum(not _accepts(plan, _draw(rng, correct, plan.samples)) for _ in range(runs))
    misses = sum(_accepts(plan, _draw(rng, wrong, plan.samples)) for _ in range(runs))
    # Expected at most 3 of each in 3000 runs; 12 would be a 1-in-10^5 fluke of Poisson(3).
    assert false_alarms <= 12, false_alarms
    assert misses <= 12, misses


def test_fixed_sample_size_intervals_grow_with_n():
    small = plan_for({"v1": 90, "v2": 10}, 100)
    large = plan_for({"v1": 90, "v2": 10}, 400)
    assert small.miss > large.miss
    assert DELTA == 0.20


def test_stopping_early_never_changes_the_verdict():
    """decided_fail on a prefix implies the full sample fails: curtailment keeps the
    fixed-N test's error bounds (seeded simulation over the lessons' splits)."""
    from kubelab.checks.stats import Counts, decided_fail

    rng = random.Random(1234)
    for expect in ({"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v1": 0, "v2": 100}):
        plan = plan_samples(expect)
        for true_share in (0.0, 0.1, 0.3, 0.5, 0.9, 1.0):
            for _ in range(200):
                draws = ["v1" if rng.random() < true_share else "v2" for _ in range(plan.samples)]
                full = {v: draws.count(v) for v in set(draws)}
                full_passes = all(lo <= full.get(v, 0) <= hi for v, (lo, hi) in plan.accept.items())
                for cut in (1, 10, 40, plan.samples // 2):
                    prefix = draws[:cut]
                    counts = Counts({v: prefix.count(v) for v in set(prefix)}, 0, cut)
                    if decided_fail(plan, counts):
                        assert not full_passes, (expect, true_share, cut)


def test_a_first_answer_from_a_version_weighted_zero_decides():
    from kubelab.checks.stats import Counts, decided_fail

    plan = plan_samples({"v1": 0, "v2": 100})
    assert decided_fail(plan, Counts({"v1": 1, "v2": 39}, 0, 40))
    assert not decided_fail(plan, Counts({"v2": 40}, 0, 40))
    assert decided_fail(plan, Counts({"v2": 39}, 1, 40))  # one 503 fails the check
    assert decided_fail(plan, Counts({"v3": 1, "v2": 39}, 0, 40))
