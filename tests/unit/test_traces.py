"""``kubelab traces``: Jaeger's answers read into traces, drawn as waterfalls, served by a
fake ``get``, by a real HTTP server on 127.0.0.1 and through the CLI."""

from __future__ import annotations

import io
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.console import Console
from rich.text import Text
from support import send_json
from typer.testing import CliRunner

from kubelab.cli.main import app, run
from kubelab.errors import SetupError, UsageError
from kubelab.observe import traces as tr
from kubelab.observe.api import direct

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "observe"
TRACES = (FIXTURES / "jaeger-traces.json").read_text()
SERVICES = (FIXTURES / "jaeger-services.json").read_text()
EMPTY = (FIXTURES / "jaeger-empty.json").read_text()
ERROR = (FIXTURES / "jaeger-error.json").read_text()
NOT_FOUND = (FIXTURES / "jaeger-trace-not-found.json").read_text()

UPSTREAM_V1 = "outbound|80|v1|app-backend.istio.svc.cluster.local"
OPERATION = "app-backend.istio.svc.cluster.local:80/*"
BASE_US = 1767268800_000000  # the fixture's first request: 2026-01-01T12:00:00Z
# The fixture's traces, newest first: (short id, version, status, flags, duration µs, hung).
EXPECTED = [
    ("e6060468", "v1", 0, "DC", 1000420, True),
    ("ac7c04ed", "v1", 504, "UT", 500610, True),
    ("e6912151", "v2", 200, "-", 5370, False),
    ("4277c17e", "v1", 0, "DC", 1000380, True),
    ("fcacff75", "v2", 200, "-", 4410, False),
    ("6621cbc3", "v1", 200, "-", 6120, False),
    ("c7985285", "v2", 200, "-", 5030, False),
    ("e5cbf16b", "v1", 200, "-", 4870, False),
    ("5f01fba1", "v1", 200, "-", 5210, False),
]


class FakeJaeger:
    """``get(path, params)`` answering from the fixtures; remembers what was asked."""

    def __init__(self, traces: str = TRACES) -> None:
        self.traces = traces
        self.asked: list[tuple[str, dict[str, str]]] = []

    def get(self, path: str, params: dict[str, str]) -> str:
        self.asked.append((path, dict(params)))
        if path == "/api/services":
            return SERVICES
        return self.traces


def plain(renderable: Any, width: int = 250) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, soft_wrap=True).print(renderable)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def traces() -> list[tr.Trace]:
    return tr.parse_traces(TRACES)


def by_id(traces: list[tr.Trace], short: str) -> tr.Trace:
    (found,) = [t for t in traces if t.trace_id.startswith(short)]
    return found


# -- the model -------------------------------------------------------------------------------


def test_the_answer_becomes_traces_newest_first(traces):
    got = [(t.trace_id[:8], t.version, t.status, t.flags, t.duration, t.hung()) for t in traces]
    assert got == EXPECTED
    assert [t.start - BASE_US for t in traces] == [
        7_100_000,
        6_500_000,
        5_600_000,
        4_500_000,
        3_600_000,
        2_700_000,
        1_800_000,
        900_000,
        0,
    ]
    assert traces[-1].started_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert {t.operation for t in traces} == {OPERATION}


def test_a_hung_request_shows_where_the_time_went(traces):
    hung = by_id(traces, "4277c17e")
    client, server = hung.spans
    assert (client.service, client.depth, client.parent_id, client.start) == (
        "curl-test.istio",
        0,
        None,
        0,
    )
    assert client.tags["upstream_cluster"] == UPSTREAM_V1
    assert (client.status, client.flags, client.duration, client.version) == (
        0,
        "DC",
        1000380,
        "v1",
    )
    assert client.tags["error"] is True  # Jaeger's "bool" tag
    assert (server.service, server.depth, server.parent_id) == (
        "app-backend.istio",
        1,
        client.span_id,
    )
    assert (server.start, server.duration, server.status, server.flags) == (430, 999720, 0, "DC")
    assert server.version == "v1"  # its own canonical revision: it is the inbound side
    assert server.tags["upstream_cluster"] == "inbound|8080||"


def test_the_version_comes_from_the_subset_else_from_the_server_span(traces):
    # Before the DestinationRule's subsets: outbound|80||host tells no version.
    first = by_id(traces, "5f01fba1")
    assert first.root.tags["upstream_cluster"] == "outbound|80||app-backend.istio.svc.cluster.local"
    assert first.root.version is None
    assert [s.version for s in first.spans] == [None, "v1"]
    assert first.version == "v1"
    assert tr.answering_version({"upstream_cluster": UPSTREAM_V1}) == "v1"
    assert tr.answering_version({"span.kind": "server", "istio.canonical_revision": "v2"}) == "v2"
    assert (
        tr.answering_version({"span.kind": "client", "istio.canonical_revision": "latest"}) is None
    )
    assert tr.answering_version({}) is None


def test_children_listed_before_their_parents_still_hang_below_them(traces):
    # e5cbf16b, fcacff75 and ac7c04ed list the server span first in the answer.
    raw = {t["traceID"][:8]: t for t in json.loads(TRACES)["data"]}
    assert raw["ac7c04ed"]["spans"][0]["references"] != []
    timeout = by_id(traces, "ac7c04ed")
    assert [(s.service, s.depth) for s in timeout.spans] == [
        ("curl-test.istio", 0),
        ("app-backend.istio", 1),
    ]
    assert (timeout.status, timeout.flags, timeout.spans[1].flags) == (504, "UT", "DC")


def _span(span_id: str, start: int, duration: int, parent: str | None = None) -> dict[str, Any]:
    refs = [{"refType": "CHILD_OF", "traceID": "t1", "spanID": parent}] if parent else []
    return {
        "traceID": "t1",
        "spanID": span_id,
        "operationName": f"op-{span_id}",
        "references": refs,
        "startTime": start,
        "duration": duration,
        "tags": [
            {"key": "retries", "type": "int64", "value": 2},
            {"key": "ratio", "type": "float64", "value": 0.25},
            {"key": "error", "type": "bool", "value": False},
            {"key": "http.status_code", "type": "string", "value": "oops"},
        ],
        "processID": "p1",
    }


def test_tree_depth_orphans_and_loops():
    spans = [
        _span("c", 1_000_300, 100, parent="b"),
        _span("b", 1_000_200, 500, parent="a"),
        _span("a", 1_000_000, 1_000, parent=None),
        _span("b2", 1_000_100, 50, parent="a"),
        _span("o", 1_000_900, 10, parent="gone"),  # its parent never reached Jaeger
        _span("x", 1_000_950, 5, parent="y"),  # a loop: bad data, shown as roots
        _span("y", 1_000_960, 5, parent="x"),
    ]
    answer = {
        "data": [{"traceID": "t1", "spans": spans, "processes": {"p1": {"serviceName": "s"}}}]
    }
    (trace,) = tr.parse_traces(json.dumps(answer))
    assert [(s.span_id, s.depth, s.start) for s in trace.spans] == [
        ("a", 0, 0),
        ("b2", 1, 100),
        ("b", 1, 200),
        ("c", 2, 300),
        ("o", 0, 900),
        ("x", 0, 950),
        ("y", 1, 960),
    ]
    assert trace.spans[4].parent_id == "gone"
    assert (trace.duration, trace.operation) == (1_000, "op-a")
    assert trace.root.tags == {
        "retries": 2,
        "ratio": 0.25,
        "error": False,
        "http.status_code": "oops",
    }
    assert trace.status is None and not trace.hung()
    assert plain(tr.waterfall(trace, width=10)).splitlines()[4].endswith("   └─ s op-c")


def test_a_deep_chain_of_spans():
    spans = [_span("s0", 0, 5000)] + [
        _span(f"s{i}", i, 1, parent=f"s{i - 1}") for i in range(1, 3000)
    ]
    answer = {"data": [{"traceID": "t1", "spans": spans[::-1], "processes": {}}]}
    (trace,) = tr.parse_traces(json.dumps(answer))
    assert [s.depth for s in trace.spans] == list(range(3000))
    assert {s.service for s in trace.spans} == {"?"}


def test_fetch_trace_when_jaeger_answers_nothing():
    with pytest.raises(SetupError, match="Jaeger has no trace 0123"):
        tr.fetch_trace(FakeJaeger(EMPTY).get, "0123")


def test_hung_is_status_0_dc_ut_or_the_threshold(traces):
    assert sum(t.hung() for t in traces) == 3
    # ≥ 5 ms: also 5.37, 5.03, 6.12 and 5.21 ms.
    assert sum(t.hung(5) for t in traces) == 7
    # ≥ 2 s: still the three that the client gave up on or that timed out.
    assert [t.trace_id[:8] for t in traces if t.hung(2000)] == ["e6060468", "ac7c04ed", "4277c17e"]


def test_summary_per_version(traces):
    summary = tr.summarize(traces)
    assert (summary.traces, summary.hung) == (9, 3)
    v1, v2 = summary.versions
    assert (v1.version, v1.traces) == ("v1", 6)
    assert v1.median_ms == pytest.approx((6.12 + 500.61) / 2)
    assert v1.p95_ms == pytest.approx(1000.42)
    assert (v2.version, v2.traces, v2.median_ms, v2.p95_ms) == ("v2", 3, 5.03, 5.37)
    assert tr.summarize([]).to_json() == {"traces": 0, "hung": 0, "versions": []}


# -- drawing ---------------------------------------------------------------------------------


def test_bar_cells():
    assert tr.bar_cells(0, 1000380, 1000380, 40) == (0, 40)
    assert tr.bar_cells(430, 999720, 1000380, 40) == (0, 40)
    # a fast v2 request: the server span from 0.61 ms to 4.66 ms of 5.37
    assert tr.bar_cells(610, 4050, 5370, 40) == (4, 31)
    assert tr.bar_cells(500, 250, 1000, 20) == (10, 5)
    assert tr.bar_cells(0, 0, 1000, 20) == (0, 1)  # never invisible
    assert tr.bar_cells(1000, 0, 1000, 20) == (19, 1)  # never past the track
    assert tr.bar_cells(0, 0, 0, 20) == (0, 20)


def test_the_waterfall_of_a_hung_v1_request(traces):
    hung = by_id(traces, "4277c17e")
    header, client, server = plain(tr.waterfall(hung, width=40)).splitlines()
    time = hung.started_at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    assert header == f"{time}  4277c17e  1000.4 ms  status 0  flags DC  version v1   HUNG "
    assert client == (
        "│" + "█" * 40 + "│   1000.4 ms  curl-test.istio " + OPERATION + "  0 DC  → " + UPSTREAM_V1
    )
    assert server == (
        "│"
        + "█" * 40
        + "│    999.7 ms  └─ app-backend.istio "
        + OPERATION
        + "  0 DC  → inbound|8080||"
    )
    marker = tr.waterfall(hung).renderables[0]
    assert isinstance(marker, Text)
    assert "on red" in str(marker.spans[-1].style)


def test_the_waterfall_of_a_fast_v2_request_and_a_timeout(traces):
    fast = plain(tr.waterfall(by_id(traces, "e6912151"), width=40)).splitlines()
    assert "5.4 ms  status 200  flags -  version v2" in fast[0]
    assert "HUNG" not in fast[0]
    assert fast[2].startswith("│····" + "█" * 31 + "·····│      4.0 ms  └─ app-backend.istio")
    timeout = plain(tr.waterfall(by_id(traces, "ac7c04ed"), width=40)).splitlines()
    assert timeout[0].endswith("500.6 ms  status 504  flags UT  version v1   TIMEOUT ")
    assert "  504 UT  → " + UPSTREAM_V1 in timeout[1]


def test_render_traces_summary_then_newest_first(traces):
    text = plain(tr.render_traces(traces, "app-backend.istio", "15m", width=40))
    lines = text.splitlines()
    assert lines[0] == (
        "9 traces of app-backend.istio in the last 15m  ·  "
        "v1: 6, median 253.4 ms, p95 1000.4 ms  ·  v2: 3, median 5.0 ms, p95 5.4 ms  ·  "
        "3 hung (≥ 1000 ms, status 0, DC or UT)"
    )
    headers = [line.split()[1] for line in lines if "  status " in line]
    assert headers == [e[0] for e in EXPECTED]
    assert text.count(" HUNG ") == 2 and text.count(" TIMEOUT ") == 1
    only = plain(tr.render_traces(traces, "app-backend.istio", "15m", only_hung=True))
    assert "9 traces of app-backend.istio in the last 15m (showing the 3 hung)" in only
    assert [line.split()[1] for line in only.splitlines() if "  status " in line] == [
        "e6060468",
        "ac7c04ed",
        "4277c17e",
    ]


def test_no_traces_message_and_suggestions():
    known = ["app-backend.istio", "curl-test.istio", "jaeger"]
    assert tr.suggest_services("app-backend", known) == ["app-backend.istio"]
    assert tr.suggest_services("app-backend.default", known) == ["app-backend.istio"]
    assert tr.suggest_services("app-backend.istio", known) == []
    assert tr.suggest_services("zzz", known) == []
    assert tr.no_traces_message("app-backend", "5m", ["app-backend.istio"]) == (
        "no traces of app-backend in the last 5m: send some requests (the lesson's commands), "
        "then wait a few seconds\n"
        "did you mean app-backend.istio? (kubelab traces --service app-backend.istio)"
    )
    assert "did you mean" not in tr.no_traces_message("app-backend.istio", "15m", [])


def test_lookback():
    assert [tr.check_lookback(v) for v in ("30s", "5m", "1h", " 15m ")] == [
        "30s",
        "5m",
        "1h",
        "15m",
    ]
    for bad in ("2d", "0m", "m", "5", "-5m", "1h30m", ""):
        with pytest.raises(UsageError, match="is not a duration"):
            tr.check_lookback(bad)


# -- fetching through a fake get ---------------------------------------------------------------


def test_fetch_traces_asks_jaeger_and_keeps_the_latest():
    jaeger = FakeJaeger()
    found = tr.fetch_traces(jaeger.get, "app-backend.istio", "5m", 3)
    assert jaeger.asked == [
        ("/api/traces", {"service": "app-backend.istio", "lookback": "5m", "limit": "3"})
    ]
    assert [t.trace_id[:8] for t in found] == ["e6060468", "ac7c04ed", "e6912151"]
    assert tr.fetch_traces(FakeJaeger(EMPTY).get, "app-backend.istio") == []
    assert tr.fetch_services(jaeger.get) == ["app-backend.istio", "curl-test.istio", "jaeger"]


def test_a_jaeger_error_is_a_setup_error_with_its_message():
    with pytest.raises(SetupError) as err:
        tr.fetch_traces(FakeJaeger(ERROR).get, "app-backend.istio")
    assert err.value.message == "Jaeger answered: parameter 'service' is required"
    assert err.value.hint


@pytest.mark.parametrize(
    "answer",
    [
        "<html>502 Bad Gateway</html>",
        "[]",
        '{"data": {"traceID": "x"}}',
        '{"data": [{"traceID": "x", "spans": [{"spanID": "a"}]}]}',
        '{"data": [{"traceID": "x", "spans": [{"spanID": "a", "startTime": 1, "duration": 2, '
        '"tags": [{"key": "n", "type": "int64", "value": "many"}]}]}]}',
    ],
)
def test_an_unreadable_answer_is_a_setup_error(answer):
    with pytest.raises(SetupError, match="Jaeger gave an unreadable answer") as err:
        tr.parse_traces(answer)
    assert "16686" in (err.value.hint or "")


# -- a real HTTP server ----------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    asked: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        self.asked.append((url.path, params))
        status, body = 200, EMPTY
        if url.path == "/api/services":
            body = SERVICES
        elif url.path.startswith("/api/traces/"):
            wanted = url.path.rsplit("/", 1)[1]
            found = [t for t in json.loads(TRACES)["data"] if t["traceID"] == wanted]
            status, body = (
                (200, json.dumps({"data": found, "errors": None})) if found else (404, NOT_FOUND)
            )
        elif params.get("service") == "app-backend.istio":
            body = TRACES
        elif params.get("service") == "broken.istio":
            status, body = 400, ERROR
        send_json(self, status, body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def jaeger_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 5
    Handler.asked = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_over_http(jaeger_url):
    api = direct(jaeger_url, timeout=5)
    found = tr.fetch_traces(api.get, "app-backend.istio", "15m", 20)
    assert [t.trace_id[:8] for t in found] == [e[0] for e in EXPECTED]
    assert Handler.asked == [
        ("/api/traces", {"service": "app-backend.istio", "lookback": "15m", "limit": "20"})
    ]
    one = tr.fetch_trace(api.get, found[3].trace_id)
    assert (one.trace_id, one.duration, one.version, one.hung()) == (
        found[3].trace_id,
        1000380,
        "v1",
        True,
    )
    with pytest.raises(SetupError, match="Jaeger answered: trace not found"):
        tr.fetch_trace(api.get, "0" * 32)
    with pytest.raises(SetupError, match="parameter 'service' is required"):
        tr.fetch_traces(api.get, "broken.istio")
    assert tr.fetch_traces(api.get, "nobody.istio") == []


# -- the CLI ---------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_cli_draws_the_traces(jaeger_url):
    result = invoke("traces", "--url", jaeger_url)
    assert result.exit_code == 0, result.output
    # No lesson runs: the lessons' namespace.
    assert Handler.asked == [
        ("/api/traces", {"service": "app-backend.istio", "lookback": "15m", "limit": "10"})
    ]
    lines = result.output.splitlines()
    assert lines[0].startswith("9 traces of app-backend.istio in the last 15m  ·  v1: 6, median")
    assert "3 hung" in lines[0]
    assert [line.split()[1] for line in lines if "  status " in line] == [e[0] for e in EXPECTED]
    assert "1000.4 ms  status 0  flags DC  version v1   HUNG" in result.output
    assert f"1000.4 ms  curl-test.istio {OPERATION}  0 DC  → {UPSTREAM_V1}" in result.output


def test_cli_only_hung_with_options(jaeger_url):
    result = invoke(
        "traces", "--url", jaeger_url, "-s", "app-backend.istio", "--lookback", "1h",
        "--limit", "50", "--hung-ms", "5", "--only-hung",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Handler.asked[0][1] == {"service": "app-backend.istio", "lookback": "1h", "limit": "50"}
    assert "9 traces of app-backend.istio in the last 1h (showing the 7 hung)" in result.output
    assert sum("  status " in line for line in result.output.splitlines()) == 7


def test_cli_json(jaeger_url):
    result = invoke("-o", "json", "traces", "--url", jaeger_url, "--limit", "4")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert {k: doc[k] for k in ("service", "lookback", "hung_ms", "only_hung", "source")} == {
        "service": "app-backend.istio",
        "lookback": "15m",
        "hung_ms": 1000.0,
        "only_hung": False,
        "source": jaeger_url,
    }
    assert doc["summary"] == {
        "traces": 4,
        "hung": 3,
        "versions": [
            {"version": "v1", "traces": 3, "median_ms": 1000.38, "p95_ms": 1000.42},
            {"version": "v2", "traces": 1, "median_ms": 5.37, "p95_ms": 5.37},
        ],
    }
    assert doc["suggestions"] == []
    first = doc["traces"][0]
    assert {k: v for k, v in first.items() if k != "spans"} == {
        "trace_id": first["trace_id"],
        "start": "2026-01-01T12:00:07.100000+00:00",
        "start_us": BASE_US + 7_100_000,
        "duration_us": 1000420,
        "duration_ms": 1000.42,
        "operation": OPERATION,
        "service": "curl-test.istio",
        "status": 0,
        "flags": "DC",
        "version": "v1",
        "hung": True,
    }
    assert first["trace_id"].startswith("e6060468") and len(first["trace_id"]) == 32
    client, server = first["spans"]
    assert (client["depth"], client["parent_id"], client["version"]) == (0, None, "v1")
    assert client["tags"]["upstream_cluster"] == UPSTREAM_V1
    assert (server["depth"], server["parent_id"], server["service"]) == (
        1,
        client["span_id"],
        "app-backend.istio",
    )
    assert (server["start_us"], server["duration_us"], server["status"]) == (470, 999690, 0)


def test_cli_one_trace_by_its_prefix_or_full_id(jaeger_url):
    result = invoke("traces", "4277c17e", "--url", jaeger_url)
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines() if "  status " in line] == [
        "4277c17e"
    ]
    full = by_id(tr.parse_traces(TRACES), "c7985285").trace_id
    Handler.asked.clear()
    result = invoke("-o", "json", "traces", full, "--url", jaeger_url)
    assert result.exit_code == 0, result.output
    assert Handler.asked == [(f"/api/traces/{full}", {})]
    assert [t["trace_id"] for t in json.loads(result.output)["traces"]] == [full]
    missing = invoke("traces", "ffff", "--url", jaeger_url)
    assert missing.exit_code != 0
    assert isinstance(missing.exception, UsageError)
    assert "no trace id starts with ffff" in missing.exception.message


def test_cli_no_traces_suggests_the_service(jaeger_url):
    result = invoke("traces", "--url", jaeger_url, "--service", "app-backend", "--lookback", "5m")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "no traces of app-backend in the last 5m: send some requests (the lesson's commands), "
        "then wait a few seconds\n"
        "did you mean app-backend.istio? (kubelab traces --service app-backend.istio)\n"
    )
    assert [path for path, _ in Handler.asked] == ["/api/traces", "/api/services"]
    doc = json.loads(invoke("-o", "json", "traces", "--url", jaeger_url, "-s", "backend").output)
    assert (doc["traces"], doc["suggestions"]) == ([], ["app-backend.istio"])


def test_cli_jaeger_error_is_a_clear_error(jaeger_url, capsys):
    result = invoke("traces", "--url", jaeger_url, "--service", "broken.istio")
    assert result.exit_code != 0
    assert isinstance(result.exception, SetupError)
    assert "Traceback" not in result.output
    # As `kubelab` prints it: one error line, a hint, exit code 4.
    assert run(["traces", "--url", jaeger_url, "--service", "broken.istio"]) == 4
    err = capsys.readouterr().err
    assert "error: Jaeger answered: parameter 'service' is required" in err
    assert "hint:" in err and "Traceback" not in err


def test_cli_bad_input_is_a_usage_error(jaeger_url, capsys):
    assert run(["traces", "--url", jaeger_url, "--lookback", "2d"]) == 2
    assert "2d is not a duration" in capsys.readouterr().err
    assert run(["traces", "--url", jaeger_url, "--limit", "0"]) == 2
    assert run(["traces", "--url", "127.0.0.1:16686"]) == 2
    assert "is not an http:// or https:// URL" in capsys.readouterr().err
    assert run(["-o", "json", "traces", "--url", jaeger_url, "--follow"]) == 2
    assert "--follow redraws the screen" in capsys.readouterr().err
    assert Handler.asked == []


def test_cli_unreachable_jaeger(capsys):
    with socket.socket() as sock:  # a port of 127.0.0.1 where nothing listens
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert run(["traces", "--url", url]) == 4
    err = capsys.readouterr().err
    assert f"error: cannot reach {url}" in err and "Traceback" not in err


def test_cli_follow_refreshes_until_ctrl_c(jaeger_url, monkeypatch):
    from kubelab.cli import traces as command

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(command.time, "sleep", sleep)
    result = invoke("traces", "--url", jaeger_url, "-f", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5, 0.5]
    assert [path for path, _ in Handler.asked] == ["/api/traces", "/api/traces"]
    assert "9 traces of app-backend.istio in the last 15m" in result.output
    assert f"{jaeger_url}, every 0.5 s; Ctrl-C to stop" in result.output


def test_cli_default_service_from_the_lesson(jaeger_url, capsys):
    result = invoke("traces", "--url", jaeger_url, "--lesson", "istio-traffic-splitting")
    assert result.exit_code == 0, result.output
    assert Handler.asked[0][1]["service"] == "app-backend.istio"  # the lesson's namespace
    # Without --url, Jaeger is the running lesson's: there is none.
    assert run(["traces"]) == 2
    assert "error: no lesson is running" in capsys.readouterr().err
