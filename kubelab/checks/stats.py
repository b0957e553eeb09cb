"""How many answers a traffic-split check samples, and which counts it accepts.

A split is sampled N times and each version's count is compared with an acceptance
interval of the binomial distribution Bin(N, p) of its expected share p. N and the
intervals are chosen, per expected split, so that

* a correct split fails less than 1 run in 1000 (``FALSE_ALARM``): each version's interval
  leaves at most FALSE_ALARM / (2m) in each tail, m being the number of versions
  (Bonferroni, so the bound holds for any number of versions), and
* a split off by ``DELTA`` (20 points) or more for some version is caught at least 999
  runs in 1000 (``MISS``): for every such version, the probability that a count drawn
  with the wrong share p +/- DELTA lands inside the interval is at most MISS.

Probabilities are exact binomial sums (no normal approximation); ``docs/traffic-checks.md``
lists the resulting N for the lessons' splits. A share of 0% or 100% is deterministic in
Envoy, so its interval is exact: a single answer from a version weighted 0 fails.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

FALSE_ALARM = 0.001
MISS = 0.001
DELTA = 0.20
MIN_SAMPLES = 20
MAX_SAMPLES = 5000


@dataclass(frozen=True)
class SamplePlan:
    samples: int
    # version -> (lowest, highest) accepted count, inclusive
    accept: dict[str, tuple[int, int]]
    false_alarm: float  # upper bound of P(a correct split fails)
    miss: float  # upper bound of P(a split off by DELTA passes)


@functools.cache
def _pmf(n: int, p: float) -> tuple[float, ...]:
    if p <= 0.0:
        return (1.0,) + (0.0,) * n
    if p >= 1.0:
        return (0.0,) * n + (1.0,)
    log_p, log_q = math.log(p), math.log1p(-p)
    lg = math.lgamma
    return tuple(
        math.exp(lg(n + 1) - lg(k + 1) - lg(n - k + 1) + k * log_p + (n - k) * log_q)
        for k in range(n + 1)
    )


def _interval(n: int, p: float, tail: float) -> tuple[int, int]:
    """Smallest [lo, hi] leaving at most ``tail`` probability on each side under Bin(n, p)."""
    pmf = _pmf(n, p)
    lo, below = 0, 0.0
    while lo < n and below + pmf[lo] <= tail:
        below += pmf[lo]
        lo += 1
    hi, above = n, 0.0
    while hi > 0 and above + pmf[hi] <= tail:
        above += pmf[hi]
        hi -= 1
    return lo, hi


def _inside(n: int, p: float, lo: int, hi: int) -> float:
    return math.fsum(_pmf(n, p)[lo : hi + 1])


def plan_for(expect: dict[str, int], samples: int) -> SamplePlan:
    """Acceptance intervals for ``samples`` answers of the split ``expect`` (percent)."""
    m = max(len(expect), 1)
    tail = FALSE_ALARM / (2 * m)
    accept: dict[str, tuple[int, int]] = {}
    false_alarm = 0.0
    miss = 0.0
    for version, weight in expect.items():
        p = weight / 100
        lo, hi = _interval(samples, p, tail)
        accept[version] = (lo, hi)
        false_alarm += 1.0 - _inside(samples, p, lo, hi)
        for wrong in (p - DELTA, p + DELTA):
            if 0.0 <= wrong <= 1.0:
                miss = max(miss, _inside(samples, round(wrong, 10), lo, hi))
    return SamplePlan(samples, accept, min(false_alarm, 1.0), miss)


@functools.cache
def _plan_cached(split: tuple[tuple[str, int], ...]) -> SamplePlan:
    expect = dict(split)
    n = MIN_SAMPLES
    while n <= MAX_SAMPLES:
        plan = plan_for(expect, n)
        if plan.false_alarm <= FALSE_ALARM and plan.miss <= MISS:
            return plan
        n += 10 if n < 200 else 20
    return plan_for(expect, MAX_SAMPLES)


def plan_samples(expect: dict[str, int]) -> SamplePlan:
    """The smallest N (in steps of 10, then 20) meeting both error bounds for ``expect``."""
    return _plan_cached(tuple(sorted(expect.items())))


@dataclass(frozen=True)
class Counts:
    answered: dict[str, int]  # version -> answers so far
    failures: int  # samples that are no answer (503, misrouted...): each one fails the check
    taken: int  # samples so far


def decided_fail(plan: SamplePlan, counts: Counts) -> bool:
    """Whether the full sample of ``plan.samples`` must fail whatever the rest brings.

    True once a failure was seen, a version exceeds its highest accepted count, a version
    cannot reach its lowest with the samples left, or a version outside the plan answered.
    Stopping then is curtailment: the verdict equals the fixed-N test's, so the error
    bounds above hold unchanged.
    """
    if counts.failures:
        return True
    left = plan.samples - counts.taken
    if set(counts.answered) - set(plan.accept):
        return True
    return any(
        counts.answered.get(v, 0) > hi or counts.answered.get(v, 0) + left < lo
        for v, (lo, hi) in plan.accept.items()
    )
