"""``pods/exec`` over WebSocket and ``pods/log``, for ``kubectl exec/logs`` and the client.

Exec speaks the Kubernetes channel protocol (``v5.channel.k8s.io`` down to
``channel.k8s.io``): every binary message starts with its stream byte (0 stdin,
1 stdout, 2 stderr, 3 error/status, 4 resize); v5 adds the close signal (255, stream)
that kubectl sends when its stdin ends, which is what makes ``echo x | kubectl exec -i
pod -- cat`` terminate. When the command exits the server sends a ``Status`` on the error
channel (Success, or Failure/NonZeroExitCode with the code as the ExitCode cause, which
kubectl turns into its own exit code) and closes. SPDY, kubectl's fallback, is not
implemented: kubectl 1.31 uses WebSockets first, and only falls back when the upgrade is
refused, which here happens only for requests that fail anyway (their error is then
repeated on the fallback request).

The processes come from the ``exec_handler`` given to ``kubelab.sandbox.api`` (the
sandbox controller runs the command locally, "inside" the pod); logs from the
``log_handler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from kubelab.sandbox import resources
from kubelab.sandbox.errors import ApiError, bad_request
from kubelab.sandbox.ptyproc import kill_group
from kubelab.sandbox.store import Store

log = logging.getLogger(__name__)

ExecHandler = Callable[[str, str, str | None, list[str], bool, bool], Awaitable[Any]]
# (namespace, pod, container, follow, tail_lines) -> bytes, or an async iterator of bytes,
# or an awaitable of bytes.
LogHandler = Callable[[str, str, str | None, bool, int | None], Any]

PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def query_bool(query: Any, name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None:
        return default
    return str(value).lower() in ("true", "1", "yes")


def _check_container(pod: dict[str, Any], container: str | None) -> None:
    spec = pod.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    names = [
        c.get("name")
        for field in ("containers", "initContainers", "ephemeralContainers")
        for c in spec.get(field) or []
        if isinstance(c, dict)
    ]
    name = pod["metadata"]["name"]
    if container is not None and names and container not in names:
        raise bad_request(f"container {container} is not valid for pod {name}")


def _default_container(pod: dict[str, Any]) -> str | None:
    containers = [c for c in (pod.get("spec") or {}).get("containers") or [] if isinstance(c, dict)]
    if len(containers) > 1:
        names = " ".join(str(c.get("name")) for c in containers)
        raise bad_request(
            f"a container name must be specified for pod {pod['metadata']['name']}, "
            f"choose one of: [{names}]"
        )
    return str(containers[0]["name"]) if containers and "name" in containers[0] else None


def _exit_status(code: int) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


async def serve_exec(
    request: web.Request,
    store: Store,
    namespace: str,
    name: str,
    exec_handler: ExecHandler | None,
) -> web.StreamResponse:
    pod = store.get(resources.PODS, namespace, name)
    query = request.query
    command = query.getall("command", [])
    container = query.get("container") or None
    _check_container(pod, container)
    # Like the API server: a pod of several containers needs one named (kubectl picks
    # the default container itself and says so).
    container = container or _default_container(pod)
    if not command:
        raise bad_request("you must specify at least 1 command")
    if exec_handler is None:
        raise bad_request("exec is not available in this sandbox (no exec handler)")
    stdin, tty = query_bool(query, "stdin"), query_bool(query, "tty")
    want_out = query_bool(query, "stdout", True)
    want_err = query_bool(query, "stderr", True)
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, timeout=5.0)
    ready = ws.can_prepare(request)
    if not ready.ok:
        raise bad_request(
            "exec needs a WebSocket upgrade (v5.channel.k8s.io); SPDY is not supported "
            "by the kubelab sandbox"
        )
    await ws.prepare(request)
    send_lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with send_lock:
            if not ws.closed:
                # A client that went away is noticed by the reader, which stops the command.
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(bytes([channel]) + data)

    # An empty frame on the lowest output channel tells clients the streams are ready.
    await send(STDOUT if want_out else STDERR if want_err else ERROR, b"")
    try:
        process = await exec_handler(namespace, name, container, list(command), stdin, tty)
    except ApiError as e:
        await send(ERROR, json.dumps(e.status()).encode())
        await ws.close()
        return ws
    except Exception as e:  # the command could not start (missing executable, ...)
        log.debug("exec in %s/%s failed to start: %s", namespace, name, e)
        status = {
            "metadata": {},
            "status": "Failure",
            "message": f"error executing command {list(command)}: {e}",
            "reason": "InternalError",
            "code": 500,
        }
        await send(ERROR, json.dumps(status).encode())
        await ws.close()
        return ws
    return await _pump(ws, process, send, want_out=want_out, want_err=want_err, tty=tty)


async def _pump(
    ws: web.WebSocketResponse,
    process: Any,  # an asyncio Process, or a ptyproc.PtyProcess with a TTY
    send: Callable[[int, bytes], Awaitable[None]],
    *,
    want_out: bool,
    want_err: bool,
    tty: bool,
) -> web.WebSocketResponse:
    async def output(stream: asyncio.StreamReader | None, channel: int, wanted: bool) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            if wanted:
                await send(channel, chunk)

    def close_stdin() -> None:
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()

    async def input_() -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                data: bytes = message.data
            elif message.type == WSMsgType.TEXT:
                # The Python client sends text frames: the channel is the first character.
                text: str = message.data
                data = bytes([ord(text[0]) & 0xFF]) + text[1:].encode() if text else b""
            else:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and process.stdin is not None and payload:
                with contextlib.suppress(ConnectionError):
                    process.stdin.write(payload)
                    await process.stdin.drain()
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                close_stdin()
            elif channel == RESIZE and hasattr(process, "resize"):
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    size = json.loads(payload)
                    process.resize(int(size.get("Width", 0)), int(size.get("Height", 0)))

    reader = asyncio.create_task(input_())
    try:
        # With a TTY, stderr shows on the terminal: send it on stdout.
        await asyncio.gather(
            output(process.stdout, STDOUT, want_out),
            output(process.stderr, STDOUT if tty else STDERR, want_out if tty else want_err),
            _until_exit_or_hangup(process, reader),
        )
        code = await process.wait()
        await send(ERROR, json.dumps(_exit_status(code)).encode())
    finally:
        reader.cancel()
        close_stdin()
        if process.returncode is None:
            kill_group(process)
            await process.wait()
        await ws.close()
    return ws


async def _until_exit_or_hangup(process: Any, reader: asyncio.Task[None]) -> None:
    """Return when the process exits; end its process group when the client goes away
    first (kubectl interrupted), so that nothing it started keeps running."""
    waiter = asyncio.ensure_future(process.wait())
    done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        kill_group(process)
    await waiter


async def serve_log(
    request: web.Request,
    store: Store,
    namespace: str,
    name: str,
    log_handler: LogHandler | None,
) -> web.StreamResponse:
    pod = store.get(resources.PODS, namespace, name)
    query = request.query
    container = query.get("container") or None
    _check_container(pod, container)
    if container is None:
        container = _default_container(pod)
    if log_handler is None:
        raise bad_request("logs are not available in this sandbox (no log handler)")
    follow = query_bool(query, "follow")
    tail_lines: int | None = None
    if query.get("tailLines") not in (None, ""):
        try:
            tail_lines = int(query["tailLines"])
        except ValueError:
            raise bad_request(f'invalid tailLines "{query["tailLines"]}"') from None
    result = log_handler(namespace, name, container, follow, tail_lines)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, str):
        result = result.encode()
    if isinstance(result, bytes | bytearray):
        return web.Response(body=bytes(result), content_type="text/plain", charset="utf-8")
    if not hasattr(result, "__aiter__"):
        raise TypeError(f"log_handler returned {type(result).__name__}, not bytes")
    chunks: AsyncIterator[bytes] = result.__aiter__()
    # Pull the first chunk before answering: a handler failing (ApiError) at its first
    # step still gets a proper error status instead of a broken 200.
    try:
        first: bytes | None = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        if first:
            await response.write(first)
        async for chunk in chunks:
            if chunk:
                await response.write(chunk)
    except ConnectionError:
        pass  # kubectl logs -f interrupted: the client went away
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return response
