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
from kubelab.i18n import _


def _destination(spec: types.TrafficSplit | types.HttpStable) -> Destination:
    return Destination(spec.service, spec.namespace, spec.port, spec.path)


#: Samples of a split's first round: enough for a deterministic 0%/100% failure to show.
FIRST_ROUND = 40


def samples_counts(samples: list[Sample]) -> stats.Counts:
    answered, _unused, unknown = tally(samples)
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
    answered, _unused, unknown = tally(samples)
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
            _("could not send requests to {host}").format(host=dest.host),
            hint=f"kubectl get pod {spec.tester} -n {spec.namespace}",
            evidence=evidence,
        )
    if len(samples) < min(plan.samples, FIRST_ROUND) // 2:
        return CheckResult(
            Status.PENDING,
            _(
                "only {sent} of {planned} requests to {host} could be sent; "
                "is the {tester} pod still starting?"
            ).format(sent=len(samples), planned=plan.samples, host=dest.host, tester=spec.tester),
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
        fields = {
            "version": version,
            "count": count,
            "taken": taken,
            "share": share,
            "expected": expected,
            "lo": lo,
            "hi": hi,
            "planned": plan.samples,
        }
        if not left and not lo <= count <= hi:
            problems.append(
                _(
                    "{version} got {count} of {taken} requests ({share:.0f}%), expected "
                    "{expected}% (accepted {lo}-{hi})"
                ).format(**fields)
            )
        elif left and (count > hi or count + left < lo):
            # Stopped early: this count alone decides, whatever the other samples bring.
            problems.append(
                _(
                    "{version} got {count} of the first {taken} requests ({share:.0f}%), "
                    "expected {expected}% (accepted {lo}-{hi} of {planned}, out of reach)"
                ).format(**fields)
            )
    problems.extend(explain_failures(samples, spec.timeout_seconds))
    summary = ", ".join(
        _("{version} {count} ({hung} hung)").format(
            version=v, count=answered.get(v, 0), hung=hung[v]
        )
        if hung.get(v)
        else f"{v} {answered.get(v, 0)}"
        for v in sorted(set(spec.expect) | set(answered))
    )
    hung_note = ""
    if hung:
        hung_note = "; " + _hung_past(sum(hung.values()), spec.timeout_seconds)
    if problems and left:
        problems.append(
            _("decided after {taken} of {planned} requests ({summary})").format(
                taken=taken, planned=plan.samples, summary=summary
            )
        )
    return CheckResult.from_problems(
        problems,
        _("{count} requests to {host}: {summary}").format(
            count=len(samples), host=dest.host, summary=summary
        )
        + hung_note,
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
    answered, hung, _unused = tally(samples)
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
        per_version = ", ".join(f"{v}: {n}" for v, n in sorted(hung.items()))
        problems.append(f"{_hung_past(sum(hung.values()), spec.timeout_seconds)} ({per_version})")
    problems.extend(explain_failures(samples, spec.timeout_seconds))
    if spec.expect_version:
        others = {
            v: n - hung.get(v, 0)
            for v, n in answered.items()
            if v != spec.expect_version and n > hung.get(v, 0)
        }
        if others:
            problems.append(
                _("answers from other versions than {version}: {counts}").format(
                    version=spec.expect_version,
                    counts=", ".join(f"{v} {n}" for v, n in sorted(others.items())),
                )
            )
    if not problems and len(samples) < spec.requests:
        problems.append(
            _("only {sent} of {total} requests could be sent").format(
                sent=len(samples), total=spec.requests
            )
        )
    if problems and len(samples) < spec.requests:
        problems.append(
            _("stopped after {sent} of {total} requests").format(
                sent=len(samples), total=spec.requests
            )
        )
    passed = (
        _("all {count} requests to {host} answered in time by {version} ({seconds:g}s)")
        if spec.expect_version
        else _("all {count} requests to {host} answered in time ({seconds:g}s)")
    )
    return CheckResult.from_problems(
        problems,
        passed.format(
            count=len(samples), host=dest.host, version=spec.expect_version, seconds=seconds
        ),
        hint=_traffic_hint(spec, samples),
        evidence=evidence,
    )


def _hung_past(count: int, timeout: float) -> str:
    return _("{count} requests hung past {timeout:g}s").format(count=count, timeout=timeout)


def _traffic_hint(spec: types.TrafficSplit | types.HttpStable, samples: list[Sample]) -> str:
    """Where to look: the routing's weights, or the subsets and the pods they select."""
    if any(s.version is None for s in samples) or misrouted(samples):
        return (
            f"kubectl get destinationrule {spec.service} -n {spec.namespace} -o yaml; "
            f"kubectl get pods -n {spec.namespace} --show-labels"
        )
    return f"kubectl get virtualservice {spec.service} -n {spec.namespace} -o yaml"
