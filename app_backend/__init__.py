"""The demo application of the kubelab course ("app-backend").

Lessons deploy it, roll it out from v1 to v2, watch its metrics and canary it. One codebase
serves both versions: ``APP_VERSION=v1`` ships a connection leak that makes ``GET /`` hang
after ``BUG_AFTER`` requests, ``APP_VERSION=v2`` is the same code with the leak fixed.

Layout: :mod:`app_backend.config` reads the environment, :mod:`app_backend.pool` is the
bounded "database" pool the bug exhausts, :mod:`app_backend.metrics` and
:mod:`app_backend.accesslog` observe requests, :mod:`app_backend.server` wires the aiohttp
application and runs it (``python -m app_backend``).

Nothing heavy is imported here, so ``import app_backend.config`` stays cheap for the tools that
only need the settings.
"""

SUPPORTED_VERSIONS: tuple[str, ...] = ("v1", "v2")
