"""The sandbox process: store + API + controller + Envoy, until SIGTERM.

Started detached by ``kubelab up --provider sandbox`` (``python -m kubelab.sandbox.daemon
--dir DIR``). When everything answers it writes ``DIR/kubeconfig`` (0600: it holds the
API token) and then ``DIR/runtime.json`` (ports and PID), which is the signal that it is
ready. On SIGTERM it stops every app process and Envoy and removes ``runtime.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from kubelab.paths import write_private

RUNTIME_FILE = "runtime.json"
KUBECONFIG_FILE = "kubeconfig"
CONTEXT = "kubelab-sandbox"
HEAL_INTERVAL = 0.5  # seconds between looks at Envoy


def _validator(obj: dict[str, Any]) -> list[str]:
    """Custom resources are checked against their CRD schema, as an API server does."""
    from kubelab.validation.manifests import crd_kinds, validate_object

    group_version = str(obj.get("apiVersion", ""))
    if group_version.rpartition("/")[0] not in {gv.rpartition("/")[0] for gv in crd_kinds()}:
        return []
    return [f"{p.path}: {p.message}" if p.path else p.message for p in validate_object(obj)]


async def serve(workdir: Path, namespace: str) -> None:
    from kubelab.sandbox.api import start_api
    from kubelab.sandbox.controller import Controller, free_port
    from kubelab.sandbox.envoy import EnvoyProcess, build_config
    from kubelab.sandbox.store import Store

    token = secrets.token_urlsafe(32)
    # Namespaces stay Terminating for a moment before their contents go, as on a real
    # cluster, so `kubectl delete -f` of a namespace and its objects succeeds.
    store = Store(validate=_validator, namespace_termination=0.5)
    telemetry_port = free_port()
    envoy = EnvoyProcess(workdir / "envoy", listen_port=free_port(), telemetry_port=telemetry_port)
    controller = Controller(store, workdir, envoy)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    telemetry = await _start_telemetry(controller, telemetry_port)
    prometheus = await _start_prometheus(workdir, envoy.admin_port, telemetry_port)
    await envoy.start(build_config([], []))
    try:
        # KUBELAB_SANDBOX_FAULT_EVERY=n: every n-th API request fails transiently, for
        # kubelab's own fault tests (retries under load); never set in normal use.
        fault_every = int(os.environ.get("KUBELAB_SANDBOX_FAULT_EVERY") or 0)
        server = await start_api(
            store,
            token,
            exec_handler=controller.exec,
            log_handler=controller.logs,
            forward_handler=controller.forward,
            fault_every=fault_every,
            service_proxies=_stand_ins(telemetry_port, prometheus),
        )
        try:
            await controller.start()
            kubeconfig = server.kubeconfig(token, namespace, CONTEXT)
            write_private(workdir / KUBECONFIG_FILE, json.dumps(kubeconfig, indent=2) + "\n")
            runtime = {
                "pid": os.getpid(),
                "api": server.url,
                "ingress": f"http://127.0.0.1:{envoy.listen_port}",
                "envoy_pid": envoy.pid,
                "kubeconfig": str(workdir / KUBECONFIG_FILE),
                "telemetry": f"http://127.0.0.1:{telemetry_port}",
                "prometheus": prometheus.url if prometheus else None,
                "prometheus_pid": prometheus.pid if prometheus else None,
            }
            write_private(workdir / RUNTIME_FILE, json.dumps(runtime, indent=2) + "\n")
            logging.getLogger("kubelab.sandbox").info("sandbox ready: %s", runtime["api"])
            healer = asyncio.create_task(_heal(controller, prometheus, workdir, runtime))
            await stop.wait()
            healer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await healer
        finally:
            await controller.stop()
            await server.stop()
    finally:
        await envoy.stop()
        if prometheus is not None:
            await prometheus.stop()
        await telemetry.cleanup()
        with contextlib.suppress(FileNotFoundError):
            (workdir / RUNTIME_FILE).unlink()


def _stand_ins(telemetry_port: int, prometheus: Any) -> dict[tuple[str, str, int], str]:
    """Where the lesson components' APIs are answered in the sandbox: Jaeger's query API
    by the span receiver, VictoriaMetrics' Prometheus API by Prometheus (when it runs)."""
    from kubelab.components.catalog import CATALOG

    proxies: dict[tuple[str, str, int], str] = {}
    jaeger = CATALOG["jaeger"].api
    if jaeger is not None:
        proxies[jaeger] = f"http://127.0.0.1:{telemetry_port}"
    metrics = CATALOG["victoria-metrics"].api
    if metrics is not None and prometheus is not None:
        proxies[metrics] = prometheus.url
    return proxies


async def _start_telemetry(controller: Any, port: int) -> Any:
    """The derived Istio metrics and the span receiver (:mod:`kubelab.sandbox.telemetry`)."""
    import aiohttp
    from aiohttp import web

    from kubelab.sandbox.telemetry import SpanStore, create_app, derive_metrics

    admin = f"http://127.0.0.1:{controller.envoy.admin_port}"
    bounded = aiohttp.ClientTimeout(total=3)
    view_cache: dict[str, Any] = {"at": -1.0, "view": None}
    abandoned_seen: dict[str, float] = {}  # per virtual host, across scrapes

    def view() -> Any:
        # Spans come in bursts: the mesh view (a walk over pods and clusters) is kept 1 s.
        now = loop.time()
        if now - view_cache["at"] > 1.0:
            view_cache.update(at=now, view=controller.mesh_view())
        return view_cache["view"]

    async def metrics() -> str:
        async with aiohttp.ClientSession(timeout=bounded) as session:
            async with session.get(f"{admin}/stats/prometheus") as answer:
                text = await answer.text()
            params = {"format": "json", "filter": r"^vhost\..*\.vcluster\."}
            async with session.get(f"{admin}/stats", params=params) as answer:
                counters = await answer.json(content_type=None)
        return derive_metrics(text, counters, controller.mesh_view(), abandoned_seen)

    loop = asyncio.get_running_loop()
    spans = SpanStore(lambda cluster: view().clusters.get(cluster))
    runner = web.AppRunner(create_app(metrics, spans), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _start_prometheus(workdir: Path, envoy_admin: int, telemetry_port: int) -> Any:
    """Prometheus scraping the sandbox when it is installed; None when it is not (the
    metrics exercises are then marked unavailable) or does not start (daemon.log says why)."""
    from kubelab.errors import KubelabError
    from kubelab.sandbox.controller import free_port
    from kubelab.sandbox.prometheus import PrometheusProcess, find_prometheus

    log = logging.getLogger("kubelab.sandbox")
    binary = find_prometheus()
    if binary is None:
        log.info("prometheus is not installed: the sandbox runs without metrics")
        return None
    prometheus = PrometheusProcess(
        workdir / "prometheus", free_port(), envoy_admin, telemetry_port, binary
    )
    try:
        await prometheus.start()
    except KubelabError as exc:
        log.error("Prometheus did not start: %s %s", exc, " | ".join(exc.details or []))
        return None
    log.info("Prometheus serves %s", prometheus.url)
    return prometheus


async def _heal(controller: Any, prometheus: Any, workdir: Path, runtime: dict[str, Any]) -> None:
    """Start Envoy (and Prometheus) again whenever it dies (a student's `kill`, a crash),
    within a second; runtime.json then names the new process (``status`` and ``down`` read
    it). Prometheus's list of app pods to scrape follows the pods."""
    log = logging.getLogger("kubelab.sandbox")
    pause = HEAL_INTERVAL
    while True:
        await asyncio.sleep(pause)
        try:
            healed = await controller.heal_envoy()
            if prometheus is not None:
                prometheus.set_targets(controller.app_pods())
                if not prometheus.running():
                    log.warning("Prometheus had exited; starting it again")
                    await prometheus.start()
                    runtime["prometheus_pid"] = prometheus.pid
                    healed = True
        except Exception:
            log.exception("could not start Envoy or Prometheus again")
            pause = min(pause * 2, 10.0)  # e.g. its port taken: try less and less often
            continue
        pause = HEAL_INTERVAL
        if healed:
            runtime["envoy_pid"] = controller.envoy.pid
            write_private(workdir / RUNTIME_FILE, json.dumps(runtime, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubelab.sandbox.daemon")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(args.dir, args.namespace))
    except Exception as exc:
        logging.getLogger("kubelab.sandbox").exception("sandbox failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
