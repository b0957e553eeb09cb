"""A reverse proxy between kubelab's client and the real API server that records every
request and injects faults: every ``every``-th request answers 429 (with
``Retry-After: 0``) or 500 without reaching the server, or reaches it and has its answer
held back ``delay`` seconds (the client gives up first, after the server acted).

The client talks plain HTTP to the proxy on 127.0.0.1; the proxy talks to the API server
as the admin (client certificate), so what the server does is real.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from controlplane import ControlPlane, free_port

# aiohttp decompresses answers itself: their content-encoding no longer applies.
HOP_HEADERS = {
    "host",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
}


@dataclass
class Faults:
    mode: str = ""  # "", "429", "500", "slow"
    every: int = 3
    delay: float = 0.0
    seen: int = 0
    injected: int = 0


@dataclass
class FaultProxy:
    plane: ControlPlane
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="fault-proxy", daemon=True
        )
        self.thread.start()
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def mutating(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] not in ("GET", "HEAD")]

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    async def _start(self) -> None:
        pki = self.plane.pki_dir
        context = ssl.create_default_context(cafile=str(self.plane.ca_file))
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults
        self.requests.append((request.method, request.path))
        faults.seen += 1
        inject = bool(faults.mode) and faults.seen % faults.every == 0
        if inject and faults.mode in ("429", "500"):
            faults.injected += 1
            status = int(faults.mode)
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status}
            headers = {"Retry-After": "0"} if status == 429 else {}
            return web.json_response(body, status=status, headers=headers)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._forward_websocket(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        async with self._session.request(
            request.method,
            f"{self.plane.server}{request.path_qs}",
            headers=headers,
            # No body, no data: aiohttp would add a Content-Type to an empty one.
            data=body or None,
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
        ) as answer:
            body = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            status = answer.status
        if inject and faults.mode == "slow":
            faults.injected += 1
            await asyncio.sleep(faults.delay)
        return web.Response(status=status, body=body, headers=out)

    async def _forward_websocket(self, request: web.Request) -> web.StreamResponse:
        """exec and port-forward: the upgrade goes on to the server, the frames both ways."""
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p
        ]
        try:
            upstream = await self._session.ws_connect(
                f"{self.plane.server.replace('https', 'wss')}{request.path_qs}",
                protocols=protocols,
            )
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status, text=exc.message)
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else [])
        await client.prepare(request)

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                else:
                    break
            await dst.close()

        await asyncio.gather(pump(upstream, client), pump(client, upstream))
        return client

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            await self._session.close()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
