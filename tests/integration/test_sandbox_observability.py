"""The sandbox's telemetry with a real Prometheus: derived Istio metrics, the metrics checks,
`kubelab graph`, the span receiver, `kubelab traces` and the offline exercise paths.

Prometheus is Debian's `prometheus` (CI installs it). Without it these tests skip, except
under CI, where a missing Prometheus is a failure: the offline Kiali exercise depends on it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from support import SandboxHome, course_patch, lesson_sandbox, run_bash

from kubelab.checks.metrics import jaeger_traces, metrics_query
from kubelab.checks.registry import CheckContext
from kubelab.checks.result import Status
from kubelab.checks.types import JaegerTraces, MetricsQuery
from kubelab.cluster.kube import Kube
from kubelab.components.catalog import CATALOG
from kubelab.lessons.loader import find_lesson
from kubelab.sandbox.prometheus import find_prometheus
from kubelab.tools import find_tool

if find_prometheus() is None and os.environ.get("CI"):
    pytest.fail("prometheus is not installed (CI installs Debian's prometheus)")
pytestmark = [
    pytest.mark.skipif(find_tool("helm") is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.skipif(find_tool("kubectl") is None, reason="kubectl missing"),
    pytest.mark.skipif(find_prometheus() is None, reason="prometheus missing: apt install it"),
    pytest.mark.timeout(300),
]

# Scrapes every second, so a test waits seconds, not the default 5 s per look.
LAB = SandboxHome("kubelab-observe-test-", env={"KUBELAB_SANDBOX_SCRAPE_INTERVAL": "1"})
LESSON = "istio-traffic-splitting"
kubelab = LAB.kubelab
lesson_up = lesson_sandbox(LAB, LESSON)
SHARE_OF_V2 = (
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="istio",'
    'destination_service_name="app-backend",destination_version="v2"}[4s])) / '
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="istio",'
    'destination_service_name="app-backend"}[4s]))'
)


@pytest.fixture(scope="module")
def runtime(lesson_up: str) -> dict:
    return json.loads((LAB.home / "sandbox" / "runtime.json").read_text())


@pytest.fixture(scope="module")
def ctx(runtime: dict) -> CheckContext:
    services = {name: CATALOG[name].api for name in ("victoria-metrics", "jaeger")}
    kube = Kube(Path(runtime["kubeconfig"]), timeout=10.0)
    return CheckContext(kube=kube, sampler=None, services=services)  # type: ignore[arg-type]


def steady_traffic(ingress: str, seconds: float, path: str = "/version") -> int:
    """Requests through the ingress for ``seconds``, 4 at a time; how many answered."""
    deadline = time.monotonic() + seconds
    answered = [0]
    lock = threading.Lock()

    def loop() -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(ingress + path, timeout=2) as response:
                    response.read()
                with lock:
                    answered[0] += 1
            except OSError:
                pass
            time.sleep(0.02)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 5)
    return answered[0]


def prometheus_query(runtime: dict, query: str) -> list[dict]:
    url = runtime["prometheus"] + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]["result"]


def share_check(ctx: CheckContext) -> tuple[Status, float | None]:
    result = metrics_query(MetricsQuery(query=SHARE_OF_V2, compare=">=", value=0.35), ctx)
    return result.status, result.evidence.get("value")


def test_a_metrics_check_on_derived_istio_requests_total_follows_the_split(runtime, ctx):
    """The share of v2 in istio_requests_total, through the sandbox API's service proxy at
    VictoriaMetrics' address: below 0.35 at 90/10, above it once the course's 50/50 patch
    applied (a real PromQL engine computing it, over a 4 s window of 1 s scrapes)."""
    LAB.kubectl(*course_patch(90, 10))
    assert steady_traffic(runtime["ingress"], 7) > 100
    status, before = share_check(ctx)
    assert status is Status.FAILED, before
    assert before is not None and 0.02 < before < 0.25
    LAB.kubectl(*course_patch(50, 50))
    time.sleep(1.0)  # Envoy applies a VirtualService change within a second
    assert steady_traffic(runtime["ingress"], 7) > 100
    status, after = share_check(ctx)
    assert status is Status.PASSED, after
    assert after is not None and 0.35 <= after <= 0.65


def test_prometheus_scrapes_envoy_the_derived_metrics_and_the_apps(runtime):
    steady_traffic(runtime["ingress"], 2)
    time.sleep(2)
    jobs = {r["metric"]["job"] for r in prometheus_query(runtime, "up == 1")}
    assert jobs == {"envoy-stats", "istio-mesh", "apps"}
    # Envoy's own series carry the whole cluster name, as on Istio's sidecars.
    clusters = {
        r["metric"]["envoy_cluster_name"]
        for r in prometheus_query(runtime, "envoy_cluster_upstream_rq_completed")
    }
    assert "outbound|80|v1|app-backend.istio.svc.cluster.local" in clusters
    # Istio's labels on the derived series.
    series = prometheus_query(runtime, 'istio_requests_total{reporter="destination"}')
    workloads = {
        (r["metric"]["destination_workload"], r["metric"]["destination_version"]) for r in series
    }
    assert {("app-backend-v1", "v1"), ("app-backend-v2", "v2")} <= workloads
    sources = prometheus_query(runtime, 'istio_requests_total{reporter="source"}')
    assert {r["metric"]["source_workload"] for r in sources} >= {"istio-ingressgateway"}
    # The duration histogram has Istio's (Envoy's default) buckets.
    buckets = prometheus_query(
        runtime, 'istio_request_duration_milliseconds_bucket{destination_version="v2"}'
    )
    assert {"0.5", "1000", "+Inf"} <= {r["metric"]["le"] for r in buckets}
    # Each app pod's own /metrics, labelled with its pod and version.
    apps = prometheus_query(runtime, 'up{job="apps"}')
    assert {r["metric"]["version"] for r in apps} == {"v1", "v2"}


def test_the_kiali_exercise_offline_path_and_kubelab_graph(runtime):
    """The exercise the student sees in the sandbox is the offline path, its check passes on
    the traffic of its own command, and `kubelab graph` shows the split it made."""
    shown = json.loads(kubelab("exercise", "kiali-graph", "--output", "json").stdout)
    assert shown["available"] is True
    assert "kubelab graph" in shown["instructions"]
    assert "kubelab open kiali" not in shown["instructions"]
    LAB.kubectl(*course_patch(90, 10))
    # The course's traffic loop, bounded here: 8 seconds of it.
    lesson = find_lesson(LESSON).lesson.offline_variant()
    text = lesson.exercise("kiali-graph").instructions.get("en")
    assert "while true; do" in text
    loop = (
        "kubectl exec -n istio curl-test -- sh -c 'end=$(( $(date +%s) + 8 )); "
        'while [ "$(date +%s)" -lt "$end" ]; do '
        "curl -s -o /dev/null --max-time 1 http://app-backend/; sleep 0.1; done'"
    )
    assert run_bash(loop, LAB.kubeconfig, timeout=60).returncode == 0
    time.sleep(1.5)
    proc = kubelab("check", "kiali-graph", "--output", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert set(checks) == {"mesh-traffic-recorded"}  # the Kiali pod check is not offline
    graph = json.loads(kubelab("graph", "--once", "--window", "30s", "--output", "json").stdout)
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    v1 = edges[("service:istio/app-backend", "version:istio/app-backend-v1")]
    v2 = edges[("service:istio/app-backend", "version:istio/app-backend-v2")]
    assert v1["share"] > v2["share"] and v1["rps"] > 0 and v2["rps"] > 0
    assert any(s.startswith("source:istio/in-mesh") for s, _ in edges)
    text = kubelab("graph", "--once", "--window", "30s").stdout
    assert "app-backend → v1 (app-backend-v1)" in text and "in-mesh → app-backend" in text


def test_a_hung_v1_request_shows_in_kubelab_traces_and_the_jaeger_check(runtime, ctx):
    LAB.kubectl(*course_patch(100, 0))
    time.sleep(1.0)
    # v1 serves 30 requests to / and hangs: the last ones are given up by curl after 1 s.
    script = (
        "kubectl exec -n istio curl-test -- sh -c 'for i in $(seq 1 36); do "
        "curl -s -o /dev/null --max-time 1 http://app-backend/; done; true'"
    )
    assert run_bash(script, LAB.kubeconfig, timeout=120).returncode == 0
    time.sleep(1.5)  # spans leave Envoy within half a second
    data = json.loads(kubelab("traces", "--only-hung", "--limit", "50", "--output", "json").stdout)
    hung = [t for t in data["traces"] if t["hung"]]
    assert hung, data["summary"]
    for trace in hung:
        assert trace["version"] == "v1" and trace["status"] == 0 and "DC" in trace["flags"]
        assert 900_000 <= trace["duration_us"] <= 1_500_000
        # The upstream call to v1 took (nearly) all the time: where the request hung.
        (upstream,) = [s for s in trace["spans"] if s["depth"] == 1]
        assert "outbound|80|v1|app-backend.istio.svc.cluster.local" in upstream["operation"]
        assert upstream["duration_us"] >= 0.9 * trace["duration_us"]
    result = jaeger_traces(JaegerTraces(service="app-backend.istio", min_traces=5), ctx)
    assert result.status is Status.PASSED, result.message
    # An unknown service has none: pending, never a pass.
    missing = jaeger_traces(JaegerTraces(service="nothing.istio", min_traces=1), ctx)
    assert missing.status is Status.PENDING
    LAB.kubectl("rollout", "restart", "deployment/app-backend-v1", "-n", "istio")
    LAB.kubectl("rollout", "status", "deployment/app-backend-v1", "-n", "istio", "--timeout=60s")


def test_kubelabs_own_checks_leave_no_traces(runtime, ctx):
    """The checks' requests ask not to be traced (B3 and W3C headers): what Jaeger shows,
    and what the jaeger-traces check counts, is what the student's commands sent."""
    before = json.loads(kubelab("traces", "--limit", "200", "--output", "json").stdout)
    assert kubelab("check", "observe-initial-split").returncode in (0, 1)
    time.sleep(1.5)
    after = json.loads(kubelab("traces", "--limit", "200", "--output", "json").stdout)
    assert after["summary"]["traces"] == before["summary"]["traces"]


def test_the_jaeger_query_api_subset_answers_like_jaeger(ctx):
    namespace, service, port = CATALOG["jaeger"].api

    def get(path: str, params: dict[str, str]) -> dict:
        return json.loads(ctx.kube.service_proxy_get(namespace, service, port, path, params))

    services = get("/api/services", {})
    assert "app-backend.istio" in services["data"] and services["errors"] is None
    # Jaeger's own 400 and 404 answers come through the proxy as they are.
    missing = get("/api/traces", {})
    assert missing["data"] is None
    assert missing["errors"] == [{"code": 400, "msg": "parameter 'service' is required"}]
    assert get("/api/traces/0badc0ffee", {})["errors"][0]["code"] == 404
    bad = get("/api/traces", {"service": "app-backend.istio", "lookback": "soon"})
    assert "lookback" in bad["errors"][0]["msg"]
    # A PromQL error is Prometheus's own answer too, which the check then reports.
    vm_ns, vm_service, vm_port = CATALOG["victoria-metrics"].api
    answer = ctx.kube.service_proxy_get(
        vm_ns, vm_service, vm_port, "/api/v1/query", {"query": "sum(("}
    )
    assert json.loads(answer)["status"] == "error"
    result = metrics_query(MetricsQuery(query="sum((", compare=">", value=0), ctx)
    assert result.status is Status.ERROR and "rejected the query" in result.message


def test_open_in_the_sandbox_points_at_the_terminal_views():
    proc = kubelab("open", "kiali", "--no-browser")
    assert proc.returncode != 0
    assert "kubelab graph" in proc.stdout + proc.stderr
    proc = kubelab("open", "jaeger", "--no-browser")
    assert "kubelab traces" in proc.stdout + proc.stderr


def test_a_killed_prometheus_comes_back(runtime):
    """As with Envoy: a student's `kill`, or a crash, and the sandbox starts it again
    within a second or two, with its data kept."""
    runtime_file = LAB.home / "sandbox" / "runtime.json"
    old = json.loads(runtime_file.read_text())["prometheus_pid"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 20
    new = old
    while time.monotonic() < deadline and new == old:
        time.sleep(0.2)
        new = json.loads(runtime_file.read_text())["prometheus_pid"]
    assert new != old, "Prometheus was not started again"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if prometheus_query(runtime, 'count(istio_requests_total{reporter="destination"})'):
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("the restarted Prometheus does not answer with the mesh's metrics")
    assert "prometheus_pid" in json.loads(runtime_file.read_text())
