"""The sandbox API server on its own event loop thread, for code that is not async: the
test suite and the benchmarks talk to it through the real ``Kube`` client and kubectl.

HTTPS on 127.0.0.1 with a fresh self-signed certificate; ``latency`` delays every answer
(a distant API server); ``middlewares`` wrap the app (a test's own: recording requests,
injecting faults, answering a proxied service); ``close()`` stops the server and the loop.
The store is not thread-safe: touch it only through :meth:`ThreadedApi.call` /
:meth:`ThreadedApi.record`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp.typedefs import Middleware

from kubelab.cluster.kube import Kube
from kubelab.retry import RetryPolicy
from kubelab.sandbox import resources
from kubelab.sandbox.api import ApiServer, create_api_app, serve
from kubelab.sandbox.api_stream import ExecHandler, LogHandler
from kubelab.sandbox.portforward import ForwardHandler
from kubelab.sandbox.store import Store

TOKEN = "threaded-sandbox-api-admin-token"


class ThreadedApi:
    """The server, its store and ``folder/admin.kubeconfig`` (admin ``TOKEN``) to reach it.

    ``middlewares`` go outermost, in the given order (the first sees a request first,
    before authentication and ``latency``). ``store_options`` go to the :class:`Store`;
    the handlers answer pods/exec, pods/log and pods/portforward (none by default). The
    one harness of the sandbox API for tests and benchmarks."""

    def __init__(
        self,
        folder: Path,
        latency: float = 0.0,
        middlewares: Sequence[Middleware] = (),
        *,
        token: str = TOKEN,
        exec_handler: ExecHandler | None = None,
        log_handler: LogHandler | None = None,
        forward_handler: ForwardHandler | None = None,
        **store_options: Any,
    ) -> None:
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        try:
            self.store: Store = self.call(Store, **store_options)
            app = create_api_app(
                self.store,
                token,
                exec_handler,
                log_handler,
                latency=latency,
                forward_handler=forward_handler,
            )
            app.middlewares[0:0] = middlewares
            self.server: ApiServer = self.run(serve(app))
        except BaseException:
            self._stop_loop()
            raise
        self.kubeconfig = folder / "admin.kubeconfig"
        self.kubeconfig.write_text(json.dumps(self.server.kubeconfig(token)))

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the server's loop (the store is not thread-safe)."""

        async def invoke() -> Any:
            return fn(*args, **kwargs)

        return self.run(invoke())

    def objects(self, rt: resources.ResourceType, namespace: str | None = None) -> list[Any]:
        items, _ = self.call(self.store.list, rt, namespace)
        return list(items)

    def record(self, rt: resources.ResourceType, doc: dict[str, Any]) -> dict[str, Any]:
        """Create ``doc`` as a client would, then write its status as its controller would
        (the store, like the API server, drops the status of a create)."""
        doc = dict(doc)
        status = doc.pop("status", None)
        created: dict[str, Any] = self.call(self.store.create, rt, doc)
        if status is not None:
            meta = created["metadata"]
            created = self.call(
                self.store.update_status, rt, meta.get("namespace"), meta["name"], status
            )
        return created

    def kube(self, **kwargs: Any) -> Kube:
        kwargs.setdefault("retry", RetryPolicy(deadline=20, initial_delay=0.01, max_delay=0.05))
        kwargs.setdefault("poll", 0.0)
        return Kube(self.kubeconfig, **kwargs)

    @property
    def issued_tokens(self) -> dict[bytes, float]:
        """Tokens the TokenRequest API gave out -> expiry (epoch seconds); tests may move
        an expiry into the past to play a token running out."""
        from kubelab.sandbox.api import _CONTEXT

        app = self.server.runner.app
        assert app is not None
        return dict(app[_CONTEXT].issued)

    def expire_tokens(self) -> None:
        from kubelab.sandbox.api import _CONTEXT

        app = self.server.runner.app
        assert app is not None
        issued = app[_CONTEXT].issued

        def expire() -> None:
            for token in issued:
                issued[token] = 0.0

        self.call(expire)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def close(self) -> None:
        try:
            self.run(self.server.stop())
        finally:
            self._stop_loop()
