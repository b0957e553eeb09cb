"""``pods/portforward``: ``kubectl port-forward`` and the Python client's port-forward.

Two WebSocket subprotocols are served:

* ``SPDY/3.1+portforward.k8s.io`` (kubectl 1.31). The WebSocket carries a SPDY session
  (:mod:`kubelab.sandbox.spdy`). Each local connection opens an ``error`` stream and a
  ``data`` stream (headers ``streamtype``, ``port``, ``requestid``). The data stream is
  joined to a TCP connection to what the pod's port reaches; a failure is written on the
  error stream, as the kubelet writes it.
* ``v4.channel.k8s.io`` and the older channel protocols (the official client). Two
  channels per ``ports`` entry carry data and errors. Each channel's first message is
  the port number (2 bytes, little-endian).

What a pod's port reaches is the ``forward`` callback's answer (the sandbox controller:
the pod's local app process), or None ("nothing listens").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web

from kubelab.sandbox import spdy
from kubelab.sandbox.errors import bad_request

log = logging.getLogger(__name__)

Address = tuple[str, int]
ForwardHandler = Callable[[str, str, int], Address | None]

SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
CHANNEL_PROTOCOLS = (
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)


def _refused(pod: str, port: int) -> bytes:
    return f"error forwarding port {port} to pod {pod}: nothing listens on it".encode()


async def serve(
    request: web.Request, namespace: str, pod: str, forward: ForwardHandler
) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=(SPDY_TUNNEL, *CHANNEL_PROTOCOLS), autoping=True)
    if not ws.can_prepare(request).ok:
        raise bad_request(
            "port-forward needs a WebSocket upgrade (SPDY/3.1+portforward.k8s.io or "
            "v4.channel.k8s.io); plain SPDY is not supported by the kubelab sandbox"
        )
    await ws.prepare(request)
    try:
        if ws.ws_protocol == SPDY_TUNNEL:
            await _spdy(ws, namespace, pod, forward)
        else:
            ports = [
                int(p)
                for value in request.query.getall("ports", [])
                for p in value.split(",")
                if p.strip().isdigit()
            ]
            await _channels(ws, namespace, pod, ports, forward)
    finally:
        await ws.close()
    return ws


async def _spdy(
    ws: web.WebSocketResponse, namespace: str, pod: str, forward: ForwardHandler
) -> None:
    pairs: dict[str, dict[str, spdy.Stream]] = {}

    async def on_stream(session: spdy.Session, stream: spdy.Stream) -> None:
        request_id = stream.headers.get("requestid", "")
        kind = stream.headers.get("streamtype", "")
        pairs.setdefault(request_id, {})[kind] = stream
        if kind == "data":
            await _join(session, stream, pairs[request_id], namespace, pod, forward)
            pairs.pop(request_id, None)

    session = spdy.Session(ws.send_bytes, on_stream)
    try:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                break
            await session.feed(message.data)
    except spdy.ProtocolError as error:
        log.debug("port-forward to %s/%s: %s", namespace, pod, error)
    finally:
        session.close()


async def _join(
    session: spdy.Session,
    data: spdy.Stream,
    pair: dict[str, spdy.Stream],
    namespace: str,
    pod: str,
    forward: ForwardHandler,
) -> None:
    """One forwarded connection: the data stream to and from the pod's port."""
    error = pair.get("error")
    port = int(data.headers.get("port", "0") or 0)
    target = forward(namespace, pod, port)
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    failure = _refused(pod, port)
    if target is not None:
        try:
            connection = await asyncio.open_connection(*target)
        except OSError as exc:
            failure = f"error forwarding port {port} to pod {pod}: {exc}".encode()
    if connection is None:
        if error is not None:
            await session.write(error, failure, fin=True)
        await session.write(data, b"", fin=True)
        return
    reader, writer = connection

    async def to_pod() -> None:
        while (chunk := await data.data.get()) is not None:
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def from_pod() -> None:
        while chunk := await reader.read(65536):
            await session.write(data, chunk)
        await session.write(data, b"", fin=True)

    sender = asyncio.ensure_future(to_pod())
    try:
        await from_pod()
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(sender, 5)
    finally:
        sender.cancel()
        writer.close()
        if error is not None:
            await session.write(error, b"", fin=True)


async def _channels(
    ws: web.WebSocketResponse,
    namespace: str,
    pod: str,
    ports: list[int],
    forward: ForwardHandler,
) -> None:
    writers: dict[int, asyncio.StreamWriter] = {}
    tasks: list[asyncio.Future[None]] = []

    async def backward(index: int, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            await ws.send_bytes(bytes([2 * index]) + chunk)

    for index, port in enumerate(ports):
        header = port.to_bytes(2, "little")
        await ws.send_bytes(bytes([2 * index]) + header)
        await ws.send_bytes(bytes([2 * index + 1]) + header)
    for index, port in enumerate(ports):
        target = forward(namespace, pod, port)
        if target is None:
            await ws.send_bytes(bytes([2 * index + 1]) + _refused(pod, port))
            continue
        try:
            reader, writer = await asyncio.open_connection(*target)
        except OSError as exc:
            await ws.send_bytes(bytes([2 * index + 1]) + str(exc).encode())
            continue
        writers[index] = writer
        tasks.append(asyncio.ensure_future(backward(index, reader)))
    try:
        async for message in ws:
            if message.type != WSMsgType.BINARY or not message.data:
                continue
            channel, payload = message.data[0], message.data[1:]
            to_pod = writers.get(channel // 2)
            if channel % 2 == 0 and to_pod is not None and payload:
                to_pod.write(payload)
                await to_pod.drain()
    finally:
        for task in tasks:
            task.cancel()
        for writer in writers.values():
            writer.close()
