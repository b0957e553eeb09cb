"""The state file: atomic, private, versioned, and clear about corruption."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from kubelab.errors import StateError
from kubelab.state import SCHEMA_VERSION, CreatedResource, StateStore


def test_missing_file_is_an_empty_state(tmp_path):
    state = StateStore(tmp_path / "state.json").load()
    assert state.schema_version == SCHEMA_VERSION
    assert state.lessons == {} and state.clusters == {}


def test_save_is_0600_and_round_trips(tmp_path):
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as state:
        record = state.lesson("istio-traffic-splitting")
        record.steps_done.append("deploy")
        record.add_resource(
            CreatedResource(kind="HelmRelease", name="app-backend", namespace="istio")
        )
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600
    loaded = store.load()
    assert loaded.lessons["istio-traffic-splitting"].steps_done == ["deploy"]
    assert loaded.lessons["istio-traffic-splitting"].resources[0].name == "app-backend"
    assert json.loads(store.path.read_text())["schema_version"] == SCHEMA_VERSION


def test_add_resource_does_not_duplicate(tmp_path):
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as state:
        record = state.lesson("x")
        for _ in range(3):
            record.add_resource(CreatedResource(kind="Namespace", name="istio"))
    assert len(store.load().lessons["x"].resources) == 1


def test_failed_block_writes_nothing(tmp_path):
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as state:
        state.lesson("kept")
    with pytest.raises(RuntimeError), store.transaction() as state:
        state.lesson("lost")
        raise RuntimeError("boom")
    assert list(store.load().lessons) == ["kept"]


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as state:
        state.lesson("before")
    original = store.path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError), store.transaction() as state:
        state.lesson("after")
    assert store.path.read_text() == original
    # no temp file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.lock"]


def test_corrupt_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateError) as info:
        StateStore(path).load()
    assert "corrupt" in info.value.message
    assert "mv" in (info.value.hint or "")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(StateError) as info:
        StateStore(path).load()
    assert "newer kubelab" in info.value.message


def test_concurrent_transactions_lose_no_update(tmp_path):
    store = StateStore(tmp_path / "state.json")

    def worker(n: int) -> None:
        for i in range(10):
            with store.transaction() as state:
                state.lesson(f"w{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(store.load().lessons) == 40


def test_a_file_of_the_previous_kubelab_still_loads(tmp_path):
    # Written by kubelab before its state moved from pydantic to msgspec: same document.
    path = tmp_path / "state.json"
    path.write_text(
        json.dumps(
            {
                "schema_version": 2,
                "clusters": {
                    "lab": {
                        "name": "lab",
                        "provider": "hetzner",
                        "kubeconfig": "/k",
                        "created_at": "2026-11-30T10:00:00+00:00",
                        "resources": [
                            {
                                "kind": "server",
                                "name": "lab-cp",
                                "namespace": None,
                                "id": "42",
                                "created_at": "2026-11-30T10:00:01+00:00",
                                "details": {"ip": "192.0.2.1"},
                            }
                        ],
                        "details": {},
                    }
                },
                "lessons": {},
                "classes": {},
                "progress": {"l": {"e": {"status": "passed", "attempts": 2}}},
            }
        )
    )
    state = StateStore(path).load()
    assert state.clusters["lab"].resources[0].id == "42"
    assert state.progress["l"]["e"].attempts == 2 and state.progress["l"]["e"].hints_shown == 0


def test_unknown_keys_and_wrong_types_are_corruption(tmp_path):
    path = tmp_path / "state.json"
    for bad, where in (
        ({"schema_version": 2, "lesons": {}}, "lesons"),
        ({"schema_version": 2, "lessons": {"x": {"lesson": 3}}}, "$.lessons[...].lesson"),
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(StateError, match="is corrupt") as info:
            StateStore(path).load()
        assert where in str(info.value)


def test_paths_in_details_are_written_as_text(tmp_path):
    from pathlib import Path

    store = StateStore(tmp_path / "state.json")
    with store.transaction() as state:
        state.lesson("l").details["kubeconfig"] = Path("/home/x/kubeconfig")
    assert store.load().lessons["l"].details["kubeconfig"] == "/home/x/kubeconfig"
