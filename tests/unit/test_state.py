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


def test_a_state_file_readable_by_others_is_said_and_made_private(tmp_path):
    import subprocess
    import sys

    store = StateStore(tmp_path / "state.json")
    with store.transaction() as state:
        state.lesson("l")
    os.chmod(store.path, 0o644)
    with pytest.warns(UserWarning, match=r"was readable by others \(mode 0644\); it is 0600"):
        store.load()
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    # Through the CLI: one warning line, and the command goes on.
    os.chmod(store.path, 0o640)
    proc = subprocess.run(
        [sys.executable, "-m", "kubelab", "status"],
        env={**os.environ, "KUBELAB_HOME": str(tmp_path), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: state file ") and "mode 0640" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_state_file_of_another_user_is_said(tmp_path, monkeypatch):
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as state:
        state.lesson("l")
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(store.path).st_uid + 1)
    with pytest.warns(UserWarning, match="belongs to another user"):
        store.load()
