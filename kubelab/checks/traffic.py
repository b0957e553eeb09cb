"""Checks that send requests through the mesh: traffic-split and http-stable.

How the requests are sent and how each answer is classified: :mod:`kubelab.checks.sampling`;
how many samples a split needs and which counts it accepts: :mod:`kubelab.checks.stats`.
"""

from __future__ import annotations

import time
from typing import Any

from kubelab.checks import stats, types
from kubelab.checks.registry import CheckContext, implements
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.sampling import (
    Destination,
    Sample,
    Sampler,
    attribute_hung,
    explain_failures,
    misrouted,
    tally,
)


def _destination(spec: types.TrafficSplit | types.HttpStable) -> Destination:
    return Destination(spec.service, spec.namespace, spec.port, spec.path)


#: Samples of a split's first round: enough for a deterministic 0%/100% failure to show.
FIRST_ROUND = 40


def samples_counts(samples: list[Sample]) -> stats.Counts:
    answered, _, unknown = tally(samples)
    return stats.Counts(dict(answered), unknown + len(misrouted(samples)), len(samples))


def _split_samples(
    spec: types.TrafficSplit,
    ctx: CheckContext,
    sampler: Sampler,
    dest: Destination,
    plan: stats.SamplePlan,
) -> list[Sample]:
    # A first round decides the clear failures (an answer from a version weighted 0, a 503)
    # without the rest; the verdict is the one all N samples would give (curtailment).
    first = min(plan.samples, FIRST_ROUND)
    samples = sampler.sample(dest, first, spec.timeout_seconds, ctx.concurrency)
    if first < plan.samples and not stats.decided_fail(plan, samples_counts(samples)):
        samples += sampler.sample(dest, plan.samples - first, spec.timeout_seconds, ctx.concurrency)
    if any(s.hung and s.version is None for s in samples):
        samples = attribute_hung(
            samples, sampler.hanging_versions(dest, spec.expect, spec.timeout_seconds)
        )
    return samples


def _within(plan: stats.SamplePlan, samples: list[Sample]) -> bool:
    answered, _, unknown = tally(samples)
    if unknown or not samples or misrouted(samples):
        return False
    return all(lo <= answered.get(v, 0) <= hi for v, (lo, hi) in plan.accept.items()) and not set(
        answered
    ) - set(plan.accept)


@implements(types.TrafficSplit)
def traffic_split(spec: types.TrafficSplit, ctx: CheckContext) -> CheckResult:
    plan = (
        stats.plan_for(spec.expect, spec.samples)
        if spec.samples
        else stats.plan_samples(spec.expect)
    )
    sampler = ctx.sampler(spec)
    dest = _destination(spec)
    started = time.monotonic()
    samples = _split_samples(spec, ctx, sampler, dest, plan)
    if not _within(plan, samples) and ctx.settle_seconds:
        # A route changed a moment ago may not have reached every proxy yet (Istio pushes
        # config asynchronously, and so does the sandbox): sample once more before failing.
        time.sleep(ctx.settle_seconds)
        samples = _split_samples(spec, ctx, sampler, dest, plan)
    seconds = round(time.monotonic() - started, 2)
    answered, hung, unknown = tally(samples)
    evidence: dict[str, Any] = {
        "samples": len(samples),
        "counts": dict(answered),
        "hung": dict(hung),
        "unanswered": unknown,
        "accepted": {v: list(r) for v, r in plan.accept.items()},
        "expected": spec.expect,
        "seconds": seconds,
    }
    if not samples:
        return CheckResult(
            Status.ERROR,
            f"could not send requests to {dest.host}",
            hint=f"kubectl get pod {spec.tester} -n {spec.namespace}",
            evidence=evidence,
        )
    if len(samples) < min(plan.samples, FIRST_ROUND) // 2:
        return CheckResult(
            Status.PENDING,
            f"only {len(samples)} of {plan.samples} requests to {dest.host} could be sent; "
            f"is the {spec.tester} pod still starting?",
            hint=f"kubectl get pods -n {spec.namespace}",
            evidence=evidence,
        )
    problems = []
    taken, left = len(samples), max(plan.samples - len(samples), 0)
    for version in sorted(set(spec.expect) | set(answered)):
        count = answered.get(version, 0)
        lo, hi = plan.accept.get(version, (0, 0))
        share = 100 * count / taken
        expected = spec.expect.get(version, 0)
        if not left and not lo <= count <= hi:
            problems.append(
                f"{version} got {count} of {taken} requests ({share:.0f}%), expected "
                f"{expected}% (accepted {lo}-{hi})"
            )
        elif left and (count > hi or count + left < lo):
            # Stopped early: this count alone decides, whatever the other samples bring.
            problems.append(
                f"{version} got {count} of the first {taken} requests ({share:.0f}%), expected "
                f"{expected}% (accepted {lo}-{hi} of {plan.samples}, out of reach)"
            )
    problems.extend(explain_failures(samples, spec.timeout_seconds))
    summary = ", ".join(
        f"{v} {answered.get(v, 0)}" + (f" ({hung[v]} hung)" if hung.get(v) else "")
        for v in sorted(set(spec.expect) | set(answered))
    )
    hung_note = ""
    if hung:
        hung_note = f"; {sum(hung.values())} requests hung past {spec.timeout_seconds:g}s"
    if problems and left:
        problems.append(f"decided after {taken} of {plan.samples} requests ({summary})")
    return CheckResult.from_problems(
        problems,
        f"{len(samples)} requests to {dest.host}: {summary}{hung_note}",
        hint=_traffic_hint(spec, samples),
        evidence=evidence,
    )


def _stable_samples(
    spec: types.HttpStable, ctx: CheckContext, sampler: Sampler, dest: Destination
) -> list[Sample]:
    """Up to ``spec.requests`` samples, in doubling rounds that stop at the first failure.

    One failed request decides the check, so a broken state fails after a round of 20
    (one timeout) instead of after every request has waited out its timeout.
    """
    width = min(ctx.concurrency, 20)
    samples: list[Sample] = []
    batch = width
    while len(samples) < spec.requests:
        count = min(batch, spec.requests - len(samples))
        got = sampler.sample(dest, count, spec.timeout_seconds, width)
        samples += got
        if len(got) < count or any(s.version is None for s in got):
            break
        if spec.expect_version and any(s.version != spec.expect_version for s in got):
            break
        batch *= 2
    return samples


@implements(types.HttpStable)
def http_stable(spec: types.HttpStable, ctx: CheckContext) -> CheckResult:
    sampler = ctx.sampler(spec)
    dest = _destination(spec)
    started = time.monotonic()
    samples = _stable_samples(spec, ctx, sampler, dest)
    if any(s.hung for s in samples):
        # Which of them hang when asked directly: the hung answers' subsets, the versions
        # seen, and the one expected (names only; a name no pod carries is skipped).
        versions = {s.subset or "" for s in samples if s.hung} | {s.version or "" for s in samples}
        versions |= {spec.expect_version or ""}
        hanging = sampler.hanging_versions(dest, sorted(versions - {""}), spec.timeout_seconds)
        samples = attribute_hung(samples, hanging)
    seconds = round(time.monotonic() - started, 2)
    answered, hung, _ = tally(samples)
    failed = [s for s in samples if s.version is None or s.hung]
    evidence = {
        "requests": len(samples),
        "counts": dict(answered),
        "hung": sum(s.hung for s in samples),
        "failed": len(failed),
        "seconds": seconds,
    }
    problems = []
    if hung:
        problems.append(
            f"{sum(hung.values())} requests hung past {spec.timeout_seconds:g}s "
            f"({', '.join(f'{v}: {n}' for v, n in sorted(hung.items()))})"
        )
    problems.extend(explain_failures(samples, spec.timeout_seconds))
    if spec.expect_version:
        others = {
            v: n - hung.get(v, 0)
            for v, n in answered.items()
            if v != spec.expect_version and n > hung.get(v, 0)
        }
        if others:
            problems.append(
                "answers from other versions than "
                f"{spec.expect_version}: {', '.join(f'{v} {n}' for v, n in sorted(others.items()))}"
            )
    if not problems and len(samples) < spec.requests:
        problems.append(f"only {len(samples)} of {spec.requests} requests could be sent")
    if problems and len(samples) < spec.requests:
        problems.append(f"stopped after {len(samples)} of {spec.requests} requests")
    by = f" by {spec.expect_version}" if spec.expect_version else ""
    return CheckResult.from_problems(
        problems,
        f"all {len(samples)} requests to {dest.host} answered in time{by} ({seconds:g}s)",
        hint=_traffic_hint(spec, samples),
        evidence=evidence,
    )


def _traffic_hint(spec: types.TrafficSplit | types.HttpStable, samples: list[Sample]) -> str:
    """Where to look: the routing's weights, or the subsets and the pods they select."""
    if any(s.version is None for s in samples) or misrouted(samples):
        return (
            f"kubectl get destinationrule {spec.service} -n {spec.namespace} -o yaml; "
            f"kubectl get pods -n {spec.namespace} --show-labels"
        )
    return f"kubectl get virtualservice {spec.service} -n {spec.namespace} -o yaml"
