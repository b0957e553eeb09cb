"""Shared fixtures: an isolated kubelab home, the repo root, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """e2e tests (marker ``e2e``: a real cluster, tens of minutes) run after every other
    test, whatever the order of the folders; the rest keeps its order (the sort is stable)."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


@pytest.fixture(autouse=True)
def _isolated_home(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
):
    """No test reads or writes the developer's real kubelab state.

    A module that shares one kubelab home between its tests (one sandbox for all of them)
    sets ``SHARED_HOME`` to that folder.
    """
    home = getattr(request.module, "SHARED_HOME", None) or tmp_path_factory.mktemp("kubelab-home")
    monkeypatch.setenv("KUBELAB_HOME", str(home))
    monkeypatch.delenv("KUBELAB_LANG", raising=False)
    return home


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
