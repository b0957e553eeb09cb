"""Helpers the tests import: the repository root, ../shared, and the real CLI in a
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60):
    """Run the real ``kubelab`` console entry point in a subprocess."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from kubelab.cli.main import run; run()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def course_patch(v1: int, v2: int) -> list[str]:
    """The course's weight change (``kubectl patch ... --type=json``), as kubectl args."""
    return [
        "patch",
        "virtualservice",
        "app-backend",
        "-n",
        "istio",
        "--type=json",
        f'-p=[{{"op":"replace","path":"/spec/http/0/route/0/weight","value":{v1}}},'
        f'{{"op":"replace","path":"/spec/http/0/route/1/weight","value":{v2}}}]',
    ]
