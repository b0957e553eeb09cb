"""The sandbox's telemetry: Istio's request metrics derived from Envoy, and a span receiver.

The sandbox runs one Envoy for the whole mesh, and no Istio, so nothing produces Istio's
``istio_requests_total`` and ``istio_request_duration_milliseconds``. This module derives them
from Envoy's own per-cluster statistics (a cluster is one Service port and subset, e.g.
``outbound|80|v1|app-backend.istio.svc.cluster.local``) and serves them on ``GET /metrics``
for the sandbox's Prometheus to scrape. How they differ from Istio's is in
docs/observability-offline.md; :func:`derive_metrics` is the one place that decides it.

The same server receives Envoy's spans (Zipkin v2 JSON, ``POST /api/v2/spans``) and answers
the part of Jaeger's query API that ``kubelab traces`` and the ``jaeger-traces`` check use:
``GET /api/services``, ``GET /api/traces`` (service, lookback, start, end, limit,
minDuration, maxDuration, operation) and ``GET /api/traces/{id}``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kubelab.sandbox.envoy_config import (
    CLUSTER_DOMAIN,
    GATEWAY_VHOST,
    VIRTUAL_CLUSTER_NAME,
)

# Who the gateway's requests come from, named as Istio's default ingress gateway.
GATEWAY_WORKLOAD = ("istio-ingressgateway", "istio-system")
# Requests sent to a Service's host from inside the mesh (`kubectl exec` into any pod, and
# kubelab's own checks): the sandbox's one Envoy cannot tell which pod sent them.
MESH_CLIENT = "in-mesh"
UNKNOWN = "unknown"
MAX_TRACES = 2000
MAX_SPANS_PER_TRACE = 64
_CLUSTER = re.compile(r"^outbound\|(\d+)\|([^|]*)\|(.+)$")
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|µs|ms|s|m|h)$")
_DURATION_UNITS_US = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000}
_DURATION_UNITS_US["h"] = 3_600_000_000


@dataclass(frozen=True)
class Workload:
    """What a cluster's endpoints run: the Deployment (or bare pod) and its labels."""

    name: str
    namespace: str
    app: str
    version: str


@dataclass(frozen=True)
class Destination:
    """One Envoy cluster as Istio's destination labels see it."""

    service: str
    namespace: str
    workload: Workload | None

    @property
    def fqdn(self) -> str:
        return f"{self.service}.{self.namespace}.{CLUSTER_DOMAIN}"


@dataclass(frozen=True)
class MeshView:
    """What the derivation needs to know of the mesh now: the clusters' destinations and,
    per virtual host, the one Service its routes reach (None when several or none)."""

    clusters: dict[str, Destination] = field(default_factory=dict)
    vhosts: dict[str, Destination | None] = field(default_factory=dict)


def parse_cluster(name: str) -> tuple[int, str, str, str] | None:
    """(port, subset, service, namespace) of an outbound cluster name, None otherwise."""
    match = _CLUSTER.match(name)
    if match is None:
        return None
    fqdn = match.group(3)
    parts = fqdn.split(".")
    if len(parts) < 2:
        return None
    return int(match.group(1)), match.group(2), parts[0], parts[1]


# ------------------------------------------------------------------ metrics


def _labels(destination: Destination | None) -> dict[str, str]:
    """Istio's destination labels for ``destination`` (``unknown`` for what is not known)."""
    if destination is None:
        return {
            "destination_service": UNKNOWN,
            "destination_service_name": UNKNOWN,
            "destination_service_namespace": UNKNOWN,
            "destination_workload": UNKNOWN,
            "destination_workload_namespace": UNKNOWN,
            "destination_app": UNKNOWN,
            "destination_version": UNKNOWN,
            "destination_canonical_service": UNKNOWN,
            "destination_canonical_revision": UNKNOWN,
        }
    workload = destination.workload
    return {
        "destination_service": destination.fqdn,
        "destination_service_name": destination.service,
        "destination_service_namespace": destination.namespace,
        "destination_workload": workload.name if workload else UNKNOWN,
        "destination_workload_namespace": workload.namespace if workload else UNKNOWN,
        "destination_app": workload.app if workload else UNKNOWN,
        "destination_version": workload.version if workload else UNKNOWN,
        "destination_canonical_service": workload.app if workload else UNKNOWN,
        "destination_canonical_revision": workload.version if workload else "latest",
    }


def _common(reporter: str, source: tuple[str, str]) -> dict[str, str]:
    workload, namespace = source
    return {
        "reporter": reporter,
        "source_workload": workload,
        "source_workload_namespace": namespace,
        "source_app": workload,
        "source_version": UNKNOWN,
        "source_canonical_service": workload,
        "source_canonical_revision": "latest",
        "source_principal": UNKNOWN,
        "destination_principal": UNKNOWN,
        "source_cluster": "Kubernetes",
        "destination_cluster": "Kubernetes",
        "request_protocol": "http",
        "connection_security_policy": "none",
        "grpc_response_status": "",
    }


def _source_of(vhost: str, namespace: str) -> tuple[str, str]:
    return GATEWAY_WORKLOAD if vhost == GATEWAY_VHOST else (MESH_CLIENT, namespace)


def _format(name: str, labels: dict[str, str], value: float) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")

    body = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items()))
    shown = repr(float(value)) if not float(value).is_integer() else str(int(value))
    return f"{name}{{{body}}} {shown}"


@dataclass
class _ClusterStats:
    codes: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    completed: float = 0.0
    active: float = 0.0
    timeouts: float = 0.0
    buckets: dict[str, float] = field(default_factory=dict)
    duration_sum: float = 0.0
    duration_count: float = 0.0


def _cluster_stats(envoy_prometheus: str) -> dict[str, _ClusterStats]:
    """Envoy's per-cluster request stats from its ``/stats/prometheus`` page (where
    ``envoy_cluster_name`` is the whole cluster name: see ``CLUSTER_NAME_TAG``)."""
    stats: dict[str, _ClusterStats] = {}
    for name, labels, value in _samples(envoy_prometheus):
        cluster = labels.get("envoy_cluster_name")
        if cluster is None or not name.startswith("envoy_cluster_upstream_rq"):
            continue
        entry = stats.setdefault(cluster, _ClusterStats())
        if name == "envoy_cluster_upstream_rq" and "envoy_response_code" in labels:
            entry.codes[labels["envoy_response_code"]] = value
        elif name == "envoy_cluster_upstream_rq_total":
            entry.total = value
        elif name == "envoy_cluster_upstream_rq_completed":
            entry.completed = value
        elif name == "envoy_cluster_upstream_rq_active":
            entry.active = value
        elif name == "envoy_cluster_upstream_rq_timeout":
            entry.timeouts = value
        elif name == "envoy_cluster_upstream_rq_time_bucket" and "le" in labels:
            entry.buckets[labels["le"]] = value
        elif name == "envoy_cluster_upstream_rq_time_sum":
            entry.duration_sum = value
        elif name == "envoy_cluster_upstream_rq_time_count":
            entry.duration_count = value
    return stats


def _samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample of a Prometheus text page, names as written.

    Envoy's page has both ``upstream_rq_total`` (a counter of its own) and ``upstream_rq``
    by code: prometheus_client's parser names counter samples ``<family>_total`` and would
    merge the two, so the lines are read as they are.
    """
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, body, raw = match.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        labels = {key: _unescape(v) for key, v in _LABEL.findall(body or "")}
        yield name, labels, value


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _vhost_codes(envoy_json: dict[str, Any], vhosts: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per virtual host, its requests by response code (``vhost.<name>.vcluster.all.*``),
    and under ``timeout``, ``total`` and ``completed`` those counters of it."""
    prefixes = {f"vhost.{v}.vcluster.{VIRTUAL_CLUSTER_NAME}.upstream_rq_": v for v in vhosts}
    out: dict[str, dict[str, float]] = {}
    for stat in envoy_json.get("stats") or []:
        name = stat.get("name") if isinstance(stat, dict) else None
        if not isinstance(name, str) or "value" not in stat:
            continue
        for prefix, vhost in prefixes.items():
            if name.startswith(prefix):
                code = name[len(prefix) :]
                if code.isdigit() or code in ("timeout", "total", "completed"):
                    out.setdefault(vhost, {})[code] = float(stat["value"])
    return out


def derive_metrics(
    envoy_prometheus: str,
    envoy_json: dict[str, Any],
    view: MeshView,
    abandoned_seen: dict[str, float] | None = None,
) -> str:
    """Istio's request metrics (Prometheus text) from Envoy's stats and the mesh now.

    * ``reporter="destination"``: one series per cluster and response code, from the
      cluster's ``upstream_rq_<code>`` counters. A 504 is split into ``UT`` (Envoy's upstream
      timeout, its ``upstream_rq_timeout``) and ``-``; requests that started but neither
      completed nor still run were given up by the client: code ``0``, flags ``DC``. The
      duration histogram is the cluster's ``upstream_rq_time`` (Istio's buckets are Envoy's
      defaults, so ``le`` matches).
    * ``reporter="source"``: one series per virtual host and code, from its virtual cluster
      (the gateway's host, or a Service's host for clients in the mesh); the source
      workload is the gateway or ``in-mesh``; the destination's workload is unknown.
      Requests the client gave up on are its ``upstream_rq_total`` minus
      ``upstream_rq_completed``; a virtual cluster has no count of requests still running,
      so that difference is kept from going down in ``abandoned_seen`` (the caller's,
      across scrapes): a counter must not decrease when a slow request completes.
    """
    lines = [
        "# HELP istio_requests_total Requests, derived by the kubelab sandbox from Envoy's "
        "cluster stats.",
        "# TYPE istio_requests_total counter",
    ]
    histogram = [
        "# HELP istio_request_duration_milliseconds Request duration, from Envoy's "
        "upstream_rq_time.",
        "# TYPE istio_request_duration_milliseconds histogram",
    ]
    for cluster, stats in sorted(_cluster_stats(envoy_prometheus).items()):
        destination = view.clusters.get(cluster)
        if destination is None:
            continue
        labels = {
            **_common("destination", (UNKNOWN, UNKNOWN)),
            **_labels(destination),
        }
        lines += _request_lines(labels, stats.codes, stats.timeouts)
        abandoned = max(0.0, stats.total - stats.completed - stats.active)
        if abandoned:
            dropped = {**labels, "response_code": "0", "response_flags": "DC"}
            lines.append(_format("istio_requests_total", dropped, abandoned))
        if stats.buckets:
            for le, count in sorted(stats.buckets.items(), key=lambda i: float(i[0])):
                name = "istio_request_duration_milliseconds_bucket"
                histogram.append(_format(name, {**labels, "le": _le(le)}, count))
            histogram.append(
                _format("istio_request_duration_milliseconds_sum", labels, stats.duration_sum)
            )
            histogram.append(
                _format("istio_request_duration_milliseconds_count", labels, stats.duration_count)
            )
    for vhost, codes in sorted(_vhost_codes(envoy_json, view.vhosts).items()):
        destination = view.vhosts.get(vhost)
        namespace = destination.namespace if destination else UNKNOWN
        labels = {
            **_common("source", _source_of(vhost, namespace)),
            **_labels(destination),
            # The source side does not know which pod answered.
            "destination_workload": UNKNOWN,
            "destination_workload_namespace": namespace,
            "destination_version": UNKNOWN,
            "destination_canonical_revision": "latest",
        }
        timeouts = codes.pop("timeout", 0.0)
        total, completed = codes.pop("total", 0.0), codes.pop("completed", 0.0)
        lines += _request_lines(labels, codes, timeouts)
        abandoned = max(0.0, total - completed)
        if abandoned_seen is not None:
            abandoned = abandoned_seen[vhost] = max(abandoned, abandoned_seen.get(vhost, 0.0))
        if abandoned:
            dropped = {**labels, "response_code": "0", "response_flags": "DC"}
            lines.append(_format("istio_requests_total", dropped, abandoned))
    return "\n".join(lines + histogram) + "\n"


def _request_lines(labels: dict[str, str], codes: dict[str, float], timeouts: float) -> list[str]:
    """istio_requests_total by code; of the 504s, Envoy's own timeouts are flagged UT."""
    lines = []
    for code, count in sorted(codes.items()):
        if code == "504" and timeouts:
            timed_out = min(count, timeouts)
            flagged = {**labels, "response_code": code, "response_flags": "UT"}
            lines.append(_format("istio_requests_total", flagged, timed_out))
            count -= timed_out
            if not count:
                continue
        answered = {**labels, "response_code": code, "response_flags": "-"}
        lines.append(_format("istio_requests_total", answered, count))
    return lines


def _le(value: str) -> str:
    number = float(value)
    if math.isinf(number):
        return "+Inf"
    return str(int(number)) if number.is_integer() else repr(number)


# ------------------------------------------------------------------ spans


def parse_duration_us(text: str) -> int | None:
    """Microseconds of a Jaeger query duration ("500ms", "1.5s", "15m"); None if not one."""
    match = _DURATION.match(text.strip())
    if match is None:
        return None
    return int(float(match.group(1)) * _DURATION_UNITS_US[match.group(2)])


@dataclass
class _Trace:
    spans: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: int = 0  # µs since the epoch: the earliest span's start

    def add(self, span: dict[str, Any]) -> None:
        if len(self.spans) < MAX_SPANS_PER_TRACE or span["spanID"] in self.spans:
            self.spans[span["spanID"]] = span
        starts = [s["startTime"] for s in self.spans.values()]
        self.started = min(starts) if starts else 0

    def duration(self) -> int:
        ends = [s["startTime"] + s["duration"] for s in self.spans.values()]
        return max(ends, default=self.started) - self.started


class SpanStore:
    """The last :data:`MAX_TRACES` traces Envoy sent, as Jaeger's query API shows them.

    ``destination_of(cluster_name)`` names the Service and workload behind an Envoy cluster;
    spans are attributed to that Service (``app-backend.istio``), as Istio's sidecar of the
    destination reports them, since the sandbox's one Envoy plays every sidecar.
    """

    def __init__(self, destination_of: Callable[[str], Destination | None]) -> None:
        self.destination_of = destination_of
        self.traces: OrderedDict[str, _Trace] = OrderedDict()
        self.received = 0

    def add_zipkin(self, spans: list[dict[str, Any]]) -> int:
        """Store Zipkin v2 JSON spans; returns how many were kept."""
        kept = 0
        for raw in spans:
            span = self._from_zipkin(raw)
            if span is None:
                continue
            trace = self.traces.get(span["traceID"])
            if trace is None:
                trace = self.traces[span["traceID"]] = _Trace()
            trace.add(span)
            self.traces.move_to_end(span["traceID"])
            kept += 1
        while len(self.traces) > MAX_TRACES:
            self.traces.popitem(last=False)
        self.received += kept
        return kept

    def _from_zipkin(self, raw: Any) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            return None
        trace_id, span_id = raw.get("traceId"), raw.get("id")
        if not (isinstance(trace_id, str) and isinstance(span_id, str)):
            return None
        try:  # Zipkin JSON numbers, or strings of them (protobuf's JSON of int64)
            start, duration = int(raw["timestamp"]), int(raw.get("duration") or 0)
        except (KeyError, TypeError, ValueError):
            return None
        tags = {str(k): str(v) for k, v in (raw.get("tags") or {}).items()}
        if raw.get("kind"):
            tags["span.kind"] = str(raw["kind"]).lower()
        destination = self.destination_of(tags.get("upstream_cluster", ""))
        service = f"{destination.service}.{destination.namespace}" if destination else None
        if destination is not None:
            tags["istio.namespace"] = destination.namespace
            if destination.workload is not None:
                tags["istio.canonical_service"] = destination.workload.app
                tags["istio.canonical_revision"] = destination.workload.version
        local = raw.get("localEndpoint") or {}
        references = []
        if raw.get("parentId"):
            parent = str(raw["parentId"])
            references.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent})
        return {
            "traceID": trace_id,
            "spanID": span_id,
            "operationName": str(raw.get("name") or ""),
            "references": references,
            "flags": 1,
            "startTime": start,
            "duration": duration,
            "tags": [{"key": k, "type": "string", "value": v} for k, v in sorted(tags.items())],
            "logs": [],
            "service": service or str(local.get("serviceName") or UNKNOWN),
            "warnings": None,
        }

    def services(self) -> list[str]:
        return sorted({s["service"] for t in self.traces.values() for s in t.spans.values()})

    def find(
        self,
        service: str,
        start_us: int,
        end_us: int,
        limit: int,
        min_us: int | None = None,
        max_us: int | None = None,
        operation: str | None = None,
    ) -> list[dict[str, Any]]:
        """Traces with a span of ``service`` started in [start, end], newest first."""
        found: list[dict[str, Any]] = []
        for trace_id in reversed(self.traces):
            trace = self.traces[trace_id]
            if not start_us <= trace.started <= end_us:
                continue
            spans = trace.spans.values()
            if not any(s["service"] == service for s in spans):
                continue
            if operation and not any(s["operationName"] == operation for s in spans):
                continue
            length = trace.duration()
            if (min_us is not None and length < min_us) or (max_us is not None and length > max_us):
                continue
            found.append(self.jaeger(trace_id))
            if len(found) >= limit:
                break
        return found

    def jaeger(self, trace_id: str) -> dict[str, Any]:
        """One trace in Jaeger's JSON shape (spans by start time; processes p1, p2, ...)."""
        trace = self.traces[trace_id]
        processes: dict[str, dict[str, Any]] = {}
        by_service: dict[str, str] = {}
        spans = []
        for span in sorted(trace.spans.values(), key=lambda s: (s["startTime"], s["spanID"])):
            service = span["service"]
            if service not in by_service:
                by_service[service] = f"p{len(by_service) + 1}"
                processes[by_service[service]] = {"serviceName": service, "tags": []}
            shown = {k: v for k, v in span.items() if k != "service"}
            spans.append({**shown, "processID": by_service[service]})
        return {"traceID": trace_id, "spans": spans, "processes": processes, "warnings": None}


# ------------------------------------------------------------------ the HTTP server


def _jaeger_answer(data: Any, status: int = 200, error: str | None = None) -> web.Response:
    body = {
        "data": data,
        "total": len(data) if isinstance(data, list) else 0,
        "limit": 0,
        "offset": 0,
        "errors": [{"code": status, "msg": error}] if error else None,
    }
    return web.json_response(body, status=status)


def create_app(
    metrics: Callable[[], Any],
    spans: SpanStore,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The telemetry server: ``metrics`` is an async function returning the exposition."""

    async def get_metrics(request: web.Request) -> web.Response:
        text = await metrics()
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def post_spans(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="spans must be Zipkin v2 JSON")
        if not isinstance(body, list):
            return web.Response(status=400, text="spans must be a JSON list")
        spans.add_zipkin(body)
        return web.Response(status=202)

    async def get_services(request: web.Request) -> web.Response:
        return _jaeger_answer(spans.services())

    async def get_traces(request: web.Request) -> web.Response:
        query = request.query
        service = query.get("service")
        if not service:
            return _jaeger_answer(None, 400, "parameter 'service' is required")
        now_us = int(clock() * 1_000_000)
        try:
            end = int(query["end"]) if "end" in query else now_us
            lookback = parse_duration_us(query.get("lookback", "1h"))
            if lookback is None:
                raise ValueError(f"unable to parse param 'lookback': {query['lookback']}")
            start = int(query["start"]) if "start" in query else end - lookback
            limit = int(query.get("limit", "20"))
            bounds = []
            for key in ("minDuration", "maxDuration"):
                value = query.get(key)
                parsed = parse_duration_us(value) if value else None
                if value and parsed is None:
                    raise ValueError(f"unable to parse param '{key}': {value}")
                bounds.append(parsed)
        except ValueError as exc:
            return _jaeger_answer(None, 400, str(exc))
        found = spans.find(
            service, start, end, max(1, limit), bounds[0], bounds[1], query.get("operation")
        )
        return _jaeger_answer(found)

    async def get_trace(request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        if trace_id not in spans.traces:
            return _jaeger_answer(None, 404, "trace not found")
        return _jaeger_answer([spans.jaeger(trace_id)])

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/api/v2/spans", post_spans)
    app.router.add_get("/api/services", get_services)
    app.router.add_get("/api/traces", get_traces)
    app.router.add_get("/api/traces/{trace_id}", get_trace)
    app.router.add_get("/ready", ready)
    return app
