"""Shared fixtures: an isolated kubelab home; e2e tests last. Helpers tests import (the
repo root, a CLI runner) live in ``support.py``: two ``conftest`` modules (this one and
tests/realk8s') cannot both be imported by that name."""

from __future__ import annotations

import pytest


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
