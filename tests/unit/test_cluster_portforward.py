"""The port-forward listener and pump, with a fake ``connect`` (a local echo server), and
the kubectl-like choice of pod and port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubelab.cluster import portforward as pf

pytestmark = pytest.mark.timeout(20)


class EchoServer:
    """Answers every connection with what it receives, upper-cased; counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.accepted = 0
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data.upper())
            except OSError:
                pass
        self.closed.set()

    def connect(self) -> socket.socket:
        return socket.create_connection(self.sock.getsockname(), timeout=5)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


def roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)  # the echo sees EOF and closes; we read to the end
        chunks = []
        while data := client.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_forward_relays_each_connection_to_a_new_stream(echo: EchoServer) -> None:
    with pf.forward(echo.connect) as port:
        assert port > 0
        assert roundtrip(port, b"hello") == b"HELLO"
        big = bytes(range(97, 123)) * 40_000  # 1 MB: more than one chunk each way
        assert roundtrip(port, big) == big.upper()
    assert echo.accepted == 2


def test_concurrent_connections(echo: EchoServer) -> None:
    results: dict[int, bytes] = {}
    with pf.forward(echo.connect) as port:

        def one(i: int) -> None:
            results[i] = roundtrip(port, f"request {i}".encode())

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
    assert results == {i: f"REQUEST {i}".encode() for i in range(8)}


def test_a_failing_connect_drops_that_connection_only(echo: EchoServer) -> None:
    attempts: list[int] = []

    def flaky() -> pf.Stream:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionRefusedError("pod went away")
        return echo.connect()

    with pf.Forwarder(flaky) as forwarder:
        try:
            lost = roundtrip(forwarder.port, b"lost")
        except OSError:
            # Closed with our bytes unread: a reset, or, when the close wins the race with
            # our shutdown(), "not connected" — either way no answer, as it should be.
            lost = b""
        assert lost == b""  # closed without an answer
        assert roundtrip(forwarder.port, b"again") == b"AGAIN"
        assert forwarder.errors == ["pod went away"]
        assert forwarder.connections == 2


def test_close_ends_open_connections_and_frees_the_port(echo: EchoServer) -> None:
    forwarder = pf.Forwarder(echo.connect)
    client = socket.create_connection(("127.0.0.1", forwarder.port), timeout=5)
    client.sendall(b"x")
    assert client.recv(10) == b"X"
    forwarder.close()
    assert echo.closed.wait(5)  # the stream to the pod was closed too
    assert client.recv(10) == b""  # and so was the browser's connection
    client.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forwarder.port), timeout=1)
    forwarder.close()  # twice is harmless


def test_a_given_local_port_and_a_busy_one(echo: EchoServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pf.forward(echo.connect, local_port=free) as port:
        assert port == free
        with pytest.raises(pf.PortForwardError, match=f"cannot listen on 127.0.0.1:{free}"):
            pf.Forwarder(echo.connect, local_port=free)


def test_no_thread_is_left_running(echo: EchoServer) -> None:
    before = {t.name for t in threading.enumerate()}
    with pf.forward(echo.connect) as port:
        roundtrip(port, b"a")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = {t.name for t in threading.enumerate() if t.name.startswith("kubelab-forward")}
        if not left - before:
            break
        time.sleep(0.02)
    assert not {n for n in left - before}


# -- pod and port -----------------------------------------------------------------------------


def pod(name: str, ready: bool = True, phase: str = "Running", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, **extra},
        "spec": {
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 20001}]}]
        },
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_parse_target() -> None:
    assert pf.parse_target("svc/kiali") == ("service", "kiali")
    assert pf.parse_target("service/kiali") == ("service", "kiali")
    assert pf.parse_target("pod/kiali-0") == ("pod", "kiali-0")
    assert pf.parse_target("kiali") == ("", "kiali")
    with pytest.raises(pf.PortForwardError, match="deployment/kiali"):
        pf.parse_target("deployment/kiali")
    with pytest.raises(pf.PortForwardError):
        pf.parse_target("svc/")


def test_pick_pod_takes_a_ready_running_pod_by_name() -> None:
    pods = [
        pod("c"),
        pod("a", ready=False),
        pod("b"),
        pod("0-gone", deletionTimestamp="now"),
        pod("0-done", phase="Succeeded"),
    ]
    assert pf.pick_pod(pods, "svc")["metadata"]["name"] == "b"
    with pytest.raises(pf.PortForwardError, match="no ready pod behind service istio/kiali"):
        pf.pick_pod([pod("a", ready=False)], "service istio/kiali")


def test_ports() -> None:
    service = {
        "spec": {"ports": [{"port": 80, "targetPort": "http"}, {"port": 9090, "targetPort": 9091}]}
    }
    assert pf.service_target_port(service, 80) == "http"
    assert pf.service_target_port(service, 9090) == 9091
    assert pf.service_target_port(service, 1234) == 1234  # not listed: as kubectl, the port itself
    assert pf.service_target_port({"spec": {"ports": [{"port": 80}]}}, 80) == 80
    assert pf.container_port(pod("a"), "http") == 20001
    assert pf.container_port(pod("a"), 8080) == 8080
    assert pf.container_port(pod("a"), "8080") == 8080
    with pytest.raises(pf.PortForwardError, match="no container port named 'metrics'"):
        pf.container_port(pod("a"), "metrics")
