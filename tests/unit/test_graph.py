"""``kubelab graph`` on recorded answers of real Prometheus 2.42 and VictoriaMetrics servers
(tests/fixtures/observe/README.md says how they were recorded): the numbers, the
drawing, ``-o json``, the empty graph and the errors; through a fake ``get``, through a
tiny HTTP server on 127.0.0.1 and through the CLI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from rich.console import Console
from rich.tree import Tree
from support import run_cli, send_json
from typer.testing import CliRunner

from kubelab.cli.main import app, run
from kubelab.errors import SetupError, UsageError
from kubelab.observe.api import direct
from kubelab.observe.graph import Edge, Graph, GraphQueries, fetch_graph, render

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "observe"
SERVERS = ("prometheus", "victoriametrics")
# What each server answers with an error body and for a path that is not its API.
ERROR_STATUS = {"prometheus": 400, "victoriametrics": 422}
NOT_FOUND_STATUS = {"prometheus": 404, "victoriametrics": 400}
QUERY_NAMES = ("versions", "sources", "version_p95", "source_p95")
ISTIO = GraphQueries("istio", "1m")
T_90_10 = 1796583900  # when the split-90-10 answers were evaluated (2026-12-06 19:05 UTC)

# The split-90-10 graph as `-o json` prints it (both servers).
JSON_90_10 = {
    "namespace": "istio",
    "window": "1m",
    "time": "2026-12-06T19:05:00Z",
    "nodes": [
        {
            "id": "source:istio/curl-test",
            "kind": "source",
            "name": "curl-test",
            "namespace": "istio",
            "workload": "curl-test",
        },
        {
            "id": "source:istio-system/istio-ingressgateway",
            "kind": "source",
            "name": "istio-ingressgateway",
            "namespace": "istio-system",
            "workload": "istio-ingressgateway",
        },
        {
            "id": "service:istio/app-backend",
            "kind": "service",
            "name": "app-backend",
            "namespace": "istio",
            "workload": None,
        },
        {
            "id": "version:istio/app-backend-v1",
            "kind": "version",
            "name": "v1",
            "namespace": "istio",
            "workload": "app-backend-v1",
        },
        {
            "id": "version:istio/app-backend-v2",
            "kind": "version",
            "name": "v2",
            "namespace": "istio",
            "workload": "app-backend-v2",
        },
    ],
    "edges": [
        {
            "source": "source:istio/curl-test",
            "target": "service:istio/app-backend",
            "rps": 0.5,
            "share": 16.67,
            "error_rate": 20.0,
            "p95_ms": 875.0,
        },
        {
            "source": "source:istio-system/istio-ingressgateway",
            "target": "service:istio/app-backend",
            "rps": 2.5,
            "share": 83.33,
            "error_rate": 4.0,
            "p95_ms": 9.95,
        },
        {
            "source": "service:istio/app-backend",
            "target": "version:istio/app-backend-v1",
            "rps": 2.7,
            "share": 90.0,
            "error_rate": 7.41,
            "p95_ms": 662.5,
        },
        {
            "source": "service:istio/app-backend",
            "target": "version:istio/app-backend-v2",
            "rps": 0.3,
            "share": 10.0,
            "error_rate": 0.0,
            "p95_ms": 9.75,
        },
    ],
}

LINES_90_10 = [
    "app-backend  3.0 req/s",
    "├── curl-test → app-backend  0.50 req/s  20.0% errors  p95 875 ms",
    "├── istio-ingressgateway → app-backend  2.5 req/s  4.0% errors  p95 9.9 ms",
    "├── app-backend → v1 (app-backend-v1)  █████████░ 90.0%  2.7 req/s  errors 7.4%  p95 662 ms",
    "└── app-backend → v2 (app-backend-v2)  █░░░░░░░░░ 10.0%  0.30 req/s  errors 0.0%  p95 9.8 ms",
]
LINES_50_50 = [
    "app-backend  2.5 req/s",
    "├── istio-ingressgateway → app-backend  2.0 req/s  0.0% errors  p95 24 ms",
    "├── unknown (outside the mesh) → app-backend  0.50 req/s  0.0% errors  p95 n/a",
    "├── app-backend → v1 (app-backend-v1)  █████░░░░░ 50.0%  1.2 req/s  errors 0.0%  p95 9.8 ms",
    "└── app-backend → v2 (app-backend-v2)  █████░░░░░ 50.0%  1.2 req/s  errors 0.0%  p95 24 ms",
]
EMPTY = (
    "no requests in the last 1m in namespace istio: generate traffic (the lesson's commands) "
    "and wait for the next scrape"
)


def recorded(server: str, scenario: str, queries: GraphQueries = ISTIO) -> dict[str, str]:
    """query -> the body ``server`` answered to it in ``scenario`` (kept for ``queries``)."""
    folder = FIXTURES / server / scenario
    return {
        getattr(queries, name): (folder / f"{name}.json").read_text(encoding="utf-8")
        for name in QUERY_NAMES
    }


def fake_get(answers: dict[str, str]) -> Callable[[str, dict[str, str]], str]:
    def get(path: str, params: dict[str, str]) -> str:
        assert path == "/api/v1/query"
        assert list(params) == ["query"]
        return answers[params["query"]]

    return get


def graph_of(server: str, scenario: str) -> Graph:
    return fetch_graph(fake_get(recorded(server, scenario)), ISTIO, server, clock=lambda: 0.0)


def edge(graph: Graph, source: str, target: str) -> Edge:
    (found,) = [e for e in graph.edges if (e.source, e.target) == (source, target)]
    return found


def text_of(renderable: object) -> list[str]:
    out = StringIO()
    Console(file=out, width=200, color_system=None).print(renderable)
    return out.getvalue().splitlines()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC, for the header's "sampled at"."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- the queries ------------------------------------------------------------------------


def test_queries_are_istio_promql():
    assert ISTIO.versions == (
        "sum by (destination_service_name, destination_workload, destination_version, "
        'response_code) (rate(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="istio"}[1m]))'
    )
    assert ISTIO.sources == (
        "sum by (source_workload, source_workload_namespace, destination_service_name, "
        'response_code) (rate(istio_requests_total{reporter="source",'
        'destination_service_namespace="istio"}[1m]))'
    )
    assert ISTIO.version_p95 == (
        "histogram_quantile(0.95, sum by (destination_service_name, destination_version, le) "
        '(rate(istio_request_duration_milliseconds_bucket{reporter="destination",'
        'destination_workload_namespace="istio"}[1m])))'
    )
    assert ISTIO.source_p95 == (
        "histogram_quantile(0.95, sum by (source_workload, destination_service_name, le) "
        '(rate(istio_request_duration_milliseconds_bucket{reporter="source",'
        'destination_service_namespace="istio"}[1m])))'
    )
    assert "[5m]" in GraphQueries("canary-lab", "5m").sources
    assert 'destination_service_namespace="canary-lab"' in GraphQueries("canary-lab", "5m").sources


@pytest.mark.parametrize("window", ["1", "m", "0m", "1x", "1m ", "1m]) or vector(1", "-1m"])
def test_a_window_is_a_number_and_a_unit(window):
    with pytest.raises(UsageError, match="is not a time window"):
        GraphQueries("istio", window)


@pytest.mark.parametrize("namespace", ["", "Istio", "istio-", 'istio"} or up{x="', "a" * 64])
def test_a_namespace_is_a_kubernetes_name(namespace):
    with pytest.raises(UsageError, match="is not a Kubernetes namespace name"):
        GraphQueries(namespace, "1m")


# -- the numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_split_90_10(server):
    graph = graph_of(server, "split-90-10")
    assert graph.time == T_90_10
    v1 = edge(graph, "service:istio/app-backend", "version:istio/app-backend-v1")
    v2 = edge(graph, "service:istio/app-backend", "version:istio/app-backend-v2")
    assert v1.share == pytest.approx(90) and v2.share == pytest.approx(10)
    assert v1.rps == pytest.approx(2.7) and v2.rps == pytest.approx(0.3)
    # v1 answered 0.2 req/s with code "0" (clients that gave up) of 2.7.
    assert v1.error_rate == pytest.approx(100 * 0.2 / 2.7) and v2.error_rate == 0
    assert v1.p95_ms == pytest.approx(662.5) and v2.p95_ms == pytest.approx(9.75)
    gateway = edge(graph, "source:istio-system/istio-ingressgateway", "service:istio/app-backend")
    curl = edge(graph, "source:istio/curl-test", "service:istio/app-backend")
    assert gateway.rps == pytest.approx(2.5) and curl.rps == pytest.approx(0.5)
    assert gateway.share == pytest.approx(250 / 3) and curl.share == pytest.approx(50 / 3)
    # 504 (the gateway's route timeout) and "0" (curl --max-time) are errors.
    assert gateway.error_rate == pytest.approx(4) and curl.error_rate == pytest.approx(20)
    assert gateway.p95_ms == pytest.approx(5 + 5 * 2.375 / 2.4) and curl.p95_ms == pytest.approx(
        875
    )
    # The idle v3 (rate 0; Prometheus's p95 of it is NaN) is no edge.
    assert "version:istio/app-backend-v3" not in {n.id for n in graph.nodes}
    assert {k: v for k, v in graph.to_json().items() if k != "where"} == JSON_90_10


@pytest.mark.parametrize("server", SERVERS)
def test_split_50_50_with_a_source_outside_the_mesh(server):
    graph = graph_of(server, "split-50-50")
    v1 = edge(graph, "service:istio/app-backend", "version:istio/app-backend-v1")
    v2 = edge(graph, "service:istio/app-backend", "version:istio/app-backend-v2")
    assert v1.share == pytest.approx(50) and v2.share == pytest.approx(50)
    assert v1.rps == pytest.approx(1.25) and v2.rps == pytest.approx(1.25)
    assert v1.p95_ms == pytest.approx(9.75) and v2.p95_ms == pytest.approx(24.0625)
    unknown = edge(graph, "source:unknown/unknown", "service:istio/app-backend")
    assert unknown.share == pytest.approx(20) and unknown.p95_ms is None
    # The 90/10 series of the same workloads ended 10 minutes before: no trace of them.
    assert [n.id for n in graph.nodes if n.kind == "source"] == [
        "source:istio-system/istio-ingressgateway",
        "source:unknown/unknown",
    ]


@pytest.mark.parametrize("value", ["NaN", "+Inf"])
def test_a_p95_of_nan_or_inf_is_no_data(value):
    answers = recorded("prometheus", "split-90-10")
    answers[ISTIO.version_p95] = answers[ISTIO.version_p95].replace("662.4999999999998", value)
    graph = fetch_graph(fake_get(answers), ISTIO, "prometheus")
    assert edge(graph, "service:istio/app-backend", "version:istio/app-backend-v1").p95_ms is None
    assert "p95 n/a" in text_of(render(graph))[5]


@pytest.mark.parametrize("server", SERVERS)
def test_an_empty_graph(server):
    graph = graph_of(server, "empty")
    assert graph.nodes == () and graph.edges == ()
    assert graph.time == 0.0  # no series, no evaluation time: the clock's
    assert text_of(render(graph))[2] == EMPTY


# -- the drawing --------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_the_drawing(server, utc):
    where, header, *lines = text_of(render(graph_of(server, "split-90-10")))
    assert where == server
    assert header == "namespace istio · last 1m · sampled at 2026-12-06 19:05:00"
    assert lines == LINES_90_10
    assert text_of(render(graph_of(server, "split-50-50")))[2:] == LINES_50_50


def test_edges_are_colored_by_their_error_rate():
    _header, tree = render(graph_of("victoriametrics", "split-90-10")).renderables
    assert isinstance(tree, Tree)
    styles = [str(child.label.style) for child in tree.children]
    # curl-test 20% errors, the gateway 4%, v1 7.4%, v2 none
    assert styles == ["red", "yellow", "red", "green"]


# -- the errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_an_error_answer_says_what_the_server_said(server):
    error = (FIXTURES / server / "error.json").read_text(encoding="utf-8")
    with pytest.raises(SetupError) as caught:
        fetch_graph(lambda path, params: error, ISTIO, server)
    said = json.loads(error)["error"]
    assert caught.value.message == f"{server} rejected a query: {said}"
    assert caught.value.details == [ISTIO.versions]
    assert "Prometheus API" in (caught.value.hint or "")


@pytest.mark.parametrize("server", SERVERS)
def test_an_answer_that_is_not_the_api_is_unreadable(server):
    body = (FIXTURES / server / "not-found.txt").read_text(encoding="utf-8")
    with pytest.raises(SetupError, match="gave an unreadable answer") as caught:
        fetch_graph(lambda path, params: body, ISTIO, server)
    assert "/api/v1/query" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "body",
    [
        '{"status":"success","data":{"resultType":"matrix","result":[]}}',
        '{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}',
        '{"status":"success"}',
        "[]",
    ],
)
def test_other_unreadable_answers(body):
    with pytest.raises(SetupError, match="gave an unreadable answer"):
        fetch_graph(lambda path, params: body, ISTIO, "vm")


# -- over HTTP and through the CLI --------------------------------------------------------


@dataclass
class Api:
    """A recorded Prometheus API on 127.0.0.1: ``answers`` by query, and what it was asked."""

    url: str
    answers: dict[str, tuple[int, str]]
    asked: list[str] = field(default_factory=list)


@pytest.fixture
def serve() -> Iterator[Callable[[str, dict[str, tuple[int, str]]], Api]]:
    started: list[tuple[HTTPServer, threading.Thread]] = []

    def start(server: str, answers: dict[str, tuple[int, str]]) -> Api:
        not_found = (FIXTURES / server / "not-found.txt").read_text(encoding="utf-8")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query).get("query", [""])[0]
                api.asked.append(query)
                status, body = (
                    answers.get(query, (400, '{"status":"error","error":"unexpected query"}'))
                    if url.path == "/api/v1/query"
                    else (NOT_FOUND_STATUS[server], not_found)
                )
                send_json(self, status, body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = HTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((httpd, thread))
        api = Api(f"http://127.0.0.1:{httpd.server_port}", answers)
        return api

    yield start
    for httpd, thread in started:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def ok(answers: dict[str, str]) -> dict[str, tuple[int, str]]:
    return {query: (200, body) for query, body in answers.items()}


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--lang", "en", *args], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout


@pytest.mark.parametrize("server", SERVERS)
def test_over_http(server, serve):
    api = serve(server, ok(recorded(server, "split-90-10")))
    at = direct(api.url)
    graph = fetch_graph(at.get, ISTIO, at.where)
    assert graph.where == api.url
    assert {k: v for k, v in graph.to_json().items() if k != "where"} == JSON_90_10
    assert api.asked == [ISTIO.versions, ISTIO.sources, ISTIO.version_p95, ISTIO.source_p95]


@pytest.mark.parametrize("server", SERVERS)
def test_cli_once(server, serve, utc):
    api = serve(server, ok(recorded(server, "split-90-10")))
    code, out = cli("graph", "--url", api.url, "--once")
    assert code == 0
    where, header, *lines = out.splitlines()
    # No lesson runs: the course's namespace.
    assert where == api.url
    assert header == "namespace istio · last 1m · sampled at 2026-12-06 19:05:00"
    assert lines == LINES_90_10


@pytest.mark.parametrize("server", SERVERS)
def test_cli_json(server, serve):
    api = serve(server, ok(recorded(server, "split-90-10")))
    code, out = cli("-o", "json", "graph", "--url", api.url)
    assert code == 0
    assert json.loads(out) == {"where": api.url, **JSON_90_10}


def test_cli_empty_graph_of_the_lessons_namespace(serve):
    canary = GraphQueries("canary-lab", "5m")
    api = serve("victoriametrics", ok(recorded("victoriametrics", "empty", canary)))
    code, out = cli(
        "graph", "--url", api.url, "--lesson", "flagger-canary", "--window", "5m", "--once"
    )
    assert code == 0
    assert out.splitlines()[2] == (
        "no requests in the last 5m in namespace canary-lab: generate traffic (the lesson's "
        "commands) and wait for the next scrape"
    )
    code, out = cli("-o", "json", "graph", "--url", api.url, "-n", "canary-lab", "--window", "5m")
    assert code == 0
    assert {k: v for k, v in json.loads(out).items() if k != "time"} == {
        "where": api.url,
        "namespace": "canary-lab",
        "window": "5m",
        "nodes": [],
        "edges": [],
    }


def test_cli_live_refreshes_until_the_timeout(serve):
    api = serve("prometheus", ok(recorded("prometheus", "split-50-50")))
    started = time.monotonic()
    code, out = cli("graph", "--url", api.url, "--interval", "0.5", "--timeout", "1")
    assert code == 0
    assert 1 <= time.monotonic() - started < 10
    assert len(api.asked) >= 3 * 4  # the first frame and at least two refreshes
    # Not a terminal: the last frame, printed when the display stops.
    assert out.splitlines()[2:] == [*LINES_50_50, "refreshed every 0.5 s; Ctrl-C to stop"]


def test_cli_ctrl_c_ends_quietly(serve, monkeypatch):
    api = serve("prometheus", ok(recorded("prometheus", "split-50-50")))

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("kubelab.cli.graph.time.sleep", interrupted)
    code, out = cli("graph", "--url", api.url)
    assert code == 0
    assert LINES_50_50[1] in out.splitlines()


@pytest.mark.parametrize("server", SERVERS)
def test_cli_error_answer(server, serve):
    error = (FIXTURES / server / "error.json").read_text(encoding="utf-8")
    api = serve(
        server, dict.fromkeys(recorded(server, "split-90-10"), (ERROR_STATUS[server], error))
    )
    proc = run_cli("graph", "--url", api.url, "--once")
    assert proc.returncode == 4
    assert proc.stdout == ""
    said = json.loads(error)["error"]
    first, query, hint = proc.stderr.splitlines()
    assert first == f"error: {api.url} rejected a query: {said}"
    assert query.strip() == ISTIO.versions
    assert hint.startswith("hint: kubelab graph needs a Prometheus API")
    assert "Traceback" not in proc.stderr


def test_cli_url_that_is_not_the_api(serve, capsys):
    api = serve("prometheus", {})
    assert run(["graph", "--url", f"{api.url}/wrong", "--once"]) == 4
    err = capsys.readouterr().err
    assert f"error: {api.url}/wrong gave an unreadable answer: '404 page not found\\n'" in err
    assert "Traceback" not in err


def test_cli_bad_window_is_a_usage_error(capsys):
    assert run(["graph", "--url", "http://127.0.0.1:9", "--window", "1x", "--once"]) == 2
    assert "'1x' is not a time window" in capsys.readouterr().err
