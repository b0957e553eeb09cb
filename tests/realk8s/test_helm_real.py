"""``HelmClient`` (pyhelm3 and the real helm 3.17) against the real kube-apiserver.

helm keeps its releases where it does on any cluster (Secrets in the release's
namespace), installs the project's own app-backend chart for real (its Deployments roll
out through the real controllers and the node agent), and ``--wait`` waits for that.
A wrapper around the helm binary records each command line, and the fault proxy (here
only recording) counts what reaches the API server: a second ``ensure_release`` with the
same values must be one ``helm status`` and zero writes.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from controlplane import chart_for_v120
from faultproxy import FaultProxy

from kubelab.cluster.helm import FINGERPRINT_KEY, HelmClient, Result
from kubelab.errors import SetupError
from kubelab.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]
HELM = find_tool("helm")

pytestmark = [
    pytest.mark.skipif(HELM is None, reason="helm missing: scripts/install-tools.sh"),
    pytest.mark.timeout(180),
]

WRAPPER = """#!{python}
import json, subprocess, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(subprocess.run([{real!r}, *sys.argv[1:]]).returncode)
"""


class RecordingHelm:
    def __init__(self, folder: Path) -> None:
        self.log = folder / "helm-calls.jsonl"
        self.bin = folder / "helm"
        self.bin.write_text(
            WRAPPER.format(python=sys.executable, real=str(HELM), log=str(self.log))
        )
        self.bin.chmod(self.bin.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls() if c[:1] != ["version"]]


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chart_for_v120(ROOT / "charts" / "app-backend", tmp_path_factory.mktemp("charts"))


@pytest.fixture(autouse=True)
def helm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # helm's caches and config go to the test's folder, not the developer's home.
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert os.environ["HELM_CACHE_HOME"]


def values(v1: int, v2: int) -> dict[str, Any]:
    return {
        "weights": {"v1": v1, "v2": v2},
        "commonLabels": {"course": "progressive-delivery"},
        "gateway": {"enabled": False},
    }


def test_install_skip_upgrade_uninstall_with_real_helm(  # type: ignore[no-untyped-def]
    control_plane, upstream_crds, chart: Path, tmp_path: Path
) -> None:
    ns = f"helm-{uuid.uuid4().hex[:6]}"
    helm = RecordingHelm(tmp_path)
    proxy = FaultProxy(control_plane.plane)
    kube = control_plane.kube()
    try:
        hc = HelmClient(proxy.kubeconfig(tmp_path / "proxy.kubeconfig"), helm.bin, timeout=90)
        first = hc.ensure_release("app-backend", chart, None, None, ns, values(90, 10), wait=True)
        assert first == Result("installed", 1)
        assert helm.verbs() == ["status", "show", "upgrade"]
        upgrade = next(c for c in helm.calls() if c[0] == "upgrade")
        assert upgrade[upgrade.index("--timeout") + 1] == "90s"
        assert upgrade[upgrade.index("--values") + 1] == "-"  # values on stdin
        assert "--wait" in upgrade and "--create-namespace" in upgrade
        assert any(a.startswith(f"kubelab {FINGERPRINT_KEY}=") for a in upgrade)
        # helm waited for the real rollout, and keeps the release where it always does.
        for version in ("v1", "v2"):
            dep = kube.get("apps/v1", "Deployment", f"app-backend-{version}", ns)
            assert dep is not None and dep["status"]["availableReplicas"] == 1
        vs = kube.get("networking.istio.io/v1", "VirtualService", "app-backend", ns)
        assert vs is not None
        assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [90, 10]
        secrets = kube.list("v1", "Secret", ns, "owner=helm,name=app-backend")
        assert [s["metadata"]["labels"]["status"] for s in secrets] == ["deployed"]

        # `kubelab up` again: one `helm status`, no upgrade, nothing written to the API.
        proxy.requests.clear()
        second = hc.ensure_release("app-backend", chart, None, None, ns, values(90, 10), wait=True)
        assert second == Result("unchanged", 1)
        assert helm.verbs()[3:] == ["status"]
        assert proxy.mutating() == [] and proxy.requests

        third = hc.ensure_release("app-backend", chart, None, None, ns, values(50, 50), wait=False)
        assert third == Result("upgraded", 2)
        vs = kube.get("networking.istio.io/v1", "VirtualService", "app-backend", ns)
        assert vs is not None
        assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [50, 50]
        revisions = sorted(
            (int(s["metadata"]["labels"]["version"]), s["metadata"]["labels"]["status"])
            for s in kube.list("v1", "Secret", ns, "owner=helm,name=app-backend")
        )
        assert revisions == [(1, "superseded"), (2, "deployed")]

        info = hc.get_release("app-backend", ns)
        assert info is not None
        assert (info.revision, info.status, info.chart, info.chart_version) == (
            2,
            "deployed",
            "app-backend",
            "0.1.0",
        )
        assert FINGERPRINT_KEY in info.description
        assert "app-backend" in [r.name for r in hc.list_releases()]

        hc.uninstall("app-backend", ns, wait=True, timeout=60)
        assert helm.calls()[-1][:2] == ["uninstall", "app-backend"]
        assert hc.get_release("app-backend", ns) is None
        assert kube.get("apps/v1", "Deployment", "app-backend-v1", ns) is None
        hc.uninstall("app-backend", ns, wait=False)  # already gone: no error
    finally:
        proxy.close()
        kube.delete("v1", "Namespace", ns)


def test_a_rejected_chart_is_a_setup_error_without_the_secret(  # type: ignore[no-untyped-def]
    control_plane, chart: Path, tmp_path: Path
) -> None:
    ns = f"helm-{uuid.uuid4().hex[:6]}"
    helm = RecordingHelm(tmp_path)
    hc = HelmClient(control_plane.kubeconfig, helm.bin, timeout=60)
    bad = {
        "weights": {"v1": 90, "v2": 10},
        "image": {"registry": "gitea.local", "password": "hunter2-Zq9"},
    }
    with pytest.raises(SetupError) as info:
        hc.ensure_release("app-backend", chart, None, None, ns, bad, wait=False)
    err = info.value
    assert err.message.startswith(
        f"helm could not install release app-backend (chart app-backend 0.1.0) in namespace {ns}: "
    )
    assert "hunter2-Zq9" not in " ".join([err.message, *err.details])
    assert "password" in err.message  # helm's own words: the schema does not allow that key
    assert "dry-run" in (err.hint or "")
    assert "upgrade" in helm.verbs()
    assert control_plane.kube().list("v1", "Secret", ns, "owner=helm") == []


def test_helm_as_a_user_without_rights_is_told_so(  # type: ignore[no-untyped-def]
    control_plane, chart: Path, tmp_path: Path
) -> None:
    """RBAC is on: helm with a kubeconfig that may do nothing fails with the server's 403."""
    helm = RecordingHelm(tmp_path)
    nobody = control_plane.kubeconfig_for("helm-nobody")
    hc = HelmClient(nobody, helm.bin, timeout=60)
    with pytest.raises(SetupError) as info:
        hc.ensure_release("app-backend", chart, None, None, "default", values(90, 10), wait=False)
    assert "forbidden" in info.value.message.lower()
