"""Checks on the mesh's telemetry: metrics-query (VictoriaMetrics) and jaeger-traces."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from typing import Any

from kubelab.checks import types
from kubelab.checks.registry import CheckContext, implements
from kubelab.checks.result import CheckResult, Status
from kubelab.i18n import _

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
        raise SetupError(
            _("{component} is not available on this cluster").format(component=component)
        )
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
                _("VictoriaMetrics rejected the query: {error}").format(
                    error=data.get("error") or data
                ),
                hint=_("Check the PromQL of the query (try it in the VictoriaMetrics UI: vmui)."),
                evidence={"query": spec.query},
            )
        raw, series = query_value(data["data"])
        value = None if raw is None else float(raw)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return CheckResult(
            Status.ERROR,
            _("VictoriaMetrics gave an unreadable answer: {answer!r}").format(answer=text[:200]),
        )
    evidence: dict[str, Any] = {"query": spec.query, "series": series}
    # Nothing to compare is "no data yet", never a pass (see the MetricsQuery docstring):
    # no series at all, or NaN (0/0, a ratio over a window without requests), or an
    # infinity (x/0, a ratio whose denominator has no requests while its numerator has).
    no_data = Status.PENDING if spec.on_empty == "pending" else Status.FAILED
    if value is None:
        return CheckResult(
            no_data,
            _("the query returned no data yet (no matching series)"),
            hint=_("Generate traffic and wait for the next scrape (about 30 s)."),
            evidence=evidence,
        )
    if math.isnan(value):
        evidence["value"] = "NaN"
        return CheckResult(
            no_data,
            _(
                "the query returned NaN (0/0: no requests in its time window yet), so there is "
                "no value to compare with {compare} {threshold:g}"
            ).format(compare=spec.compare, threshold=spec.value),
            hint=_("Generate traffic and wait for the next scrape (about 30 s)."),
            evidence=evidence,
        )
    if math.isinf(value):
        shown = "+Inf" if value > 0 else "-Inf"
        evidence["value"] = shown
        return CheckResult(
            no_data,
            _(
                "the query returned {value} (a division by zero: its denominator is 0 in the "
                "time window), so there is no value to compare with {compare} {threshold:g}"
            ).format(value=shown, compare=spec.compare, threshold=spec.value),
            hint=_("Generate traffic matching the denominator, or check the query's labels."),
            evidence=evidence,
        )
    evidence["value"] = value
    ok = _COMPARE[spec.compare](value, spec.value)
    return CheckResult(
        Status.PASSED if ok else Status.FAILED,
        (
            _("query value {value:g} is {compare} {threshold:g}")
            if ok
            else _("query value {value:g} is not {compare} {threshold:g}")
        ).format(value=value, compare=spec.compare, threshold=spec.value),
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
        return CheckResult(
            Status.ERROR,
            _("Jaeger gave an unreadable answer: {answer!r}").format(answer=text[:200]),
        )
    evidence = {"service": spec.service, "traces": len(traces)}
    if len(traces) >= spec.min_traces:
        return CheckResult(
            Status.PASSED,
            _("Jaeger has {count} traces of {service}").format(
                count=len(traces), service=spec.service
            ),
            evidence=evidence,
        )
    return CheckResult(
        Status.PENDING,
        _("Jaeger has {count} of {wanted} traces of {service} so far").format(
            count=len(traces), wanted=spec.min_traces, service=spec.service
        ),
        hint=_("Send some requests, then wait a few seconds for the spans to arrive."),
        evidence=evidence,
    )


# The progressive-delivery checks register themselves in IMPLEMENTATIONS; importing them here
