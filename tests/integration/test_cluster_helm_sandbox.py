"""HelmClient with the real helm 3.17 and pyhelm3: the contract between them and kubelab.

helm keeps releases in Secrets through its protobuf client, which the sandbox API does
not speak, so helm runs with its in-memory storage driver (``HELM_DRIVER=memory``). That
storage lives for one helm process only; a small wrapper around the helm binary gives it
a memory between calls: it preloads the releases recorded so far
(``HELM_MEMORY_DRIVER_DATA``) and records the release each successful ``helm upgrade``
prints. With preloaded data helm also swaps in a fake Kubernetes client, so the chart's
objects are not created (the sandbox only answers helm's discovery); what is real is the
rest: pyhelm3's command lines, values on stdin, ``--timeout``/``--description``, chart
schema validation, ``helm status`` reading the fingerprint back, the unchanged-release
skip, list, get and uninstall.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cluster_sandbox import SandboxApi

from kubelab.cluster.helm import FINGERPRINT_KEY, HelmClient, Result
from kubelab.errors import SetupError
from kubelab.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "app-backend"
HELM = find_tool("helm")

pytestmark = [
    pytest.mark.skipif(HELM is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.timeout(90),
]

WRAPPER = """#!{python}
import json, os, subprocess, sys
REAL, DATA, LOG = {real!r}, {data!r}, {log!r}
args = sys.argv[1:]
with open(LOG, "a") as fh:
    fh.write(json.dumps(args) + "\\n")
env = dict(os.environ, HELM_DRIVER="memory", HELM_MEMORY_DRIVER_DATA=DATA)
proc = subprocess.run([REAL, *args], capture_output=True, env=env)
if proc.returncode == 0 and args[:1] == ["upgrade"]:
    release = json.loads(proc.stdout[proc.stdout.index(b"{{"):])
    with open(DATA) as fh:
        stored = json.load(fh)
    for old in stored:
        if old["name"] == release["name"] and old["info"]["status"] == "deployed":
            old["info"]["status"] = "superseded"
    stored.append(release)
    with open(DATA, "w") as fh:
        json.dump(stored, fh)
if proc.returncode == 0 and args[:1] == ["uninstall"]:
    with open(DATA) as fh:
        stored = [r for r in json.load(fh) if r["name"] != args[1]]
    with open(DATA, "w") as fh:
        json.dump(stored, fh)
sys.stdout.buffer.write(proc.stdout)
sys.stderr.buffer.write(proc.stderr)
sys.exit(proc.returncode)
"""


class Helm:
    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "releases.json"
        self.data.write_text("[]")
        self.log = tmp / "helm-calls.jsonl"
        self.bin = tmp / "helm"
        self.bin.write_text(
            WRAPPER.format(
                python=sys.executable, real=str(HELM), data=str(self.data), log=str(self.log)
            )
        )
        self.bin.chmod(self.bin.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls() if c[:1] != ["version"]]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SandboxApi]:
    box = SandboxApi(tmp_path)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # helm's own caches and config go to the test's folder, not the developer's home.
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert os.environ["HELM_CACHE_HOME"]


def values(v1: int, v2: int) -> dict[str, Any]:
    return {"weights": {"v1": v1, "v2": v2}, "commonLabels": {"course": "progressive-delivery"}}


def test_install_skip_upgrade_uninstall_with_real_helm(
    api: SandboxApi, tmp_path: Path, fake_home: None
) -> None:
    helm = Helm(tmp_path)
    hc = HelmClient(api.kubeconfig, helm.bin, timeout=60)

    first = hc.ensure_release("app-backend", CHART, None, None, "istio", values(90, 10), wait=False)
    assert first == Result("installed", 1)
    assert helm.verbs() == ["status", "show", "upgrade"]
    upgrade = next(c for c in helm.calls() if c[0] == "upgrade")
    assert upgrade[upgrade.index("--timeout") + 1] == "60s"
    assert upgrade[upgrade.index("--values") + 1] == "-"  # values on stdin, not the command line
    assert "--wait" not in upgrade and "--create-namespace" in upgrade
    assert any(a.startswith(f"kubelab {FINGERPRINT_KEY}=") for a in upgrade)

    # `kubelab up` again: one `helm status`, no upgrade, nothing written to the API.
    mutating_before = len(api.recorder.mutating())
    second = hc.ensure_release(
        "app-backend", CHART, None, None, "istio", values(90, 10), wait=False
    )
    assert second == Result("unchanged", 1)
    assert helm.verbs()[3:] == ["status"]
    assert len(api.recorder.mutating()) == mutating_before

    third = hc.ensure_release("app-backend", CHART, None, None, "istio", values(50, 50), wait=False)
    assert third == Result("upgraded", 2)
    stored = json.loads(helm.data.read_text())
    assert [(r["version"], r["info"]["status"], r["config"]["weights"]) for r in stored] == [
        (1, "superseded", {"v1": 90, "v2": 10}),
        (2, "deployed", {"v1": 50, "v2": 50}),
    ]

    info = hc.get_release("app-backend", "istio")
    assert info is not None
    assert (info.revision, info.status, info.chart, info.chart_version) == (
        2,
        "deployed",
        "app-backend",
        "0.1.0",
    )
    assert FINGERPRINT_KEY in info.description
    assert [r.name for r in hc.list_releases()] == ["app-backend"]

    hc.uninstall("app-backend", "istio", wait=False, timeout=30)
    assert helm.calls()[-1][:2] == ["uninstall", "app-backend"]
    assert hc.get_release("app-backend", "istio") is None
    hc.uninstall("app-backend", "istio", wait=False)  # already gone: no error


def test_a_rejected_chart_is_a_setup_error_without_the_secret(
    api: SandboxApi, tmp_path: Path, fake_home: None
) -> None:
    helm = Helm(tmp_path)
    hc = HelmClient(api.kubeconfig, helm.bin, timeout=60)
    bad = {
        "weights": {"v1": 90, "v2": 10},
        "image": {"registry": "gitea.local", "password": "hunter2-Zq9"},
    }
    with pytest.raises(SetupError) as info:
        hc.ensure_release("app-backend", CHART, None, None, "istio", bad, wait=False)
    err = info.value
    assert err.message.startswith(
        "helm could not install release app-backend (chart app-backend 0.1.0) in namespace istio: "
    )
    assert "hunter2-Zq9" not in " ".join([err.message, *err.details])
    assert "password" in err.message  # helm's own words: the schema does not allow that key
    assert "dry-run" in (err.hint or "")
    assert "upgrade" in helm.verbs() and json.loads(helm.data.read_text()) == []
