"""The sandbox's long-running child programs (Envoy, Prometheus): started in a process
group of their own, output appended to a log file, stopped by signalling the group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from kubelab.errors import SetupError


def spawn(command: list[str], log_path: Path, cwd: Path, hint: str) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output appended to ``log_path``, leading its own process
    group: ``stop`` signals the group, and a Ctrl-C in the student's terminal does not
    reach it before kubelab cleans up. A program that cannot run is a SetupError."""
    with log_path.open("ab") as log:
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise SetupError(f"cannot run {command[0]}: {exc}", hint=hint) from exc


async def stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process's group, SIGKILL it after ``grace`` seconds; returns once the
    process has exited."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    if process.poll() is None:
        signal_group(process.pid, signal.SIGKILL)
        while process.poll() is None:
            await asyncio.sleep(0.02)


def signal_group(pid: int, sig: signal.Signals) -> None:
    # The program leads its own process group (spawn); signalling the group also reaches
    # anything it forked. The group is gone once it exited: nothing to do then.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
