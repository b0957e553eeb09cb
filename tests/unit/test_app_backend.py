"""In-process tests of app_backend, the course's demo application.

Settings parsing, the connection pool, the v1 leak and the v2 fix, the routes (through
aiohttp's test client on loopback), the metrics, the access log and the graceful stop of
:func:`app_backend.server.serve`. The subprocess view (``python -m app_backend``) is in
``tests/integration/test_app_backend_http.py``.
"""

from __future__ import annotations

import ast
import asyncio
import difflib
import inspect
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from app_backend import server
from app_backend.accesslog import AccessLog
from app_backend.config import (
    DEFAULT_BUG_AFTER,
    MAX_BUG_AFTER,
    ConfigError,
    Settings,
    load_settings,
)
from app_backend.metrics import OTHER_METHOD, UNMATCHED_PATH, Metrics
from app_backend.pool import ConnectionPool, FakeDatabase

T = TypeVar("T")
Client = TestClient[web.Request, web.Application]

# Long enough for an answer on a busy 2-core CI machine, short enough to keep the file fast.
HANG_PROBE = 0.3


def run_with_client(app: web.Application, scenario: Callable[[Client], Awaitable[T]]) -> T:
    async def go() -> T:
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(go())


async def get_text(client: Client, path: str) -> tuple[int, str]:
    async with client.get(path) as response:
        return response.status, await response.text()


async def hangs(awaitable: Awaitable[Any], seconds: float = HANG_PROBE) -> bool:
    try:
        await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        return True
    return False


def sample_value(metrics_text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# --- Settings ---------------------------------------------------------------------------------


def test_settings_defaults_from_empty_environment() -> None:
    settings = load_settings({})
    assert settings == Settings(
        version="v1", bug_after=30, host="0.0.0.0", port=8080, log_level=logging.INFO
    )
    assert settings.access_log_enabled


def test_settings_read_every_variable() -> None:
    settings = load_settings(
        {
            "APP_VERSION": "v2",
            "BUG_AFTER": "5",
            "HOST": "127.0.0.1",
            "PORT": "9000",
            "LOG_LEVEL": "debug",
            "ACCESS_LOG": "0",
        }
    )
    assert settings == Settings(
        version="v2",
        bug_after=5,
        host="127.0.0.1",
        port=9000,
        log_level=logging.DEBUG,
        access_log=False,
    )
    assert not settings.access_log_enabled


def test_empty_values_mean_unset_and_whitespace_is_ignored() -> None:
    settings = load_settings({"APP_VERSION": "", "BUG_AFTER": " 7 ", "PORT": "  "})
    assert (settings.version, settings.bug_after, settings.port) == ("v1", 7, 8080)


@pytest.mark.parametrize("value", ["v3", "V1", "v1.0", "1", "latest", "v2 v1"])
def test_invalid_app_version_is_rejected_with_a_clear_message(value: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"APP_VERSION": value})
    message = str(excinfo.value)
    assert message == f"invalid APP_VERSION {value!r}: expected v1 or v2"


@pytest.mark.parametrize(
    "value", ["0", "-1", "abc", "1.5", "+5", "1_000", "1e3", "٣", str(MAX_BUG_AFTER + 1)]
)
def test_invalid_bug_after_is_rejected(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^invalid BUG_AFTER .*expected an integer from 1"):
        load_settings({"BUG_AFTER": value})


@given(st.integers(min_value=1, max_value=MAX_BUG_AFTER))
def test_any_bug_after_in_range_is_accepted(value: int) -> None:
    assert load_settings({"BUG_AFTER": str(value)}).bug_after == value


@given(st.text().filter(lambda s: not (s.strip().isascii() and s.strip().isdigit())))
def test_bug_after_that_is_not_plain_digits_is_rejected(value: str) -> None:
    if not value.strip():
        assert load_settings({"BUG_AFTER": value}).bug_after == DEFAULT_BUG_AFTER
        return
    with pytest.raises(ConfigError):
        load_settings({"BUG_AFTER": value})


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "0"}, "PORT"),
        ({"PORT": "65536"}, "PORT"),
        ({"PORT": "http"}, "PORT"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG"),
    ],
)
def test_other_invalid_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid {variable} "):
        load_settings(env)


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({"ACCESS_LOG": "off"}, False),
        ({"ACCESS_LOG": "TRUE"}, True),
        ({"LOG_LEVEL": "WARNING"}, False),
        ({"LOG_LEVEL": "warning", "ACCESS_LOG": "1"}, False),
        ({"LOG_LEVEL": "info", "ACCESS_LOG": "yes"}, True),
    ],
)
def test_access_log_switches(env: dict[str, str], enabled: bool) -> None:
    assert load_settings(env).access_log_enabled is enabled


def test_main_exits_2_with_one_line_for_an_invalid_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert server.main({"APP_VERSION": "v3"}) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "app_backend: invalid APP_VERSION 'v3': expected v1 or v2\n"


def test_create_app_rejects_unknown_version_and_empty_pool() -> None:
    with pytest.raises(ValueError, match="APP_VERSION"):
        server.create_app("v9")
    with pytest.raises(ValueError, match="at least 1"):
        server.create_app("v2", 0)


# --- Pool -------------------------------------------------------------------------------------


def test_fake_database_counts_from_one() -> None:
    db = FakeDatabase()
    assert [db.increment() for _ in range(3)] == [1, 2, 3]
    assert db.requests == 3


@pytest.mark.timeout(10)
def test_pool_hands_out_at_most_size_connections_and_wakes_waiters() -> None:
    async def scenario() -> None:
        pool = ConnectionPool(2)
        first = await pool.acquire()
        second = await pool.acquire()
        assert first is not second
        assert (pool.size, pool.in_use, pool.waiting) == (2, 2, 0)

        third = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        assert not third.done()
        assert pool.waiting == 1

        pool.release(first)
        reused = await asyncio.wait_for(third, 1)
        assert reused is first  # idle connections are reused, not reopened
        assert (pool.in_use, pool.waiting) == (2, 0)

        pool.release(second)
        pool.release(reused)
        assert pool.in_use == 0

    asyncio.run(scenario())


@pytest.mark.timeout(10)
def test_pool_waiter_cancelled_leaves_no_trace() -> None:
    async def scenario() -> None:
        pool = ConnectionPool(1)
        held = await pool.acquire()
        assert await hangs(pool.acquire(), 0.05)
        assert pool.waiting == 0
        pool.release(held)
        again = await asyncio.wait_for(pool.acquire(), 1)
        assert pool.in_use == 1
        pool.release(again)

    asyncio.run(scenario())


def test_pool_refuses_double_and_foreign_release() -> None:
    async def scenario() -> None:
        pool = ConnectionPool(1)
        other = ConnectionPool(1)
        connection = await pool.acquire()
        foreign = await other.acquire()
        with pytest.raises(RuntimeError, match="not checked out"):
            pool.release(foreign)
        pool.release(connection)
        with pytest.raises(RuntimeError, match="not checked out"):
            pool.release(connection)
        assert pool.in_use == 0
        # The refused releases did not add capacity: one acquire succeeds, the next waits.
        await pool.acquire()
        assert await hangs(pool.acquire(), 0.05)

    asyncio.run(scenario())


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionPool(0)


# No deadline: each example starts an event loop, which a loaded CI machine can make slow.
@hypothesis_settings(deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=1, max_value=5))
def test_pool_never_exceeds_its_size(operations: list[bool], size: int) -> None:
    """Random acquire (True) / release (False) sequences, skipping acquires that would block."""

    async def scenario() -> None:
        pool = ConnectionPool(size)
        held = []
        for acquire in operations:
            if acquire and pool.in_use < size:
                held.append(await pool.acquire())
            elif not acquire and held:
                pool.release(held.pop(0))
            assert pool.in_use == len(held) <= size
            assert len({id(c) for c in held}) == len(held)

    asyncio.run(scenario())


# --- The v1 leak and the v2 fix ---------------------------------------------------------------


@pytest.mark.timeout(10)
def test_v1_leaks_one_connection_per_request_then_hangs() -> None:
    async def scenario() -> None:
        pool = ConnectionPool(3)
        numbers = [await server.RECORD_REQUEST["v1"](pool) for _ in range(3)]
        assert numbers == [1, 2, 3]
        assert pool.in_use == 3
        assert await hangs(server.RECORD_REQUEST["v1"](pool), 0.1)
        assert pool.db.requests == 3

    asyncio.run(scenario())


@pytest.mark.timeout(10)
def test_v2_releases_the_connection_every_time() -> None:
    async def scenario() -> None:
        pool = ConnectionPool(3)
        numbers = [await server.RECORD_REQUEST["v2"](pool) for _ in range(30)]
        assert numbers == list(range(1, 31))
        assert pool.in_use == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_both_versions_release_on_query_errors(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The v1 bug is on the happy path only: its error path does give the connection back."""

    def broken(self: FakeDatabase) -> int:
        raise ConnectionResetError("database went away")

    monkeypatch.setattr(FakeDatabase, "increment", broken)

    async def scenario() -> None:
        pool = ConnectionPool(1)
        for _ in range(3):
            with pytest.raises(ConnectionResetError):
                await server.RECORD_REQUEST[version](pool)
        assert pool.in_use == 0

    asyncio.run(scenario())


def test_v1_and_v2_differ_only_by_where_release_happens() -> None:
    """One codebase: the two versions' code may differ by the leak and nothing else."""

    def code_lines(version: str) -> list[str]:
        function = ast.parse(inspect.getsource(server.RECORD_REQUEST[version])).body[0]
        assert isinstance(function, ast.AsyncFunctionDef)
        assert ast.get_docstring(function)
        function.body = function.body[1:]
        # unparse() drops comments; [1:] drops the `def` line, whose name differs.
        return [line.strip() for line in ast.unparse(function).splitlines()[1:]]

    v1, v2 = code_lines("v1"), code_lines("v2")
    changed = [line[2:] for line in difflib.ndiff(v1, v2) if line[:2] in ("- ", "+ ")]
    assert sorted(changed) == sorted(["except Exception:", "raise", "finally:"])
    assert v2[-2:] == ["finally:", "pool.release(connection)"]


# --- Routes -----------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_v1_app_serves_bug_after_requests_then_hangs_while_probes_answer() -> None:
    app = server.create_app("v1", 3)

    async def scenario(client: Client) -> None:
        for expected in range(1, 4):
            async with client.get("/") as response:
                assert response.status == 200
                assert response.headers["X-App-Version"] == "v1"
                assert response.content_type == "text/plain"
                assert await response.text() == f"v1 - Request {expected}\n"

        hanging = asyncio.create_task(get_text(client, "/"))
        await asyncio.sleep(HANG_PROBE)
        assert not hanging.done()

        for probe in ("/healthz", "/readyz"):
            async with client.get(probe) as response:
                assert response.status == 200
                assert await response.json() == {"status": "ok"}
        async with client.get("/version") as response:
            assert await response.json() == {
                "version": "v1",
                "bug_after": 3,
                "requests": 3,
                "pool": {"size": 3, "in_use": 3, "waiting": 1},
            }
        status, text = await get_text(client, "/metrics")
        assert status == 200
        assert sample_value(text, "app_backend_pool_connections_in_use", {}) == 3
        assert sample_value(text, "app_backend_pool_waiting", {}) == 1
        assert sample_value(text, "app_backend_pool_size", {}) == 3
        assert not hanging.done()
        hanging.cancel()

    run_with_client(app, scenario)


@pytest.mark.timeout(20)
def test_v2_app_serves_many_times_bug_after_requests() -> None:
    app = server.create_app("v2", 3)

    async def scenario(client: Client) -> None:
        bodies = [(await asyncio.wait_for(get_text(client, "/"), 5))[1] for _ in range(30)]
        assert bodies == [f"v2 - Request {n}\n" for n in range(1, 31)]
        async with client.get("/version") as response:
            data = await response.json()
        assert data["requests"] == 30
        assert data["pool"] == {"size": 3, "in_use": 0, "waiting": 0}

    run_with_client(app, scenario)
    assert app[server.STATE].requests == 30


@pytest.mark.timeout(20)
def test_v2_app_survives_concurrent_requests_beyond_pool_size() -> None:
    app = server.create_app("v2", 2)

    async def scenario(client: Client) -> list[str]:
        results = await asyncio.wait_for(
            asyncio.gather(*(get_text(client, "/") for _ in range(20))), 10
        )
        return [text for _, text in results]

    bodies = run_with_client(app, scenario)
    assert sorted(bodies) == sorted(f"v2 - Request {n}\n" for n in range(1, 21))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("200", 200),
        ("503", 503),
        ("500", 500),
        ("418", 418),
        ("599", 599),
        ("99", 400),
        ("600", 400),
        ("abc", 400),
        ("-1", 400),
        ("5e2", 400),
        ("٥٠٣", 400),
    ],
)
def test_status_endpoint(code: str, expected: int) -> None:
    async def scenario(client: Client) -> tuple[int, Any]:
        async with client.get(f"/status/{code}") as response:
            return response.status, await response.json()

    status, body = run_with_client(server.create_app("v2"), scenario)
    assert status == expected
    if expected == 400:
        assert "100 to 599" in body["error"]
    else:
        assert body["code"] == expected


def test_status_204_has_no_body() -> None:
    async def scenario(client: Client) -> tuple[int, bytes]:
        async with client.get("/status/204") as response:
            return response.status, await response.read()

    assert run_with_client(server.create_app("v2"), scenario) == (204, b"")


def test_delay_endpoint_waits_and_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "MAX_DELAY_SECONDS", 0.05)

    async def scenario(client: Client) -> None:
        started = time.monotonic()
        async with client.get("/delay/0.2") as response:
            assert response.status == 200
            assert await response.json() == {"delay": 0.05, "requested": 0.2}
        assert time.monotonic() - started >= 0.05
        async with client.get("/delay/0") as response:
            assert response.status == 200
            assert (await response.json())["delay"] == 0
        for bad in ("abc", "-1", "nan", "inf", "-inf"):
            async with client.get(f"/delay/{bad}") as response:
                assert response.status == 400, bad
                assert "seconds" in (await response.json())["error"]

    run_with_client(server.create_app("v2"), scenario)


def test_token_endpoint() -> None:
    async def scenario(client: Client) -> tuple[list[str], int]:
        tokens = []
        for _ in range(2):
            async with client.post("/token", json={"name": "acceptance"}) as response:
                assert response.status == 200
                tokens.append((await response.json())["token"])
        async with client.get("/token") as response:
            return tokens, response.status

    tokens, get_status = run_with_client(server.create_app("v1"), scenario)
    assert all(re.fullmatch(r"[0-9a-f]{32}", token) for token in tokens)
    assert tokens[0] != tokens[1]
    assert get_status == 405


def test_every_answer_carries_the_version_header() -> None:
    async def scenario(client: Client) -> list[tuple[int, str]]:
        found = []
        for path in ("/nope", "/healthz", "/status/500", "/metrics"):
            async with client.get(path) as response:
                found.append((response.status, response.headers["X-App-Version"]))
        return found

    assert run_with_client(server.create_app("v2"), scenario) == [
        (404, "v2"),
        (200, "v2"),
        (500, "v2"),
        (200, "v2"),
    ]


# --- Metrics ----------------------------------------------------------------------------------


def test_metrics_count_by_route_template_code_and_version() -> None:
    async def scenario(client: Client) -> str:
        for path in ("/", "/", "/status/503", "/status/503", "/status/404", "/x/y", "/z"):
            async with client.get(path) as response:
                await response.read()
        async with client.get("/metrics") as response:
            assert response.content_type == "text/plain"
            return await response.text()

    text = run_with_client(server.create_app("v2"), scenario)
    total = "app_backend_http_requests_total"
    assert sample_value(text, total, {"path": "/", "code": "200", "version": "v2"}) == 2
    status = {"path": "/status/{code}", "method": "GET", "version": "v2"}
    assert sample_value(text, total, {**status, "code": "503"}) == 2
    assert sample_value(text, total, {**status, "code": "404"}) == 1
    assert sample_value(text, total, {"path": UNMATCHED_PATH, "code": "404"}) == 2
    # Raw paths never become label values.
    assert "/status/503" not in text
    assert "/x/y" not in text
    count = "app_backend_http_request_duration_seconds_count"
    assert sample_value(text, count, {"path": "/", "method": "GET", "version": "v2"}) == 2
    assert sample_value(text, "app_backend_build_info", {"version": "v2"}) == 1


def test_metrics_negotiate_openmetrics() -> None:
    async def scenario(client: Client) -> tuple[str, str]:
        await get_text(client, "/")
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with client.get("/metrics", headers=headers) as response:
            return response.headers["Content-Type"], await response.text()

    content_type, text = run_with_client(server.create_app("v1"), scenario)
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")


def test_metrics_fold_unknown_methods_and_keep_registries_apart() -> None:
    first = Metrics("v1", ConnectionPool(1))
    second = Metrics("v2", ConnectionPool(1))
    first.observe("PROPFIND", "/", 200, 0.01)
    first.observe("GET", "/", 200, 0.002)
    first.observe("GET", "/", 200, 0.2)
    text = first.render(None)[0].decode()
    total = "app_backend_http_requests_total"
    assert sample_value(text, total, {"method": OTHER_METHOD, "version": "v1"}) == 1
    assert sample_value(text, total, {"method": "GET", "version": "v1"}) == 2
    le_5ms = {"method": "GET", "path": "/", "le": "0.005"}
    assert sample_value(text, "app_backend_http_request_duration_seconds_bucket", le_5ms) == 1
    assert "PROPFIND" not in text
    assert sample_value(second.render(None)[0].decode(), total, {}) is None


# --- Access log -------------------------------------------------------------------------------


LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (\S+) (\S+) (\S+) (\d{3}) \d+\.\d\dms (v\d)")


def test_access_log_batches_lines() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, version="v2", max_batch=3)
    log.log("10.0.0.7", "GET", "/a", 200, 0.00042)
    log.log(None, "POST", "/token", 200, 0.001)
    assert stream.getvalue() == ""
    assert log.pending == 2
    log.log("10.0.0.7", "GET", "/status/503", 503, 0.5)
    lines = stream.getvalue().splitlines()
    matches = [LINE.fullmatch(line) for line in lines]
    assert [m.groups() if m else line for m, line in zip(matches, lines, strict=True)] == [
        ("10.0.0.7", "GET", "/a", "200", "v2"),
        ("-", "POST", "/token", "200", "v2"),
        ("10.0.0.7", "GET", "/status/503", "503", "v2"),
    ]
    assert " 0.42ms " in lines[0]
    assert log.pending == 0


def test_access_log_survives_a_closed_stream() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, version="v1")
    stream.close()
    log.log("127.0.0.1", "GET", "/", 200, 0.001)
    log.flush()  # must not raise
    assert log.pending == 0


def test_app_writes_access_lines_and_flushes_them_at_cleanup() -> None:
    stream = io.StringIO()
    app = server.create_app("v1", 5, access_log=AccessLog(stream, version="v1"))

    async def scenario(client: Client) -> None:
        for path in ("/", "/status/503", "/missing?q=1"):
            await get_text(client, path)

    run_with_client(app, scenario)
    found = [LINE.fullmatch(line) for line in stream.getvalue().splitlines()]
    assert [m.groups()[1:] if m else None for m in found] == [
        ("GET", "/", "200", "v1"),
        ("GET", "/status/503", "503", "v1"),
        ("GET", "/missing?q=1", "404", "v1"),
    ]


# --- serve() ----------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_serve_stops_promptly_even_with_a_hanging_request() -> None:
    settings = Settings(version="v1", bug_after=1, host="127.0.0.1", port=0, access_log=False)

    async def scenario() -> float:
        stop = asyncio.Event()
        ports: list[int] = []
        task = asyncio.create_task(serve_task(settings, stop, ports))
        deadline = time.monotonic() + 5
        while not ports:
            assert time.monotonic() < deadline, "server did not start"
            assert not task.done(), task
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{ports[0]}"
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{url}/") as response:
                assert await response.text() == "v1 - Request 1\n"
            hanging = asyncio.create_task(session.get(f"{url}/"))
            await asyncio.sleep(HANG_PROBE)
            assert not hanging.done()
            started = time.monotonic()
            stop.set()
            await asyncio.wait_for(task, 5)
            elapsed = time.monotonic() - started
            with pytest.raises(aiohttp.ClientError):
                await hanging
        return elapsed

    elapsed = asyncio.run(scenario())
    assert elapsed < 3


async def serve_task(settings: Settings, stop: asyncio.Event, ports: list[int]) -> None:
    await server.serve(settings, stop=stop, on_started=ports.append)
