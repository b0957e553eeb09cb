"""Port-forwarding a pod's port to 127.0.0.1, for ``kubelab open kiali`` and friends.

The Kubernetes client's ``portforward`` gives one socket-like stream per call, not a port
a browser can open. :func:`forward` adds the missing half: a TCP listener on 127.0.0.1
that, for every connection a browser makes, asks ``connect()`` for a fresh stream to the
pod and pumps bytes both ways until either side closes. ``connect`` is injected so the
listener and the pumping are tested with plain sockets; :class:`~kubelab.cluster.kube.Kube`
passes the thin function that calls the real client.

:func:`resolve_target` does what ``kubectl port-forward svc/NAME`` does before that: pick
a ready pod behind the Service and translate the Service port to the container port.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kubelab.errors import KubelabError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class Stream(Protocol):
    """What ``connect`` returns: the subset of a socket the pump needs."""

    def recv(self, bufsize: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def close(self) -> None: ...


Connect = Callable[[], Stream]


class PortForwardError(KubelabError):
    """No pod to forward to, or no such port on it."""


class Forwarder:
    """A listener on 127.0.0.1 relaying each accepted connection to ``connect()``."""

    def __init__(self, connect: Connect, local_port: int = 0, host: str = "127.0.0.1") -> None:
        self._connect = connect
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, local_port))
            self._listener.listen(16)
        except OSError as exc:
            self._listener.close()
            raise PortForwardError(
                f"cannot listen on {host}:{local_port}: {exc.strerror or exc}",
                hint="Another program uses that port; pick another one or leave it to kubelab.",
            ) from exc
        self.port: int = self._listener.getsockname()[1]
        # A socketpair wakes the accept loop on close(): closing a listening socket from
        # another thread does not interrupt a blocking accept() on Linux.
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._closed = False
        self.connections = 0  # accepted so far (tests and --verbose read it)
        self.errors: list[str] = []  # why connect() failed, newest last
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"kubelab-forward-{self.port}", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(
                target=self._serve, args=(client,), name="kubelab-forward-conn", daemon=True
            ).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            remote = self._connect()
        except Exception as exc:  # one failed connection must not end the forward
            log.warning("port-forward: cannot reach the pod: %s", exc)
            self.errors.append(str(exc))
            client.close()
            return
        with self._lock:
            if self._closed:
                client.close()
                remote.close()
                return
            self._open.update((client, remote))
        back = threading.Thread(
            target=self._pump, args=(remote, client), name="kubelab-forward-back", daemon=True
        )
        back.start()
        self._pump(client, remote)
        back.join()
        self._close_pair(client, remote)

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        """Copy ``src`` to ``dst`` until EOF; then half-close ``dst`` so the other side
        sees the end too (an HTTP client waiting for a response keeps reading)."""
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass  # the other direction or close() ended the connection
        finally:
            with contextlib.suppress(OSError, AttributeError):
                dst.shutdown(socket.SHUT_WR)

    def _close_pair(self, *sockets: Any) -> None:
        with self._lock:
            for sock in sockets:
                self._open.discard(sock)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """Stop listening and end every relayed connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            still_open = list(self._open)
            self._open.clear()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(5)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        for sock in still_open:
            # shutdown first: it wakes a thread blocked in recv() on that socket.
            with contextlib.suppress(OSError, AttributeError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def forward(connect: Connect, local_port: int = 0) -> Iterator[int]:
    """Listen on 127.0.0.1 (``local_port``, 0 for a free one) and yield the port; every
    connection to it is relayed to a new ``connect()`` stream until the block ends."""
    with Forwarder(connect, local_port) as forwarder:
        yield forwarder.port


# -- choosing the pod and port, as kubectl does ----------------------------------------------


def parse_target(target: str) -> tuple[str, str]:
    """``svc/NAME``, ``service/NAME``, ``pod/NAME`` or ``NAME`` -> (kind, name), kind being
    "service", "pod" or "" (unknown: try a Service, then a Pod)."""
    kind, sep, name = target.partition("/")
    if not sep:
        return "", target
    kinds = {"svc": "service", "service": "service", "services": "service", "po": "pod"}
    kinds |= {"pod": "pod", "pods": "pod"}
    if kind.lower() not in kinds or not name:
        raise PortForwardError(
            f"cannot port-forward to {target!r}",
            hint="Name a Service (svc/NAME) or a Pod (pod/NAME).",
        )
    return kinds[kind.lower()], name


def _pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def container_port(pod: dict[str, Any], port: int | str) -> int:
    """``port`` as a number on ``pod``: numbers pass, names are looked up in its containers."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for item in container.get("ports") or []:
            if item.get("name") == port and item.get("containerPort"):
                return int(item["containerPort"])
    name = (pod.get("metadata") or {}).get("name")
    raise PortForwardError(f"pod {name} has no container port named {port!r}")


def service_target_port(service: dict[str, Any], port: int) -> int | str:
    """The targetPort behind Service ``port`` (by port number, or by the port's name);
    the port itself when the Service does not list it, as kubectl does."""
    for item in (service.get("spec") or {}).get("ports") or []:
        if item.get("port") == port:
            target = item.get("targetPort", port)
            return target if isinstance(target, int | str) else port
    return port


def pick_pod(pods: list[dict[str, Any]], what: str) -> dict[str, Any]:
    """The first ready pod (by name, for a stable choice); a clear error when none is."""
    ready = sorted(
        (p for p in pods if _pod_ready(p)), key=lambda p: (p.get("metadata") or {}).get("name", "")
    )
    if not ready:
        raise PortForwardError(
            f"no ready pod behind {what}",
            hint="Wait for it to start (kubelab status --verbose), then try again.",
        )
    return ready[0]
