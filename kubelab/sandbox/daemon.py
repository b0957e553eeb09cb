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
    envoy = EnvoyProcess(workdir / "envoy", listen_port=free_port())
    controller = Controller(store, workdir, envoy)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
            }
            write_private(workdir / RUNTIME_FILE, json.dumps(runtime, indent=2) + "\n")
            logging.getLogger("kubelab.sandbox").info("sandbox ready: %s", runtime["api"])
            healer = asyncio.create_task(_heal(controller, workdir, runtime))
            await stop.wait()
            healer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await healer
        finally:
            await controller.stop()
            await server.stop()
    finally:
        await envoy.stop()
        with contextlib.suppress(FileNotFoundError):
            (workdir / RUNTIME_FILE).unlink()


async def _heal(controller: Any, workdir: Path, runtime: dict[str, Any]) -> None:
    """Start Envoy again whenever it dies (a student's `kill`, a crash), within a second;
    runtime.json then names the new process (``status`` and ``down`` read it)."""
    log = logging.getLogger("kubelab.sandbox")
    pause = HEAL_INTERVAL
    while True:
        await asyncio.sleep(pause)
        try:
            healed = await controller.heal_envoy()
        except Exception:
            log.exception("could not start Envoy again")
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
