"""The sandbox's Prometheus: Debian's (or any) ``prometheus`` binary, scraping the mesh.

When a ``prometheus`` binary is installed (``apt install prometheus``; ``kubelab doctor``
says so), the sandbox daemon runs it on 127.0.0.1 with its data in the sandbox's folder. It
scrapes Envoy's own statistics (``/stats/prometheus``), the Istio metrics the daemon derives
from them (:mod:`kubelab.sandbox.telemetry`) and every app pod's ``/metrics`` (their targets
are in a file the daemon rewrites when pods come and go). The checks and ``kubelab graph``
query it through the sandbox API's service proxy, at VictoriaMetrics' address, since both
answer the same Prometheus query API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from kubelab.errors import KubelabTimeout, SetupError
from kubelab.sandbox import children

INSTALL_HINT = (
    "Install Prometheus (Debian and Ubuntu: sudo apt install prometheus), then run "
    "`kubelab down` and `kubelab up LESSON --provider sandbox` again."
)
# How often the sandbox scrapes; KUBELAB_SANDBOX_SCRAPE_INTERVAL (seconds) for tests.
DEFAULT_SCRAPE_SECONDS = 5.0
_KNOWN_PATHS = ("/usr/bin/prometheus", "/usr/local/bin/prometheus")


def find_prometheus() -> Path | None:
    """The prometheus binary (KUBELAB_PROMETHEUS, PATH, then where Debian puts it)."""
    given = os.environ.get("KUBELAB_PROMETHEUS")
    if given is not None:
        path = Path(given)
        return path if given and path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    for known in _KNOWN_PATHS:
        if os.access(known, os.X_OK):
            return Path(known)
    return None


def scrape_seconds() -> float:
    try:
        value = float(os.environ.get("KUBELAB_SANDBOX_SCRAPE_INTERVAL") or DEFAULT_SCRAPE_SECONDS)
    except ValueError:
        return DEFAULT_SCRAPE_SECONDS
    return min(max(value, 0.5), 60.0)


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


class PrometheusProcess:
    """One Prometheus on ``127.0.0.1:port`` scraping the sandbox."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        envoy_admin_port: int,
        telemetry_port: int,
        binary: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.envoy_admin_port = envoy_admin_port
        self.telemetry_port = telemetry_port
        self.binary = binary
        self.config_path = self.workdir / "prometheus.yml"
        self.targets_path = self.workdir / "apps.json"
        self.log_path = self.workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._targets: list[dict[str, Any]] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config(self) -> dict[str, Any]:
        interval = _duration(scrape_seconds())
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    # Envoy's own stats, as Istio's sidecars expose them (envoy_cluster_*).
                    "job_name": "envoy-stats",
                    "metrics_path": "/stats/prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.envoy_admin_port}"]}],
                },
                {
                    # istio_requests_total & co., derived from Envoy's cluster stats.
                    "job_name": "istio-mesh",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{self.telemetry_port}"]}],
                },
                {
                    "job_name": "apps",
                    "file_sd_configs": [
                        {"files": [str(self.targets_path)], "refresh_interval": interval}
                    ],
                },
            ],
        }

    def set_targets(self, pods: list[tuple[str, str, int, dict[str, str]]]) -> None:
        """The app pods to scrape: (namespace, pod, port, labels)."""
        targets = [
            {
                "targets": [f"127.0.0.1:{port}"],
                "labels": {
                    "namespace": namespace,
                    "pod": pod,
                    **{
                        key: value
                        for key, value in labels.items()
                        if key in ("app", "version") and value
                    },
                },
            }
            for namespace, pod, port, labels in sorted(pods)
        ]
        if targets == self._targets:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.targets_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets, indent=1))
        os.replace(tmp, self.targets_path)
        self._targets = targets

    async def start(self, timeout: float = 20.0) -> None:
        binary = self.binary or find_prometheus()
        if binary is None:
            raise SetupError("prometheus is not installed", hint=INSTALL_HINT)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: Prometheus reads this file as its YAML configuration.
        self.config_path.write_text(json.dumps(self.config(), indent=1))
        if self._targets is None:
            self.set_targets([])
        command = [
            str(binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        self._process = children.spawn(command, self.log_path, self.workdir, INSTALL_HINT)
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        bounded = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=bounded) as session:
            while True:
                if self._process is not None and self._process.poll() is not None:
                    raise SetupError(
                        f"Prometheus exited with code {self._process.returncode} at start",
                        hint=f"Its log is {self.log_path}.",
                        details=self.log_tail(),
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise KubelabTimeout(
                        f"Prometheus was not ready within {timeout:g} s",
                        hint=f"Its log is {self.log_path}.",
                        details=self.log_tail(),
                    )
                await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 10) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (Prometheus closes its database), SIGKILL after ``grace``. Idempotent."""
        if self._process is not None:
            await children.stop(self._process, grace)
        self._process = None
