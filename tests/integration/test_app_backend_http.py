"""``python -m app_backend`` as a real process on loopback, driven by plain HTTP clients.

This is how the course meets the application (a container running the module), so these
tests check the behaviours the lessons depend on from the outside: v1 hangs after BUG_AFTER
requests while its probes stay green, v2 does not, the fault-injection routes, the metrics,
the exit code for bad settings and a prompt exit on SIGTERM. Every server is bound to
127.0.0.1 on a free port and killed by the fixture whatever happens; every client call has a
timeout.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 15.0
# A healthy answer on loopback takes milliseconds; a second without one is the v1 hang.
HANG_TIMEOUT = 1.0
APP_VARIABLES = frozenset({"APP_VERSION", "BUG_AFTER", "HOST", "PORT", "LOG_LEVEL", "ACCESS_LOG"})

pytestmark = pytest.mark.timeout(60)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    def request(
        self, path: str, method: str = "GET", timeout: float = 5.0
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, path: str, method: str = "GET") -> tuple[int, object]:
        status, _, body = self.request(path, method)
        return status, json.loads(body)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(**overrides: str) -> dict[str, str]:
    # The caller's own settings (say LOG_LEVEL=WARNING on a CI machine) must not leak in.
    env = {k: v for k, v in os.environ.items() if k not in APP_VARIABLES}
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(REPO_ROOT)
    env.update(HOST="127.0.0.1", **overrides)
    return env


def launch(directory: Path, version: str, bug_after: int, **extra_env: str) -> Server:
    port = free_port()
    stdout = directory / f"server-{port}.out"
    stderr = directory / f"server-{port}.err"
    env = server_env(APP_VERSION=version, BUG_AFTER=str(bug_after), PORT=str(port), **extra_env)
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "app_backend"], cwd=REPO_ROOT, env=env, stdout=out, stderr=err
        )
    server = Server(process, port, stdout, stderr)
    deadline = time.monotonic() + START_DEADLINE
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {stderr.read_text()}")
        try:
            if server.request("/healthz", timeout=1.0)[0] == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            pytest.fail(f"server not healthy within {START_DEADLINE} s: {stderr.read_text()}")
        time.sleep(0.05)


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(version: str, bug_after: int = 30, **extra_env: str) -> Server:
        server = launch(tmp_path, version, bug_after, **extra_env)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            stop(server)


@pytest.fixture(scope="module")
def v2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared v2 for the tests that only read stateless routes."""
    server = launch(tmp_path_factory.mktemp("v2"), "v2", 30, ACCESS_LOG="0")
    try:
        yield server
    finally:
        stop(server)


def pool_waiting(server: Server) -> int:
    _, version = server.json("/version")
    assert isinstance(version, dict)
    waiting = version["pool"]["waiting"]
    assert isinstance(waiting, int)
    return waiting


def counter(metrics_text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in:\n{metrics_text}")


# --- The bug ----------------------------------------------------------------------------------


def test_v1_answers_bug_after_requests_then_hangs_while_probes_stay_green(
    start_server: Callable[..., Server],
) -> None:
    server = start_server("v1", 5)
    for n in range(1, 6):
        status, headers, body = server.request("/")
        assert (status, body) == (200, f"v1 - Request {n}\n".encode())
        assert headers["X-App-Version"] == "v1"

    with pytest.raises(TimeoutError):
        server.request("/", timeout=HANG_TIMEOUT)

    assert server.request("/healthz")[0] == 200
    assert server.request("/readyz")[0] == 200
    status, version = server.json("/version")
    assert status == 200
    assert isinstance(version, dict)
    assert version["requests"] == 5
    assert version["pool"]["size"] == version["pool"]["in_use"] == 5
    assert version["pool"]["waiting"] >= 1
    # Still the same process: the hang shows as timeouts, never as a crash or a restart.
    assert server.process.poll() is None
    with pytest.raises(TimeoutError):
        server.request("/", timeout=HANG_TIMEOUT)


def test_v2_answers_ten_times_bug_after_requests(start_server: Callable[..., Server]) -> None:
    server = start_server("v2", 5)
    bodies = [server.request("/", timeout=5.0)[2] for _ in range(50)]
    assert bodies == [f"v2 - Request {n}\n".encode() for n in range(1, 51)]
    status, version = server.json("/version")
    assert status == 200
    assert version == {
        "version": "v2",
        "bug_after": 5,
        "requests": 50,
        "pool": {"size": 5, "in_use": 0, "waiting": 0},
    }


# --- Fault injection, token, metrics ------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [("503", 503), ("200", 200), ("abc", 400)])
def test_status_route(v2_server: Server, code: str, expected: int) -> None:
    status, headers, body = v2_server.request(f"/status/{code}")
    assert status == expected
    assert headers["X-App-Version"] == "v2"
    payload = json.loads(body)
    if expected == 400:
        assert "error" in payload
    else:
        assert payload["code"] == expected


def test_delay_route_waits_at_least_the_requested_time(v2_server: Server) -> None:
    started = time.monotonic()
    status, _, body = v2_server.request("/delay/1", timeout=5.0)
    elapsed = time.monotonic() - started
    assert status == 200
    assert json.loads(body)["delay"] == 1.0
    assert 1.0 <= elapsed < 4.0
    assert v2_server.request("/delay/soon")[0] == 400


def test_token_route(v2_server: Server) -> None:
    status, payload = v2_server.json("/token", method="POST")
    assert status == 200
    assert isinstance(payload, dict)
    token = payload["token"]
    assert isinstance(token, str)
    assert len(token) == 32
    int(token, 16)


def test_metrics_count_requests_by_version(start_server: Callable[..., Server]) -> None:
    server = start_server("v2", 30)
    for _ in range(3):
        assert server.request("/")[0] == 200
    server.request("/status/503")
    status, headers, body = server.request("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    total = "app_backend_http_requests_total"
    root = {"version": "v2", "code": "200", "path": "/", "method": "GET"}
    assert counter(text, total, root) == 3
    assert counter(text, total, {"version": "v2", "code": "503", "path": "/status/{code}"}) == 1
    latency = "app_backend_http_request_duration_seconds_count"
    assert counter(text, latency, {"version": "v2", "path": "/"}) == 3
    assert counter(text, "app_backend_pool_connections_in_use", {}) == 0


# --- Process behaviour ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APP_VERSION": "v3"}, "app_backend: invalid APP_VERSION 'v3': expected v1 or v2"),
        ({"BUG_AFTER": "0"}, "app_backend: invalid BUG_AFTER '0': expected an integer from 1"),
    ],
)
def test_invalid_setting_exits_2_with_one_clear_line(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app_backend"],
        cwd=REPO_ROOT,
        env=server_env(PORT=str(free_port()), **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_stops_the_server_promptly_despite_a_hanging_request(
    start_server: Callable[..., Server], signum: signal.Signals
) -> None:
    server = start_server("v1", 1)
    assert server.request("/")[2] == b"v1 - Request 1\n"

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as hanging:
        hanging.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        deadline = time.monotonic() + 5
        while pool_waiting(server) < 1:
            assert time.monotonic() < deadline, "the second request never reached the pool"
            time.sleep(0.02)

        started = time.monotonic()
        server.process.send_signal(signum)
        returncode = server.process.wait(timeout=10)
        elapsed = time.monotonic() - started
        # The hanging request was cut off: the connection closes without an answer.
        assert hanging.recv(1024) == b""

    assert returncode == 0
    assert elapsed < 3.0
    # Access lines are batched; the shutdown flushes them.
    access = server.stdout.read_text()
    assert "GET / 200" in access
    assert "GET /version 200" in access
    stderr = server.stderr.read_text()
    assert f"received {signum.name}" in stderr
    assert "Traceback" not in stderr
