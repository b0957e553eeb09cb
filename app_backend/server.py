"""HTTP server of the demo application: routes, the v1 bug, and the process entry point.

:func:`create_app` builds the aiohttp application (tests use it in-process),
:func:`serve` runs it until SIGTERM/SIGINT, and :func:`main` is what ``python -m app_backend``
and the container image call. v1 and v2 share every line here except
:func:`_record_request_v1` / :func:`_record_request_v2`, which differ only by the leak, so
``diff`` between the two is the lesson.

Routes (see ``app_backend/README.md``)::

    GET  /                 "v1 - Request 17\\n", uses the database pool (the bug lives here)
    GET  /version          version, BUG_AFTER, request count and pool state, as JSON
    GET  /healthz /readyz  liveness and readiness probes; never touch the pool
    GET  /status/{code}    answers with that status code (fault injection for canaries)
    GET  /delay/{seconds}  answers after that many seconds, at most 30 (latency injection)
    POST /token            a random token (Flagger acceptance-test webhooks)
    GET  /metrics          Prometheus exposition
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, TextIO

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from app_backend.accesslog import AccessLog
from app_backend.config import (
    DEFAULT_BUG_AFTER,
    DEFAULT_VERSION,
    ConfigError,
    Settings,
    load_settings,
    parse_version,
)
from app_backend.metrics import UNMATCHED_PATH, Metrics
from app_backend.pool import ConnectionPool

log = logging.getLogger("app_backend")

# Kubernetes sends SIGTERM and waits terminationGracePeriodSeconds (30 s by default) before
# SIGKILL. With the v1 bug some requests would wait for ever, so in-flight requests only get
# this long to finish. aiohttp spends it twice (waiting for the handler, then again after
# cancelling it), so a hung request delays exit by about a second, not 30.
SHUTDOWN_TIMEOUT: Final = 0.5
MAX_DELAY_SECONDS: Final = 30.0
_OK_BODY: Final = b'{"status":"ok"}'

RecordRequest = Callable[[ConnectionPool], Awaitable[int]]


# --- The course's bug -------------------------------------------------------------------------


async def _record_request_v1(pool: ConnectionPool) -> int:
    """Record one request in the database and return its number: v1, with the leak."""
    connection = await pool.acquire()
    try:
        return await connection.next_request_number()
    except Exception:
        # BUG (kept on purpose, finding it is the lesson): the connection goes back to the
        # pool only when the query fails. The happy path returns from inside the `try` and
        # never releases it, so every successful request keeps one pool slot for good. After
        # BUG_AFTER requests the pool is empty and `pool.acquire()` above waits for a slot
        # that nobody will ever give back: `/` hangs with no error, no crash and no log line,
        # while the probes, which do not use the pool, stay green and nothing restarts.
        pool.release(connection)
        raise


async def _record_request_v2(pool: ConnectionPool) -> int:
    """Record one request in the database and return its number: v2, the leak fixed."""
    connection = await pool.acquire()
    try:
        return await connection.next_request_number()
    finally:
        # The fix: `finally` runs on return, on error and on cancellation alike.
        pool.release(connection)


RECORD_REQUEST: Final[Mapping[str, RecordRequest]] = {
    "v1": _record_request_v1,
    "v2": _record_request_v2,
}


# --- Application ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppState:
    """What the handlers share; reachable in tests as ``app[STATE]``."""

    version: str
    pool: ConnectionPool
    metrics: Metrics
    record_request: RecordRequest
    access_log: AccessLog | None

    @property
    def requests(self) -> int:
        """Requests to ``/`` answered by this process so far."""
        return self.pool.db.requests


STATE: Final = web.AppKey("app_backend_state", AppState)


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class _Handlers:
    """Request handlers; bound methods avoid an ``app[STATE]`` lookup per request."""

    def __init__(self, state: AppState) -> None:
        self._state = state
        self._version = state.version
        self._pool = state.pool
        self._record_request = state.record_request

    async def root(self, request: web.Request) -> web.Response:
        number = await self._record_request(self._pool)
        return web.Response(text=f"{self._version} - Request {number}\n")

    async def version(self, request: web.Request) -> web.Response:
        pool = self._pool
        return _json(
            {
                "version": self._version,
                "bug_after": pool.size,
                "requests": self._state.requests,
                "pool": {"size": pool.size, "in_use": pool.in_use, "waiting": pool.waiting},
            }
        )

    async def ok(self, request: web.Request) -> web.Response:
        # Liveness and readiness alike: both must stay cheap and independent of the pool, or a
        # leak would turn into a restart loop and hide the very symptom the lesson is about.
        return web.Response(body=_OK_BODY, content_type="application/json")

    async def status(self, request: web.Request) -> web.Response:
        raw = request.match_info["code"]
        # isdigit() alone accepts non-ASCII digits that int() would happily convert.
        code = int(raw) if raw.isascii() and raw.isdigit() else 0
        if not 100 <= code <= 599:
            return _json({"error": f"status code must be an integer from 100 to 599: {raw!r}"}, 400)
        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = ""
        # aiohttp drops the body itself for 1xx, 204 and 304, which must not carry one.
        return _json({"code": code, "reason": reason}, code)

    async def delay(self, request: web.Request) -> web.Response:
        raw = request.match_info["seconds"]
        try:
            requested = float(raw)
        except ValueError:
            requested = math.nan
        if not (math.isfinite(requested) and requested >= 0):
            return _json({"error": f"delay must be a number of seconds >= 0: {raw!r}"}, 400)
        # Capped so that a typo cannot park a request (and a client) for hours.
        seconds = min(requested, MAX_DELAY_SECONDS)
        await asyncio.sleep(seconds)
        return _json({"delay": seconds, "requested": requested})

    async def token(self, request: web.Request) -> web.Response:
        return _json({"token": secrets.token_hex(16)})

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self._state.metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})


def _observe(state: AppState) -> Middleware:
    """Middleware feeding the metrics and the access log for every answered request."""
    observe = state.metrics.observe
    access_log = state.access_log
    clock = time.perf_counter

    def record(request: web.Request, status: int, elapsed: float) -> None:
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else UNMATCHED_PATH
        observe(request.method, path, status, elapsed)
        if access_log is not None:
            access_log.log(request.remote, request.method, request.raw_path, status, elapsed)

    # A request cancelled at shutdown got no answer, so it is neither counted nor logged.
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = clock()
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404/405 from the router, raised by aiohttp itself
            record(request, exc.status, clock() - start)
            raise
        except Exception:  # aiohttp answers 500 for it
            record(request, 500, clock() - start)
            raise
        record(request, response.status, clock() - start)
        return response

    return middleware


def create_app(
    version: str = DEFAULT_VERSION,
    bug_after: int = DEFAULT_BUG_AFTER,
    *,
    access_log: AccessLog | None = None,
) -> web.Application:
    """Build the application for ``version`` ("v1" or "v2") with a pool of ``bug_after``.

    ``access_log`` is off by default so that in-process tests stay quiet; :func:`serve` passes
    one unless ``ACCESS_LOG=0``. Raises :class:`ValueError` for an unknown version or a pool
    size below 1.
    """
    version = parse_version(version)
    pool = ConnectionPool(bug_after)
    state = AppState(
        version=version,
        pool=pool,
        metrics=Metrics(version, pool),
        record_request=RECORD_REQUEST[version],
        access_log=access_log,
    )
    app = web.Application(middlewares=[_observe(state)])
    app[STATE] = state

    version_header = {"X-App-Version": version}

    async def add_version_header(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer says which version produced it, errors and 404s included: handy when
        # a canary splits traffic and something misbehaves.
        response.headers.update(version_header)

    app.on_response_prepare.append(add_version_header)

    if access_log is not None:
        app.cleanup_ctx.append(_access_log_flusher(access_log))

    handlers = _Handlers(state)
    app.router.add_get("/", handlers.root)
    app.router.add_get("/version", handlers.version)
    app.router.add_get("/healthz", handlers.ok)
    app.router.add_get("/readyz", handlers.ok)
    app.router.add_get("/status/{code}", handlers.status)
    app.router.add_get("/delay/{seconds}", handlers.delay)
    app.router.add_post("/token", handlers.token)
    app.router.add_get("/metrics", handlers.metrics)
    return app


def _access_log_flusher(
    access_log: AccessLog,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def flusher(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(access_log.run(), name="access-log-flusher")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return flusher


# --- Process ----------------------------------------------------------------------------------


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_started: Callable[[int], None] | None = None,
    stdout: TextIO | None = None,
) -> None:
    """Run the server until ``stop`` is set, or until SIGTERM/SIGINT when ``stop`` is None.

    ``on_started`` receives the bound port (useful with port 0). On the way out in-flight
    requests get about :data:`SHUTDOWN_TIMEOUT` seconds, then are cancelled.
    """
    access_log = (
        AccessLog(stdout if stdout is not None else sys.stdout, version=settings.version)
        if settings.access_log_enabled
        else None
    )
    app = create_app(settings.version, settings.bug_after, access_log=access_log)
    # aiohttp's own access logger goes through `logging`; ours is cheaper (see accesslog.py).
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    loop = asyncio.get_running_loop()
    handled_signals: list[signal.Signals] = []
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = int(runner.addresses[0][1])
        log.info(
            "app-backend %s listening on %s:%d (BUG_AFTER=%d, access log %s)",
            settings.version,
            settings.host,
            port,
            settings.bug_after,
            "on" if access_log is not None else "off",
        )
        if stop is None:
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, _request_stop, stop, signum)
                handled_signals.append(signum)
        if on_started is not None:
            on_started(port)
        await stop.wait()
    finally:
        for signum in handled_signals:
            loop.remove_signal_handler(signum)
        await runner.cleanup()
        log.info("app-backend %s stopped", settings.version)


def _request_stop(stop: asyncio.Event, signum: signal.Signals) -> None:
    log.info("received %s, shutting down", signum.name)
    stop.set()


def main(env: Mapping[str, str] | None = None) -> int:
    """Entry point of ``python -m app_backend``: read the environment, serve, exit code."""
    try:
        settings = load_settings(os.environ if env is None else env)
    except ConfigError as exc:
        # One line, no traceback: this is what `kubectl logs` shows for a crash-looping pod.
        print(f"app_backend: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        print(
            f"app_backend: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        # Only reachable before the signal handlers are installed.
        return 130
    return 0
