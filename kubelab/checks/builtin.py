"""The implementation of every check type declared in ``kubelab.checks.types``.

Each function reads the cluster through the :class:`CheckContext` and returns a
:class:`CheckResult`; none of them changes anything. They report every failing assertion
they find (not just the first) and tell "wrong" (failed) from "not ready yet" (pending).
"""

from __future__ import annotations

import json
import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubelab.checks import jsonpath, selectors, stats, types
from kubelab.checks.result import CheckResult, Status
from kubelab.checks.traffic import (
    Destination,
    Sample,
    Sampler,
    attribute_hung,
    explain_failures,
    misrouted,
    tally,
)
from kubelab.cluster.kube import AccessDenied, Kube

ISTIO_API = "networking.istio.io/v1"


@dataclass
class CheckContext:
    """What checks may use: the cluster, a way to send traffic, the component services."""

    kube: Kube
    sampler: Callable[[types.TrafficSplit | types.HttpStable], Sampler]
    # component name -> (namespace, service, port) of its HTTP API (metrics, traces)
    services: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # Requests in flight at once: every sample at once up to this, so a check takes about
    # one timeout even when most requests hang (the sampler may lower it).
    concurrency: int = 500
    # Pause before re-sampling a split that looks wrong (route changes take a moment).
    settle_seconds: float = 1.5


Impl = Callable[[Any, CheckContext], CheckResult]
IMPLEMENTATIONS: dict[str, Impl] = {}
S = TypeVar("S", bound=types.CheckSpec)


def implements(
    spec: type[S],
) -> Callable[[Callable[[S, CheckContext], CheckResult]], Callable[[S, CheckContext], CheckResult]]:
    (name,) = spec.model_fields["type"].annotation.__args__  # type: ignore[union-attr]

    def register(
        fn: Callable[[S, CheckContext], CheckResult],
    ) -> Callable[[S, CheckContext], CheckResult]:
        IMPLEMENTATIONS[name] = fn
        return fn

    return register


def _where(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


# -- objects -------------------------------------------------------------------------------


@implements(types.ResourceExists)
def resource_exists(spec: types.ResourceExists, ctx: CheckContext) -> CheckResult:
    obj = ctx.kube.get(spec.api_version, spec.kind, spec.name, spec.namespace)
    where = _where(spec.kind, spec.name, spec.namespace)
    if obj is None:
        return CheckResult(Status.FAILED, f"{where} does not exist")
    return CheckResult(Status.PASSED, f"{where} exists", evidence={"uid": obj["metadata"]["uid"]})


@implements(types.FieldEquals)
def field_equals(spec: types.FieldEquals, ctx: CheckContext) -> CheckResult:
    obj = ctx.kube.get(spec.api_version, spec.kind, spec.name, spec.namespace)
    where = _where(spec.kind, spec.name, spec.namespace)
    if obj is None:
        return CheckResult(Status.FAILED, f"{where} does not exist")
    value = jsonpath.lookup(obj, spec.jsonpath)
    if value is jsonpath.MISSING:
        return CheckResult(
            Status.FAILED,
            f"{where} has no field {spec.jsonpath} (expected {spec.equals!r})",
            evidence={"path": spec.jsonpath},
        )
    if value != spec.equals and str(value) != str(spec.equals):
        return CheckResult(
            Status.FAILED,
            f"{where}: {spec.jsonpath} is {value!r}, expected {spec.equals!r}",
            evidence={"path": spec.jsonpath, "value": value},
        )
    return CheckResult(
        Status.PASSED,
        f"{where}: {spec.jsonpath} is {value!r}",
        evidence={"path": spec.jsonpath, "value": value},
    )


# -- pods ----------------------------------------------------------------------------------


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _containers(pod: dict[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or []]
    # Native sidecars (newer Istio) are init containers that keep running.
    names += [
        c.get("name", "")
        for c in spec.get("initContainers") or []
        if c.get("restartPolicy") == "Always"
    ]
    return names


@implements(types.PodsReady)
def pods_ready(spec: types.PodsReady, ctx: CheckContext) -> CheckResult:
    pods = ctx.kube.list("v1", "Pod", spec.namespace, spec.selector)
    pods = [p for p in pods if selectors.matches(spec.selector, p["metadata"].get("labels"))]
    ready = [p["metadata"]["name"] for p in pods if pod_ready(p)]
    not_ready = [p["metadata"]["name"] for p in pods if not pod_ready(p)]
    evidence = {"ready": ready, "not_ready": not_ready, "min_ready": spec.min_ready}
    where = f"pods {spec.selector} in {spec.namespace}"
    if len(ready) >= spec.min_ready:
        return CheckResult(Status.PASSED, f"{len(ready)} {where} ready", evidence=evidence)
    if not pods:
        return CheckResult(
            Status.FAILED,
            f"no {where}",
            hint=f"kubectl get pods -n {spec.namespace} --show-labels",
            evidence=evidence,
        )
    if not not_ready:  # all there are ready, but too few exist (a Deployment deleted?)
        return CheckResult(
            Status.FAILED,
            f"only {len(ready)} of {spec.min_ready} {where} exist: {', '.join(ready)}",
            hint=f"kubectl get deployments,pods -n {spec.namespace} --show-labels",
            evidence=evidence,
        )
    return CheckResult(
        Status.PENDING,
        f"{len(ready)} of {spec.min_ready} {where} ready; not ready yet: {', '.join(not_ready)}",
        hint=f"kubectl get pods -n {spec.namespace}; kubectl describe pod {not_ready[0]} "
        f"-n {spec.namespace}",
        evidence=evidence,
    )


@implements(types.SidecarInjected)
def sidecar_injected(spec: types.SidecarInjected, ctx: CheckContext) -> CheckResult:
    pods = ctx.kube.list("v1", "Pod", spec.namespace, spec.selector)
    labels: dict[str, str] | None
    try:
        ns = ctx.kube.get("v1", "Namespace", spec.namespace) or {}
        labels = (ns.get("metadata") or {}).get("labels") or {}
    except AccessDenied:
        # A class student may not read Namespaces (cluster-scoped; their Role cannot grant
        # it): their pods' containers still tell whether the sidecar is there.
        labels = None
    without = [p["metadata"]["name"] for p in pods if spec.container not in _containers(p)]
    problems = []
    injection = (labels or {}).get("istio-injection")
    revision = (labels or {}).get("istio.io/rev")
    if labels is not None and injection != "enabled" and not revision:
        problems.append(
            f"namespace {spec.namespace} does not have the label istio-injection=enabled"
            + (f" (it is {injection!r})" if injection else "")
        )
    if not pods:
        problems.append(f"no pods {spec.selector} in {spec.namespace}")
    if without:
        problems.append(f"pods without the {spec.container} sidecar: {', '.join(without)}")
    evidence = {
        "namespace_labels": labels if labels is not None else "not readable with these credentials",
        "pods": [p["metadata"]["name"] for p in pods],
        "without_sidecar": without,
    }
    return CheckResult.from_problems(
        problems,
        f"all {len(pods)} pods {spec.selector} run {spec.container}",
        hint=f"kubectl label namespace {spec.namespace} istio-injection=enabled --overwrite, "
        f"then kubectl rollout restart deployment -n {spec.namespace}",
        evidence=evidence,
    )


# -- Istio routing -------------------------------------------------------------------------


def _short_host(host: str, namespace: str) -> str:
    for suffix in (f".{namespace}.svc.cluster.local", f".{namespace}.svc", f".{namespace}"):
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return host


def route_weights(vs: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Weight per subset of the VirtualService's default HTTP route, and notes about it.

    The default route is the first without ``match`` (Envoy takes the first that
    matches); destinations are summed per subset, in any order.
    """
    notes: list[str] = []
    http = (vs.get("spec") or {}).get("http") or []
    if not http:
        return {}, ["it has no http routes"]
    default = next((r for r in http if not r.get("match")), http[0])
    route = default.get("route") or []
    weights: dict[str, int] = {}
    for dest in route:
        subset = (dest.get("destination") or {}).get("subset") or "(no subset)"
        # Istio: a lone destination without weight gets everything.
        weight = dest.get("weight", 100 if len(route) == 1 else 0)
        weights[subset] = weights.get(subset, 0) + int(weight or 0)
    total = sum(weights.values())
    if route and total != 100:
        notes.append(f"the weights add up to {total}, not 100")
    return weights, notes


@implements(types.VirtualServiceWeights)
def virtualservice_weights(spec: types.VirtualServiceWeights, ctx: CheckContext) -> CheckResult:
    vs = ctx.kube.get(ISTIO_API, "VirtualService", spec.name, spec.namespace)
    where = f"VirtualService {spec.namespace}/{spec.name}"
    if vs is None:
        return CheckResult(
            Status.FAILED,
            f"{where} does not exist",
            hint=f"kubectl get virtualservice -n {spec.namespace}; recreate it with the "
            "lesson's solve script (kubelab solve ...) or your own manifest",
            evidence={"expected": spec.expect},
        )
    weights, problems = route_weights(vs)
    problems = [f"{where}: {p}" for p in problems]
    for subset in sorted(set(spec.expect) | set(weights)):
        got, want = weights.get(subset, 0), spec.expect.get(subset, 0)
        if got != want:
            problems.append(f"subset {subset} gets {got}%, expected {want}%")
    dr_name = spec.destination_rule or spec.name
    dr = ctx.kube.get(ISTIO_API, "DestinationRule", dr_name, spec.namespace)
    defined = [s.get("name") for s in ((dr or {}).get("spec") or {}).get("subsets") or []]
    used = [s for s, w in weights.items() if s != "(no subset)"]
    if dr is None:
        problems.append(
            f"DestinationRule {spec.namespace}/{dr_name} does not exist, so subsets "
            f"{', '.join(used) or '(none)'} are undefined"
        )
    else:
        missing = [s for s in used if s not in defined]
        if missing:
            problems.append(
                f"DestinationRule {spec.namespace}/{dr_name} does not define subset "
                f"{', '.join(missing)} (it defines {', '.join(map(str, defined)) or 'none'})"
            )
    expected_text = ", ".join(f"{k} {v}%" for k, v in spec.expect.items())
    return CheckResult.from_problems(
        problems,
        f"{where} sends {expected_text}",
        hint=f"kubectl get virtualservice {spec.name} -n {spec.namespace} -o yaml",
        evidence={"weights": weights, "expected": spec.expect, "subsets_defined": defined},
    )


# -- traffic -------------------------------------------------------------------------------


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


# -- metrics and traces --------------------------------------------------------------------

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


def _component_service(ctx: CheckContext, component: str) -> tuple[str, str, int]:
    from kubelab.errors import SetupError

    if component not in ctx.services:
        raise SetupError(f"{component} is not available on this cluster")
    return ctx.services[component]


def query_value(data: Any) -> tuple[str | None, int]:
    """The raw value of a Prometheus-API query answer (``data`` is its ``data`` object) and
    how many series it had: the first series of a vector, the last point of the first series
    of a matrix, a scalar's value. None when it holds no value (no matching series)."""
    kind = data.get("resultType", "vector")
    result = data["result"]
    if kind in ("scalar", "string"):
        return str(result[1]), 1
    if not result:
        return None, 0
    if kind == "matrix":
        values = result[0].get("values") or []
        return (str(values[-1][1]) if values else None), len(result)
    return str(result[0]["value"][1]), len(result)


@implements(types.MetricsQuery)
def metrics_query(spec: types.MetricsQuery, ctx: CheckContext) -> CheckResult:
    namespace, service, port = _component_service(ctx, "victoria-metrics")
    text = ctx.kube.service_proxy_get(
        namespace, service, port, "/api/v1/query", {"query": spec.query}
    )
    try:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("status") == "error":
            return CheckResult(
                Status.ERROR,
                f"VictoriaMetrics rejected the query: {data.get('error') or data}",
                hint="Check the PromQL of the query (try it in the VictoriaMetrics UI: vmui).",
                evidence={"query": spec.query},
            )
        raw, series = query_value(data["data"])
        value = None if raw is None else float(raw)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return CheckResult(
            Status.ERROR, f"VictoriaMetrics gave an unreadable answer: {text[:200]!r}"
        )
    evidence: dict[str, Any] = {"query": spec.query, "series": series}
    # Nothing to compare is "no data yet", never a pass (see the MetricsQuery docstring):
    # no series at all, or NaN (0/0, a ratio over a window without requests), or an
    # infinity (x/0, a ratio whose denominator has no requests while its numerator has).
    no_data = Status.PENDING if spec.on_empty == "pending" else Status.FAILED
    if value is None:
        return CheckResult(
            no_data,
            "the query returned no data yet (no matching series)",
            hint="Generate traffic and wait for the next scrape (about 30 s).",
            evidence=evidence,
        )
    if math.isnan(value):
        evidence["value"] = "NaN"
        return CheckResult(
            no_data,
            "the query returned NaN (0/0: no requests in its time window yet), so there is "
            f"no value to compare with {spec.compare} {spec.value:g}",
            hint="Generate traffic and wait for the next scrape (about 30 s).",
            evidence=evidence,
        )
    if math.isinf(value):
        shown = "+Inf" if value > 0 else "-Inf"
        evidence["value"] = shown
        return CheckResult(
            no_data,
            f"the query returned {shown} (a division by zero: its denominator is 0 in the "
            f"time window), so there is no value to compare with {spec.compare} "
            f"{spec.value:g}",
            hint="Generate traffic matching the denominator, or check the query's labels.",
            evidence=evidence,
        )
    evidence["value"] = value
    ok = _COMPARE[spec.compare](value, spec.value)
    return CheckResult(
        Status.PASSED if ok else Status.FAILED,
        f"query value {value:g} {'is' if ok else 'is not'} {spec.compare} {spec.value:g}",
        evidence=evidence,
    )


@implements(types.JaegerTraces)
def jaeger_traces(spec: types.JaegerTraces, ctx: CheckContext) -> CheckResult:
    namespace, service, port = _component_service(ctx, "jaeger")
    params = {
        "service": spec.service,
        "lookback": f"{spec.lookback_minutes}m",
        "limit": str(max(spec.min_traces, 20)),
    }
    text = ctx.kube.service_proxy_get(namespace, service, port, "/api/traces", params)
    try:
        traces = json.loads(text).get("data") or []
    except (ValueError, AttributeError):
        return CheckResult(Status.ERROR, f"Jaeger gave an unreadable answer: {text[:200]!r}")
    evidence = {"service": spec.service, "traces": len(traces)}
    if len(traces) >= spec.min_traces:
        return CheckResult(
            Status.PASSED, f"Jaeger has {len(traces)} traces of {spec.service}", evidence=evidence
        )
    return CheckResult(
        Status.PENDING,
        f"Jaeger has {len(traces)} of {spec.min_traces} traces of {spec.service} so far",
        hint="Send some requests, then wait a few seconds for the spans to arrive.",
        evidence=evidence,
    )


# The progressive-delivery checks register themselves in IMPLEMENTATIONS; importing them here
# keeps the registry complete for everyone who imports it from this module.
from kubelab.checks import delivery as _delivery  # noqa: E402, F401
