"""The sandbox's derived Istio metrics and its span receiver, on Envoy's recorded answers.

``envoy-stats.prom`` and ``envoy-vhost-stats.json`` are the sandbox Envoy's own
``/stats/prometheus`` and ``/stats?format=json`` pages (the request lines of them), taken
after a 50/50 split, v1 hung by 30 requests, 8 requests with a 200 ms upstream timeout
through the gateway and 10 curl --max-time 1 from the tester.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubelab.sandbox.telemetry import (
    MAX_TRACES,
    Destination,
    MeshView,
    SpanStore,
    Workload,
    create_app,
    derive_metrics,
    parse_cluster,
    parse_duration_us,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "observe"
ENVOY_PROMETHEUS = (FIXTURES / "envoy-stats.prom").read_text()
ENVOY_VHOSTS = json.loads((FIXTURES / "envoy-vhost-stats.json").read_text())
V1 = "outbound|80|v1|app-backend.istio.svc.cluster.local"
V2 = "outbound|80|v2|app-backend.istio.svc.cluster.local"
BARE = "outbound|80||app-backend.istio.svc.cluster.local"
APP = Destination("app-backend", "istio", None)
VIEW = MeshView(
    clusters={
        V1: Destination(
            "app-backend", "istio", Workload("app-backend-v1", "istio", "app-backend", "v1")
        ),
        V2: Destination(
            "app-backend", "istio", Workload("app-backend-v2", "istio", "app-backend", "v2")
        ),
        BARE: APP,
    },
    vhosts={
        "gateway|*": APP,
        "vs|istio/app-backend": APP,
        "svc|app-backend.istio.svc.cluster.local": APP,
    },
)
T = TypeVar("T")
_LINE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")


def series(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group(1) == name:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            out.append((labels, float(match.group(3))))
    return out


def by(rows, *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(labels[k] for k in keys): value for labels, value in rows}


def test_requests_by_workload_version_code_and_flags_from_envoys_cluster_stats():
    text = derive_metrics(ENVOY_PROMETHEUS, ENVOY_VHOSTS, VIEW)
    rows = [
        (labels, v)
        for labels, v in series(text, "istio_requests_total")
        if labels["reporter"] == "destination"
    ]
    counts = by(
        rows, "destination_workload", "destination_version", "response_code", "response_flags"
    )
    assert counts == {
        ("app-backend-v1", "v1", "200", "-"): 183,
        # upstream_rq_504 6, all of them Envoy's timeouts (upstream_rq_timeout 6)
        ("app-backend-v1", "v1", "504", "UT"): 6,
        # upstream_rq_total 207 - completed 189 - active 0: the client gave up on 18
        ("app-backend-v1", "v1", "0", "DC"): 18,
        ("app-backend-v2", "v2", "200", "-"): 67,
    }
    labels = rows[0][0]
    assert labels["destination_service"] == "app-backend.istio.svc.cluster.local"
    assert labels["destination_service_name"] == "app-backend"
    assert labels["destination_workload_namespace"] == "istio"
    assert labels["destination_app"] == "app-backend"
    assert labels["request_protocol"] == "http" and labels["source_workload"] == "unknown"
    # The telemetry cluster's own 202s (Envoy sending spans) are no mesh request.
    assert "kubelab-telemetry" not in text


def test_the_source_side_comes_from_each_virtual_hosts_requests():
    text = derive_metrics(ENVOY_PROMETHEUS, ENVOY_VHOSTS, VIEW)
    rows = [
        (labels, v)
        for labels, v in series(text, "istio_requests_total")
        if labels["reporter"] == "source"
    ]
    counts = by(
        rows, "source_workload", "source_workload_namespace", "response_code", "response_flags"
    )
    assert counts == {
        ("istio-ingressgateway", "istio-system", "200", "-"): 58,
        ("istio-ingressgateway", "istio-system", "504", "UT"): 6,
        ("in-mesh", "istio", "200", "-"): 192,
        # the tester's 18 given up (upstream_rq_total 210 - completed 192)
        ("in-mesh", "istio", "0", "DC"): 18,
    }
    assert {labels["destination_service_name"] for labels, _ in rows} == {"app-backend"}
    assert {labels["destination_workload"] for labels, _ in rows} == {"unknown"}


def test_the_duration_histogram_has_istios_buckets_and_envoys_sum():
    text = derive_metrics(ENVOY_PROMETHEUS, ENVOY_VHOSTS, VIEW)
    buckets = series(text, "istio_request_duration_milliseconds_bucket")
    v2 = {labels["le"]: v for labels, v in buckets if labels["destination_version"] == "v2"}
    assert list(v2)[:5] == ["0.5", "1", "5", "10", "25"] and list(v2)[-1] == "+Inf"
    assert v2["+Inf"] == 64  # upstream_rq_time counts answered requests only
    counts = by(series(text, "istio_request_duration_milliseconds_count"), "destination_version")
    sums = by(series(text, "istio_request_duration_milliseconds_sum"), "destination_version")
    assert counts == {("v1",): 183, ("v2",): 64}
    assert 0 < sums[("v2",)] < 1000
    # Cumulative buckets never go down.
    values = list(v2.values())
    assert values == sorted(values)


def test_clusters_the_view_does_not_know_and_empty_pages_give_no_series():
    assert (
        series(derive_metrics(ENVOY_PROMETHEUS, ENVOY_VHOSTS, MeshView()), "istio_requests_total")
        == []
    )
    text = derive_metrics("", {}, VIEW)
    assert (
        "# TYPE istio_requests_total counter" in text and series(text, "istio_requests_total") == []
    )


def test_an_unknown_workload_is_labelled_unknown_as_istio_does():
    view = MeshView(clusters={V1: Destination("app-backend", "istio", None)})
    rows = series(derive_metrics(ENVOY_PROMETHEUS, {}, view), "istio_requests_total")
    assert {labels["destination_workload"] for labels, _ in rows} == {"unknown"}
    assert {labels["destination_canonical_revision"] for labels, _ in rows} == {"latest"}


def test_cluster_names_and_durations():
    assert parse_cluster(V1) == (80, "v1", "app-backend", "istio")
    assert parse_cluster(BARE) == (80, "", "app-backend", "istio")
    assert parse_cluster("kubelab-telemetry") is None
    assert parse_cluster("outbound|80|v1|nodots") is None
    assert parse_duration_us("500ms") == 500_000
    assert parse_duration_us("1.5s") == 1_500_000
    assert parse_duration_us("15m") == 900_000_000
    assert parse_duration_us("2h") == 7_200_000_000
    assert parse_duration_us("soon") is None


# ------------------------------------------------------------------ spans


def zipkin(trace: str, span: str, parent: str | None, start: int, duration: int, **tags: str):
    """One span as Envoy's Zipkin tracer posts it (HTTP_JSON, v2)."""
    body = {
        "traceId": trace,
        "id": span,
        "name": tags.pop("name", "127.0.0.1:8080"),
        "kind": tags.pop("kind", "SERVER"),
        "timestamp": start,
        "duration": duration,
        "localEndpoint": {"serviceName": "kubelab-sandbox", "ipv4": "127.0.0.1"},
        "tags": {"component": "proxy", "upstream_cluster": V1, **tags},
    }
    if parent:
        body["parentId"] = parent
    return body


def hung_request(trace: str, start: int) -> list[dict]:
    return [
        zipkin(
            trace,
            trace[-16:],
            None,
            start,
            1_000_400,
            **{"http.status_code": "0", "response_flags": "DC"},
        ),
        zipkin(
            trace,
            "c" + trace[-15:],
            trace[-16:],
            start + 150,
            1_000_100,
            name=f"router {V1} egress",
            kind="CLIENT",
            **{"http.status_code": "0"},
        ),
    ]


def store() -> SpanStore:
    return SpanStore(VIEW.clusters.get)


def test_zipkin_spans_become_jaeger_traces_of_the_destination_service():
    spans = store()
    assert spans.add_zipkin(hung_request("a" * 32, 1_796_000_000_000_000)) == 2
    (trace,) = spans.find("app-backend.istio", 0, 2**62, 20)
    assert trace["traceID"] == "a" * 32
    assert trace["processes"] == {"p1": {"serviceName": "app-backend.istio", "tags": []}}
    root, child = trace["spans"]
    assert root["references"] == []
    assert child["references"] == [{"refType": "CHILD_OF", "traceID": "a" * 32, "spanID": "a" * 16}]
    tags = {t["key"]: t["value"] for t in child["tags"]}
    assert tags["istio.canonical_revision"] == "v1" and tags["span.kind"] == "client"
    assert tags["http.status_code"] == "0"
    assert child["duration"] == 1_000_100 and child["processID"] == "p1"
    assert spans.services() == ["app-backend.istio"]


def test_find_filters_by_time_duration_operation_and_limit():
    spans = store()
    for i in range(5):
        spans.add_zipkin(hung_request(f"{i:032x}", 1_000_000 + i * 10_000_000))
    fast = zipkin("f" * 32, "f" * 16, None, 90_000_000, 4_000, upstream_cluster=V2)
    spans.add_zipkin([fast])
    everything = spans.find("app-backend.istio", 0, 2**62, 100)
    assert everything[0]["traceID"] == "f" * 32  # newest first
    assert len(spans.find("app-backend.istio", 0, 2**62, 2)) == 2
    assert [t["traceID"] for t in spans.find("app-backend.istio", 0, 15_000_000, 100)] == [
        f"{1:032x}",
        f"{0:032x}",
    ]
    slow = spans.find("app-backend.istio", 0, 2**62, 100, min_us=500_000)
    assert len(slow) == 5
    quick = spans.find("app-backend.istio", 0, 2**62, 100, max_us=10_000)
    assert [t["traceID"] for t in quick] == ["f" * 32]
    assert spans.find("app-backend.istio", 0, 2**62, 100, operation="nope") == []
    assert spans.find("other.istio", 0, 2**62, 100) == []


def test_bad_spans_are_dropped_and_the_store_is_bounded():
    spans = store()
    assert spans.add_zipkin(["not a span", {"traceId": "x"}, {"traceId": "a", "id": "b"}]) == 0
    # protobuf's JSON writes int64 as strings: those are read too
    assert spans.add_zipkin([{**zipkin("b" * 32, "b" * 16, None, 5, 6), "timestamp": "5"}]) == 1
    for i in range(MAX_TRACES + 10):
        spans.add_zipkin([zipkin(f"{i:032x}", f"{i:016x}", None, i, 1)])
    assert len(spans.traces) == MAX_TRACES
    assert f"{0:032x}" not in spans.traces and f"{MAX_TRACES + 9:032x}" in spans.traces


# ------------------------------------------------------------------ the HTTP API


def on_api(scenario: Callable[[TestClient], Awaitable[T]]) -> T:
    """Run ``scenario`` against the telemetry server (spans of one hung request in it)."""
    spans = store()
    spans.add_zipkin(hung_request("a" * 32, 1_796_000_000_000_000))

    async def metrics() -> str:
        return derive_metrics(ENVOY_PROMETHEUS, ENVOY_VHOSTS, VIEW)

    app = create_app(metrics, spans, clock=lambda: 1_796_000_060.0)

    async def go() -> T:
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(go())


def test_the_jaeger_query_api_subset():
    async def scenario(client: TestClient) -> None:
        answer = await (await client.get("/api/services")).json()
        assert answer == {
            "data": ["app-backend.istio"],
            "total": 1,
            "limit": 0,
            "offset": 0,
            "errors": None,
        }
        params = {"service": "app-backend.istio", "lookback": "5m"}
        found = await client.get("/api/traces", params=params)
        assert found.status == 200
        assert [t["traceID"] for t in (await found.json())["data"]] == ["a" * 32]
        # The trace started 60 s before "now": a 30 s lookback misses it.
        params["lookback"] = "30s"
        late = await client.get("/api/traces", params=params)
        assert (await late.json())["data"] == []
        one = await (await client.get(f"/api/traces/{'a' * 32}")).json()
        assert len(one["data"][0]["spans"]) == 2

    on_api(scenario)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "parameter 'service' is required"),
        ({"service": "s", "lookback": "soon"}, "unable to parse param 'lookback': soon"),
        ({"service": "s", "minDuration": "x"}, "unable to parse param 'minDuration': x"),
        ({"service": "s", "limit": "many"}, "invalid literal"),
    ],
)
def test_jaeger_errors_have_jaegers_shape(params, message):
    async def scenario(client: TestClient) -> tuple[int, dict]:
        answer = await client.get("/api/traces", params=params)
        return answer.status, await answer.json()

    status, body = on_api(scenario)
    assert status == 400
    assert body["data"] is None and body["errors"][0]["code"] == 400
    assert message in body["errors"][0]["msg"]


def test_a_missing_trace_is_a_jaeger_404():
    async def scenario(client: TestClient) -> tuple[int, dict]:
        answer = await client.get("/api/traces/0badc0ffee")
        return answer.status, await answer.json()

    status, body = on_api(scenario)
    assert status == 404 and body["errors"] == [{"code": 404, "msg": "trace not found"}]


def test_metrics_and_spans_endpoints():
    async def scenario(client: TestClient) -> None:
        page = await client.get("/metrics")
        assert page.status == 200 and page.content_type == "text/plain"
        assert "istio_requests_total{" in await page.text()
        posted = await client.post("/api/v2/spans", data=json.dumps(hung_request("b" * 32, 1)))
        assert posted.status == 202
        assert (await client.post("/api/v2/spans", data="{")).status == 400
        assert (await client.post("/api/v2/spans", data="{}")).status == 400

    on_api(scenario)


def test_the_source_sides_abandoned_requests_never_go_down():
    seen: dict[str, float] = {}
    derive_metrics(ENVOY_PROMETHEUS, ENVOY_VHOSTS, VIEW, seen)
    assert seen["vs|istio/app-backend"] == 18
    # A later page where a request counted as "not completed" did complete after all.
    later = json.loads(json.dumps(ENVOY_VHOSTS))
    for stat in later["stats"]:
        if stat.get("name") == "vhost.vs|istio/app-backend.vcluster.all.upstream_rq_completed":
            stat["value"] += 2
    text = derive_metrics(ENVOY_PROMETHEUS, later, VIEW, seen)
    rows = series(text, "istio_requests_total")
    dropped = [
        v
        for labels, v in rows
        if labels["source_workload"] == "in-mesh" and labels["response_code"] == "0"
    ]
    assert dropped == [18]
